//! Typed errors for everything a user or a file can cause.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },
    #[error("{path}: is a directory with no .gguf model in it")]
    NoModelInDir { path: PathBuf },
    #[error("{path}: {reason}")]
    BadPath { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid GGUF file: {0}")]
    Gguf(String),
    #[error("unsupported model architecture '{0}' (supported: gemma3, llama, qwen3, exaone, exaone4, exaone-moe)")]
    UnknownArchitecture(String),
    #[error("tensor '{tensor}' has type {dtype}, which modu does not support")]
    UnsupportedTensorType { tensor: String, dtype: String },
    #[error("model is missing tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("model metadata: {0}")]
    Metadata(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("download: {0}")]
    Download(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
