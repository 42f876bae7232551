//! Options shared by several commands: which model, how many threads, how to sample.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use modu_core::engine::SamplingParams;
use modu_core::hub::{self, HubConfig, ModelRef};
use modu_core::loader::{self, LoadedModel};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A .gguf file, a directory holding one, or a Hugging Face repo id (owner/name[:QUANT]).
    /// Default: the EXAONE 4.0 1.2B Q4_K_M GGUF from the hub.
    #[arg(short, long)]
    pub model: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Device: cpu, or cuda when built with the cuda feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A LoRA adapter directory (PEFT layout: adapter_config.json + adapter_model.safetensors)
    /// applied to the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

impl ModelArgs {
    pub fn setup_threads(&self) -> Result<()> {
        setup_threads(self.threads)
    }

    pub fn resolve(&self) -> Result<PathBuf> {
        let spec = self.model.as_deref().unwrap_or(hub::DEFAULT_MODEL);
        let r = ModelRef::parse(spec);
        let mut cfg = HubConfig::from_env();
        cfg.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Ok(hub::resolve_gguf(&r, &cfg)?)
    }

    pub fn device(&self) -> Result<candle_core::Device> {
        match self.device.as_str() {
            "cpu" => Ok(candle_core::Device::Cpu),
            "cuda" => candle_core::Device::new_cuda(0).context("cannot use the cuda device (was modu built with --features cuda?)"),
            other => anyhow::bail!("unknown device '{other}' (use cpu or cuda)"),
        }
    }

    pub fn load(&self) -> Result<LoadedModel> {
        self.load_with(modu_core::models::layers::LoadOptions::default())
    }

    pub fn load_with(&self, opts: modu_core::models::layers::LoadOptions) -> Result<LoadedModel> {
        self.setup_threads()?;
        let path = self.resolve()?;
        let device = self.device()?;
        tracing::info!("loading {}", path.display());
        let loaded = loader::load_adapted(&path, self.adapter.as_deref(), &device, opts)?;
        loader::return_freed_memory();
        Ok(loaded)
    }
}

/// Sizes the thread pool candle's CPU kernels run on. Must run before any tensor work.
pub fn setup_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t >= 1, "--threads must be at least 1");
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        // A second call in one process is harmless: the first pool stays.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(t).build_global();
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one.
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise tokens repeated within the last --repeat-last-n (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed: the same seed gives the same output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Maximum tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop before this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn params(&self) -> modu_core::engine::GenerateParams {
        modu_core::engine::GenerateParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                seed: self.seed,
            },
            stop: self.stop.clone(),
            stop_at_eog: true,
        }
    }
}
