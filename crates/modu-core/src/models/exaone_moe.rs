//! K-EXAONE (HF `exaone_moe`, GGUF arch `exaone-moe`), spec §2.3.
//!
//! Attention is EXAONE 4's (QK-norm before RoPE, NoPE on global layers of a hybrid model, window
//! on sliding layers), but the block is **pre-norm**. The first `leading_dense_block_count`
//! layers have a dense SwiGLU MLP; the rest route each token to `top_k` experts chosen by a
//! sigmoid router whose correction bias only steers the choice, plus an always-on shared expert.

use candle_core::{DType, Device, Tensor};

use super::decoder::{Decoder, Layer, Segment};
use super::exaone4;
use super::layers::{Activation, GatedMlp, LoadOptions, RmsNorm, SelfAttention, Weights};
use super::{limits, meta_f32_or, meta_usize, meta_usize_or, ModelInfo};
use crate::error::{Error, Result};
use crate::formats::checkpoint::Checkpoint;

const ARCH: &str = "exaone-moe";

#[derive(Debug, Clone)]
pub struct Config {
    /// Everything the attention and the dense layers need (same keys as exaone4).
    pub base: exaone4::Config,
    pub n_experts: usize,
    pub top_k: usize,
    pub expert_ffn: usize,
    /// Width of the shared expert (0: none).
    pub shared_ffn: usize,
    pub n_group: usize,
    pub topk_group: usize,
    pub norm_topk: bool,
    pub routed_scale: f32,
    pub n_dense: usize,
}

impl Config {
    pub fn from_checkpoint(g: &dyn Checkpoint, device: &Device) -> Result<Self> {
        let base = exaone4::Config::read(g, ARCH, device)?;
        let n_experts = meta_usize(g, ARCH, "expert_count", 1 << 16)?;
        let top_k = meta_usize(g, ARCH, "expert_used_count", n_experts)?;
        let expert_ffn = meta_usize(g, ARCH, "expert_feed_forward_length", limits::FFN)?;
        let n_shared = g.get_usize_opt(&format!("{ARCH}.expert_shared_count"))?.unwrap_or(0);
        let shared_ffn = match g.get_usize_opt(&format!("{ARCH}.expert_shared_feed_forward_length"))? {
            Some(n) => n,
            None => expert_ffn * n_shared,
        };
        if shared_ffn > limits::FFN {
            return Err(Error::Metadata(format!("shared expert width {shared_ffn} is out of range")));
        }
        let n_group = meta_usize_or(g, ARCH, "expert_group_count", 1, n_experts)?;
        let topk_group = meta_usize_or(g, ARCH, "expert_group_used_count", n_group, n_group)?;
        if n_experts % n_group != 0 || top_k > topk_group * (n_experts / n_group) {
            return Err(Error::Metadata(format!(
                "{n_experts} experts in {n_group} groups cannot give {top_k} experts from {topk_group} groups"
            )));
        }
        if let Some(f) = g.get_usize_opt(&format!("{ARCH}.expert_gating_func"))? {
            if f != 2 {
                return Err(Error::Metadata(format!("{ARCH}.expert_gating_func = {f}: only sigmoid (2) is supported")));
            }
        }
        let n_dense = g.get_usize_opt(&format!("{ARCH}.leading_dense_block_count"))?.unwrap_or(1).min(base.n_layers);
        Ok(Self {
            base,
            n_experts,
            top_k,
            expert_ffn,
            shared_ffn,
            n_group,
            topk_group,
            norm_topk: g.get_bool_opt(&format!("{ARCH}.expert_weights_norm"))?.unwrap_or(true),
            routed_scale: meta_f32_or(g, ARCH, "expert_weights_scale", 1.0)?,
            n_dense,
        })
    }
}

/// The sigmoid router with selection-only correction bias (DeepSeek-V3's "noaux_tc").
#[derive(Debug, Clone)]
pub struct Router {
    /// [E, H] in f32: routing runs in f32 whatever the weights' storage.
    weight: Tensor,
    bias: Vec<f32>,
    top_k: usize,
    n_group: usize,
    topk_group: usize,
    norm: bool,
    scale: f32,
}

impl Router {
    /// For each token, the chosen experts and their weights.
    pub fn route(&self, x: &Tensor) -> Result<Vec<Vec<(usize, f32)>>> {
        let logits: Vec<Vec<f32>> = x.to_dtype(DType::F32)?.matmul(&self.weight.t()?)?.to_vec2()?;
        Ok(logits.iter().map(|l| self.route_one(l)).collect())
    }

    fn route_one(&self, logits: &[f32]) -> Vec<(usize, f32)> {
        let e = logits.len();
        let scores: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
        let mut choice: Vec<f32> = scores.iter().zip(&self.bias).map(|(s, b)| s + b).collect();
        if self.n_group > 1 {
            // Keep the topk_group groups whose two best biased scores sum highest.
            let per = e / self.n_group;
            let mut groups: Vec<(usize, f32)> = (0..self.n_group)
                .map(|g| {
                    let mut v: Vec<f32> = choice[g * per..(g + 1) * per].to_vec();
                    v.sort_by(|a, b| b.total_cmp(a));
                    (g, v.iter().take(2).sum())
                })
                .collect();
            groups.sort_by(|a, b| b.1.total_cmp(&a.1));
            let keep: Vec<usize> = groups.iter().take(self.topk_group).map(|g| g.0).collect();
            for (i, c) in choice.iter_mut().enumerate() {
                if !keep.contains(&(i / per)) {
                    *c = 0.0;
                }
            }
        }
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| choice[b].total_cmp(&choice[a]));
        order.truncate(self.top_k);
        // Weights are the unbiased scores.
        let mut w: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
        if self.norm {
            let sum: f32 = w.iter().sum::<f32>() + 1e-20;
            w.iter_mut().for_each(|x| *x /= sum);
        }
        order.into_iter().zip(w).map(|(i, w)| (i, w * self.scale)).collect()
    }
}

pub struct MoeMlp {
    router: Router,
    experts: Vec<GatedMlp>,
    shared: Option<GatedMlp>,
}

impl MoeMlp {
    fn new(cfg: &Config, w: &Weights, p: &str) -> Result<Self> {
        let (h, e, f) = (cfg.base.hidden_size, cfg.n_experts, cfg.expert_ffn);
        let bias = if w.has(&format!("{p}.exp_probs_b.bias")) {
            w.vector(&format!("{p}.exp_probs_b.bias"), e)?.to_vec1::<f32>()?
        } else {
            vec![0.0; e]
        };
        let router = Router {
            weight: w.matrix_f32(&format!("{p}.ffn_gate_inp.weight"), e, h)?,
            bias,
            top_k: cfg.top_k,
            n_group: cfg.n_group,
            topk_group: cfg.topk_group,
            norm: cfg.norm_topk,
            scale: cfg.routed_scale,
        };
        let gates = w.linears(&format!("{p}.ffn_gate_exps.weight"), e, f, h)?;
        let ups = w.linears(&format!("{p}.ffn_up_exps.weight"), e, f, h)?;
        let downs = w.linears(&format!("{p}.ffn_down_exps.weight"), e, h, f)?;
        let experts = gates
            .into_iter()
            .zip(ups)
            .zip(downs)
            .map(|((g, u), d)| GatedMlp::from_linears(g, u, d, Activation::Silu))
            .collect();
        let shared = if cfg.shared_ffn > 0 {
            Some(GatedMlp::named(w, p, "_shexp", h, cfg.shared_ffn, Activation::Silu)?)
        } else {
            None
        };
        Ok(Self { router, experts, shared })
    }

    /// x: [1, T, H]. Tokens are grouped by expert so each expert runs once per call.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let xs = x.reshape((b * t, h))?;
        let routes = self.router.route(&xs)?;
        let mut per_expert: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); self.experts.len()];
        for (tok, r) in routes.iter().enumerate() {
            for &(e, w) in r {
                per_expert[e].0.push(tok as u32);
                per_expert[e].1.push(w);
            }
        }
        let mut out = xs.zeros_like()?;
        for (e, (toks, ws)) in per_expert.into_iter().enumerate() {
            if toks.is_empty() {
                continue;
            }
            let n = toks.len();
            let idx = Tensor::from_vec(toks, n, xs.device())?;
            let rows = xs.index_select(&idx, 0)?;
            let y = self.experts[e].forward(&rows)?;
            let w = Tensor::from_vec(ws, (n, 1), xs.device())?;
            out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
        }
        if let Some(s) = &self.shared {
            out = (out + s.forward(&xs)?)?;
        }
        Ok(out.reshape((b, t, h))?)
    }
}

pub enum Mlp {
    Dense(GatedMlp),
    Moe(MoeMlp),
}

pub struct DecoderLayer {
    attn_norm: RmsNorm,
    attn: SelfAttention,
    ffn_norm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(cfg: &Config, w: &Weights, layer: usize) -> Result<Self> {
        let p = format!("blk.{layer}");
        let b = &cfg.base;
        let mlp = if layer < cfg.n_dense {
            Mlp::Dense(GatedMlp::new(w, &p, b.hidden_size, b.intermediate_size, Activation::Silu)?)
        } else {
            Mlp::Moe(MoeMlp::new(cfg, w, &p)?)
        };
        Ok(Self {
            attn_norm: w.rms_norm(&format!("{p}.attn_norm.weight"), b.hidden_size, b.rms_eps)?,
            attn: b.attention(w, &p, layer)?,
            ffn_norm: w.rms_norm(&format!("{p}.ffn_norm.weight"), b.hidden_size, b.rms_eps)?,
            mlp,
        })
    }
}

impl Layer for DecoderLayer {
    /// Pre-norm, unlike exaone4 (spec §0 trap 2).
    fn forward(&mut self, x: &Tensor, segs: &[Segment]) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.attn_norm.forward(x)?, segs)?)?;
        let h = self.ffn_norm.forward(&x)?;
        let m = match &self.mlp {
            Mlp::Dense(m) => m.forward_segments(&h, segs)?,
            Mlp::Moe(m) => m.forward(&h)?,
        };
        Ok((&x + m)?)
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
    let cfg = Config::from_checkpoint(g, device)?;
    let w = Weights::new(g, device, opts);
    let layers = (0..cfg.base.n_layers)
        .map(|i| DecoderLayer::new(&cfg, &w, i))
        .collect::<Result<Vec<_>>>()?;
    let b = &cfg.base;
    let info = ModelInfo {
        architecture: ARCH.into(),
        n_layers: b.n_layers,
        hidden_size: b.hidden_size,
        vocab_size: b.vocab_size,
        context_length: b.context_length,
        kv_bytes_per_token: b.kv_bytes_per_token(opts.kv_dtype),
        kv_windows: b.kv_windows(opts.kv_dtype),
    };
    Decoder::new(&w, layers, b.rms_eps, None, info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(bias: Vec<f32>, top_k: usize, n_group: usize, topk_group: usize) -> Router {
        Router {
            weight: Tensor::zeros((bias.len(), 1), DType::F32, &Device::Cpu).unwrap(),
            bias,
            top_k,
            n_group,
            topk_group,
            norm: true,
            scale: 2.5,
        }
    }

    #[test]
    fn bias_steers_the_choice_but_not_the_weights() {
        // Scores sigmoid(0)=0.5, sigmoid(1)=0.73, sigmoid(2)=0.88, sigmoid(-1)=0.27.
        let logits = [0.0f32, 1.0, 2.0, -1.0];
        let r = router(vec![0.0, 0.0, 0.0, 2.0], 2, 1, 1);
        let got = r.route_one(&logits);
        let ids: Vec<usize> = got.iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![3, 2], "bias must bring expert 3 in");
        let s = |l: f32| 1.0 / (1.0 + (-l).exp());
        let (w3, w2) = (s(-1.0), s(2.0));
        assert!((got[0].1 - 2.5 * w3 / (w3 + w2)).abs() < 1e-6);
        assert!((got[1].1 - 2.5 * w2 / (w3 + w2)).abs() < 1e-6);
    }

    #[test]
    fn group_limit_drops_weak_groups() {
        // Groups {0,1} and {2,3}: the second group sums higher and is the only one kept.
        let logits = [3.0f32, -5.0, 2.0, 2.5];
        let got = router(vec![0.0; 4], 2, 2, 1).route_one(&logits);
        let mut ids: Vec<usize> = got.iter().map(|x| x.0).collect();
        ids.sort();
        assert_eq!(ids, vec![2, 3]);
    }
}
