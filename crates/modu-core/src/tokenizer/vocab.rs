//! A vocabulary's token texts in one buffer, with an open-addressing index from text to id.
//!
//! A `Vec<String>` plus a `HashMap<String, u32>` cost about a hundred bytes per token (two small
//! heap strings and the map's buckets): some 50 MB for a vocabulary of 262k tokens, resident for
//! the whole run. This takes the texts' bytes plus 4 bytes per token and 4 per index slot.

use std::hash::BuildHasher;

const EMPTY: u32 = u32::MAX;

pub struct Vocab {
    buf: String,
    /// Token i's text ends at `ends[i]` in `buf` and starts where token i - 1's ends.
    ends: Vec<u32>,
    /// Token ids by hash, linear probing; at least twice as many slots as tokens.
    slots: Vec<u32>,
    hasher: std::collections::hash_map::RandomState,
}

impl Vocab {
    /// The vocabulary of `texts`, token i being `texts[i]`. A text that occurs twice is an error:
    /// `Err((first id, second id))`.
    pub fn new(texts: &[String]) -> Result<Self, (u32, u32)> {
        let mut buf = String::with_capacity(texts.iter().map(String::len).sum());
        let mut ends = Vec::with_capacity(texts.len());
        for t in texts {
            buf.push_str(t);
            ends.push(u32::try_from(buf.len()).expect("token texts over 4 GiB"));
        }
        let mut v = Self {
            buf,
            ends,
            slots: vec![EMPTY; (2 * texts.len()).next_power_of_two().max(16)],
            hasher: Default::default(),
        };
        for id in 0..texts.len() as u32 {
            let mask = v.slots.len() - 1;
            let mut s = v.hasher.hash_one(v.text(id)) as usize & mask;
            loop {
                match v.slots[s] {
                    EMPTY => {
                        v.slots[s] = id;
                        break;
                    }
                    other if v.text(other) == v.text(id) => return Err((other, id)),
                    _ => s = (s + 1) & mask,
                }
            }
        }
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The text of token `id` (which must be below [`Vocab::len`]).
    pub fn text(&self, id: u32) -> &str {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }

    /// The text of token `id`, or None outside the vocabulary.
    pub fn get_text(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.len()).then(|| self.text(id))
    }

    /// The id of the token whose text is `text`.
    pub fn get(&self, text: &str) -> Option<&u32> {
        let mask = self.slots.len() - 1;
        let mut s = self.hasher.hash_one(text) as usize & mask;
        loop {
            match &self.slots[s] {
                &EMPTY => return None,
                id if self.text(*id) == text => return Some(id),
                _ => s = (s + 1) & mask,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_ids_round_trip() {
        let texts: Vec<String> = (0..5000).map(|i| format!("▁t{i}")).chain(["".to_string(), "<0x0A>".into(), "한".into()]).collect();
        let v = Vocab::new(&texts).unwrap();
        assert_eq!(v.len(), texts.len());
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(v.text(i as u32), t);
            assert_eq!(v.get(t), Some(&(i as u32)), "{t:?}");
        }
        assert_eq!(v.get("▁t5000"), None);
        assert_eq!(v.get("한국"), None);
        assert_eq!(v.get_text(texts.len() as u32), None);
    }

    #[test]
    fn duplicate_texts_are_errors() {
        let texts: Vec<String> = ["a", "b", "c", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(Vocab::new(&texts).err(), Some((1, 3)));
    }
}
