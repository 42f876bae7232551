//! Tokenizers read from GGUF metadata, matching llama.cpp (`src/llama-vocab.cpp`) id for id, and a
//! streaming detokenizer that never emits part of a UTF-8 character.
//!
//! Two kinds, chosen by `tokenizer.ggml.model`:
//! - `llama`: SentencePiece-style. Spaces become U+2581, characters are merged pairwise by highest
//!   token score, and anything left that is not a token falls back to `<0xXX>` byte tokens.
//! - `gpt2`: byte-level BPE. A regex pre-tokenizer chosen by `tokenizer.ggml.pre` cuts the text into
//!   words, bytes are mapped to GPT-2's printable characters and merged by merge rank.
//!
//! Both first cut the text at special tokens (longest first), as llama.cpp does: user-defined tokens
//! always, control and unknown tokens only when the caller asks to parse special tokens.

mod bpe;
pub mod token_bytes;
mod spm;
mod vocab;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use crate::error::{Error, Result};
use crate::formats::checkpoint::Checkpoint;

/// Token attributes: the bit flags of llama.cpp's `llama_token_attr`.
pub(crate) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
}

/// The SentencePiece escape for a space.
const SPACE_ESCAPE: char = '\u{2581}';

fn tok_err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

enum Model {
    Spm,
    Bpe(bpe::Bpe),
}

/// A tokenizer built from a model file's `tokenizer.*` metadata.
pub struct Tokenizer {
    model: Model,
    /// Token texts and the id of each text.
    ids: vocab::Vocab,
    scores: Vec<f32>,
    attrs: Vec<u16>,
    specials: SpecialTokens,
    /// SPM byte fallback: the token for each byte.
    byte_tokens: [Option<u32>; 256],
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    eog: Vec<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field(
                "model",
                &match self.model {
                    Model::Spm => "llama (SPM)",
                    Model::Bpe(_) => "gpt2 (BPE)",
                },
            )
            .field("vocab_size", &self.ids.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("end_of_generation", &self.eog)
            .finish()
    }
}

/// A piece of input text after the special-token cut.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

impl Tokenizer {
    pub fn from_checkpoint(gguf: &dyn Checkpoint) -> Result<Tokenizer> {
        Self::from_metadata(gguf.metadata())
    }

    pub fn from_metadata(md: &HashMap<String, Value>) -> Result<Tokenizer> {
        let model_name = match md.get("tokenizer.ggml.model") {
            None => {
                return Err(tok_err(
                    "the model file has no tokenizer (tokenizer.ggml.model is missing)",
                ))
            }
            Some(Value::String(s)) => s.as_str(),
            Some(v) => {
                return Err(tok_err(format!(
                    "tokenizer.ggml.model must be a string, found {:?}",
                    v.value_type()
                )))
            }
        };
        let pre_name = meta_str(md, "tokenizer.ggml.pre")?.unwrap_or("");
        let is_spm = match model_name {
            "llama" => true,
            "gpt2" => false,
            "no_vocab" | "none" => {
                return Err(tok_err(format!(
                    "tokenizer.ggml.model is '{model_name}': this model file has no vocabulary"
                )))
            }
            other => {
                return Err(tok_err(format!(
                    "unsupported tokenizer model '{other}' (tokenizer.ggml.model); modu supports \
                     'llama' (SentencePiece) and 'gpt2' (byte-level BPE)"
                )))
            }
        };

        let texts = read_tokens(md)?;
        let n = texts.len();
        let scores = read_scores(md, n)?;
        let mut attrs = read_attrs(md, n)?;
        let ids = vocab::Vocab::new(&texts).map_err(|(prev, i)| {
            tok_err(format!(
                "duplicate token in vocabulary: {:?} has ids {prev} and {i}",
                texts[i as usize]
            ))
        })?;

        let (pre, bpe) = if is_spm {
            (None, None)
        } else {
            let pre = bpe::PreTokenizer::by_name(pre_name)?;
            let merges = read_merges(md)?;
            let bpe = bpe::Bpe::new(&pre, merges)?;
            (Some(pre), Some(bpe))
        };

        // Defaults are llama.cpp's; a default outside the vocabulary means "none".
        let in_vocab = |id: u32| (id as usize) < n;
        let mut bos = Some(if is_spm { 1 } else { 11 }).filter(|&i| in_vocab(i));
        let mut eos = Some(if is_spm { 2 } else { 11 }).filter(|&i| in_vocab(i));
        let mut unk = if is_spm {
            Some(0).filter(|&i| in_vocab(i))
        } else {
            None
        };
        if pre.as_ref().is_some_and(|p| p.no_bos) {
            bos = None;
        }
        let mut eot = None;
        let mut eom = None;
        let mut fim = FimIds::default();
        for (key, slot) in [
            ("tokenizer.ggml.bos_token_id", &mut bos),
            ("tokenizer.ggml.eos_token_id", &mut eos),
        ] {
            if let Some(id) = meta_int(md, key)? {
                if id < 0 || id as u64 >= n as u64 {
                    return Err(tok_err(format!(
                        "{key} = {id} is outside the vocabulary of {n} tokens"
                    )));
                }
                *slot = Some(id as u32);
            }
        }
        // Converted files do carry stray ids (e.g. a padding id one past the vocabulary); llama.cpp
        // keeps going without them, and so do we.
        let optional_id = |key: &str| -> Result<Option<u32>> {
            Ok(meta_int(md, key)?.and_then(|id| {
                if id >= 0 && (id as u64) < n as u64 {
                    Some(id as u32)
                } else {
                    tracing::warn!("{key} = {id} is outside the vocabulary of {n} tokens; ignored");
                    None
                }
            }))
        };
        // Later keys win, as in llama.cpp (the deprecated FIM names come last).
        for (key, slot) in [
            ("tokenizer.ggml.eot_token_id", &mut eot),
            ("tokenizer.ggml.eom_token_id", &mut eom),
            ("tokenizer.ggml.unknown_token_id", &mut unk),
            ("tokenizer.ggml.fim_pad_token_id", &mut fim.pad),
            ("tokenizer.ggml.fim_rep_token_id", &mut fim.rep),
            ("tokenizer.ggml.fim_sep_token_id", &mut fim.sep),
        ] {
            if let Some(id) = optional_id(key)? {
                *slot = Some(id);
            }
        }
        for (keys, slot) in [
            (
                [
                    "tokenizer.ggml.fim_pre_token_id",
                    "tokenizer.ggml.prefix_token_id",
                ],
                &mut fim.pre,
            ),
            (
                [
                    "tokenizer.ggml.fim_suf_token_id",
                    "tokenizer.ggml.suffix_token_id",
                ],
                &mut fim.suf,
            ),
            (
                [
                    "tokenizer.ggml.fim_mid_token_id",
                    "tokenizer.ggml.middle_token_id",
                ],
                &mut fim.mid,
            ),
        ] {
            for key in keys {
                if let Some(id) = optional_id(key)? {
                    *slot = Some(id);
                }
            }
        }

        let mut add_bos = match &pre {
            None => true,
            Some(p) => p.add_bos,
        };
        let mut add_eos = false;
        let mut add_space_prefix = is_spm;
        if let Some(b) = meta_bool(md, "tokenizer.ggml.add_bos_token")? {
            add_bos = b;
        }
        if let Some(b) = meta_bool(md, "tokenizer.ggml.add_eos_token")? {
            add_eos = b;
        }
        if let Some(b) = meta_bool(md, "tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = b;
        }
        if add_bos && bos.is_none() {
            return Err(tok_err(
                "tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set",
            ));
        }
        if add_eos && eos.is_none() {
            return Err(tok_err(
                "tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set",
            ));
        }

        let eog =
            find_end_of_generation(&texts, &ids, &mut attrs, eos, &mut eot, &mut eom, &mut fim);

        warn_on_bad_byte_tokens(&texts, &attrs);
        let specials = SpecialTokens::new(&texts, &attrs);
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            *slot = ids.get(hex.as_str()).copied().or_else(|| {
                char::from_u32(b as u32)
                    .filter(|c| c.is_ascii())
                    .and_then(|c| ids.get(c.to_string().as_str()).copied())
            });
        }
        let chat_template = meta_str(md, "tokenizer.chat_template")?.map(str::to_string);

        Ok(Tokenizer {
            model: match bpe {
                Some(b) => Model::Bpe(b),
                None => Model::Spm,
            },
            ids,
            scores,
            attrs,
            specials,
            byte_tokens,
            bos,
            eos,
            unk,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
            chat_template,
        })
    }

    /// llama.cpp's `llama_tokenize(text, add_special, parse_special)`: `add_special` adds BOS (and
    /// EOS) as the metadata says; `parse_special` lets control tokens written in the text match
    /// (user-defined tokens always do).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let fragments = if text.is_empty() {
            Vec::new()
        } else {
            self.specials
                .partition(text, parse_special, &self.ids, &self.attrs)
        };
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match &self.model {
            Model::Spm => {
                // A fragment that follows a special token (or starts the text) gets the space prefix.
                let mut prev_special = true;
                let mut buf = String::new();
                for f in fragments {
                    match f {
                        Fragment::Text(a, b) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push(SPACE_ESCAPE);
                            }
                            for c in text[a..b].chars() {
                                buf.push(if c == ' ' { SPACE_ESCAPE } else { c });
                            }
                            spm::tokenize(self, &buf, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                for f in fragments {
                    match f {
                        Fragment::Text(a, b) => bpe.tokenize(&self.ids, &text[a..b], &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// The bytes one token contributes to the output, as llama.cpp's `token_to_piece` with
    /// `special = false`: control and unknown tokens give nothing, byte tokens their byte, SPM
    /// pieces have U+2581 turned back into spaces, BPE pieces are byte-level decoded, user-defined
    /// tokens give their text. An id outside the vocabulary gives nothing.
    ///
    /// A piece may end in the middle of a UTF-8 character; use [`StreamDecoder`] to print.
    ///
    /// Made from the token's text when asked (a copy only where the bytes differ from it), so
    /// that the vocabulary's texts are held once.
    pub fn token_bytes(&self, id: u32) -> Cow<'_, [u8]> {
        let (Some(text), Some(&a)) = (self.ids.get_text(id), self.attrs.get(id as usize)) else {
            return Cow::Borrowed(&[]);
        };
        if a & (attr::UNKNOWN | attr::CONTROL) != 0 {
            Cow::Borrowed(&[])
        } else if a & attr::USER_DEFINED != 0 {
            Cow::Borrowed(text.as_bytes())
        } else if a & attr::NORMAL != 0 {
            match &self.model {
                Model::Spm if text.contains(SPACE_ESCAPE) => Cow::Owned(text.replace(SPACE_ESCAPE, " ").into_bytes()),
                Model::Spm => Cow::Borrowed(text.as_bytes()),
                Model::Bpe(bpe) => {
                    let mut out = Vec::with_capacity(text.len());
                    bpe.decode_piece(text, &mut out);
                    Cow::Owned(out)
                }
            }
        } else if a & attr::BYTE != 0 {
            match parse_byte_token(text) {
                Some(b) => Cow::Borrowed(std::slice::from_ref(&ALL_BYTES[b as usize])),
                None => Cow::Borrowed(&[]),
            }
        } else {
            Cow::Borrowed(&[])
        }
    }

    /// The concatenated bytes of `ids`, as UTF-8 with invalid sequences replaced.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(&self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Like [`Tokenizer::decode`], with control tokens written as their text (llama.cpp's
    /// `special = true`), so `encode(text, parse_special)` round-trips.
    pub fn decode_with_special(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            match self.is_control(id).then(|| self.token_text(id)).flatten() {
                Some(t) => bytes.extend_from_slice(t.as_bytes()),
                None => bytes.extend_from_slice(&self.token_bytes(id)),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn vocab_size(&self) -> usize {
        self.ids.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Ids that end generation, ascending: EOS, EOT, EOM and the tokens llama.cpp recognises by
    /// text (`<end_of_turn>`, `<|im_end|>`, `<|eot_id|>`, ...), plus EXAONE's `[|endofturn|]` /
    /// `<|endofturn|>` when they are control tokens.
    pub fn end_of_generation_ids(&self) -> Vec<u32> {
        self.eog.clone()
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The id of the token whose text is exactly `text` (the vocabulary's spelling: SPM pieces use
    /// U+2581 for spaces, BPE pieces GPT-2's byte characters).
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The vocabulary's spelling of a token (see [`Tokenizer::token_to_id`]).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.ids.get_text(id)
    }

    /// Control tokens (BOS, EOS, turn markers, ...), which `token_bytes` renders as nothing.
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & attr::CONTROL != 0)
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

/// Turns a stream of token ids into text, holding back bytes until they complete a UTF-8
/// character (a Hangul syllable is 3 bytes and may arrive as three byte tokens).
///
/// Everything pushed plus `finish()` equals `String::from_utf8_lossy` of all the token bytes.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.pending
            .extend_from_slice(&self.tokenizer.token_bytes(id));
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(&String::from_utf8_lossy(good));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            rest = bad;
                            break;
                        }
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[len..];
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let drop = self.pending.len() - keep;
        self.pending.drain(..drop);
        out
    }

    /// Flushes what is held back, replacing an incomplete character.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata readers

fn meta_str<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(tok_err(format!(
            "{key} must be a string, found {:?}",
            v.value_type()
        ))),
    }
}

fn meta_bool(md: &HashMap<String, Value>, key: &str) -> Result<Option<bool>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(tok_err(format!(
            "{key} must be a bool, found {:?}",
            v.value_type()
        ))),
    }
}

fn int_value(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).unwrap_or(i64::MAX),
        Value::I64(x) => *x,
        _ => return None,
    })
}

fn meta_int(md: &HashMap<String, Value>, key: &str) -> Result<Option<i64>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => int_value(v).map(Some).ok_or_else(|| {
            tok_err(format!(
                "{key} must be an integer, found {:?}",
                v.value_type()
            ))
        }),
    }
}

fn meta_array<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<Option<&'a [Value]>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(v) => Err(tok_err(format!(
            "{key} must be an array, found {:?}",
            v.value_type()
        ))),
    }
}

fn read_tokens(md: &HashMap<String, Value>) -> Result<Vec<String>> {
    let key = "tokenizer.ggml.tokens";
    let arr = meta_array(md, key)?.ok_or_else(|| {
        tok_err(format!(
            "the model file has no vocabulary ({key} is missing)"
        ))
    })?;
    if arr.is_empty() {
        return Err(tok_err(format!("{key} is empty")));
    }
    if arr.len() > i32::MAX as usize {
        return Err(tok_err(format!(
            "{key} has {} entries, more than a token id can hold",
            arr.len()
        )));
    }
    let mut texts = Vec::with_capacity(arr.len());
    for (i, v) in arr.iter().enumerate() {
        match v {
            // An empty token could match everywhere; llama.cpp renames it the same way.
            Value::String(s) if s.is_empty() => texts.push(format!("[EMPTY_{i}]")),
            Value::String(s) => texts.push(s.clone()),
            v => {
                return Err(tok_err(format!(
                    "{key}[{i}] must be a string, found {:?}",
                    v.value_type()
                )))
            }
        }
    }
    Ok(texts)
}

fn read_scores(md: &HashMap<String, Value>, n: usize) -> Result<Vec<f32>> {
    let key = "tokenizer.ggml.scores";
    let Some(arr) = meta_array(md, key)? else {
        return Ok(vec![0.0; n]);
    };
    if arr.len() != n {
        return Err(tok_err(format!(
            "{key} has {} entries but there are {n} tokens",
            arr.len()
        )));
    }
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            let s = match v {
                Value::F32(x) => *x,
                Value::I32(x) => *x as f32,
                v => {
                    return Err(tok_err(format!(
                        "{key}[{i}] must be an f32, found {:?}",
                        v.value_type()
                    )))
                }
            };
            // NaN has no place in the merge order; treat it as the lowest score.
            Ok(if s.is_nan() { f32::NEG_INFINITY } else { s })
        })
        .collect()
}

fn read_attrs(md: &HashMap<String, Value>, n: usize) -> Result<Vec<u16>> {
    let key = "tokenizer.ggml.token_type";
    let Some(arr) = meta_array(md, key)? else {
        return Ok(vec![attr::NORMAL; n]);
    };
    if arr.len() != n {
        return Err(tok_err(format!(
            "{key} has {} entries but there are {n} tokens",
            arr.len()
        )));
    }
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            let t = int_value(v).ok_or_else(|| {
                tok_err(format!(
                    "{key}[{i}] must be an integer, found {:?}",
                    v.value_type()
                ))
            })?;
            // Types llama.cpp does not know stay undefined: such tokens render as nothing.
            Ok(match t {
                1 => attr::NORMAL,
                2 => attr::UNKNOWN,
                3 => attr::CONTROL,
                4 => attr::USER_DEFINED,
                5 => attr::UNUSED,
                6 => attr::BYTE,
                _ => 0,
            })
        })
        .collect()
}

fn read_merges(md: &HashMap<String, Value>) -> Result<&[Value]> {
    let key = "tokenizer.ggml.merges";
    meta_array(md, key)?.ok_or_else(|| {
        tok_err(format!(
            "a gpt2 (BPE) tokenizer needs merges, but {key} is missing"
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// End of generation

#[derive(Default)]
struct FimIds {
    pre: Option<u32>,
    suf: Option<u32>,
    mid: Option<u32>,
    pad: Option<u32>,
    rep: Option<u32>,
    sep: Option<u32>,
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// EXAONE's turn ends; their GGUFs name them as EOS, but a fine-tune may not.
const EOG_CONTROL_TEXTS: &[&str] = &["[|endofturn|]", "<|endofturn|>"];

/// llama.cpp's end-of-generation set, found by id and by token text. Tokens recognised by text
/// become control tokens, as in llama.cpp (this changes how they tokenize and render).
fn find_end_of_generation(
    texts: &[String],
    ids: &vocab::Vocab,
    attrs: &mut [u16],
    eos: Option<u32>,
    eot: &mut Option<u32>,
    eom: &mut Option<u32>,
    fim: &mut FimIds,
) -> Vec<u32> {
    // The lowest id wins when several texts qualify (llama.cpp's pick depends on hash order).
    let detect = |slot: &mut Option<u32>, candidates: &[&str], attrs: &mut [u16]| {
        if slot.is_some() {
            return;
        }
        let found = candidates.iter().filter_map(|t| ids.get(*t).copied()).min();
        if let Some(id) = found {
            *slot = Some(id);
            attrs[id as usize] |= attr::CONTROL;
        }
    };
    detect(eot, EOT_TEXTS, attrs);
    detect(eom, &["<|eom_id|>"], attrs);
    detect(&mut fim.pre, FIM_PRE_TEXTS, attrs);
    detect(&mut fim.suf, FIM_SUF_TEXTS, attrs);
    detect(&mut fim.mid, FIM_MID_TEXTS, attrs);
    detect(&mut fim.pad, FIM_PAD_TEXTS, attrs);
    detect(&mut fim.rep, FIM_REP_TEXTS, attrs);
    detect(&mut fim.sep, FIM_SEP_TEXTS, attrs);

    let mut eog: Vec<u32> = [fim.pad, fim.rep, fim.sep].into_iter().flatten().collect();
    for t in EOG_TEXTS {
        if let Some(&id) = ids.get(*t) {
            eog.push(id);
            attrs[id as usize] |= attr::CONTROL;
        }
    }
    for t in EOG_CONTROL_TEXTS {
        if let Some(&id) = ids.get(*t) {
            if attrs[id as usize] & attr::CONTROL != 0 {
                eog.push(id);
            }
        }
    }
    // gpt-oss renders its channel markers; llama.cpp makes them user-defined.
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = ids.get(t) {
            attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    eog.extend([eos, *eot, *eom].into_iter().flatten());
    eog.sort_unstable();
    eog.dedup();

    let has = |eog: &[u32], t: &str| eog.iter().any(|&id| texts[id as usize] == t);
    // Harmony and solar-open use <|end|> between messages, not at the end of a reply.
    if let Some(&end) = ids.get("<|end|>") {
        let call = has(&eog, "<|call|>") || has(&eog, "<|calls|>");
        if has(&eog, "<|end|>") && call && (has(&eog, "<|return|>") || has(&eog, "<|flush|>")) {
            eog.retain(|&id| id != end);
            attrs[end as usize] = attr::USER_DEFINED;
        }
    }
    // Gemma 4 and PLaMo use </s> as ordinary text.
    if let Some(&s) = ids.get("</s>") {
        if (has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>")) && has(&eog, "</s>") {
            eog.retain(|&id| id != s);
            attrs[s as usize] = attr::NORMAL;
        }
    }
    eog
}

// ---------------------------------------------------------------------------------------------
// Pieces

/// `<0xHH>` -> the byte; anything else (`<0xZZ>`, `<0x-1>`) -> None.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Every byte value, for byte tokens' one-byte pieces.
static ALL_BYTES: [u8; 256] = {
    let mut a = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        a[i] = i as u8;
        i += 1;
    }
    a
};

fn warn_on_bad_byte_tokens(texts: &[String], attrs: &[u16]) {
    let bad_bytes = texts
        .iter()
        .zip(attrs)
        .filter(|(t, &a)| a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED | attr::NORMAL) == 0 && a & attr::BYTE != 0 && parse_byte_token(t).is_none())
        .count();
    if bad_bytes > 0 {
        tracing::warn!(
            "{bad_bytes} byte tokens are not of the form <0xHH>; they render as nothing"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Special tokens

/// Control, user-defined and unknown tokens, matched in the text before anything else.
struct SpecialTokens {
    /// Token ids by priority: longest text first, then lowest id.
    order: Vec<u32>,
    /// A byte trie over their texts: (node, byte) -> child; node 0 is the root.
    edges: HashMap<(u32, u8), u32>,
    /// Node -> index into `order` of the token ending there.
    ends: HashMap<u32, u32>,
}

impl SpecialTokens {
    fn new(texts: &[String], attrs: &[u16]) -> Self {
        let mask = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        let mut order: Vec<u32> = (0..texts.len() as u32)
            .filter(|&i| attrs[i as usize] & mask != 0)
            .collect();
        order.sort_by(|&a, &b| {
            texts[b as usize]
                .len()
                .cmp(&texts[a as usize].len())
                .then(a.cmp(&b))
        });
        let mut edges = HashMap::new();
        let mut ends = HashMap::new();
        let mut next_node = 1u32;
        for (rank, &id) in order.iter().enumerate() {
            let mut node = 0u32;
            for &b in texts[id as usize].as_bytes() {
                node = *edges.entry((node, b)).or_insert_with(|| {
                    next_node += 1;
                    next_node - 1
                });
            }
            ends.insert(node, rank as u32);
        }
        Self { order, edges, ends }
    }

    /// Cuts `text` at special tokens the way llama.cpp's `tokenizer_st_partition` does: for each
    /// token in priority order, every leftmost non-overlapping occurrence inside the text not yet
    /// cut out becomes that token.
    fn partition(
        &self,
        text: &str,
        parse_special: bool,
        vocab: &vocab::Vocab,
        attrs: &[u16],
    ) -> Vec<Fragment> {
        let allowed =
            |id: u32| parse_special || attrs[id as usize] & (attr::CONTROL | attr::UNKNOWN) == 0;
        // Find which tokens occur at all with one trie walk, so the cutting below scans the text
        // only once per token present rather than once per special token in the vocabulary.
        let bytes = text.as_bytes();
        let mut present = vec![false; self.order.len()];
        let mut any = false;
        for start in 0..bytes.len() {
            let mut node = 0u32;
            for &b in &bytes[start..] {
                match self.edges.get(&(node, b)) {
                    Some(&next) => node = next,
                    None => break,
                }
                if let Some(&rank) = self.ends.get(&node) {
                    if allowed(self.order[rank as usize]) {
                        present[rank as usize] = true;
                        any = true;
                    }
                }
            }
        }
        let mut fragments = vec![Fragment::Text(0, text.len())];
        if !any {
            return fragments;
        }
        for (rank, _) in present.iter().enumerate().filter(|(_, p)| **p) {
            let id = self.order[rank];
            let needle = vocab.text(id);
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for f in fragments {
                let Fragment::Text(a, b) = f else {
                    next.push(f);
                    continue;
                };
                let mut prev = a;
                for (off, _) in text[a..b].match_indices(needle) {
                    let s = a + off;
                    if s > prev {
                        next.push(Fragment::Text(prev, s));
                    }
                    next.push(Fragment::Token(id));
                    prev = s + needle.len();
                }
                if prev < b {
                    next.push(Fragment::Text(prev, b));
                }
            }
            fragments = next;
        }
        fragments
    }
}
