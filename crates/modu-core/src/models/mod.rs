//! Model architectures, one file each, in the shape Config -> Attention -> Mlp -> DecoderLayer ->
//! Model. Every model implements [`CausalLm`]; [`from_checkpoint`] picks the file by
//! `general.architecture`.

pub mod decoder;
pub mod exaone;
pub mod exaone4;
pub mod exaone_moe;
pub mod gemma3;
pub mod layers;
pub mod llama;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::formats::checkpoint::Checkpoint;

/// What callers need to know about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: String,
    pub n_layers: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    /// K and V bytes added per token across the layers that keep every token.
    pub kv_bytes_per_token: usize,
    /// (window, K and V bytes per token) of each sliding-window layer, which keeps at most its
    /// window.
    pub kv_windows: Vec<(usize, usize)>,
}

impl ModelInfo {
    /// K and V bytes held after `tokens` tokens.
    pub fn kv_bytes(&self, tokens: usize) -> u64 {
        let windows: u64 = self.kv_windows.iter().map(|&(w, b)| (w.min(tokens) * b) as u64).sum();
        self.kv_bytes_per_token as u64 * tokens as u64 + windows
    }
}

/// Which logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// [n_tokens, vocab]: every position (perplexity, reference comparisons).
    All,
    /// [1, vocab]: the last position only (generation).
    Last,
    /// [n_tokens - start, vocab]: positions start.. of this call (perplexity scores the second half).
    From(usize),
}

/// One sequence's share of a batched forward pass: its slot, its new tokens, and the position
/// of the first of them (the slot's cached length).
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub slot: usize,
    pub ids: &'a [u32],
    pub offset: usize,
}

/// A decoder-only language model with its own KV caches, one per sequence slot. The
/// single-sequence methods use slot 0.
pub trait CausalLm: Send {
    /// Runs `ids` at positions `offset..offset + ids.len()`. The cache must hold exactly `offset`
    /// positions; call [`CausalLm::truncate`] first to rewind.
    fn forward(&mut self, ids: &[u32], offset: usize, logits: Logits) -> Result<Tensor>;
    /// Runs several sequences in one pass (continuous batching: prefill chunks and decode steps
    /// mixed); returns the logits after the last token of each item, [items, vocab].
    fn forward_batch(&mut self, batch: &[BatchItem]) -> Result<Tensor>;
    /// Keeps the first `len` cached positions and returns how many were kept: `len`, or fewer
    /// (0) when sliding-window layers have already dropped keys that position `len` needs.
    fn truncate(&mut self, len: usize) -> usize;
    fn truncate_slot(&mut self, slot: usize, len: usize) -> usize;
    /// Frees a slot's caches.
    fn free_slot(&mut self, slot: usize);
    /// Bytes held by the KV caches now.
    fn kv_bytes(&self) -> usize;
    fn cached_len(&self) -> usize;
    fn cached_len_slot(&self, slot: usize) -> usize;
    fn info(&self) -> &ModelInfo;
    fn device(&self) -> &Device;
}

pub const SUPPORTED_ARCHITECTURES: &[&str] = &["gemma3", "llama", "qwen3", "exaone", "exaone4", "exaone-moe"];

/// Builds the model a GGUF file describes.
pub fn from_checkpoint(gguf: &dyn Checkpoint, device: &Device, opts: layers::LoadOptions) -> Result<Box<dyn CausalLm>> {
    let arch = gguf
        .architecture()
        .map_err(|_| Error::Metadata("missing general.architecture".into()))?;
    Ok(match arch.as_str() {
        "gemma3" => Box::new(gemma3::from_checkpoint(gguf, device, opts)?),
        "llama" | "qwen3" => Box::new(llama::from_checkpoint(gguf, device, opts)?),
        "exaone" => Box::new(exaone::from_checkpoint(gguf, device, opts)?),
        "exaone4" => Box::new(exaone4::from_checkpoint(gguf, device, opts)?),
        "exaone-moe" => Box::new(exaone_moe::from_checkpoint(gguf, device, opts)?),
        other => return Err(Error::UnknownArchitecture(other.to_string())),
    })
}

/// Reads `{arch}.{key}` as a size, with a bound so corrupt metadata cannot ask for huge buffers.
pub(crate) fn meta_usize(gguf: &dyn Checkpoint, arch: &str, key: &str, max: usize) -> Result<usize> {
    let full = format!("{arch}.{key}");
    let v = gguf.get_usize(&full)?;
    check_range(&full, v, max)
}

pub(crate) fn meta_usize_or(gguf: &dyn Checkpoint, arch: &str, key: &str, default: usize, max: usize) -> Result<usize> {
    let full = format!("{arch}.{key}");
    match gguf.get_usize_opt(&full)? {
        Some(v) => check_range(&full, v, max),
        None => Ok(default),
    }
}

fn check_range(key: &str, v: usize, max: usize) -> Result<usize> {
    if v == 0 || v > max {
        return Err(Error::Metadata(format!("{key} = {v} is out of range (1..={max})")));
    }
    Ok(v)
}

pub(crate) fn meta_f32_or(gguf: &dyn Checkpoint, arch: &str, key: &str, default: f32) -> Result<f32> {
    let full = format!("{arch}.{key}");
    let v = gguf.get_f32_opt(&full)?.unwrap_or(default);
    if !v.is_finite() || v <= 0.0 {
        return Err(Error::Metadata(format!("{full} = {v} must be a positive number")));
    }
    Ok(v)
}

/// Vocabulary size: the token list's length, as llama.cpp takes it.
pub(crate) fn vocab_size(gguf: &dyn Checkpoint) -> Result<usize> {
    if gguf.get(crate::formats::checkpoint::TOKENS).is_some() {
        // A present key that is not an array is an error.
        gguf.get_array(crate::formats::checkpoint::TOKENS)?;
    }
    let n = gguf
        .token_count()
        .or(gguf.tensor_dims("token_embd.weight").map(|d| d[0]))
        .ok_or_else(|| Error::Metadata("no tokenizer.ggml.tokens and no token_embd.weight".into()))?;
    check_range("vocabulary size", n, 1 << 24)
}

/// Upper bounds on shapes read from files.
pub mod limits {
    pub const LAYERS: usize = 1024;
    pub const HIDDEN: usize = 1 << 16;
    pub const FFN: usize = 1 << 18;
    pub const HEADS: usize = 1024;
    pub const HEAD_DIM: usize = 1024;
    pub const CONTEXT: usize = 1 << 24;
}
