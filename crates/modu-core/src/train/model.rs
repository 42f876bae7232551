//! The forward pass used for fine-tuning: the same models as `models/`, written only with ops
//! that candle can differentiate. candle's fused `rms_norm`, `softmax_last_dim`, `rope` and
//! `QMatMul` have no backward pass and would drop gradients silently, so here RMSNorm, softmax,
//! RoPE and the projections are spelled out in elementary ops.
//!
//! The base weights are frozen f32 (dequantized from GGUF or read from safetensors). A frozen
//! projection is a custom op whose backward returns only the input's gradient: candle's matmul
//! would also compute the gradient of every frozen weight. Only the adapter's matrices are
//! variables. One sequence runs at a time, without a KV cache.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, D};

use super::lora::{Adapter, SplitMix};
use crate::error::{Error, Result};
use crate::formats::checkpoint::Checkpoint;
use crate::models::layers::{attention_mask, Rope, RopeStyle};
use crate::models::{exaone4, gemma3, llama};

/// Where a layer normalises (the three EXAONE and Gemma layouts, spec §0 trap 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// Llama, Qwen3, EXAONE 3.x: norm before attention and MLP.
    Pre,
    /// Gemma 3: norm before and after each (sandwich).
    Sandwich,
    /// EXAONE 4: norm only after each, before the residual add.
    Post,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Silu,
    GeluTanh,
}

/// What differs between the architectures, read from the same configs the inference models use.
#[derive(Debug, Clone)]
pub struct Spec {
    pub architecture: String,
    pub hidden: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f64,
    pub embed_scale: Option<f64>,
    pub placement: NormPlacement,
    pub act: Act,
    /// Per layer: RoPE inverse frequencies (None: no RoPE, EXAONE 4 global layers) and window.
    pub layers: Vec<(Option<Vec<f32>>, Option<usize>)>,
    pub context_length: usize,
}

/// A [`Spec`] from an inference config; the three configs name their sizes alike.
macro_rules! spec {
    ($c:expr, $arch:expr, $embed_scale:expr, $placement:expr, $act:expr, $layers:expr) => {
        Spec {
            architecture: $arch,
            hidden: $c.hidden_size,
            ffn: $c.intermediate_size,
            n_heads: $c.n_heads,
            n_kv_heads: $c.n_kv_heads,
            head_dim: $c.head_dim,
            vocab: $c.vocab_size,
            rms_eps: $c.rms_eps,
            embed_scale: $embed_scale,
            placement: $placement,
            act: $act,
            layers: $layers,
            context_length: $c.context_length,
        }
    };
}

impl Spec {
    pub fn from_checkpoint(g: &dyn Checkpoint, device: &Device) -> Result<Self> {
        let arch = g.architecture()?;
        let inv = |head_dim: usize, theta: f32, div: Option<&[f32]>| -> Result<Vec<f32>> {
            Ok(Rope::new(head_dim, theta, div, RopeStyle::Neox, device)?.inv_freq().to_vec())
        };
        match arch.as_str() {
            "gemma3" => {
                let c = gemma3::Config::from_checkpoint(g)?;
                let layers = (0..c.n_layers)
                    .map(|i| {
                        let sliding = c.is_sliding(i);
                        let theta = if sliding { gemma3::LOCAL_ROPE_THETA } else { c.rope_theta };
                        Ok((Some(inv(c.head_dim, theta, None)?), sliding.then_some(c.sliding_window)))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(spec!(c, arch, Some((c.hidden_size as f64).sqrt()), NormPlacement::Sandwich, Act::GeluTanh, layers))
            }
            "exaone4" => {
                let c = exaone4::Config::from_checkpoint(g, device)?;
                let layers = (0..c.n_layers)
                    .map(|i| {
                        let rope = if c.uses_rope(i) { Some(inv(c.head_dim, c.rope_theta, c.rope_freq_divisors.as_deref())?) } else { None };
                        Ok((rope, c.window(i)))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(spec!(c, arch, None, NormPlacement::Post, Act::Silu, layers))
            }
            "exaone" | "qwen3" => {
                let mut c = llama::Config::from_checkpoint(g, &arch, RopeStyle::Neox, device)?;
                if arch == "exaone" && g.get("exaone.rope.freq_base").is_none() {
                    c.rope_theta = 500_000.0;
                }
                let rope = inv(c.head_dim, c.rope_theta, c.rope_freq_divisors.as_deref())?;
                Ok(spec!(c, arch, None, NormPlacement::Pre, Act::Silu, vec![(Some(rope), None); c.n_layers]))
            }
            other => Err(Error::Invalid(format!(
                "LoRA training supports {}; this model is '{other}'",
                super::lora::TRAINABLE_ARCHITECTURES.join(", ")
            ))),
        }
    }
}

/// `x W^T` with W frozen: the backward pass returns only the gradient of `x`.
/// Holds a handle on the weight (a cheap clone): candle keeps ops as `'static` in its graph.
struct Frozen(Tensor);

impl CustomOp1 for Frozen {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("frozen-linear: input must be contiguous".into()))?;
        let x = match storage {
            CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], layout.shape(), &Device::Cpu)?,
            _ => candle_core::bail!("frozen-linear: input must be f32"),
        };
        let y = x.matmul(&self.0.t()?)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.0)?))
    }
}

/// A projection: frozen weight [out, in], its GGUF name (the adapter's key).
struct Proj {
    name: String,
    w: Tensor,
}

impl Proj {
    fn load(g: &dyn Checkpoint, name: String, out: usize, inp: usize, device: &Device) -> Result<Self> {
        let w = dense(g, &name, &[out, inp], device)?;
        Ok(Self { name, w })
    }
}

fn dense(g: &dyn Checkpoint, name: &str, dims: &[usize], device: &Device) -> Result<Tensor> {
    match g.tensor_dims(name) {
        Some(d) if d == dims => {}
        Some(d) => return Err(Error::TensorShape { name: g.source_name(name), got: d.to_vec(), expected: dims.to_vec() }),
        None => return Err(Error::MissingTensor(g.source_name(name))),
    }
    Ok(g.tensor(name, device)?.dequantize(device)?.to_dtype(DType::F32)?.contiguous()?)
}

struct TrainLayer {
    attn_norm: Option<Tensor>,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Option<Tensor>,
    post_ffw_norm: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    gate: Proj,
    up: Proj,
    down: Proj,
    inv_freq: Option<Vec<f32>>,
    window: Option<usize>,
}

/// Dropout applied to the input of every LoRA branch while training (PEFT's `lora_dropout`).
pub struct Dropout<'a> {
    pub p: f64,
    pub rng: &'a mut SplitMix,
}

/// A frozen base model that runs with an optional adapter.
pub struct TrainModel {
    pub spec: Spec,
    embed: Tensor,
    output: Option<Tensor>,
    norm: Tensor,
    layers: Vec<TrainLayer>,
    device: Device,
}

impl TrainModel {
    pub fn from_checkpoint(g: &dyn Checkpoint, device: &Device) -> Result<Self> {
        let spec = Spec::from_checkpoint(g, device)?;
        let (h, f, hd) = (spec.hidden, spec.ffn, spec.head_dim);
        let (qd, kvd) = (spec.n_heads * hd, spec.n_kv_heads * hd);
        let opt = |name: &str, len: usize| -> Result<Option<Tensor>> {
            if g.has_tensor(name) {
                Ok(Some(dense(g, name, &[len], device)?))
            } else {
                Ok(None)
            }
        };
        let need = |name: &str, len: usize| dense(g, name, &[len], device);
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (i, (inv_freq, window)) in spec.layers.iter().enumerate() {
            let p = format!("blk.{i}");
            let n = |s: &str| format!("{p}.{s}.weight");
            let (attn_norm, post_attn_norm, ffn_norm, post_ffw_norm) = match spec.placement {
                NormPlacement::Pre => (Some(need(&n("attn_norm"), h)?), None, Some(need(&n("ffn_norm"), h)?), None),
                NormPlacement::Sandwich => (
                    Some(need(&n("attn_norm"), h)?),
                    Some(need(&n("post_attention_norm"), h)?),
                    Some(need(&n("ffn_norm"), h)?),
                    Some(need(&n("post_ffw_norm"), h)?),
                ),
                NormPlacement::Post => (None, Some(need(&n("post_attention_norm"), h)?), None, Some(need(&n("post_ffw_norm"), h)?)),
            };
            layers.push(TrainLayer {
                attn_norm,
                post_attn_norm,
                ffn_norm,
                post_ffw_norm,
                q_norm: opt(&n("attn_q_norm"), hd)?,
                k_norm: opt(&n("attn_k_norm"), hd)?,
                q: Proj::load(g, n("attn_q"), qd, h, device)?,
                k: Proj::load(g, n("attn_k"), kvd, h, device)?,
                v: Proj::load(g, n("attn_v"), kvd, h, device)?,
                o: Proj::load(g, n("attn_output"), h, qd, device)?,
                gate: Proj::load(g, n("ffn_gate"), f, h, device)?,
                up: Proj::load(g, n("ffn_up"), f, h, device)?,
                down: Proj::load(g, n("ffn_down"), h, f, device)?,
                inv_freq: inv_freq.clone(),
                window: *window,
            });
        }
        let embed = dense(g, "token_embd.weight", &[spec.vocab, h], device)?;
        let output = if g.has_tensor("output.weight") { Some(dense(g, "output.weight", &[spec.vocab, h], device)?) } else { None };
        let norm = need("output_norm.weight", h)?;
        Ok(Self { spec, embed, output, norm, layers, device: device.clone() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn project(&self, x: &Tensor, p: &Proj, adapter: Option<&Adapter>, dropout: &mut Option<Dropout>) -> Result<Tensor> {
        let x = &x.contiguous()?;
        let y = x.apply_op1(Frozen(p.w.clone()))?;
        let Some(pair) = adapter.and_then(|a| a.pairs.get(&p.name)) else { return Ok(y) };
        let xin = match dropout {
            Some(d) if d.p > 0.0 => {
                let keep = 1.0 - d.p;
                let mask: Vec<f32> = (0..x.elem_count()).map(|_| if d.rng.unit() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
                (x * Tensor::from_vec(mask, x.shape(), x.device())?)?
            }
            _ => x.clone(),
        };
        Ok((y + pair.delta(&xin)?)?)
    }

    /// Final hidden states [seq, hidden] after the output norm.
    pub fn hidden(&self, ids: &[u32], adapter: Option<&Adapter>, mut dropout: Option<Dropout>) -> Result<Tensor> {
        let s = &self.spec;
        if ids.is_empty() {
            return Err(Error::Invalid("a training example has no tokens".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= s.vocab) {
            return Err(Error::Invalid(format!("token id {bad} is outside the vocabulary ({})", s.vocab)));
        }
        let t = ids.len();
        let idx = Tensor::new(ids, &self.device)?;
        let mut x = self.embed.index_select(&idx, 0)?;
        if let Some(sc) = s.embed_scale {
            x = (x * sc)?;
        }
        let (hd, nh, nkv) = (s.head_dim, s.n_heads, s.n_kv_heads);
        let scale = 1.0 / (hd as f64).sqrt();
        for l in &self.layers {
            let a_in = match &l.attn_norm {
                Some(w) => rms_norm(&x, w, s.rms_eps)?,
                None => x.clone(),
            };
            let heads = |y: Tensor, n: usize| -> Result<Tensor> { Ok(y.reshape((t, n, hd))?.transpose(0, 1)?.contiguous()?) };
            let mut q = heads(self.project(&a_in, &l.q, adapter, &mut dropout)?, nh)?;
            let mut k = heads(self.project(&a_in, &l.k, adapter, &mut dropout)?, nkv)?;
            let v = heads(self.project(&a_in, &l.v, adapter, &mut dropout)?, nkv)?;
            if let Some(w) = &l.q_norm {
                q = rms_norm(&q, w, s.rms_eps)?;
            }
            if let Some(w) = &l.k_norm {
                k = rms_norm(&k, w, s.rms_eps)?;
            }
            if let Some(inv) = &l.inv_freq {
                let (cos, sin) = rope_tables(inv, t, &self.device)?;
                q = rope(&q, &cos, &sin)?;
                k = rope(&k, &cos, &sin)?;
            }
            let rep = nh / nkv;
            let expand = |y: Tensor| -> Result<Tensor> {
                if rep == 1 {
                    return Ok(y);
                }
                Ok(y.unsqueeze(1)?.broadcast_as((nkv, rep, t, hd))?.contiguous()?.reshape((nh, t, hd))?)
            };
            let (k, v) = (expand(k)?, expand(v)?);
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if let Some(mask) = attention_mask(t, 0, 0, t, l.window, &self.device)? {
                scores = scores.broadcast_add(&mask)?;
            }
            let probs = softmax(&scores)?;
            let o = probs.matmul(&v)?.transpose(0, 1)?.contiguous()?.reshape((t, nh * hd))?;
            let mut a = self.project(&o, &l.o, adapter, &mut dropout)?;
            if let Some(w) = &l.post_attn_norm {
                a = rms_norm(&a, w, s.rms_eps)?;
            }
            x = (x + a)?;
            let m_in = match &l.ffn_norm {
                Some(w) => rms_norm(&x, w, s.rms_eps)?,
                None => x.clone(),
            };
            let g = self.project(&m_in, &l.gate, adapter, &mut dropout)?;
            let g = match s.act {
                Act::Silu => g.silu()?,
                Act::GeluTanh => g.gelu()?,
            };
            let u = self.project(&m_in, &l.up, adapter, &mut dropout)?;
            let mut m = self.project(&(g * u)?, &l.down, adapter, &mut dropout)?;
            if let Some(w) = &l.post_ffw_norm {
                m = rms_norm(&m, w, s.rms_eps)?;
            }
            x = (x + m)?;
        }
        rms_norm(&x, &self.norm, s.rms_eps)
    }

    fn head(&self, h: &Tensor) -> Result<Tensor> {
        let w = self.output.as_ref().unwrap_or(&self.embed);
        Ok(h.contiguous()?.apply_op1(Frozen(w.clone()))?)
    }

    /// Logits [seq, vocab] at every position.
    pub fn logits(&self, ids: &[u32], adapter: Option<&Adapter>) -> Result<Tensor> {
        self.head(&self.hidden(ids, adapter, None)?)
    }

    /// Summed negative log-likelihood of `targets` ((position, next token) pairs: the logits at
    /// `position` predict `token`). Only the target positions go through the output head.
    pub fn nll_sum(&self, ids: &[u32], targets: &[(usize, u32)], adapter: Option<&Adapter>, dropout: Option<Dropout>) -> Result<Tensor> {
        if targets.is_empty() {
            return Err(Error::Invalid("an example has no tokens to learn".into()));
        }
        let h = self.hidden(ids, adapter, dropout)?;
        let pos: Vec<u32> = targets.iter().map(|(p, _)| *p as u32).collect();
        let tok: Vec<u32> = targets.iter().map(|(_, t)| *t).collect();
        let rows = h.index_select(&Tensor::new(pos.as_slice(), &self.device)?, 0)?;
        let logits = self.head(&rows)?;
        let logp = log_softmax(&logits)?;
        let picked = logp.gather(&Tensor::new(tok.as_slice(), &self.device)?.unsqueeze(1)?, 1)?;
        Ok((picked.sum_all()? * -1.0)?)
    }
}

/// `w * x / sqrt(mean(x^2) + eps)` over the last dimension, differentiable.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
}

/// Softmax over the last dimension; the row maximum is a constant (it does not change the value).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// cos and sin [seq, head_dim] for NeoX pairs (i, i + d/2), angles in f64 as the inference path.
fn rope_tables(inv_freq: &[f32], seq: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = inv_freq.len();
    let (mut c, mut s) = (Vec::with_capacity(seq * half * 2), Vec::with_capacity(seq * half * 2));
    for p in 0..seq {
        let row: Vec<f64> = inv_freq.iter().map(|&f| p as f64 * f as f64).collect();
        for _ in 0..2 {
            c.extend(row.iter().map(|a| a.cos() as f32));
            s.extend(row.iter().map(|a| a.sin() as f32));
        }
    }
    Ok((Tensor::from_vec(c, (seq, half * 2), device)?, Tensor::from_vec(s, (seq, half * 2), device)?))
}

/// `x cos + rotate_half(x) sin` for x [heads, seq, head_dim].
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?)?)
}
