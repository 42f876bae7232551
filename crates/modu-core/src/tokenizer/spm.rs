//! SentencePiece-style tokenization (llama.cpp's `llm_tokenizer_spm`): start from single
//! characters, repeatedly merge the adjacent pair whose concatenation is the highest-scoring token
//! (ties: leftmost), then emit each piece or, if it is not a token, its bytes.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Tokenizer;

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the pair when queued; a different length means one side has since merged.
    size: usize,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // Scores are never NaN (replaced at load).
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// Tokenizes one fragment whose spaces are already escaped to U+2581.
pub(super) fn tokenize(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    let mut iter = text.char_indices().peekable();
    while let Some((start, c)) = iter.next() {
        let i = symbols.len();
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: iter.peek().map(|_| i + 1),
        });
    }
    if symbols.is_empty() {
        return;
    }

    let mut queue = BinaryHeap::new();
    let try_add = |symbols: &[Symbol],
                   queue: &mut BinaryHeap<Bigram>,
                   left: Option<usize>,
                   right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (&symbols[left], &symbols[right]);
        let size = l.len + r.len;
        if let Some(&id) = tok.ids.get(&text[l.start..l.start + size]) {
            queue.push(Bigram {
                score: tok.scores[id as usize],
                left,
                right,
                size,
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, Some(i - 1), Some(i));
    }

    while let Some(bigram) = queue.pop() {
        let (l, r) = (&symbols[bigram.left], &symbols[bigram.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != bigram.size {
            continue;
        }
        let right_next = r.next;
        symbols[bigram.left].len = bigram.size;
        symbols[bigram.right].len = 0;
        symbols[bigram.left].next = right_next;
        if let Some(n) = right_next {
            symbols[n].prev = Some(bigram.left);
        }
        let prev = symbols[bigram.left].prev;
        try_add(&symbols, &mut queue, prev, Some(bigram.left));
        try_add(&symbols, &mut queue, Some(bigram.left), right_next);
    }

    // llama.cpp also keeps a map to undo merges here, but every merged piece is a token by
    // construction, so only single characters can miss the vocabulary: they fall back to bytes.
    let mut at = Some(0);
    while let Some(i) = at {
        let s = &symbols[i];
        let piece = &text[s.start..s.start + s.len];
        match tok.ids.get(piece) {
            Some(&id) => out.push(id),
            None => {
                for &b in piece.as_bytes() {
                    // llama.cpp throws when a byte has no token; UNK is the nearest thing.
                    out.extend(tok.byte_tokens[b as usize].or(tok.unk));
                }
            }
        }
        at = s.next;
    }
}
