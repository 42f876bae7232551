//! `modu convert`: an HF model directory (or a GGUF file) written as GGUF.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use modu_core::convert::{self, OutType};

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// HF model directory (config.json + safetensors) or a GGUF file.
    pub input: PathBuf,
    /// Output GGUF file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Tensor type: f32, f16, q8_0 or q4_k (llama.cpp's Q4_K_M mix).
    #[arg(long = "type", default_value = "f16")]
    pub out_type: String,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let ty = OutType::parse(&args.out_type)?;
    if args.out.exists() && !args.force {
        anyhow::bail!("{} exists; pass --force to replace it", args.out.display());
    }
    let (ckpt, _) = modu_core::loader::open_checkpoint(&args.input)?;
    let arch = ckpt.architecture()?;
    if !modu_core::models::SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(modu_core::Error::UnknownArchitecture(arch).into());
    }
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let start = std::time::Instant::now();
    let report = convert::convert(ckpt.as_ref(), &args.out, ty, |i, n, name| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })
    .with_context(|| format!("converting {}", args.input.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({arch}, {} tensors, {:.1} MiB of tensor data, {:?}) in {:.1} s",
        args.out.display(),
        report.tensors,
        report.bytes as f64 / (1 << 20) as f64,
        ty,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
