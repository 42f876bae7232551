//! Model file formats.

pub mod checkpoint;
pub mod hf;
pub mod hf_config;
pub mod hf_tokenizer;
pub mod gguf;
pub mod gguf_writer;
pub mod requant;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Turns a user's model path into one GGUF file: the file itself, or the only model file in a
/// directory (projector files for images are not models).
pub fn find_gguf(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { path: path.to_path_buf() },
        _ => Error::Io { path: path.to_path_buf(), source: e },
    })?;
    if !meta.is_dir() {
        return Ok(path.to_path_buf());
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.to_ascii_lowercase().ends_with(".gguf") && !name.to_ascii_lowercase().contains("mmproj") && p.is_file()
        })
        .collect();
    found.sort();
    match found.len() {
        0 => Err(Error::NoModelInDir { path: path.to_path_buf() }),
        1 => Ok(found.remove(0)),
        _ => Err(Error::BadPath {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} .gguf files; pick one with -m: {}",
                found.len(),
                found.iter().filter_map(|p| p.file_name()?.to_str()).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}
