//! The part every decoder-only model shares: embed, run the layers, final norm, output head.
//! Architectures differ inside their `DecoderLayer`s, which this drives through [`Layer`].

use candle_core::{Device, Tensor};

use super::layers::{self, Embedding, Linear, RmsNorm, SelfAttention, Weights};
use super::{BatchItem, CausalLm, Logits, ModelInfo};
use crate::error::Result;

/// Rows `start..start + len` of a forward pass belong to sequence slot `slot`, at positions
/// `offset..offset + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub slot: usize,
    pub start: usize,
    pub len: usize,
    pub offset: usize,
}

pub trait Layer: Send {
    fn forward(&mut self, x: &Tensor, segs: &[Segment]) -> Result<Tensor>;
    fn attention(&self) -> &SelfAttention;
    fn attention_mut(&mut self) -> &mut SelfAttention;
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

/// Rows per pass of a long single-sequence prompt on the CPU (see [`Decoder::run`]).
const UBATCH: usize = 128;

/// The stretches a prompt of `n` rows runs in: [`UBATCH`] rows each, the last one taking a
/// remainder too short for the prompt attention kernel, so that every row's attention runs the
/// same arithmetic as in one pass over the whole prompt (and as in a batch with others).
fn stretches(n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut count = n.div_ceil(UBATCH);
    if count > 1 && n % UBATCH != 0 && n % UBATCH < layers::PROMPT_ATTENTION_ROWS {
        count -= 1;
    }
    (0..count).map(move |i| i * UBATCH..if i + 1 == count { n } else { (i + 1) * UBATCH })
}

impl<L: Layer> Decoder<L> {
    /// Runs the rows of all segments through the model; returns the final hidden states
    /// [1, rows - from, hidden] of rows `from..` before the output norm, and `from`. Rows before
    /// `keep_from` are not needed: a prompt run in stretches drops the states of stretches that
    /// end before it (`from <= keep_from`), instead of holding and joining the whole prompt's.
    fn run(&mut self, ids: &[u32], segs: &[Segment], keep_from: usize) -> Result<(Tensor, usize)> {
        if ids.is_empty() {
            return Err(crate::Error::Invalid("forward pass over zero tokens".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.info.vocab_size) {
            return Err(crate::Error::Invalid(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.info.vocab_size
            )));
        }
        for seg in segs {
            let have = self.cached_len_slot(seg.slot);
            if seg.offset != have {
                return Err(crate::Error::Invalid(format!(
                    "forward at position {} but slot {}'s KV cache holds {have} positions",
                    seg.offset, seg.slot
                )));
            }
        }
        if let [seg] = segs {
            let parts: Vec<_> = if ids.len() > UBATCH { stretches(ids.len()).collect() } else { Vec::new() };
            if parts.len() > 1 && seg.start == 0 && seg.len == ids.len() && self.device.is_cpu() {
                // A long prompt of one sequence goes through the layers in stretches (each one
                // attends to the cache the previous ones filled): its activations then take the
                // memory of UBATCH rows, for a few more reads of the weights.
                let from = parts.iter().find(|r| r.end > keep_from).map_or(0, |r| r.start);
                let mut kept = Vec::new();
                for r in parts {
                    let s = Segment { slot: seg.slot, start: 0, len: r.len(), offset: seg.offset + r.start };
                    let (x, _) = self.run(&ids[r.clone()], &[s], 0)?;
                    if r.start >= from {
                        kept.push(x);
                    }
                }
                let x = if kept.len() == 1 { kept.remove(0) } else { Tensor::cat(&kept, 1)? };
                return Ok((x, from));
            }
        }
        let ids_t = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let mut x = self.embed.forward(&ids_t)?;
        if let Some(s) = self.embed_scale {
            x = (x * s)?;
        }
        for layer in self.layers.iter_mut() {
            x = layer.forward(&x, segs)?;
        }
        Ok((x, 0))
    }
}

impl<L: Layer> CausalLm for Decoder<L> {
    fn forward(&mut self, ids: &[u32], offset: usize, logits: Logits) -> Result<Tensor> {
        let seg = Segment { slot: 0, start: 0, len: ids.len(), offset };
        let n = ids.len();
        let keep_from = match logits {
            Logits::All => 0,
            Logits::Last => n.saturating_sub(1),
            Logits::From(start) => {
                if n > 0 && start >= n {
                    return Err(crate::Error::Invalid(format!("logits from position {start} of {n}")));
                }
                start
            }
        };
        let (x, from) = self.run(ids, &[seg], keep_from)?;
        let x = match logits {
            Logits::All => x,
            Logits::Last => layers::last_position(&x)?,
            Logits::From(start) => x.narrow(1, start - from, n - start)?,
        };
        Ok(self.lm_head.forward(&self.norm.forward(&x)?)?.squeeze(0)?)
    }

    fn forward_batch(&mut self, batch: &[BatchItem]) -> Result<Tensor> {
        let mut ids = Vec::new();
        let mut segs = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter().enumerate() {
            if item.ids.is_empty() {
                return Err(crate::Error::Invalid(format!("batch item {i} has no tokens")));
            }
            if batch[..i].iter().any(|o| o.slot == item.slot) {
                return Err(crate::Error::Invalid(format!("slot {} appears twice in one batch", item.slot)));
            }
            segs.push(Segment { slot: item.slot, start: ids.len(), len: item.ids.len(), offset: item.offset });
            ids.extend_from_slice(item.ids);
        }
        let first_last = segs.iter().map(|s| s.start + s.len - 1).min().unwrap_or(0);
        let (x, from) = self.run(&ids, &segs, first_last)?;
        let last: Vec<u32> = segs.iter().map(|s| (s.start + s.len - 1 - from) as u32).collect();
        let idx = Tensor::new(last.as_slice(), &self.device)?;
        let x = x.squeeze(0)?.index_select(&idx, 0)?.unsqueeze(0)?;
        // One output row per sequence, computed as its own single-sequence pass computes it.
        let rows: Vec<Segment> = (0..segs.len()).map(|i| Segment { slot: i, start: i, len: 1, offset: 0 }).collect();
        Ok(self.lm_head.forward_segments(&self.norm.forward(&x)?, &rows)?.squeeze(0)?)
    }

    fn truncate(&mut self, len: usize) -> usize {
        self.truncate_slot(0, len)
    }

    fn truncate_slot(&mut self, slot: usize, len: usize) -> usize {
        let kept = self.layers.iter_mut().map(|l| l.attention_mut().cache_mut(slot).truncate(len)).min().unwrap_or(0);
        if kept < len {
            // A windowed layer could not keep `len`: every layer starts over together.
            self.layers.iter_mut().for_each(|l| l.attention_mut().cache_mut(slot).clear());
            return 0;
        }
        kept
    }

    fn free_slot(&mut self, slot: usize) {
        for l in self.layers.iter_mut() {
            if l.attention().cache(slot).is_some() {
                l.attention_mut().cache_mut(slot).clear();
            }
        }
    }

    fn kv_bytes(&self) -> usize {
        self.layers.iter().flat_map(|l| l.attention().caches().iter()).map(|c| c.allocated_bytes()).sum()
    }

    fn cached_len(&self) -> usize {
        self.cached_len_slot(0)
    }

    fn cached_len_slot(&self, slot: usize) -> usize {
        self.layers.first().and_then(|l| l.attention().cache(slot)).map(|c| c.len()).unwrap_or(0)
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_cover_the_prompt_without_short_tails() {
        for n in [1, 31, 128, 129, 159, 160, 200, 256, 257, 300, 512, 543, 544] {
            let parts: Vec<_> = stretches(n).collect();
            assert_eq!(parts.first().unwrap().start, 0, "{n}");
            assert_eq!(parts.last().unwrap().end, n, "{n}");
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{n}");
            }
            for p in &parts {
                assert!(p.len() <= UBATCH + layers::PROMPT_ATTENTION_ROWS, "{n}: {p:?}");
                assert!(parts.len() == 1 || p.len() >= layers::PROMPT_ATTENTION_ROWS, "{n}: {p:?}");
            }
        }
        assert_eq!(stretches(129).collect::<Vec<_>>(), vec![0..129]);
        assert_eq!(stretches(300).collect::<Vec<_>>(), vec![0..128, 128..256, 256..300]);
    }
}
