//! modu's engine: model formats, model architectures, tokenizers, chat templates, generation and
//! hub access.
//!
//! Requests flow one way: the CLI or server asks the engine, the engine drives a model. Models know
//! nothing of text; the engine knows nothing of HTTP.

pub mod chat;
pub mod convert;
pub mod engine;
pub mod error;
pub mod formats;
pub mod hub;
pub mod kernels;
pub mod loader;
pub mod models;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
