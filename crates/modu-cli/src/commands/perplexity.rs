//! `modu perplexity`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::options::ModelArgs;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file to score.
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long, default_value_t = 512)]
    pub ctx: usize,
    /// Print only the final figure.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut loaded = args.model.load()?;
    let tokens = loaded.tokenizer.encode(&text, true, false)?;
    let bos = loaded
        .tokenizer
        .bos_id()
        .ok_or_else(|| anyhow::anyhow!("the model has no BOS token; llama.cpp's perplexity method needs one"))?;
    let quiet = args.quiet;
    let r = modu_core::engine::perplexity::perplexity(loaded.model.as_mut(), &tokens, args.ctx, bos, |i, n, ppl| {
        if !quiet {
            eprintln!("[{i}/{n}] {ppl:.4}");
        }
    })?;
    println!("PPL = {:.4} ({} chunks of {}, {} tokens scored)", r.ppl, r.chunks, args.ctx, r.scored_tokens);
    Ok(())
}
