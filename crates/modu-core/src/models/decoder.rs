//! The part every decoder-only model shares: embed, run the layers, final norm, output head.
//! Architectures differ inside their `DecoderLayer`s, which this drives through [`Layer`].

use candle_core::{Device, Tensor};

use super::layers::{self, Embedding, Weights, Linear, RmsNorm};
use super::{CausalLm, Logits, ModelInfo};
use crate::engine::kv_cache::KvCache;
use crate::error::Result;

pub trait Layer: Send {
    fn forward(&mut self, x: &Tensor, offset: usize) -> Result<Tensor>;
    fn cache(&self) -> &KvCache;
    fn cache_mut(&mut self) -> &mut KvCache;
}

pub struct Decoder<L: Layer> {
    embed: Embedding,
    /// Gemma multiplies embeddings by sqrt(hidden); others by 1.
    embed_scale: Option<f64>,
    layers: Vec<L>,
    norm: RmsNorm,
    lm_head: Linear,
    info: ModelInfo,
    device: Device,
}

impl<L: Layer> Decoder<L> {
    /// Loads `token_embd`, `output_norm` and `output` (tied to the embedding when absent).
    pub fn new(w: &Weights, layers: Vec<L>, rms_eps: f64, embed_scale: Option<f64>, info: ModelInfo) -> Result<Self> {
        let embed = w.embedding("token_embd.weight", info.vocab_size, info.hidden_size)?;
        let lm_head = if w.has("output.weight") {
            w.linear("output.weight", info.vocab_size, info.hidden_size)?
        } else {
            embed.as_linear(w)?
        };
        Ok(Self {
            embed,
            embed_scale,
            layers,
            norm: w.rms_norm("output_norm.weight", info.hidden_size, rms_eps)?,
            lm_head,
            info,
            device: w.device.clone(),
        })
    }
}

impl<L: Layer> CausalLm for Decoder<L> {
    fn forward(&mut self, ids: &[u32], offset: usize, logits: Logits) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(crate::Error::Invalid("forward pass over zero tokens".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.info.vocab_size) {
            return Err(crate::Error::Invalid(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.info.vocab_size
            )));
        }
        if offset != self.cached_len() {
            return Err(crate::Error::Invalid(format!(
                "forward at position {offset} but the KV cache holds {} positions",
                self.cached_len()
            )));
        }
        let ids_t = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let mut x = self.embed.forward(&ids_t)?;
        if let Some(s) = self.embed_scale {
            x = (x * s)?;
        }
        for layer in self.layers.iter_mut() {
            x = layer.forward(&x, offset)?;
        }
        let x = match logits {
            Logits::All => x,
            Logits::Last => layers::last_position(&x)?,
            Logits::From(start) => {
                let n = x.dim(1)?;
                if start >= n {
                    return Err(crate::Error::Invalid(format!("logits from position {start} of {n}")));
                }
                x.narrow(1, start, n - start)?
            }
        };
        Ok(self.lm_head.forward(&self.norm.forward(&x)?)?.squeeze(0)?)
    }

    fn truncate(&mut self, len: usize) -> usize {
        let kept = self.layers.iter_mut().map(|l| l.cache_mut().truncate(len)).min().unwrap_or(0);
        if kept < len {
            // A windowed layer could not keep `len`: every layer starts over together.
            self.layers.iter_mut().for_each(|l| l.cache_mut().clear());
            return 0;
        }
        kept
    }

    fn kv_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.cache().allocated_bytes()).sum()
    }

    fn cached_len(&self) -> usize {
        self.layers.first().map(|l| l.cache().len()).unwrap_or(0)
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
