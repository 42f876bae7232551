//! Perplexity with llama.cpp's exact method (`llama-perplexity -c CTX`).
//!
//! The text is tokenized once (with BOS where the model adds one) and cut into floor(n / ctx)
//! chunks; where the model adds BOS, each chunk starts with BOS in place of its first token;
//! logits at positions ctx/2 .. ctx-2 score the next token.
//! PPL = exp(mean negative log-likelihood over all scored tokens).

use crate::error::{Error, Result};
use crate::models::{CausalLm, Logits};

#[derive(Debug, Clone)]
pub struct Perplexity {
    pub ppl: f64,
    pub chunks: usize,
    pub scored_tokens: usize,
    /// Running perplexity after each chunk, as llama.cpp prints.
    pub per_chunk: Vec<f64>,
}

pub fn perplexity(
    model: &mut dyn CausalLm,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    on_chunk: impl FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    perplexity_rows(model, tokens, ctx, bos, on_chunk, |_, _| Ok(()))
}

/// [`perplexity`], also handing every scored position's logits and the token they score to
/// `on_row`, in order (a KL-divergence base file is written or compared from them).
pub fn perplexity_rows(
    model: &mut dyn CausalLm,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, usize, f64),
    mut on_row: impl FnMut(&[f32], u32) -> Result<()>,
) -> Result<Perplexity> {
    if ctx < 4 {
        return Err(Error::Invalid(format!("context {ctx} is too small for perplexity (at least 4)")));
    }
    let chunks = tokens.len() / ctx;
    if chunks == 0 {
        return Err(Error::Invalid(format!(
            "the text has {} tokens, fewer than one chunk of {ctx}; use a smaller --ctx",
            tokens.len()
        )));
    }
    let first = ctx / 2;
    let mut nll = 0f64;
    let mut count = 0usize;
    let mut per_chunk = Vec::with_capacity(chunks);
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(bos) = bos {
            chunk[0] = bos;
        }
        model.truncate(0);
        let logits = model.forward(&chunk, 0, Logits::From(first))?;
        let logits = logits.to_dtype(candle_core::DType::F32)?;
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        // Row r holds the logits at position first + r, scoring the token after it.
        for (r, row) in rows.iter().enumerate().take(ctx - 1 - first) {
            let target = chunk[first + r + 1] as usize;
            nll -= log_softmax_at(row, target)?;
            on_row(row, target as u32)?;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        per_chunk.push(ppl);
        on_chunk(c + 1, chunks, ppl);
    }
    model.truncate(0);
    Ok(Perplexity { ppl: (nll / count as f64).exp(), chunks, scored_tokens: count, per_chunk })
}

fn log_softmax_at(row: &[f32], target: usize) -> Result<f64> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    let l = *row
        .get(target)
        .ok_or_else(|| Error::Invalid(format!("token {target} outside the logits")))? as f64;
    Ok(l - max - sum.ln())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{BatchItem, ModelInfo};
    use candle_core::{Device, Tensor};

    /// Predicts token (id + 1) % V after id with logit PEAK (0 elsewhere), and records the
    /// first id of every forward pass.
    struct NextToken {
        info: ModelInfo,
        firsts: Vec<u32>,
    }

    const V: usize = 11;
    const PEAK: f32 = 5.0;

    impl CausalLm for NextToken {
        fn forward(&mut self, ids: &[u32], _offset: usize, logits: Logits) -> Result<Tensor> {
            self.firsts.push(ids[0]);
            let from = match logits {
                Logits::From(s) => s,
                _ => unreachable!("perplexity asks for the second half"),
            };
            let mut rows = vec![0f32; (ids.len() - from) * V];
            for (r, &id) in ids[from..].iter().enumerate() {
                rows[r * V + (id as usize + 1) % V] = PEAK;
            }
            Ok(Tensor::from_vec(rows, (ids.len() - from, V), &Device::Cpu)?)
        }
        fn forward_batch(&mut self, _: &[BatchItem]) -> Result<Tensor> {
            unreachable!()
        }
        fn truncate(&mut self, len: usize) -> usize {
            len
        }
        fn truncate_slot(&mut self, _: usize, len: usize) -> usize {
            len
        }
        fn free_slot(&mut self, _: usize) {}
        fn kv_bytes(&self) -> usize {
            0
        }
        fn cached_len(&self) -> usize {
            0
        }
        fn cached_len_slot(&self, _: usize) -> usize {
            0
        }
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn device(&self) -> &Device {
            &Device::Cpu
        }
    }

    // Catches a scored position paired with the wrong target (every target is the predicted
    // token, so any shift scores a non-peak logit), a wrong count of scored positions, and BOS
    // put at a chunk's start for a model that does not add BOS (or left out for one that does).
    #[test]
    fn scores_the_second_half_of_each_chunk_and_puts_bos_only_when_asked() {
        let tokens: Vec<u32> = (0..50).map(|i| (i % V) as u32).collect();
        let info = ModelInfo {
            architecture: "toy".into(),
            n_layers: 0,
            hidden_size: 0,
            vocab_size: V,
            context_length: 64,
            kv_bytes_per_token: 0,
            kv_windows: vec![],
        };
        let peak_nll = -(PEAK as f64 - ((PEAK as f64).exp() + (V - 1) as f64).ln());
        for bos in [None, Some(7u32)] {
            let mut m = NextToken { info: info.clone(), firsts: vec![] };
            let mut rows = 0;
            let r = perplexity_rows(&mut m, &tokens, 12, bos, |_, _, _| {}, |row, target| {
                assert_eq!(row.len(), V);
                assert_eq!(row[target as usize], PEAK);
                rows += 1;
                Ok(())
            })
            .unwrap();
            // 4 chunks of 12, each scoring positions 6..=10.
            assert_eq!((r.chunks, r.scored_tokens, rows), (4, 20, 20));
            let want_firsts: Vec<u32> = (0..4).map(|c| bos.unwrap_or(tokens[c * 12])).collect();
            assert_eq!(m.firsts, want_firsts, "bos {bos:?}");
            assert!((r.ppl.ln() - peak_nll).abs() < 1e-6, "{} vs {}", r.ppl.ln(), peak_nll);
        }
    }

    // Catches an off-by-one in the log-softmax normalisation.
    #[test]
    fn log_softmax_of_uniform_row() {
        let row = vec![0.5f32; 8];
        let lp = log_softmax_at(&row, 3).unwrap();
        assert!((lp - (1.0f64 / 8.0).ln()).abs() < 1e-9);
    }
}
