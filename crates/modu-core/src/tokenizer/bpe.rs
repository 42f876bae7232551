//! Byte-level BPE (llama.cpp's `llm_tokenizer_bpe`): regex pre-tokenizers cut the text into
//! words, each word's bytes become GPT-2's printable stand-in characters, and adjacent symbols are
//! merged lowest merge rank first (ties: leftmost).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use candle_core::quantized::gguf_file::Value;
use tokenizers::utils::SysRegex;

use super::tok_err;
use crate::error::Result;

pub(super) const GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
pub(super) const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// K-EXAONE / EXAONE 4.5 "SuperBPE": a letter run may span single spaces (multi-word tokens).
pub(super) const EXAONE_MOE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const BAILINGMOE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const UFAKZEKA: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const PORO: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

/// How `tokenizer.ggml.pre` shapes BPE tokenization, after llama.cpp's `llama_vocab::impl::load`.
pub(super) struct PreTokenizer {
    /// Applied in order; each cuts every piece the previous ones left, keeping the text between
    /// matches as pieces of its own.
    regexes: &'static [&'static str],
    /// A word that is itself a token is emitted whole, whatever the merges say.
    ignore_merges: bool,
    pub add_bos: bool,
    /// The family has no BOS even by default.
    pub no_bos: bool,
}

impl PreTokenizer {
    pub fn by_name(name: &str) -> Result<Self> {
        let plain = |regexes| Self {
            regexes,
            ignore_merges: false,
            add_bos: false,
            no_bos: false,
        };
        Ok(match name {
            // A missing pre-tokenizer is llama.cpp's "default" (it warns that quality suffers).
            "" | "default" => plain(&[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2,
                r"\p{N}+",
                r"[0-9][0-9][0-9]",
            ]),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => {
                Self { regexes: &[LLAMA3], ignore_merges: true, add_bos: true, no_bos: false }
            }
            "dbrx" | "smaug-bpe" => plain(&[LLAMA3]),
            "glm4" | "chatglm-bpe" => Self { no_bos: true, ..plain(&[LLAMA3]) },
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
            | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code"
            | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling"
            // EXAONE 4.0: plain GPT-2 regex, no separate digit split.
            | "exaone4" => plain(&[GPT2]),
            // EXAONE 3.x / Deep: every digit on its own, then GPT-2.
            "exaone" | "starcoder" | "refact" | "command-r" | "smollm" | "codeshell"
            | "minerva-7b" | "mellum2" => plain(&[r"\p{N}", GPT2]),
            "exaone-moe" => plain(&[EXAONE_MOE]),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2"
            | "hunyuan" | "solar-open" | "grok-2" => plain(&[QWEN2]),
            "qwen35" => plain(&[QWEN35]),
            "falcon" => plain(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"]),
            "deepseek-coder" => plain(&[
                "[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                "[一-龥ࠀ-一가-퟿]+",
                r"\p{N}",
            ]),
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => plain(&[GPT4O]),
            "tekken" => Self { regexes: &[TEKKEN], ignore_merges: true, add_bos: true, no_bos: false },
            "seed-coder" => plain(&[SEED_CODER]),
            "bailingmoe" | "bailingmoe2" | "llada-moe" => plain(&[BAILINGMOE]),
            "ufakzeka" => plain(&[UFAKZEKA]),
            "laguna" => plain(&["[^\n]+|[\n]+", QWEN2]),
            "poro-chat" | "bloom" | "gpt3-finnish" => plain(&[PORO]),
            "viking" => plain(&[PORO, r"\p{N}"]),
            other => {
                return Err(tok_err(format!(
                    "unsupported BPE pre-tokenizer '{other}' (tokenizer.ggml.pre); supported \
                     include default, llama-bpe, qwen2, gpt-2, exaone, exaone4, exaone-moe"
                )))
            }
        })
    }
}

pub(super) struct Bpe {
    /// "left right" -> rank, as the merges list spells them.
    ranks: HashMap<String, u32>,
    regexes: Vec<SysRegex>,
    ignore_merges: bool,
    byte_chars: [char; 256],
    char_bytes: HashMap<char, u8>,
}

/// GPT-2's byte -> character table: printable Latin-1 bytes stand for themselves, the rest are
/// shifted to U+0100 and up, in byte order.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let c = if printable {
            b
        } else {
            shifted += 1;
            255 + shifted
        };
        *slot = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
    }
    table
}

struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    /// Byte length of the pair when queued; a different length means one side has since merged.
    size: usize,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
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

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Bpe {
    pub fn new(pre: &PreTokenizer, merges: &[Value]) -> Result<Self> {
        let mut ranks = HashMap::with_capacity(merges.len());
        for (i, v) in merges.iter().enumerate() {
            let Value::String(m) = v else {
                return Err(tok_err(format!(
                    "tokenizer.ggml.merges[{i}] must be a string, found {:?}",
                    v.value_type()
                )));
            };
            // llama.cpp splits at the first space after the first byte; a line without one
            // can never match and is skipped. The first occurrence of a pair keeps its rank.
            if m.len() > 1 && m.as_bytes()[1..].contains(&b' ') {
                ranks.entry(m.clone()).or_insert(i as u32);
            }
        }
        let regexes = pre
            .regexes
            .iter()
            .map(|r| {
                SysRegex::new(r).map_err(|e| {
                    tok_err(format!("pre-tokenizer regex {r:?} does not compile: {e}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let byte_chars = byte_chars();
        let char_bytes = byte_chars
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        Ok(Self {
            ranks,
            regexes,
            ignore_merges: pre.ignore_merges,
            byte_chars,
            char_bytes,
        })
    }

    /// The bytes a normal token stands for. Characters outside GPT-2's table (never produced by a
    /// proper conversion) are kept as their own UTF-8, where llama.cpp prints a debug marker.
    pub fn decode_piece(&self, text: &str, out: &mut Vec<u8>) {
        for c in text.chars() {
            match self.char_bytes.get(&c) {
                Some(&b) => out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }

    /// The pre-tokenizer's words, as byte ranges of `text`.
    pub(super) fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let mut words = vec![(0, text.len())];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(words.len() * 2);
            for &(a, b) in &words {
                let mut prev = a;
                for (s, e) in re.find_iter(&text[a..b]) {
                    let (s, e) = (a + s, a + e);
                    if s > prev {
                        next.push((prev, s));
                    }
                    if e > s {
                        next.push((s, e));
                    }
                    prev = prev.max(e);
                }
                if prev < b {
                    next.push((prev, b));
                }
            }
            words = next;
        }
        words
    }

    pub fn tokenize(&self, ids: &super::vocab::Vocab, text: &str, out: &mut Vec<u32>) {
        let mut word = String::new();
        let mut key = String::new();
        let mut symbols: Vec<Symbol> = Vec::new();
        let mut queue = BinaryHeap::new();
        for (a, b) in self.split(text) {
            word.clear();
            word.extend(
                text.as_bytes()[a..b]
                    .iter()
                    .map(|&x| self.byte_chars[x as usize]),
            );
            if self.ignore_merges {
                if let Some(&id) = ids.get(word.as_str()) {
                    out.push(id);
                    continue;
                }
            }
            symbols.clear();
            let mut iter = word.char_indices().peekable();
            while let Some((start, c)) = iter.next() {
                let i = symbols.len();
                symbols.push(Symbol {
                    start,
                    len: c.len_utf8(),
                    prev: i.checked_sub(1),
                    next: iter.peek().map(|_| i + 1),
                });
            }
            queue.clear();
            let mut try_add = |symbols: &[Symbol],
                               queue: &mut BinaryHeap<Bigram>,
                               left: Option<usize>,
                               right: Option<usize>| {
                let (Some(left), Some(right)) = (left, right) else {
                    return;
                };
                let (l, r) = (&symbols[left], &symbols[right]);
                key.clear();
                key.push_str(&word[l.start..l.start + l.len]);
                key.push(' ');
                key.push_str(&word[r.start..r.start + r.len]);
                if let Some(&rank) = self.ranks.get(key.as_str()) {
                    queue.push(Bigram {
                        rank,
                        left,
                        right,
                        size: l.len + r.len,
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
            let mut at = if symbols.is_empty() { None } else { Some(0) };
            while let Some(i) = at {
                let s = &symbols[i];
                let piece = &word[s.start..s.start + s.len];
                match ids.get(piece) {
                    Some(&id) => out.push(id),
                    // As llama.cpp: look up each byte of the piece as a one-byte token. Only ASCII
                    // bytes can be one; the rest are dropped.
                    None => {
                        for &x in piece.as_bytes() {
                            if x.is_ascii() {
                                let one = [x];
                                if let Ok(s) = std::str::from_utf8(&one) {
                                    out.extend(ids.get(s).copied());
                                }
                            }
                        }
                    }
                }
                at = s.next;
            }
        }
    }
}
