//! `modu perplexity`, and logit-level comparisons in llama.cpp's KL-divergence file format.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use modu_core::engine::kl_divergence::{BaseReader, BaseWriter, KlStats};
use modu_core::engine::perplexity::perplexity_rows;
use modu_core::models::layers::LoadOptions;

use crate::options::ModelArgs;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file to score (not with --kl-divergence: its file holds the tokens).
    #[arg(short = 'f', long, required_unless_present = "kl_divergence", conflicts_with = "kl_divergence")]
    pub file: Option<PathBuf>,
    /// Tokens per chunk (default 512; with --kl-divergence, the base file's).
    #[arg(short = 'c', long)]
    pub ctx: Option<usize>,
    /// Print only the final figures.
    #[arg(long)]
    pub quiet: bool,
    /// Reference arithmetic: f32 weights and KV cache, no llama.cpp-style rounding.
    #[arg(long)]
    pub exact: bool,
    /// Also write every scored position's log-probabilities to this file, in the format of
    /// llama-perplexity --kl-divergence-base (either engine can compare against it).
    #[arg(long, value_name = "FILE", conflicts_with = "kl_divergence")]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compare against a base file written by --kl-divergence-base (modu's or llama.cpp's):
    /// runs the base's tokens and reports KL divergence, perplexity ratio and top-token agreement.
    #[arg(long, value_name = "FILE")]
    pub kl_divergence: Option<PathBuf>,
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let mut base = args.kl_divergence.as_deref().map(BaseReader::open).transpose()?;
    if let (Some(b), Some(c)) = (&base, args.ctx) {
        anyhow::ensure!(c == b.n_ctx, "--ctx {c} differs from the base file's context {}", b.n_ctx);
    }
    let text = match (&args.file, &base) {
        (Some(f), None) => Some(std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?),
        _ => None,
    };
    let opts = if args.exact { LoadOptions::exact() } else { LoadOptions::default() };
    let mut loaded = args.model.load_with(opts)?;
    let vocab = loaded.model.info().vocab_size;
    let (tokens, ctx) = match (&base, text) {
        (Some(b), _) => {
            anyhow::ensure!(
                b.n_vocab == vocab,
                "the base file's vocabulary has {} tokens, the model's {vocab}: they are not the same model family",
                b.n_vocab
            );
            (b.tokens.clone(), b.n_ctx)
        }
        (None, Some(text)) => (loaded.tokenizer.encode(&text, true, false)?, args.ctx.unwrap_or(512)),
        (None, None) => unreachable!("clap requires --file or --kl-divergence"),
    };
    // As llama.cpp: chunks start with BOS only for models that add it.
    let bos = if loaded.tokenizer.add_bos() { loaded.tokenizer.bos_id() } else { None };
    anyhow::ensure!(ctx >= 4, "context {ctx} is too small for perplexity (at least 4)");
    let mut writer = match &args.kl_divergence_base {
        Some(path) => {
            let whole = tokens.len() / ctx * ctx;
            anyhow::ensure!(whole > 0, "the text has {} tokens, fewer than one chunk of {ctx}", tokens.len());
            let f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            Some(BaseWriter::new(std::io::BufWriter::new(f), ctx, vocab, &tokens[..whole])?)
        }
        None => None,
    };
    let mut stats = KlStats::default();
    let mut row = Vec::new();
    let quiet = args.quiet;
    let r = perplexity_rows(
        loaded.model.as_mut(),
        &tokens,
        ctx,
        bos,
        |i, n, ppl| {
            if !quiet {
                eprintln!("[{i}/{n}] {ppl:.4}");
            }
        },
        |logits, target| {
            if let Some(w) = writer.as_mut() {
                w.write_row(logits)?;
            }
            if let Some(b) = base.as_mut() {
                b.next_row(&mut row)?;
                stats.add(logits, &row, target)?;
            }
            Ok(())
        },
    )?;
    if let Some(w) = writer {
        w.finish()?;
    }
    println!("PPL = {:.4} ({} chunks of {ctx}, {} tokens scored)", r.ppl, r.chunks, r.scored_tokens);
    if base.is_some() {
        let s = stats.summary();
        println!("base PPL = {:.4}, PPL/base PPL = {:.5}", s.ppl_base, s.ppl / s.ppl_base);
        println!(
            "KL divergence from the base: mean {:.6} ± {:.6}, median {:.6}, 99% {:.6}, max {:.6} ({} positions)",
            s.mean_kld, s.kld_err, s.median_kld, s.p99_kld, s.max_kld, s.count
        );
        println!("same top token: {:.3}%", 100.0 * s.same_top);
    }
    Ok(())
}
