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

    // Catches an off-by-one in the log-softmax normalisation.
    #[test]
    fn log_softmax_of_uniform_row() {
        let row = vec![0.5f32; 8];
        let lp = log_softmax_at(&row, 3).unwrap();
        assert!((lp - (1.0f64 / 8.0).ln()).abs() < 1e-9);
    }
}
