//! The fine-tuning loop: AdamW (PyTorch's decoupled weight decay) with linear warmup and cosine
//! decay, gradient accumulation, gradient clipping, per-epoch evaluation loss, checkpoints that a
//! run resumes from, and a stop flag (Ctrl-C) that saves a checkpoint before returning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Tensor, Var};
use serde_json::json;

use super::data::Example;
use super::lora::{write_atomic, Adapter, SplitMix};
use super::model::{Dropout, TrainModel};
use crate::error::{Error, Result};

/// PyTorch's AdamW: `p -= lr * wd * p`, then the bias-corrected Adam step.
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    /// First and second moments, by variable name.
    pub m: HashMap<String, Tensor>,
    pub v: HashMap<String, Tensor>,
}

impl AdamW {
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, step: 0, m: HashMap::new(), v: HashMap::new() }
    }

    /// One update of every variable from its gradient.
    pub fn update(&mut self, vars: &[(String, Var)], grads: &HashMap<String, Tensor>) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for (name, var) in vars {
            let Some(g) = grads.get(name) else { continue };
            let m = match self.m.get(name) {
                Some(m) => ((m * self.beta1)? + (g * (1.0 - self.beta1))?)?,
                None => (g * (1.0 - self.beta1))?,
            };
            let v = match self.v.get(name) {
                Some(v) => ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?,
                None => (g.sqr()? * (1.0 - self.beta2))?,
            };
            let p = (var.as_tensor() * (1.0 - self.lr * self.weight_decay))?;
            let denom = ((v.sqrt()? / bc2.sqrt())? + self.eps)?;
            let p = (p - ((&m / denom)? * (self.lr / bc1))?)?;
            var.set(&p)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }
}

/// Learning rate at optimizer step `step` (1-based): linear warmup, then cosine decay to zero.
pub fn lr_at(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if warmup > 0 && step <= warmup {
        return base * step as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub grad_accum: usize,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Stop after this many optimizer steps (all epochs otherwise).
    pub max_steps: Option<usize>,
    /// Save a checkpoint every this many steps (and at each epoch's end).
    pub save_every: Option<usize>,
}

/// What the loop reports after each optimizer step and each evaluation.
#[derive(Debug, Clone)]
pub enum Event {
    Step { step: usize, total: usize, epoch: usize, loss: f64, lr: f64, tokens_per_s: f64 },
    Eval { epoch: usize, loss: f64 },
    Saved { path: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub steps: usize,
    pub interrupted: bool,
    /// Training loss of each optimizer step (token-weighted mean over its examples).
    pub losses: Vec<f64>,
    pub eval_losses: Vec<f64>,
    pub seconds: f64,
}

/// Token-weighted mean NLL over examples, without gradients.
pub fn mean_loss(model: &TrainModel, adapter: Option<&Adapter>, examples: &[Example]) -> Result<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for ex in examples {
        sum += model.nll_sum(&ex.ids, &ex.targets, adapter, None)?.to_scalar::<f32>()? as f64;
        n += ex.targets.len();
    }
    Ok(sum / n.max(1) as f64)
}

/// Gradients of `sum(NLL) / n_tokens` over a group of examples, one example at a time.
pub fn group_gradients(
    model: &TrainModel,
    adapter: &Adapter,
    group: &[&Example],
    dropout: f64,
    rng: &mut SplitMix,
) -> Result<(f64, HashMap<String, Tensor>)> {
    let n_tokens: usize = group.iter().map(|e| e.targets.len()).sum();
    let vars = adapter.vars();
    let mut grads: HashMap<String, Tensor> = HashMap::new();
    let mut loss = 0.0;
    for ex in group {
        let drop = (dropout > 0.0).then(|| Dropout { p: dropout, rng: &mut *rng });
        let l = (model.nll_sum(&ex.ids, &ex.targets, Some(adapter), drop)? / n_tokens as f64)?;
        loss += l.to_scalar::<f32>()? as f64;
        let store = l.backward()?;
        for (name, var) in &vars {
            if let Some(g) = store.get(var.as_tensor()) {
                let g = match grads.remove(name) {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                };
                grads.insert(name.clone(), g);
            }
        }
    }
    Ok((loss, grads))
}

/// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm.
fn clip(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let mut sq = 0.0;
    for g in grads.values() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if !norm.is_finite() {
        return Err(Error::Invalid("the gradient is not finite (NaN or infinity); lower the learning rate".into()));
    }
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * s)?;
        }
    }
    Ok(norm)
}

/// Where a run keeps its resumable state: `<out>/checkpoint/` holding the adapter, the optimizer
/// moments and `trainer_state.json`.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

struct State {
    step: usize,
    rng: SplitMix,
    losses: Vec<f64>,
    eval_losses: Vec<f64>,
}

fn save_checkpoint(out: &Path, adapter: &Adapter, opt: &AdamW, st: &State, base_model: &str, fingerprint: &str) -> Result<PathBuf> {
    let dir = checkpoint_dir(out);
    let tmp = out.join("checkpoint.partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    }
    adapter.save(&tmp, base_model)?;
    let mut moments: Vec<(String, Tensor)> = Vec::new();
    for (k, t) in opt.m.iter() {
        moments.push((format!("m.{k}"), t.clone()));
    }
    for (k, t) in opt.v.iter() {
        moments.push((format!("v.{k}"), t.clone()));
    }
    let p = tmp.join("optimizer.safetensors");
    candle_core::safetensors::save(&moments.into_iter().collect::<HashMap<_, _>>(), &p)?;
    let state = json!({
        "step": st.step,
        "adam_step": opt.step,
        "rng": st.rng.0.to_string(),
        "losses": st.losses,
        "eval_losses": st.eval_losses,
        "fingerprint": fingerprint,
    });
    write_atomic(&tmp.join("trainer_state.json"), serde_json::to_string_pretty(&state).expect("json").as_bytes())?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::Io { path: dir.clone(), source: e })?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| Error::Io { path: dir.clone(), source: e })?;
    Ok(dir)
}

/// Restores the adapter's values, the optimizer and the loop state from `<out>/checkpoint`.
fn load_checkpoint(out: &Path, adapter: &Adapter, opt: &mut AdamW, fingerprint: &str) -> Result<State> {
    let dir = checkpoint_dir(out);
    let bad = |m: String| Error::BadPath { path: dir.clone(), reason: m };
    let text = std::fs::read_to_string(dir.join("trainer_state.json")).map_err(|_| bad("has no trainer_state.json to resume from".into()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("trainer_state.json: {e}")))?;
    if v["fingerprint"].as_str() != Some(fingerprint) {
        return Err(bad("was written by a run with other data or settings; resume with the same ones, or start afresh without --resume".into()));
    }
    let st = candle_core::safetensors::load(dir.join(super::lora::WEIGHTS_FILE), adapter.pairs.values().next().map(|p| p.a.device()).unwrap_or(&candle_core::Device::Cpu))?;
    for (name, pair) in &adapter.pairs {
        let a = st.get(&adapter.peft_name(name, 'A')).ok_or_else(|| bad(format!("misses the adapter tensor of {name}")))?;
        let b = st.get(&adapter.peft_name(name, 'B')).ok_or_else(|| bad(format!("misses the adapter tensor of {name}")))?;
        pair.a.set(a)?;
        pair.b.set(b)?;
    }
    let moments = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &candle_core::Device::Cpu)?;
    for (k, t) in moments {
        if let Some(n) = k.strip_prefix("m.") {
            opt.m.insert(n.to_string(), t);
        } else if let Some(n) = k.strip_prefix("v.") {
            opt.v.insert(n.to_string(), t);
        }
    }
    opt.step = v["adam_step"].as_u64().unwrap_or(0);
    let floats = |k: &str| v[k].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default();
    Ok(State {
        step: v["step"].as_u64().unwrap_or(0) as usize,
        rng: SplitMix(v["rng"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0)),
        losses: floats("losses"),
        eval_losses: floats("eval_losses"),
    })
}

/// The order of examples in an epoch: a permutation fixed by the seed and the epoch.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = SplitMix(seed ^ (0x5EED_0000 + epoch as u64));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

pub struct Run<'a> {
    pub model: &'a TrainModel,
    pub adapter: &'a Adapter,
    pub train: &'a [Example],
    pub eval: &'a [Example],
    pub opts: TrainOptions,
    pub out: &'a Path,
    pub base_model: &'a str,
    /// Identifies data and settings; a checkpoint resumes only under the same one.
    pub fingerprint: String,
    pub resume: bool,
    pub stop: &'a AtomicBool,
}

impl Run<'_> {
    pub fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.opts.grad_accum.max(1))
    }

    pub fn total_steps(&self) -> usize {
        let all = self.steps_per_epoch() * self.opts.epochs;
        self.opts.max_steps.map_or(all, |m| m.min(all))
    }

    /// Trains; writes the final adapter into `out` (and checkpoints under it).
    pub fn run(&self, report: &mut dyn FnMut(Event)) -> Result<Outcome> {
        let o = &self.opts;
        let started = std::time::Instant::now();
        let vars = self.adapter.vars();
        let mut opt = AdamW::new(o.lr, o.weight_decay);
        let mut st = if self.resume {
            load_checkpoint(self.out, self.adapter, &mut opt, &self.fingerprint)?
        } else {
            State { step: 0, rng: SplitMix(o.seed.wrapping_mul(31) ^ 0xD80), losses: Vec::new(), eval_losses: Vec::new() }
        };
        let per_epoch = self.steps_per_epoch();
        let total = self.total_steps();
        let accum = o.grad_accum.max(1);
        let mut interrupted = false;
        while st.step < total {
            if self.stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let epoch = st.step / per_epoch;
            let k = st.step % per_epoch;
            let order = epoch_order(self.train.len(), o.seed, epoch);
            let group: Vec<&Example> = order[k * accum..((k + 1) * accum).min(order.len())].iter().map(|&i| &self.train[i]).collect();
            let t0 = std::time::Instant::now();
            let (loss, mut grads) = group_gradients(self.model, self.adapter, &group, self.adapter.config.dropout, &mut st.rng)?;
            clip(&mut grads, o.max_grad_norm)?;
            opt.lr = lr_at(o.lr, st.step + 1, o.warmup_steps, total);
            opt.update(&vars, &grads)?;
            st.step += 1;
            st.losses.push(loss);
            let tokens: usize = group.iter().map(|e| e.ids.len()).sum();
            report(Event::Step { step: st.step, total, epoch: epoch + 1, loss, lr: opt.lr, tokens_per_s: tokens as f64 / t0.elapsed().as_secs_f64() });
            let epoch_end = st.step % per_epoch == 0 || st.step == total;
            if epoch_end && !self.eval.is_empty() {
                let l = mean_loss(self.model, Some(self.adapter), self.eval)?;
                st.eval_losses.push(l);
                report(Event::Eval { epoch: epoch + 1, loss: l });
            }
            if epoch_end || o.save_every.is_some_and(|n| n > 0 && st.step % n == 0) {
                let p = save_checkpoint(self.out, self.adapter, &opt, &st, self.base_model, &self.fingerprint)?;
                report(Event::Saved { path: p });
            }
        }
        if interrupted {
            let p = save_checkpoint(self.out, self.adapter, &opt, &st, self.base_model, &self.fingerprint)?;
            report(Event::Saved { path: p });
        } else {
            self.adapter.save(self.out, self.base_model)?;
        }
        Ok(Outcome { steps: st.step, interrupted, losses: st.losses, eval_losses: st.eval_losses, seconds: started.elapsed().as_secs_f64() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(lr_at(1.0, 1, 4, 20), 0.25);
        assert_eq!(lr_at(1.0, 4, 4, 20), 1.0);
        assert!((lr_at(1.0, 12, 4, 20) - 0.5).abs() < 1e-12);
        assert!(lr_at(1.0, 20, 4, 20).abs() < 1e-12);
        assert!(lr_at(1.0, 5, 0, 10) < 1.0 && lr_at(1.0, 5, 0, 10) > 0.0);
    }

    #[test]
    fn epoch_orders_are_permutations() {
        let a = epoch_order(10, 3, 0);
        let b = epoch_order(10, 3, 1);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(10, 3, 0));
    }
}
