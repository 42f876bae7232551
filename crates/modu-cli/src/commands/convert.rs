//! `modu convert`: an HF model directory (or a GGUF file) written as GGUF.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use modu_core::convert::{self, OutType};
use modu_core::formats::checkpoint::Checkpoint;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// HF model directory (config.json + safetensors) or a GGUF file.
    pub input: PathBuf,
    #[command(flatten)]
    pub output: GgufOut,
}

/// The GGUF file a command writes (`convert`, `merge`).
#[derive(Args, Debug)]
pub struct GgufOut {
    /// Output GGUF file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Tensor type: f32, f16, q8_0, q4_0, q4_k or q5_k (llama.cpp's Q4_0, Q4_K_M and Q5_K_M mixes).
    #[arg(long = "type", default_value = "f16")]
    pub out_type: String,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

impl GgufOut {
    /// The tensor type, after refusing to replace an existing file without --force. Call
    /// before any slow work.
    pub fn check(&self) -> Result<OutType> {
        let ty = OutType::parse(&self.out_type)?;
        if self.out.exists() && !self.force {
            anyhow::bail!("{} exists; pass --force to replace it", self.out.display());
        }
        Ok(ty)
    }

    /// Writes `ckpt` with a progress bar and reports what was written.
    pub fn write(&self, ckpt: &dyn Checkpoint, ty: OutType) -> Result<()> {
        let arch = ckpt.architecture()?;
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        let start = std::time::Instant::now();
        let report = convert::convert(ckpt, &self.out, ty, |i, n, name| {
            bar.set_length(n as u64);
            bar.set_position(i as u64);
            bar.set_message(name.to_string());
        })
        .with_context(|| format!("writing {}", self.out.display()))?;
        bar.finish_and_clear();
        eprintln!(
            "wrote {} ({arch}, {} tensors, {:.1} MiB of tensor data, {:?}) in {:.1} s",
            self.out.display(),
            report.tensors,
            report.bytes as f64 / (1 << 20) as f64,
            ty,
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let ty = args.output.check()?;
    let (ckpt, _) = modu_core::loader::open_checkpoint(&args.input)?;
    let arch = ckpt.architecture()?;
    if !modu_core::models::SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(modu_core::Error::UnknownArchitecture(arch).into());
    }
    args.output.write(ckpt.as_ref(), ty).with_context(|| format!("converting {}", args.input.display()))
}
