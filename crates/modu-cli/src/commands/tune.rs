//! `modu tune` (LoRA fine-tuning), `modu eval` (accuracy and loss on held-out examples, with an
//! optional in-context few-shot prompt) and `modu merge` (an adapter folded into GGUF weights).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use modu_core::engine::{GenerateParams, SamplingParams, Session};
use modu_core::train::data::{self, Encoder, Example, Record};
use modu_core::train::lora::{self, Adapter, LoraConfig};
use modu_core::train::model::TrainModel;
use modu_core::train::trainer::{self, Event, Run, TrainOptions};
use sha2::Digest;

use super::convert::GgufOut;
use crate::options::{setup_threads, ModelArgs};

#[derive(Args, Debug)]
pub struct TuneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training examples, JSONL: {"messages": [...]} or {"prompt": ..., "completion": ...}.
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out examples for the evaluation loss after each epoch.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Output directory: the adapter (PEFT layout) and checkpoint/.
    #[arg(long)]
    pub out: PathBuf,
    /// LoRA rank.
    #[arg(long, short = 'r', default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// Dropout on the input of each LoRA branch.
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f64,
    /// Modules to adapt, comma separated (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj;
    /// default: all of them).
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Passes over the training data.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Steps of linear warmup (default: a tenth of all steps).
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Examples per optimizer step (gradients accumulated one example at a time).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Clip the gradient's global norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Longest example in tokens; longer ones are cut, with a warning.
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Also save a checkpoint every N steps (one is always saved after each epoch).
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Seed of the initialisation, data order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue from <out>/checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Replace an adapter already in --out.
    #[arg(long)]
    pub force: bool,
    /// How chat records become text: chat (the model's chat template; loss on every assistant
    /// turn) or raw (`<question>\nAnswer: <answer>` and end of text; loss on the last answer),
    /// the form `modu eval --format raw` asks in.
    #[arg(long, default_value = "chat", value_parser = ["chat", "raw"])]
    pub format: String,
    /// Write the losses as JSON to this file at the end.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Act as if Ctrl-C came after N steps (tests the checkpoint on interruption).
    #[arg(long, hide = true)]
    pub interrupt_after: Option<usize>,
}

fn load_examples(path: &Path, enc: &Encoder, max_len: usize) -> Result<Vec<Example>> {
    let records = data::read_jsonl(path)?;
    let mut out = Vec::with_capacity(records.len());
    for (line, r) in &records {
        let ex = enc.encode(*line, r, max_len).with_context(|| format!("{}: line {line}", path.display()))?;
        if ex.targets.is_empty() {
            eprintln!("warning: {}: line {line} has no answer tokens left within --max-len {max_len}; skipped", path.display());
            continue;
        }
        out.push(ex);
    }
    anyhow::ensure!(!out.is_empty(), "{}: no example has answer tokens within --max-len {max_len}", path.display());
    Ok(out)
}

pub fn tune(args: TuneArgs) -> Result<()> {
    anyhow::ensure!(
        args.model.adapter.is_none(),
        "tune trains a new adapter and does not start from --adapter; continue a stopped run with --resume, or merge the adapter first (modu merge)"
    );
    anyhow::ensure!(args.epochs >= 1, "--epochs must be at least 1");
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(args.max_len >= 2, "--max-len must be at least 2");
    anyhow::ensure!(args.lr.is_finite() && args.lr > 0.0, "--lr must be a positive number");
    anyhow::ensure!(args.weight_decay.is_finite() && args.weight_decay >= 0.0, "--weight-decay must be a non-negative number");
    anyhow::ensure!(args.max_grad_norm.is_finite() && args.max_grad_norm >= 0.0, "--max-grad-norm must be a non-negative number");
    if args.max_steps == Some(0) {
        anyhow::bail!("--max-steps must be at least 1");
    }
    let has_adapter = args.out.join(lora::WEIGHTS_FILE).exists() || trainer::checkpoint_dir(&args.out).exists();
    if has_adapter && !args.resume && !args.force {
        anyhow::bail!("{} already holds an adapter or a checkpoint; pass --resume to continue it or --force to replace it", args.out.display());
    }
    if args.resume && !trainer::checkpoint_dir(&args.out).join("trainer_state.json").exists() {
        anyhow::bail!("--resume: {} has no checkpoint to continue", trainer::checkpoint_dir(&args.out).display());
    }
    setup_threads(args.model.threads)?;
    let path = args.model.resolve()?;
    let (ckpt, _) = modu_core::loader::open_checkpoint(&path)?;
    let arch = ckpt.architecture()?;
    let targets = if args.targets.is_empty() { lora::all_targets(&arch) } else { args.targets.clone() };
    let config = LoraConfig { r: args.rank, alpha: args.alpha, dropout: args.dropout, use_rslora: false, targets };
    config.validate()?;
    let tokenizer = modu_core::tokenizer::Tokenizer::from_checkpoint(ckpt.as_ref())?;
    let template = modu_core::loader::chat_template_source(&tokenizer, &arch)
        .map(|src| modu_core::loader::compile_chat_template(&tokenizer, &src))
        .transpose()?;
    let enc = Encoder { tokenizer: &tokenizer, template: template.as_ref(), raw: args.format == "raw" };
    let train = load_examples(&args.data, &enc, args.max_len)?;
    let eval = args.eval.as_deref().map(|p| load_examples(p, &enc, args.max_len)).transpose()?.unwrap_or_default();

    let device = args.model.device()?;
    let adapter = Adapter::new(ckpt.as_ref(), config.clone(), args.seed, &device)?;
    eprintln!("loading {} for training (frozen, f32)", path.display());
    let model = TrainModel::from_checkpoint(ckpt.as_ref(), &device)?;
    drop(ckpt);

    let steps_per_epoch = train.len().div_ceil(args.batch);
    let total = (steps_per_epoch * args.epochs).min(args.max_steps.unwrap_or(usize::MAX));
    let opts = TrainOptions {
        epochs: args.epochs,
        lr: args.lr,
        warmup_steps: args.warmup_steps.unwrap_or(total / 10),
        weight_decay: args.weight_decay,
        grad_accum: args.batch,
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        max_steps: args.max_steps,
        save_every: args.save_every,
    };
    let mut h = sha2::Sha256::new();
    h.update(std::fs::read(&args.data).unwrap_or_default());
    h.update(format!("{opts:?}{config:?}{}{}{}", args.max_len, path.display(), args.format).as_bytes());
    let fingerprint = format!("{:x}", h.finalize());

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this step and saving a checkpoint (Ctrl-C again quits at once)");
        });
    }
    let train_tokens: usize = train.iter().map(|e| e.ids.len()).sum();
    eprintln!(
        "{arch}: LoRA r={} alpha={} on {} projections ({} trainable parameters); {} training examples ({train_tokens} tokens), {} held out; {total} steps of {} examples",
        config.r,
        config.alpha,
        adapter.pairs.len(),
        adapter.n_params(),
        train.len(),
        eval.len(),
        args.batch
    );
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let base_name = path.display().to_string();
    let run = Run { model: &model, adapter: &adapter, train: &train, eval: &eval, opts, out: &args.out, base_model: &base_name, fingerprint, resume: args.resume, stop: &stop };
    if !args.resume {
        if let Some(l) = (!eval.is_empty()).then(|| trainer::mean_loss(&model, Some(&adapter), &eval)).transpose()? {
            eprintln!("eval loss before training: {l:.4}");
        }
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let interrupt_after = args.interrupt_after;
    let outcome = run.run(&mut |e| match e {
        Event::Step { step, epoch, loss, lr, tokens_per_s, .. } => {
            if interrupt_after == Some(step) {
                stop.store(true, Ordering::SeqCst);
            }
            bar.set_position(step as u64);
            bar.set_message(format!("epoch {epoch} loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"));
        }
        // Through suspend: a hidden bar (stderr not a terminal) drops println.
        Event::Eval { epoch, loss } => bar.suspend(|| eprintln!("epoch {epoch}: eval loss {loss:.4}")),
        Event::Saved { path } => bar.suspend(|| eprintln!("checkpoint saved to {}", path.display())),
    })?;
    bar.finish_and_clear();
    if let Some(p) = &args.report {
        let v = serde_json::json!({"steps": outcome.steps, "losses": outcome.losses, "eval_losses": outcome.eval_losses, "seconds": outcome.seconds, "interrupted": outcome.interrupted});
        std::fs::write(p, serde_json::to_string_pretty(&v)?).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let first = outcome.losses.first().copied().unwrap_or(f64::NAN);
    let last = outcome.losses.last().copied().unwrap_or(f64::NAN);
    if outcome.interrupted {
        eprintln!("interrupted after {} steps; resume with --resume", outcome.steps);
        std::process::exit(130);
    }
    eprintln!(
        "trained {} steps in {:.1} s (first step loss {first:.4}, last {last:.4}); adapter written to {}",
        outcome.steps,
        outcome.seconds,
        args.out.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Held-out examples, JSONL (as for tune); the last assistant message (or the completion)
    /// is the expected answer.
    #[arg(long)]
    pub data: PathBuf,
    /// Put K solved examples from --shots before each question (in-context learning).
    #[arg(long, default_value_t = 0)]
    pub few_shot: usize,
    /// Where the few-shot examples come from (usually the training file).
    #[arg(long)]
    pub shots: Option<PathBuf>,
    /// Prompt form: chat (the model's chat template) or raw (plain text, `<question>\nAnswer:`,
    /// generation stopped at a newline; how base models are prompted).
    #[arg(long, default_value = "chat", value_parser = ["chat", "raw"])]
    pub format: String,
    /// Seed that picks the few-shot examples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Longest generated answer in tokens.
    #[arg(long, default_value_t = 48)]
    pub max_tokens: usize,
    /// Write each prediction as a JSON line here.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let records = data::read_jsonl(&args.data)?;
    let shots: Vec<Record> = match (args.few_shot, &args.shots) {
        (0, _) => Vec::new(),
        (_, None) => anyhow::bail!("--few-shot needs --shots FILE to take the examples from"),
        (k, Some(p)) => {
            let mut all: Vec<Record> = data::read_jsonl(p)?.into_iter().map(|(_, r)| r).collect();
            anyhow::ensure!(all.len() >= k, "{} has {} examples, fewer than --few-shot {k}", p.display(), all.len());
            let mut rng = lora::SplitMix(args.seed ^ 0xF3A7);
            for i in (1..all.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                all.swap(i, j);
            }
            all.truncate(k);
            all
        }
    };
    let mut loaded = args.model.load()?;
    let template = loaded.chat_template()?;
    let tokenizer = &loaded.tokenizer;
    let raw = args.format == "raw";
    let enc = Encoder { tokenizer, template: template.as_ref(), raw };
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() },
        stop: if raw { vec!["\n".to_string()] } else { Vec::new() },
        stop_at_eog: true,
    };
    let mut preds = match &args.predictions {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?)),
        None => None,
    };
    let bar = ProgressBar::new(records.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let (mut correct, mut nll, mut n_tok) = (0usize, 0.0f64, 0usize);
    let started = std::time::Instant::now();
    let mut session = Session::new(loaded.model.as_mut());
    for (i, (line, r)) in records.iter().enumerate() {
        let (prompt, answer) = enc.prompt(r, &shots).with_context(|| format!("{}: line {line}", args.data.display()))?;
        // Loss of the expected answer's tokens after the prompt; the prompt stays cached for
        // the generation that follows.
        let ans = tokenizer.encode(&if raw { format!(" {answer}") } else { answer.clone() }, false, false)?;
        if !ans.is_empty() {
            let mut ids = prompt.clone();
            ids.extend_from_slice(&ans);
            let logits = session.logits_from(&ids, prompt.len() - 1)?.to_dtype(candle_core::DType::F32)?;
            for (k, &t) in ans.iter().enumerate() {
                nll -= log_prob(&logits.get(k)?.to_vec1::<f32>()?, t);
            }
            n_tok += ans.len();
        }
        let gen = session.generate(tokenizer, &prompt, &params, &mut |_| true)?;
        let ok = gen.text.trim() == answer.trim();
        correct += ok as usize;
        if let Some(w) = preds.as_mut() {
            use std::io::Write;
            writeln!(w, "{}", serde_json::json!({"line": line, "expected": answer, "output": gen.text, "correct": ok}))?;
        }
        bar.set_position(i as u64 + 1);
        bar.set_message(format!("accuracy {:.1}%", 100.0 * correct as f64 / (i + 1) as f64));
    }
    bar.finish_and_clear();
    let n = records.len();
    let acc = 100.0 * correct as f64 / n as f64;
    let loss = nll / n_tok.max(1) as f64;
    if args.json {
        println!("{}", serde_json::json!({"examples": n, "correct": correct, "accuracy": acc, "loss": loss, "few_shot": args.few_shot, "format": args.format, "seconds": started.elapsed().as_secs_f64()}));
    } else {
        println!("{}: {correct}/{n} exact matches = {acc:.1}%, answer loss {loss:.4} ({}-shot, {} prompt, {:.0} s)", args.data.display(), args.few_shot, args.format, started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn log_prob(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    logits[token as usize] as f64 - lse
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub output: GgufOut,
}

pub fn merge(args: MergeArgs) -> Result<()> {
    let adapter_dir = args.model.adapter.clone().ok_or_else(|| anyhow::anyhow!("merge needs --adapter DIR"))?;
    let ty = args.output.check()?;
    let path = args.model.resolve()?;
    let (base, _) = modu_core::loader::open_checkpoint(&path)?;
    let adapter = Adapter::load(&adapter_dir, base.as_ref(), &candle_core::Device::Cpu)?;
    let merged = lora::Merged::new(base.as_ref(), &adapter)?;
    eprintln!("{} projections adapted by {}", adapter.pairs.len(), adapter_dir.display());
    args.output.write(&merged, ty)
}
