//! `modu serve`: an OpenAI-compatible HTTP server over modu's continuous-batching engine.
//!
//! Safe defaults: loopback only; a Host allow-list against DNS rebinding; an optional Bearer key;
//! CORS off unless origins are listed; a body limit answered with a JSON 413; header read
//! timeouts against slow clients. Every client fault is a 4xx in OpenAI's error schema.

pub mod error;
pub mod request;
mod routes;
mod security;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use modu_core::chat::ChatTemplate;
use modu_core::engine::scheduler::Scheduler;

/// One served model.
pub struct ModelEntry {
    pub id: String,
    pub scheduler: Scheduler,
    pub template: Option<ChatTemplate>,
    pub template_source: Option<String>,
    pub vocab_size: usize,
    pub created: u64,
    /// Compiles response_format grammars for this model's vocabulary; None when the vocabulary
    /// cannot be used for constrained decoding (response_format is then refused with a 400).
    pub constraints: Option<std::sync::Arc<modu_core::engine::constraint::ConstraintCompiler>>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub api_key: Option<String>,
    pub cors_origins: Vec<String>,
    /// Extra Host header names accepted besides localhost, 127.0.0.1 and [::1].
    pub allowed_hosts: Vec<String>,
    pub max_body_bytes: usize,
    pub max_n: usize,
    pub header_timeout: Duration,
}

pub struct AppState {
    pub config: Config,
    pub models: BTreeMap<String, Arc<ModelEntry>>,
}

/// Serves until Ctrl-C. Prints `listening on http://ADDR` on stderr once accepting.
pub fn serve(config: Config, models: Vec<ModelEntry>) -> anyhow::Result<()> {
    let loopback = matches!(config.host.as_str(), "127.0.0.1" | "localhost" | "::1");
    if !loopback && config.api_key.is_none() {
        anyhow::bail!("refusing to listen on {} without --api-key: anyone on the network could use the server", config.host);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
        let addr: SocketAddr = listener.local_addr()?;
        let state = Arc::new(AppState {
            models: models.into_iter().map(|m| (m.id.clone(), Arc::new(m))).collect(),
            config,
        });
        let app = routes::router(state.clone());
        eprintln!("listening on http://{addr}");
        let timeout = state.config.header_timeout;
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                },
                _ = tokio::signal::ctrl_c() => break,
            };
            let svc = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(timeout)
                    .serve_connection(io, svc);
                if let Err(e) = conn.await {
                    tracing::debug!("connection ended: {e}");
                }
            });
        }
        Ok::<_, anyhow::Error>(())
    })
}
