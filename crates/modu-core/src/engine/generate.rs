//! The generation loop: prefill (reusing the cached prefix), decode, stream text, stop.

use std::time::Instant;

use candle_core::Tensor;

use super::sampler::{Sampler, SamplingParams};
use crate::error::{Error, Result};
use crate::models::{CausalLm, Logits};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Tokens per forward pass during prefill; bounds activation memory for long prompts.
pub const PREFILL_BATCH: usize = 512;

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings; they are not part of the output.
    pub stop: Vec<String>,
    /// End at the model's end-of-generation tokens (EOS, end-of-turn).
    pub stop_at_eog: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self { max_tokens: 256, sampling: SamplingParams::default(), stop: Vec::new(), stop_at_eog: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// max_tokens or the context length.
    Length,
    /// The caller asked to stop.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens that had to be computed (the rest came from the cache).
    pub prefilled_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

/// A model plus the tokens its KV cache holds, so a follow-up prompt that extends the previous
/// one (a chat turn) only computes what is new.
pub struct Session<'m> {
    model: &'m mut dyn CausalLm,
    tokens: Vec<u32>,
}

fn last_logits(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.to_dtype(candle_core::DType::F32)?;
    let rows = t.dim(0)?;
    Ok(t.get(rows - 1)?.to_vec1()?)
}

impl<'m> Session<'m> {
    pub fn new(model: &'m mut dyn CausalLm) -> Self {
        model.truncate(0);
        Self { model, tokens: Vec::new() }
    }

    pub fn model(&self) -> &dyn CausalLm {
        &*self.model
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn reset(&mut self) {
        self.model.truncate(0);
        self.tokens.clear();
    }

    /// Makes the cache hold exactly `ids` and returns the logits after the last one, plus how
    /// many tokens were computed.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<(Vec<f32>, usize)> {
        if ids.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        let ctx = self.model.info().context_length;
        if ids.len() > ctx {
            return Err(Error::Invalid(format!(
                "the prompt has {} tokens, more than the model's context length of {ctx}",
                ids.len()
            )));
        }
        let common = self.tokens.iter().zip(ids).take_while(|(a, b)| a == b).count();
        // At least the last token runs, to produce logits.
        let keep = common.min(ids.len() - 1);
        let keep = self.model.truncate(keep);
        self.tokens.truncate(keep);
        let mut logits = None;
        for chunk in ids[keep..].chunks(PREFILL_BATCH) {
            let out = self.model.forward(chunk, self.tokens.len(), Logits::Last)?;
            self.tokens.extend_from_slice(chunk);
            logits = Some(out);
        }
        let logits = logits.ok_or_else(|| Error::Invalid("nothing to prefill".into()))?;
        Ok((last_logits(&logits)?, ids.len() - keep))
    }

    /// Makes the cache hold exactly `ids` and returns the logits of positions `from..` (row k
    /// predicts `ids[from + k + 1]`), reusing the cached common prefix as [`Session::prefill`].
    pub fn logits_from(&mut self, ids: &[u32], from: usize) -> Result<Tensor> {
        if from >= ids.len() {
            return Err(Error::Invalid(format!("logits from position {from} of {}", ids.len())));
        }
        let common = self.tokens.iter().zip(ids).take_while(|(a, b)| a == b).count();
        let keep = self.model.truncate(common.min(from));
        self.tokens.truncate(keep);
        let out = self.model.forward(&ids[keep..], keep, Logits::From(from - keep))?;
        self.tokens.extend_from_slice(&ids[keep..]);
        Ok(out)
    }

    /// Appends one token and returns the logits after it.
    pub fn step(&mut self, id: u32) -> Result<Vec<f32>> {
        let out = self.model.forward(&[id], self.tokens.len(), Logits::Last)?;
        self.tokens.push(id);
        last_logits(&out)
    }

    /// Generates from `prompt`, calling `on_text` with each piece of text as soon as it is
    /// certain (never a partial character, never the start of a stop string). `on_text`
    /// returns false to cancel.
    pub fn generate(
        &mut self,
        tok: &Tokenizer,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let mut sampler = Sampler::new(params.sampling.clone())?;
        let eog = if params.stop_at_eog { tok.end_of_generation_ids() } else { Vec::new() };
        let ctx = self.model.info().context_length;
        let t0 = Instant::now();
        let (mut logits, prefilled) = self.prefill(prompt)?;
        let prefill_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();

        let mut out = Vec::new();
        let mut decoder = StreamDecoder::new(tok);
        let mut stops = StopMatcher::new(&params.stop);
        let mut finish = FinishReason::Length;
        let mut history: Vec<u32> = prompt.to_vec();
        while out.len() < params.max_tokens {
            let id = sampler.sample(&logits, &history);
            if eog.contains(&id) {
                finish = FinishReason::Stop;
                break;
            }
            out.push(id);
            history.push(id);
            let piece = decoder.push(id);
            let (ready, stopped) = stops.push(&piece);
            if !ready.is_empty() && !on_text(&ready) {
                finish = FinishReason::Cancelled;
                break;
            }
            if stopped {
                finish = FinishReason::Stop;
                break;
            }
            if out.len() >= params.max_tokens || self.tokens.len() >= ctx {
                break;
            }
            logits = self.step(id)?;
        }
        if !stops.is_stopped() && finish != FinishReason::Cancelled {
            // Release what was held back: a partial character or a partial stop string.
            let rest = stops.finish(&decoder.finish());
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
        Ok(Generation {
            tokens: out,
            text: stops.into_text(),
            finish,
            prompt_tokens: prompt.len(),
            prefilled_tokens: prefilled,
            prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
        })
    }
}

/// Holds back text that could be the start of a stop string; cuts the output at a full match.
pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
    emitted: usize,
    stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            text: String::new(),
            emitted: 0,
            stopped: false,
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Adds text; returns what may be shown now and whether a stop string was completed.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.text.push_str(piece);
        let max_stop = self.stops.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut from = self.emitted.saturating_sub(max_stop);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(at) = hit {
            let at = at.max(self.emitted);
            let ready = self.text[self.emitted..at].to_string();
            self.text.truncate(at);
            self.emitted = at;
            self.stopped = true;
            return (ready, true);
        }
        // Keep back the longest tail that is a prefix of some stop string.
        let mut safe = self.text.len();
        for s in &self.stops {
            for k in (1..s.len().min(self.text.len() - self.emitted + 1)).rev() {
                if s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    safe = safe.min(self.text.len() - k);
                    break;
                }
            }
        }
        let ready = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (ready, false)
    }

    /// Releases everything held back (generation ended without completing a stop string).
    pub fn finish(&mut self, tail: &str) -> String {
        if !self.stopped {
            self.text.push_str(tail);
        }
        let rest = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        rest
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut shown = String::new();
        let mut stopped = false;
        for p in pieces {
            let (r, s) = m.push(p);
            shown.push_str(&r);
            if s {
                stopped = true;
                break;
            }
        }
        if !stopped {
            shown.push_str(&m.finish(""));
        }
        (shown, stopped, m.into_text())
    }

    // Catches a stop string split across tokens leaking its first half.
    #[test]
    fn stop_string_across_pieces_is_cut() {
        let (shown, stopped, text) = run(&["</end>"], &["hello </", "en", "d> more"]);
        assert!(stopped);
        assert_eq!(shown, "hello ");
        assert_eq!(text, "hello ");
    }

    // Catches held-back text never being released when no stop string completes.
    #[test]
    fn partial_match_is_released_at_the_end() {
        let (shown, stopped, _) = run(&["STOP"], &["a S", "T", "x", " ST"]);
        assert!(!stopped);
        assert_eq!(shown, "a STx ST");
    }

    // Catches byte slicing inside a multi-byte character.
    #[test]
    fn korean_stop_strings() {
        let (shown, stopped, _) = run(&["니다."], &["안녕하세요 ", "감사합", "니다", ". 다음"]);
        assert!(stopped);
        assert_eq!(shown, "안녕하세요 감사합");
    }
}
