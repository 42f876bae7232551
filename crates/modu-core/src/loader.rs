//! Opens a model file and builds everything needed to run it.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::chat::{builtin, ChatTemplate};
use crate::error::Result;
use crate::formats::{self, checkpoint::Checkpoint, gguf::GgufFile, hf::HfCheckpoint};
use crate::models::layers::LoadOptions;
use crate::models::{self, CausalLm};
use crate::tokenizer::Tokenizer;

pub struct LoadedModel {
    pub model: Box<dyn CausalLm>,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
    /// Bytes of weights on disk.
    pub file_bytes: u64,
    /// Number of weights.
    pub params: u64,
    /// GGUF `general.file_type`, when the file states it.
    pub file_type: Option<usize>,
    pub architecture: String,
    /// The file's own chat template, or modu's built-in one for the architecture.
    pub chat_template_source: Option<String>,
}

impl LoadedModel {
    pub fn chat_template(&self) -> Result<Option<ChatTemplate>> {
        self.chat_template_source.as_deref().map(|src| compile_chat_template(&self.tokenizer, src)).transpose()
    }
}

/// The chat template the model's files carry, or modu's built-in one for its architecture.
pub fn chat_template_source(tokenizer: &Tokenizer, architecture: &str) -> Option<String> {
    tokenizer
        .chat_template()
        .map(str::to_string)
        .or_else(|| builtin::for_model(architecture, |t| tokenizer.token_to_id(t).is_some()).map(str::to_string))
}

/// Compiles a chat template with the model's BOS and EOS token texts.
pub fn compile_chat_template(tokenizer: &Tokenizer, source: &str) -> Result<ChatTemplate> {
    let piece = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or_default().to_string();
    ChatTemplate::new(source, &piece(tokenizer.bos_id()), &piece(tokenizer.eos_id()))
}

/// Opens a model for reading: an HF directory (config.json + safetensors), a GGUF file, or a
/// directory holding one GGUF file. Returns the checkpoint and the path actually opened.
pub fn open_checkpoint(path: &Path) -> Result<(Box<dyn Checkpoint>, PathBuf)> {
    if formats::hf::is_hf_dir(path) {
        return Ok((Box::new(HfCheckpoint::open(path)?), path.to_path_buf()));
    }
    let file = formats::find_gguf(path)?;
    Ok((Box::new(GgufFile::open(&file)?), file))
}

/// Hands freed heap memory back to the system. The CLI tunes the allocator to keep large free
/// stretches for reuse between decode steps; what loading frees (file metadata, the tokenizer's
/// scratch) would otherwise stay resident for the whole run.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Loads a model (see [`open_checkpoint`]) onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_with(path, device, LoadOptions::default())
}

pub fn load_with(path: &Path, device: &Device, opts: LoadOptions) -> Result<LoadedModel> {
    load_adapted(path, None, device, opts)
}

/// Loads a model with a LoRA adapter (PEFT layout) merged into its adapted projections, which
/// then run in f32.
pub fn load_adapted(path: &Path, adapter: Option<&Path>, device: &Device, opts: LoadOptions) -> Result<LoadedModel> {
    let (mut base, path) = open_checkpoint(path)?;
    let architecture = base.architecture().map_err(|_| crate::Error::Metadata("missing general.architecture".into()))?;
    if !models::SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
        return Err(crate::Error::UnknownArchitecture(architecture));
    }
    // An adapter changes weights only: the tokenizer is the base model's. Its arrays are freed
    // before the weights load, so they never count towards the peak memory.
    let tokenizer = Tokenizer::from_checkpoint(base.as_ref())?;
    base.release_tokenizer_metadata();
    return_freed_memory();
    let adapter = adapter.map(|dir| crate::train::lora::Adapter::load(dir, base.as_ref(), &Device::Cpu)).transpose()?;
    let merged = adapter.as_ref().map(|a| crate::train::lora::Merged::new(base.as_ref(), a)).transpose()?;
    let ckpt: &dyn Checkpoint = match &merged {
        Some(m) => m,
        None => base.as_ref(),
    };
    let model = models::from_checkpoint(ckpt, device, opts)?;
    let chat_template_source = chat_template_source(&tokenizer, &architecture);
    let file_bytes = if path.is_dir() {
        std::fs::read_dir(&path)
            .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors")).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    } else {
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
    };
    let params = ckpt.tensor_names().iter().filter_map(|n| ckpt.tensor_dims(n)).map(|d| d.iter().product::<usize>() as u64).sum();
    let file_type = ckpt.get_usize_opt("general.file_type").ok().flatten();
    Ok(LoadedModel { model, tokenizer, path, file_bytes, params, file_type, architecture, chat_template_source })
}
