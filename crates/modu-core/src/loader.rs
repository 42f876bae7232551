//! Opens a model file and builds everything needed to run it.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::chat::{builtin, ChatTemplate};
use crate::error::Result;
use crate::formats::{self, gguf::GgufFile};
use crate::models::layers::LoadOptions;
use crate::models::{self, CausalLm};
use crate::tokenizer::Tokenizer;

pub struct LoadedModel {
    pub model: Box<dyn CausalLm>,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    pub file_bytes: u64,
    pub architecture: String,
    /// The file's own chat template, or modu's built-in one for the architecture.
    pub chat_template_source: Option<String>,
}

impl LoadedModel {
    pub fn chat_template(&self) -> Result<Option<ChatTemplate>> {
        let Some(src) = &self.chat_template_source else { return Ok(None) };
        let piece = |id: Option<u32>| id.map(|i| self.tokenizer.token_text(i).unwrap_or_default().to_string()).unwrap_or_default();
        Ok(Some(ChatTemplate::new(src, &piece(self.tokenizer.bos_id()), &piece(self.tokenizer.eos_id()))?))
    }
}

/// Loads a GGUF model (a file, or a directory holding one) onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_with(path, device, LoadOptions::default())
}

pub fn load_with(path: &Path, device: &Device, opts: LoadOptions) -> Result<LoadedModel> {
    let path = formats::find_gguf(path)?;
    let gguf = GgufFile::open(&path)?;
    let architecture = gguf.architecture().map_err(|_| crate::Error::Metadata("missing general.architecture".into()))?;
    if !models::SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
        return Err(crate::Error::UnknownArchitecture(architecture));
    }
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let model = models::load_gguf(&gguf, device, opts)?;
    let chat_template_source = tokenizer
        .chat_template()
        .map(str::to_string)
        .or_else(|| builtin::for_architecture(&architecture).map(str::to_string));
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(LoadedModel { model, tokenizer, path, file_bytes, architecture, chat_template_source })
}
