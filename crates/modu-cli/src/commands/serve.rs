//! `modu serve`: loads the models and hands them to the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use modu_core::engine::scheduler::Scheduler;
use modu_core::hub::{self, HubConfig, ModelRef};
use modu_server::{Config, ModelEntry};

use crate::options::setup_threads;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A model to serve, as PATH or NAME=PATH (repeatable). The id clients send as "model" is
    /// NAME, else the file name without .gguf.
    #[arg(short, long = "model", required = true)]
    pub models: Vec<String>,
    /// Address to listen on. Anything but loopback requires --api-key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one; the "listening on" line tells which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` (also read from MODU_API_KEY).
    #[arg(long, env = "MODU_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Origins allowed to call the server from a browser (comma separated). Default: none.
    #[arg(long, value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Host header names accepted besides localhost, 127.0.0.1 and [::1] (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Sequences decoded together in one batch, per model.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests that may wait for a free sequence slot; more are refused with 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Largest `n` (choices per request).
    #[arg(long, default_value_t = 4)]
    pub max_n: usize,
    /// Cap on the context length (default: the model's).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Inject an engine fault (error-after=N or panic-after=N generated tokens), to test how
    /// clients see failures.
    #[arg(long, hide = true)]
    pub inject_fault: Option<String>,
    /// A LoRA adapter served beside its base, as NAME=DIR (with several models MODEL:NAME=DIR;
    /// repeatable). Requests choose it with "model": "MODEL:NAME". Each adapter runs as its own
    /// copy of the base with the adapter merged.
    #[arg(long = "adapter")]
    pub adapters: Vec<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    setup_threads(args.threads)?;
    anyhow::ensure!(args.parallel >= 1, "--parallel must be at least 1");
    anyhow::ensure!(args.max_n >= 1 && args.max_n <= args.parallel.max(1) * 4, "--max-n must be between 1 and 4x --parallel");
    let fault = args.inject_fault.as_deref().map(modu_core::engine::scheduler::Fault::parse).transpose()?;
    let mut entries = Vec::new();
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut bases: Vec<(String, std::path::PathBuf)> = Vec::new();
    for spec in &args.models {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), p.to_string()),
            _ => (None, spec.clone()),
        };
        let path = hub::resolve_gguf(&ModelRef::parse(&path), &HubConfig::from_env())?;
        let id = name.unwrap_or_else(|| {
            let stem = path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
            stem.trim_end_matches(".gguf").to_string()
        });
        anyhow::ensure!(!bases.iter().any(|(b, _)| *b == id), "two models are named '{id}'; name them with NAME=PATH");
        bases.push((id, path));
    }
    // (id, base path, adapter dir)
    let mut served: Vec<(String, std::path::PathBuf, Option<std::path::PathBuf>)> =
        bases.iter().map(|(id, p)| (id.clone(), p.clone(), None)).collect();
    for spec in &args.adapters {
        let (name, dir) = spec.split_once('=').ok_or_else(|| anyhow::anyhow!("--adapter '{spec}': expected NAME=DIR"))?;
        let (base, name) = match name.split_once(':') {
            Some((b, n)) => (b.to_string(), n.to_string()),
            None if bases.len() == 1 => (bases[0].0.clone(), name.to_string()),
            None => anyhow::bail!("--adapter '{spec}': with several models, write MODEL:NAME=DIR"),
        };
        anyhow::ensure!(!name.is_empty() && !name.contains(['/', ':']), "--adapter '{spec}': the name must be non-empty, without '/' or ':'");
        let path = bases
            .iter()
            .find(|(b, _)| *b == base)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| anyhow::anyhow!("--adapter '{spec}': no model is named '{base}'"))?;
        let id = format!("{base}:{name}");
        anyhow::ensure!(!served.iter().any(|(s, _, _)| *s == id), "two adapters are named '{id}'");
        served.push((id, path, Some(std::path::PathBuf::from(dir))));
    }
    for (id, path, adapter) in served {
        let loaded = modu_core::loader::load_adapted(&path, adapter.as_deref(), &candle_core::Device::Cpu, Default::default())
            .with_context(|| match &adapter {
                Some(a) => format!("loading {} with the adapter {}", path.display(), a.display()),
                None => format!("loading {}", path.display()),
            })?;
        let template = loaded.chat_template().with_context(|| format!("the chat template of {id}"))?;
        let vocab_size = loaded.model.info().vocab_size;
        let template_source = loaded.chat_template_source.clone();
        let mut scheduler = Scheduler::start_with_fault(loaded.model, Arc::new(loaded.tokenizer), args.parallel, args.max_queue, fault);
        if let Some(c) = args.ctx {
            scheduler.context_length = scheduler.context_length.min(c);
        }
        eprintln!("model '{id}': {} ({} slots, context {})", path.display(), args.parallel, scheduler.context_length);
        let constraints = match modu_core::engine::constraint::ConstraintCompiler::new(&scheduler.tokenizer) {
            Ok(c) => Some(std::sync::Arc::new(c)),
            Err(e) => {
                tracing::warn!("{id}: response_format is unavailable: {e}");
                None
            }
        };
        entries.push(ModelEntry { id, scheduler, template, template_source, vocab_size, created, constraints });
    }
    let config = Config {
        host: args.host,
        port: args.port,
        api_key: args.api_key.filter(|k| !k.is_empty()),
        cors_origins: args.cors_origins,
        allowed_hosts: args.allowed_hosts,
        max_body_bytes: args.max_body_bytes,
        max_n: args.max_n,
        header_timeout: Duration::from_secs(10),
    };
    modu_server::serve(config, entries)
}
