//! Token sampling: penalties, top-k, top-p, min-p, temperature, seeded draws.
//!
//! The order follows llama.cpp's default chain (penalties, top-k, top-p, min-p, temperature,
//! draw), so the same settings mean the same thing in both tools.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables; >1 discourages tokens seen in the last `repeat_last_n` tokens.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    /// OpenAI-style: subtract `presence` once and `frequency * count` for each seen token.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Invalid(format!("sampling: {what}")));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature must be a number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p must be in [0, 1]");
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad("repeat_penalty must be a number > 0");
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return bad("presence and frequency penalties must be finite");
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Self { params, rng })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from raw logits, given the tokens generated or seen so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let penalised;
        let logits = if self.has_penalties(history) {
            let mut l = logits.to_vec();
            self.apply_penalties(&mut l, history);
            penalised = l;
            &penalised[..]
        } else {
            logits
        };
        if p.temperature <= 0.0 {
            return argmax(&logits);
        }
        // Tokens more than PRUNE logits below the best have a probability under e^-PRUNE of
        // the best's at any temperature <= 1, far below f32 resolution of the sums below; they
        // are dropped before sorting a 100k-262k vocabulary.
        const PRUNE: f32 = 40.0;
        let best = logits.iter().copied().filter(|l| !l.is_nan()).fold(f32::NEG_INFINITY, f32::max);
        let floor = if p.temperature <= 1.0 { best - PRUNE } else { best - PRUNE * p.temperature };
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan() && **l >= floor)
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if cands.is_empty() {
            return 0;
        }
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cands.len() {
            cands.select_nth_unstable_by(p.top_k - 1, order);
            cands.truncate(p.top_k);
        }
        cands.sort_unstable_by(order);
        // Probabilities at temperature 1 for the top-p and min-p cuts, as llama.cpp does.
        let probs = softmax(&cands.iter().map(|c| c.1).collect::<Vec<_>>());
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = cands.len();
            for (i, pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            let keep = probs.iter().take(cands.len()).take_while(|&&pr| pr >= floor).count();
            cands.truncate(keep.max(1));
        }
        let scaled: Vec<f32> = cands.iter().map(|c| c.1 / p.temperature).collect();
        let probs = softmax(&scaled);
        let r: f32 = self.rng.random::<f32>();
        let mut cum = 0.0;
        for (c, pr) in cands.iter().zip(&probs) {
            cum += pr;
            if r < cum {
                return c.0;
            }
        }
        cands[cands.len() - 1].0
    }

    fn has_penalties(&self, history: &[u32]) -> bool {
        let p = &self.params;
        !history.is_empty()
            && p.repeat_last_n > 0
            && (p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0)
    }

    fn apply_penalties(&self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        let start = history.len().saturating_sub(p.repeat_last_n);
        let window = &history[start..];
        if window.is_empty() {
            return;
        }
        if p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
            for &t in window {
                *counts.entry(t).or_default() += 1;
            }
            for (&t, &n) in &counts {
                let Some(l) = logits.get_mut(t as usize) else { continue };
                if p.repeat_penalty != 1.0 {
                    *l = if *l > 0.0 { *l / p.repeat_penalty } else { *l * p.repeat_penalty };
                }
                *l -= p.presence_penalty + p.frequency_penalty * n as f32;
            }
        }
    }
}

/// Index of the largest logit; the lowest index wins ties, as in llama.cpp.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn softmax(xs: &[f32]) -> Vec<f32> {
    let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = xs.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams { top_k: 0, top_p: 1.0, min_p: 0.0, temperature: 1.0, ..Default::default() };
        f(&mut p);
        p
    }

    // Catches greedy picking anything but the first maximum.
    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    // Catches a sampler whose output depends on anything but the seed.
    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(params(|p| p.seed = seed)).unwrap();
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    // Catches top-k letting through tokens outside the k best.
    #[test]
    fn top_k_limits_choices() {
        let logits = [5.0, 4.9, 1.0, 0.9, 0.8];
        let mut s = Sampler::new(params(|p| p.top_k = 2)).unwrap();
        for _ in 0..200 {
            assert!(s.sample(&logits, &[]) < 2);
        }
    }

    // Catches top-p keeping the tail or dropping the nucleus.
    #[test]
    fn top_p_keeps_nucleus() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]
        let logits = [2.0, 1.0, 0.0, -1.0];
        let mut s = Sampler::new(params(|p| p.top_p = 0.8)).unwrap();
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[s.sample(&logits, &[]) as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0);
        assert_eq!(seen[2] + seen[3], 0);
    }

    // Catches min-p measured against the wrong reference probability.
    #[test]
    fn min_p_drops_unlikely() {
        let logits = [3.0, 2.9, -3.0];
        let mut s = Sampler::new(params(|p| p.min_p = 0.1)).unwrap();
        for _ in 0..300 {
            assert_ne!(s.sample(&logits, &[]), 2);
        }
    }

    // Catches penalties applied with the wrong sign or to unseen tokens.
    #[test]
    fn penalties_push_away_from_history() {
        let logits = [1.0, 0.99, -2.0];
        let mut s = Sampler::new(SamplingParams { repeat_penalty: 1.5, ..SamplingParams::greedy() }).unwrap();
        assert_eq!(s.sample(&logits, &[0]), 1);
        let mut s = Sampler::new(SamplingParams { presence_penalty: 0.5, ..SamplingParams::greedy() }).unwrap();
        assert_eq!(s.sample(&logits, &[0]), 1);
        let mut s = Sampler::new(SamplingParams { frequency_penalty: 0.004, ..SamplingParams::greedy() }).unwrap();
        assert_eq!(s.sample(&logits, &[0]), 0, "one occurrence costs 0.004 < 0.01");
        assert_eq!(s.sample(&logits, &[0, 0, 0]), 1, "three cost 0.012 > 0.01");
        // Negative logits get more negative under the repetition penalty.
        let mut s = Sampler::new(SamplingParams { repeat_penalty: 2.0, ..SamplingParams::greedy() }).unwrap();
        assert_eq!(s.sample(&[-1.0, -1.5], &[0]), 1);
    }

    // Catches invalid settings reaching the sampler.
    #[test]
    fn rejects_bad_params() {
        assert!(Sampler::new(params(|p| p.top_p = 0.0)).is_err());
        assert!(Sampler::new(params(|p| p.temperature = f32::NAN)).is_err());
        assert!(Sampler::new(params(|p| p.min_p = 2.0)).is_err());
    }
}
