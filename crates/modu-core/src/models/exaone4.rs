//! EXAONE 4.0 and the EXAONE 4.5 text tower (GGUF arch `exaone4`), spec §2.2.
//!
//! The three traps of the spec (§0), each marked where it is handled:
//! 1. NoPE on global layers of a hybrid model; RoPE on every layer when there is no window.
//! 2. Post-norm: no input norm; RMSNorm on the attention and MLP outputs before the residual add.
//! 3. Layer types from the per-layer pattern, never from the layer count; NextN/MTP layers counted
//!    in `block_count` are excluded.

use candle_core::{Device, Tensor};
use candle_core::quantized::gguf_file::Value;

use super::layers::{Activation, GatedMlp, Weights, Heads, LoadOptions, RmsNorm, Rope, RopeStyle, SelfAttention};
use super::decoder::{Decoder, Layer, Segment};
use super::{limits, meta_f32_or, meta_usize, meta_usize_or, ModelInfo};
use crate::error::{Error, Result};
use crate::formats::checkpoint::Checkpoint;

const ARCH: &str = "exaone4";

#[derive(Debug, Clone)]
pub struct Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    /// Decoder layers that run, MTP layers excluded.
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f32,
    pub rope_freq_divisors: Option<Vec<f32>>,
    pub sliding_window: Option<usize>,
    /// One entry per layer: true = sliding-window attention.
    pub sliding_layers: Vec<bool>,
    /// One entry per layer: true = RoPE on Q and K (trap 1, see [`Config::uses_rope`]).
    pub rope_layers: Vec<bool>,
    pub context_length: usize,
    pub vocab_size: usize,
}

impl Config {
    pub fn from_checkpoint(g: &dyn Checkpoint, device: &Device) -> Result<Self> {
        Self::read(g, ARCH, device)
    }

    /// Reads the `{arch}.*` keys this attention shares with `exaone-moe`.
    pub fn read(g: &dyn Checkpoint, arch: &str, device: &Device) -> Result<Self> {
        let hidden_size = meta_usize(g, arch, "embedding_length", limits::HIDDEN)?;
        let n_heads = meta_usize(g, arch, "attention.head_count", limits::HEADS)?;
        let n_kv_heads = meta_usize_or(g, arch, "attention.head_count_kv", n_heads, n_heads)?;
        if n_heads % n_kv_heads != 0 {
            return Err(Error::Metadata(format!("{n_heads} heads are not a multiple of {n_kv_heads} KV heads")));
        }
        let head_dim = meta_usize_or(g, arch, "attention.key_length", hidden_size / n_heads, limits::HEAD_DIM)?;
        let block_count = meta_usize(g, arch, "block_count", limits::LAYERS)?;
        // Trap 3: NextN layers sit at the end of block_count and never run here.
        let nextn = g.get_usize_opt(&format!("{arch}.nextn_predict_layers"))?.unwrap_or(0);
        if nextn >= block_count {
            return Err(Error::Metadata(format!("nextn_predict_layers {nextn} >= block_count {block_count}")));
        }
        let n_layers = block_count - nextn;
        let sliding_window = g.get_usize_opt(&format!("{arch}.attention.sliding_window"))?.filter(|w| *w > 0);
        let sliding_layers = match (sliding_window, g.get_array(&format!("{arch}.attention.sliding_window_pattern"))?) {
            (None, _) => vec![false; n_layers],
            (Some(_), Some(pattern)) => {
                if pattern.len() < n_layers {
                    return Err(Error::Metadata(format!(
                        "sliding_window_pattern has {} entries for {n_layers} layers",
                        pattern.len()
                    )));
                }
                pattern[..n_layers]
                    .iter()
                    .map(|v| match v {
                        Value::Bool(b) => Ok(*b),
                        _ => Err(Error::Metadata("sliding_window_pattern must be an array of bool".into())),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            // A window without a pattern: the published hybrid layout, three sliding to one global.
            (Some(_), None) => (0..n_layers).map(|i| (i + 1) % 4 != 0).collect(),
        };
        let rope_freq_divisors = if g.has_tensor("rope_freqs.weight") {
            Some(Weights::new(g, device, LoadOptions::default()).vector("rope_freqs.weight", head_dim / 2)?.to_vec1::<f32>()?)
        } else {
            None
        };
        // Trap 1: RoPE if no window is configured at all, or on sliding layers only.
        let rope_layers = (0..n_layers).map(|i| sliding_window.is_none() || sliding_layers[i]).collect();
        Ok(Self {
            rope_layers,
            hidden_size,
            intermediate_size: meta_usize(g, arch, "feed_forward_length", limits::FFN)?,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps: meta_f32_or(g, arch, "attention.layer_norm_rms_epsilon", 1e-5)? as f64,
            rope_theta: meta_f32_or(g, arch, "rope.freq_base", 1_000_000.0)?,
            rope_freq_divisors,
            sliding_window,
            sliding_layers,
            context_length: meta_usize_or(g, arch, "context_length", 65536, limits::CONTEXT)?,
            vocab_size: super::vocab_size(g)?,
        })
    }

    /// KV bytes one more token adds: sliding layers keep a window-sized cache, so only global
    /// layers grow.
    pub fn kv_bytes_per_token(&self, kv_dtype: candle_core::DType) -> usize {
        let growing = (0..self.n_layers).filter(|&i| self.window(i).is_none()).count();
        growing * 2 * self.n_kv_heads * self.head_dim * kv_dtype.size_in_bytes()
    }

    /// (window, KV bytes per token) of each sliding layer.
    pub fn kv_windows(&self, kv_dtype: candle_core::DType) -> Vec<(usize, usize)> {
        let per_token = 2 * self.n_kv_heads * self.head_dim * kv_dtype.size_in_bytes();
        (0..self.n_layers).filter_map(|i| self.window(i)).map(|w| (w, per_token)).collect()
    }

    /// The attention window of a layer: the configured one on sliding layers, none on global ones.
    pub fn window(&self, layer: usize) -> Option<usize> {
        if self.sliding_layers[layer] {
            self.sliding_window
        } else {
            None
        }
    }

    pub fn uses_rope(&self, layer: usize) -> bool {
        self.rope_layers[layer]
    }

    /// QK-norm before RoPE; RoPE per trap 1; the window on sliding layers only.
    pub fn attention(&self, w: &Weights, p: &str, layer: usize) -> Result<SelfAttention> {
        let heads = Heads { hidden: self.hidden_size, n_heads: self.n_heads, n_kv_heads: self.n_kv_heads, head_dim: self.head_dim };
        let rope = if self.uses_rope(layer) {
            Some(Rope::new(self.head_dim, self.rope_theta, self.rope_freq_divisors.as_deref(), RopeStyle::Neox, w.device)?)
        } else {
            None
        };
        SelfAttention::new(w, p, heads, Some(self.rms_eps), rope, self.window(layer))
    }
}

pub struct DecoderLayer {
    attn: SelfAttention,
    post_attn_norm: RmsNorm,
    mlp: GatedMlp,
    post_ffn_norm: RmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &Config, w: &Weights, layer: usize) -> Result<Self> {
        let p = format!("blk.{layer}");
        let h = cfg.hidden_size;
        Ok(Self {
            attn: cfg.attention(w, &p, layer)?,
            post_attn_norm: w.rms_norm(&format!("{p}.post_attention_norm.weight"), h, cfg.rms_eps)?,
            mlp: GatedMlp::new(w, &p, cfg.hidden_size, cfg.intermediate_size, Activation::Silu)?,
            post_ffn_norm: w.rms_norm(&format!("{p}.post_ffw_norm.weight"), h, cfg.rms_eps)?,
        })
    }
}

impl Layer for DecoderLayer {
    /// Trap 2: post-norm. The raw residual stream feeds attention and MLP.
    fn forward(&mut self, x: &Tensor, segs: &[Segment]) -> Result<Tensor> {
        let x = (x + self.post_attn_norm.forward(&self.attn.forward(x, segs)?)?)?;
        Ok((&x + self.post_ffn_norm.forward(&self.mlp.forward_segments(&x, segs)?)?)?)
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
    build(&Config::from_checkpoint(g, device)?, g, device, opts)
}

/// Builds the model of `cfg` from the weights of `g`.
pub fn build(cfg: &Config, g: &dyn Checkpoint, device: &Device, opts: LoadOptions) -> Result<Model> {
    let w = Weights::new(g, device, opts);
    let layers = (0..cfg.n_layers)
        .map(|i| DecoderLayer::new(cfg, &w, i))
        .collect::<Result<Vec<_>>>()?;
    let info = ModelInfo {
        architecture: ARCH.into(),
        n_layers: cfg.n_layers,
        hidden_size: cfg.hidden_size,
        vocab_size: cfg.vocab_size,
        context_length: cfg.context_length,
        kv_bytes_per_token: cfg.kv_bytes_per_token(opts.kv_dtype),
        kv_windows: cfg.kv_windows(opts.kv_dtype),
    };
    Decoder::new(&w, layers, cfg.rms_eps, None, info)
}
