//! Gemma 3 (GGUF arch `gemma3`).
//!
//! Differences from Llama, each visible below: embeddings scaled by sqrt(hidden); RMSNorm both
//! before and after attention and MLP ("sandwich" norms); per-head RMSNorm on Q and K; GELU-tanh
//! MLP; five sliding-window layers (local RoPE base 10 000) to one global layer. GGUF norm weights
//! already include Gemma's `1 + w` offset.

use candle_core::{Device, Tensor};

use super::layers::{Activation, GatedMlp, Weights, Heads, LoadOptions, RmsNorm, Rope, RopeStyle, SelfAttention};
use super::decoder::{Decoder, Layer, Segment};
use super::{limits, meta_f32_or, meta_usize, meta_usize_or, ModelInfo};
use crate::error::Result;
use crate::formats::checkpoint::Checkpoint;

const ARCH: &str = "gemma3";
/// Every sixth layer is global; the others see a sliding window.
const SLIDING_PATTERN: usize = 6;
pub const LOCAL_ROPE_THETA: f32 = 10_000.0;

#[derive(Debug, Clone)]
pub struct Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f32,
    pub sliding_window: usize,
    pub context_length: usize,
    pub vocab_size: usize,
}

impl Config {
    pub fn from_checkpoint(g: &dyn Checkpoint) -> Result<Self> {
        let hidden_size = meta_usize(g, ARCH, "embedding_length", limits::HIDDEN)?;
        let n_heads = meta_usize(g, ARCH, "attention.head_count", limits::HEADS)?;
        Ok(Self {
            hidden_size,
            intermediate_size: meta_usize(g, ARCH, "feed_forward_length", limits::FFN)?,
            n_layers: meta_usize(g, ARCH, "block_count", limits::LAYERS)?,
            n_heads,
            n_kv_heads: meta_usize_or(g, ARCH, "attention.head_count_kv", n_heads, n_heads)?,
            head_dim: meta_usize_or(g, ARCH, "attention.key_length", hidden_size / n_heads, limits::HEAD_DIM)?,
            rms_eps: meta_f32_or(g, ARCH, "attention.layer_norm_rms_epsilon", 1e-6)? as f64,
            rope_theta: meta_f32_or(g, ARCH, "rope.freq_base", 1_000_000.0)?,
            sliding_window: meta_usize_or(g, ARCH, "attention.sliding_window", 4096, limits::CONTEXT)?,
            context_length: meta_usize_or(g, ARCH, "context_length", 32768, limits::CONTEXT)?,
            vocab_size: super::vocab_size(g)?,
        })
    }

    pub fn is_sliding(&self, layer: usize) -> bool {
        layer % SLIDING_PATTERN < SLIDING_PATTERN - 1
    }

    /// QK-norm before RoPE on every layer; sliding layers use the local RoPE base and the window.
    fn attention(&self, w: &Weights, p: &str, layer: usize) -> Result<SelfAttention> {
        let sliding = self.is_sliding(layer);
        let theta = if sliding { LOCAL_ROPE_THETA } else { self.rope_theta };
        let heads = Heads { hidden: self.hidden_size, n_heads: self.n_heads, n_kv_heads: self.n_kv_heads, head_dim: self.head_dim };
        let rope = Rope::new(self.head_dim, theta, None, RopeStyle::Neox, w.device)?;
        SelfAttention::new(w, p, heads, Some(self.rms_eps), Some(rope), sliding.then_some(self.sliding_window))
    }
}

pub struct DecoderLayer {
    attn_norm: RmsNorm,
    attn: SelfAttention,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    mlp: GatedMlp,
    post_ffn_norm: RmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &Config, w: &Weights, layer: usize) -> Result<Self> {
        let p = format!("blk.{layer}");
        let h = cfg.hidden_size;
        Ok(Self {
            attn_norm: w.rms_norm(&format!("{p}.attn_norm.weight"), h, cfg.rms_eps)?,
            attn: cfg.attention(w, &p, layer)?,
            post_attn_norm: w.rms_norm(&format!("{p}.post_attention_norm.weight"), h, cfg.rms_eps)?,
            ffn_norm: w.rms_norm(&format!("{p}.ffn_norm.weight"), h, cfg.rms_eps)?,
            mlp: GatedMlp::new(w, &p, cfg.hidden_size, cfg.intermediate_size, Activation::GeluTanh { ggml_rounding: w.opts.ggml_rounding })?,
            post_ffn_norm: w.rms_norm(&format!("{p}.post_ffw_norm.weight"), h, cfg.rms_eps)?,
        })
    }
}

impl Layer for DecoderLayer {
    fn forward(&mut self, x: &Tensor, segs: &[Segment]) -> Result<Tensor> {
        let a = self.attn.forward(&self.attn_norm.forward(x)?, segs)?;
        let x = (x + self.post_attn_norm.forward(&a)?)?;
        let m = self.mlp.forward_segments(&self.ffn_norm.forward(&x)?, segs)?;
        Ok((x + self.post_ffn_norm.forward(&m)?)?)
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
    let cfg = Config::from_checkpoint(g)?;
    let w = Weights::new(g, device, opts);
    let layers = (0..cfg.n_layers)
        .map(|i| DecoderLayer::new(&cfg, &w, i))
        .collect::<Result<Vec<_>>>()?;
    let info = ModelInfo {
        architecture: ARCH.into(),
        n_layers: cfg.n_layers,
        hidden_size: cfg.hidden_size,
        vocab_size: cfg.vocab_size,
        context_length: cfg.context_length,
        // Sliding layers keep a window-sized cache: only global layers grow per token.
        kv_bytes_per_token: (0..cfg.n_layers).filter(|&i| !cfg.is_sliding(i)).count()
            * 2
            * cfg.n_kv_heads
            * cfg.head_dim
            * opts.kv_dtype.size_in_bytes(),
        kv_windows: (0..cfg.n_layers)
            .filter(|&i| cfg.is_sliding(i))
            .map(|_| (cfg.sliding_window, 2 * cfg.n_kv_heads * cfg.head_dim * opts.kv_dtype.size_in_bytes()))
            .collect(),
    };
    Decoder::new(&w, layers, cfg.rms_eps, Some((cfg.hidden_size as f64).sqrt()), info)
}
