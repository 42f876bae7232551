//! Llama-style pre-norm decoders (GGUF archs `llama`, `qwen3`; `exaone` reuses this file).
//!
//! `h += o(attn(rope(q(norm h)), rope(k(norm h)), v(norm h)))`; `h += down(silu(gate(norm h)) * up(norm h))`.
//! Qwen3 adds per-head RMSNorm on Q and K before RoPE. GGUF llama weights were permuted by the
//! converter for interleaved RoPE; qwen3 and exaone use NeoX RoPE.

use candle_core::{Device, Tensor};

use super::layers::{Activation, GatedMlp, Weights, Heads, LoadOptions, RmsNorm, Rope, RopeStyle, SelfAttention};
use super::decoder::{Decoder, Layer, Segment};
use super::{limits, meta_f32_or, meta_usize, meta_usize_or, ModelInfo};
use crate::error::{Error, Result};
use crate::formats::checkpoint::Checkpoint;

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    /// llama3-style per-frequency divisors (GGUF `rope_freqs.weight`).
    pub rope_freq_divisors: Option<Vec<f32>>,
    pub context_length: usize,
    pub vocab_size: usize,
}

impl Config {
    /// Reads `{arch}.*` keys; `rope_style` is the architecture's convention.
    pub fn from_checkpoint(g: &dyn Checkpoint, arch: &str, rope_style: RopeStyle, device: &Device) -> Result<Self> {
        let hidden_size = meta_usize(g, arch, "embedding_length", limits::HIDDEN)?;
        let n_heads = meta_usize(g, arch, "attention.head_count", limits::HEADS)?;
        let n_kv_heads = meta_usize_or(g, arch, "attention.head_count_kv", n_heads, n_heads)?;
        if n_heads % n_kv_heads != 0 {
            return Err(Error::Metadata(format!(
                "{arch}: {n_heads} attention heads are not a multiple of {n_kv_heads} KV heads"
            )));
        }
        let head_dim = meta_usize_or(g, arch, "attention.key_length", hidden_size / n_heads, limits::HEAD_DIM)?;
        if head_dim % 2 != 0 {
            return Err(Error::Metadata(format!("{arch}: head_dim {head_dim} is odd")));
        }
        let rope_freq_divisors = if g.has_tensor("rope_freqs.weight") {
            let t = Weights::new(g, device, LoadOptions::default()).vector("rope_freqs.weight", head_dim / 2)?;
            Some(t.to_vec1::<f32>()?)
        } else {
            None
        };
        Ok(Self {
            arch: arch.to_string(),
            hidden_size,
            intermediate_size: meta_usize(g, arch, "feed_forward_length", limits::FFN)?,
            n_layers: meta_usize(g, arch, "block_count", limits::LAYERS)?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps: meta_f32_or(g, arch, "attention.layer_norm_rms_epsilon", 1e-5)? as f64,
            rope_theta: meta_f32_or(g, arch, "rope.freq_base", 10_000.0)?,
            rope_style,
            rope_freq_divisors,
            context_length: meta_usize_or(g, arch, "context_length", 4096, limits::CONTEXT)?,
            vocab_size: super::vocab_size(g)?,
        })
    }

    /// RoPE on every layer; Qwen3's per-head QK-norm when the file has it.
    fn attention(&self, w: &Weights, p: &str) -> Result<SelfAttention> {
        let heads = Heads { hidden: self.hidden_size, n_heads: self.n_heads, n_kv_heads: self.n_kv_heads, head_dim: self.head_dim };
        let qk_norm = w.has(&format!("{p}.attn_q_norm.weight")).then_some(self.rms_eps);
        let rope = Rope::new(self.head_dim, self.rope_theta, self.rope_freq_divisors.as_deref(), self.rope_style, w.device)?;
        SelfAttention::new(w, p, heads, qk_norm, Some(rope), None)
    }
}

pub struct DecoderLayer {
    attn_norm: RmsNorm,
    attn: SelfAttention,
    ffn_norm: RmsNorm,
    mlp: GatedMlp,
}

impl DecoderLayer {
    fn new(cfg: &Config, w: &Weights, layer: usize) -> Result<Self> {
        let p = format!("blk.{layer}");
        Ok(Self {
            attn_norm: w.rms_norm(&format!("{p}.attn_norm.weight"), cfg.hidden_size, cfg.rms_eps)?,
            attn: cfg.attention(w, &p)?,
            ffn_norm: w.rms_norm(&format!("{p}.ffn_norm.weight"), cfg.hidden_size, cfg.rms_eps)?,
            mlp: GatedMlp::new(w, &p, cfg.hidden_size, cfg.intermediate_size, Activation::Silu)?,
        })
    }
}

impl Layer for DecoderLayer {
    fn forward(&mut self, x: &Tensor, segs: &[Segment]) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.attn_norm.forward(x)?, segs)?)?;
        Ok((&x + self.mlp.forward_segments(&self.ffn_norm.forward(&x)?, segs)?)?)
    }

    fn attention(&self) -> &SelfAttention {
        &self.attn
    }

    fn attention_mut(&mut self) -> &mut SelfAttention {
        &mut self.attn
    }
}

pub type Model = Decoder<DecoderLayer>;

pub fn from_checkpoint(g: &dyn Checkpoint, device: &Device, opts: LoadOptions) -> Result<Model> {
    let arch = g.architecture()?;
    let style = if arch == "llama" { RopeStyle::Interleaved } else { RopeStyle::Neox };
    let cfg = Config::from_checkpoint(g, &arch, style, device)?;
    new(&cfg, g, device, opts)
}

pub fn new(cfg: &Config, g: &dyn Checkpoint, device: &Device, opts: LoadOptions) -> Result<Model> {
    let w = Weights::new(g, device, opts);
    let layers = (0..cfg.n_layers)
        .map(|i| DecoderLayer::new(cfg, &w, i))
        .collect::<Result<Vec<_>>>()?;
    let info = ModelInfo {
        architecture: cfg.arch.clone(),
        n_layers: cfg.n_layers,
        hidden_size: cfg.hidden_size,
        vocab_size: cfg.vocab_size,
        context_length: cfg.context_length,
        kv_bytes_per_token: cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim * opts.kv_dtype.size_in_bytes(),
        kv_windows: Vec::new(),
    };
    Decoder::new(&w, layers, cfg.rms_eps, None, info)
}
