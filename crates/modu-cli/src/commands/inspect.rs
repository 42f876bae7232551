//! `modu tokenize` and `modu logits`: the interfaces correctness tests are built on.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use modu_core::models::Logits;

use crate::options::ModelArgs;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    pub text: String,
    /// Do not add BOS.
    #[arg(long)]
    pub no_bos: bool,
    /// Match special tokens written in the text (e.g. <start_of_turn>).
    #[arg(long)]
    pub special: bool,
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let path = args.model.resolve()?;
    let (ckpt, _) = modu_core::loader::open_checkpoint(&path)?;
    let tok = modu_core::tokenizer::Tokenizer::from_checkpoint(ckpt.as_ref())?;
    let ids = tok.encode(&args.text, !args.no_bos, args.special)?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids, used as given.
    #[arg(long, conflicts_with = "text", required_unless_present = "text")]
    pub ids: Option<String>,
    /// Text, tokenized with BOS as llama.cpp does.
    #[arg(long)]
    pub text: Option<String>,
    /// Output safetensors file with one f32 tensor `logits` [n_tokens, vocab].
    #[arg(long)]
    pub out: PathBuf,
    /// Reference arithmetic: f32 weights and KV cache, no llama.cpp-style rounding (for
    /// comparisons with HF transformers).
    #[arg(long)]
    pub exact: bool,
}

pub fn logits(args: LogitsArgs) -> Result<()> {
    let opts = if args.exact {
        modu_core::models::layers::LoadOptions::exact()
    } else {
        modu_core::models::layers::LoadOptions::default()
    };
    let mut loaded = args.model.load_with(opts)?;
    let ids: Vec<u32> = match (&args.ids, &args.text) {
        (Some(s), _) => s
            .split(',')
            .map(|t| t.trim().parse::<u32>().with_context(|| format!("'{t}' in --ids is not a token id")))
            .collect::<Result<_>>()?,
        (None, Some(t)) => loaded.tokenizer.encode(t, true, false)?,
        (None, None) => anyhow::bail!("give --ids or --text"),
    };
    anyhow::ensure!(!ids.is_empty(), "no tokens to run");
    let ctx = loaded.model.info().context_length;
    anyhow::ensure!(ids.len() <= ctx, "{} tokens exceed the context length {ctx}", ids.len());
    let logits = loaded.model.forward(&ids, 0, Logits::All)?.to_dtype(candle_core::DType::F32)?;
    let map = HashMap::from([("logits".to_string(), logits)]);
    candle_core::safetensors::save(&map, &args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote logits [{}, {}] to {}", ids.len(), loaded.model.info().vocab_size, args.out.display());
    Ok(())
}
