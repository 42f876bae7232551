//! Building blocks shared by the architectures: quantized linear layers, RMSNorm, rotary
//! embeddings, masked attention. Each architecture file composes these in its own order.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

use crate::engine::kv_cache::KvCache;
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;

/// How weights and caches are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Dequantize every weight to f32: exact reference arithmetic for tests, at 4-8x the memory.
    pub dequantize: bool,
    /// KV cache element type: F16 as llama.cpp, F32 for exact comparisons.
    pub kv_dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dequantize: false, kv_dtype: DType::F16 }
    }
}

impl LoadOptions {
    /// f32 weights and f32 cache.
    pub fn exact() -> Self {
        Self { dequantize: true, kv_dtype: DType::F32 }
    }

    pub fn kv_cache(&self) -> KvCache {
        KvCache::new(self.kv_dtype)
    }
}

/// Loads GGUF tensors by name and checks their shapes against what the config implies.
pub struct GgufWeights<'a> {
    pub gguf: &'a GgufFile,
    pub device: &'a Device,
    pub opts: LoadOptions,
}

impl<'a> GgufWeights<'a> {
    pub fn new(gguf: &'a GgufFile, device: &'a Device, opts: LoadOptions) -> Self {
        Self { gguf, device, opts }
    }

    fn matmul(&self, q: std::sync::Arc<candle_core::quantized::QTensor>) -> Result<QMatMul> {
        Ok(if self.opts.dequantize {
            QMatMul::Tensor(q.dequantize(self.device)?)
        } else {
            QMatMul::from_arc(q)?
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.gguf.has_tensor(name)
    }

    fn check_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        let got = self
            .gguf
            .tensor_dims(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        if got != expected {
            return Err(Error::TensorShape {
                name: name.to_string(),
                got: got.to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok(())
    }

    /// A weight matrix [out, in] kept quantized.
    pub fn linear(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
        self.check_shape(name, &[out_dim, in_dim])?;
        let q = std::sync::Arc::new(self.gguf.tensor_for_matmul(name, self.device)?);
        Ok(Linear { w: self.matmul(q)?, out_dim })
    }

    /// A vector dequantized to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        self.check_shape(name, &[len])?;
        Ok(self.gguf.tensor(name, self.device)?.dequantize(self.device)?)
    }

    pub fn rms_norm(&self, name: &str, len: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: self.vector(name, len)?, eps })
    }

    pub fn embedding(&self, name: &str, vocab: usize, hidden: usize) -> Result<Embedding> {
        self.check_shape(name, &[vocab, hidden])?;
        let q = std::sync::Arc::new(self.gguf.tensor(name, self.device)?);
        Ok(Embedding { table: q, hidden })
    }
}

/// A bias-free linear layer over a (usually quantized) weight.
#[derive(Debug, Clone)]
pub struct Linear {
    w: QMatMul,
    out_dim: usize,
}

impl Linear {
    pub fn from_qmatmul(w: QMatMul, out_dim: usize) -> Self {
        Self { w, out_dim }
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.w.forward(x)?)
    }
}

/// Token embedding table, kept quantized; rows are dequantized on lookup.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: std::sync::Arc<candle_core::quantized::QTensor>,
    hidden: usize,
}

impl Embedding {
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.table.embedding(ids)?)
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The same weights as an output projection (tied embeddings).
    pub fn as_linear(&self, w: &GgufWeights) -> Result<Linear> {
        let vocab = self.table.shape().dims()[0];
        Ok(Linear { w: w.matmul(self.table.clone())?, out_dim: vocab })
    }
}

/// RMSNorm in f32: `w * x / sqrt(mean(x^2) + eps)` over the last dimension.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        Ok(candle_nn::ops::rms_norm(&x, &self.weight, self.eps as f32)?)
    }
}

/// How rotary pairs are laid out in a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (i, i + d/2): rotate-half, "NeoX" (Gemma, Qwen, EXAONE).
    Neox,
    /// Pairs (2i, 2i + 1): GGUF llama after the converter's Q/K permutation.
    Interleaved,
}

/// Rotary position embedding with per-frequency divisors (llama.cpp's `rope_freqs` tensor, which
/// carries llama3 scaling) folded into the inverse frequencies.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    style: RopeStyle,
    device: Device,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32, freq_divisors: Option<&[f32]>, style: RopeStyle, device: &Device) -> Result<Self> {
        let half = head_dim / 2;
        if let Some(d) = freq_divisors {
            if d.len() != half {
                return Err(Error::Metadata(format!(
                    "rope_freqs has {} entries, expected head_dim/2 = {half}",
                    d.len()
                )));
            }
            if d.iter().any(|v| !v.is_finite() || *v <= 0.0) {
                return Err(Error::Metadata("rope_freqs holds a zero, negative or non-finite factor".into()));
            }
        }
        let inv_freq = (0..half)
            .map(|i| {
                let f = 1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64);
                let div = freq_divisors.map(|d| d[i] as f64).unwrap_or(1.0);
                (f / div) as f32
            })
            .collect();
        Ok(Self { inv_freq, style, device: device.clone() })
    }

    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Rotates `x` of shape [batch, heads, seq, head_dim] for positions offset..offset+seq.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for p in offset..offset + seq {
            for &f in &self.inv_freq {
                // Angles in f64: positions times frequencies lose digits in f32 at long contexts.
                let a = p as f64 * f as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (seq, half), &self.device)?;
        let sin = Tensor::from_vec(sin, (seq, half), &self.device)?;
        let x = x.contiguous()?;
        Ok(match self.style {
            RopeStyle::Neox => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
        })
    }
}

/// Additive attention mask [q_len, kv_len] for queries at positions offset.. attending keys at
/// positions 0..kv_len: causal, and with a window W a query at q sees only keys k with q - W < k.
pub fn attention_mask(q_len: usize, offset: usize, kv_len: usize, window: Option<usize>, device: &Device) -> Result<Option<Tensor>> {
    let needs_window = window.is_some_and(|w| offset + q_len > w);
    if q_len == 1 && !needs_window {
        return Ok(None);
    }
    let mut m = vec![0f32; q_len * kv_len];
    for i in 0..q_len {
        let q = offset + i;
        for k in 0..kv_len {
            let masked = k > q || window.is_some_and(|w| q >= w && k <= q - w);
            if masked {
                m[i * kv_len + k] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Some(Tensor::from_vec(m, (q_len, kv_len), device)?))
}

/// Scaled dot-product attention with grouped KV heads, without copying K/V per query head.
/// q: [1, n_head, q_len, hd]; k, v: [1, n_kv, kv_len, hd]; returns [1, q_len, n_head * hd].
/// `kv_dtype` is the cache's element type: Q is rounded to it, as llama.cpp's dot product with an
/// f16 cache does. Gemma's activations are large enough that this rounding decides near-ties.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64, kv_dtype: DType) -> Result<Tensor> {
    let q = &if kv_dtype == DType::F32 { q.clone() } else { q.to_dtype(kv_dtype)?.to_dtype(DType::F32)? };
    let (b, n_head, q_len, hd) = q.dims4()?;
    let n_kv = k.dim(1)?;
    let kv_len = k.dim(2)?;
    let n_rep = n_head / n_kv;
    // Group the query heads that share a KV head into one matrix.
    let q = q.reshape((b * n_kv, n_rep * q_len, hd))?;
    let k = k.reshape((b * n_kv, kv_len, hd))?;
    let v = v.reshape((b * n_kv, kv_len, hd))?;
    let att = (q.matmul(&k.t()?)? * scale)?;
    let att = match mask {
        Some(m) => {
            let att = att.reshape((b * n_kv, n_rep, q_len, kv_len))?;
            att.broadcast_add(m)?.reshape((b * n_kv, n_rep * q_len, kv_len))?
        }
        None => att,
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    let out = att.matmul(&v)?; // [b*n_kv, n_rep*q_len, hd]
    let out = out
        .reshape((b, n_head, q_len, hd))?
        .transpose(1, 2)?
        .reshape((b, q_len, n_head * hd))?;
    Ok(out)
}

/// Splits [1, seq, heads*hd] into [1, heads, seq, hd].
pub fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (b, seq, _) = x.dims3()?;
    Ok(x.reshape((b, seq, heads, head_dim))?.transpose(1, 2)?.contiguous()?)
}

/// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu()?)
}

pub fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::silu(x)?)
}

/// Keeps only the last position of [1, seq, hidden].
pub fn last_position(x: &Tensor) -> Result<Tensor> {
    let seq = x.dim(1)?;
    Ok(x.narrow(1, seq - 1, 1)?)
}

