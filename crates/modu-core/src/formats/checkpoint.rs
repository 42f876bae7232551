//! What a model is built from: metadata under GGUF key names and tensors under GGUF tensor
//! names. A GGUF file is one; a Hugging Face directory is translated into one
//! ([`super::hf::HfCheckpoint`]), so each architecture has a single loading path.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::QTensor;
use candle_core::Device;

use crate::error::{Error, Result};

/// The metadata key of the token texts.
pub const TOKENS: &str = "tokenizer.ggml.tokens";

/// The metadata keys whose arrays only the tokenizer reads.
pub const TOKENIZER_ARRAYS: [&str; 4] = [TOKENS, "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"];

/// The length of `tokenizer.ggml.tokens` in `metadata`, where it is an array.
pub fn token_list_len(metadata: &HashMap<String, Value>) -> Option<usize> {
    match metadata.get(TOKENS) {
        Some(Value::Array(a)) => Some(a.len()),
        _ => None,
    }
}

pub trait Checkpoint: Sync {
    fn metadata(&self) -> &HashMap<String, Value>;
    /// Every tensor name, sorted.
    fn tensor_names(&self) -> Vec<String>;
    /// Row-major dims (outermost first), or None when absent.
    fn tensor_dims(&self, name: &str) -> Option<&[usize]>;
    /// One tensor in its stored type.
    fn tensor(&self, name: &str, device: &Device) -> Result<QTensor>;
    /// Like [`Checkpoint::tensor`], in a type with fast matmul kernels when the stored one has none.
    fn tensor_for_matmul(&self, name: &str, device: &Device) -> Result<QTensor> {
        self.tensor(name, device)
    }
    /// The stored blocks of a matrix, without a copy where the checkpoint can lend them: in their
    /// own type where the CPU kernels take it, else in the type [`Checkpoint::tensor_for_matmul`]
    /// would give; None where this checkpoint has no such
    /// view (then `tensor_for_matmul` is used). Pass what has been copied to
    /// [`Checkpoint::drop_pages`].
    fn matmul_blocks(&self, _name: &str) -> Result<Option<(candle_core::quantized::GgmlDType, std::borrow::Cow<'_, [u8]>)>> {
        Ok(None)
    }
    /// Lets the memory behind bytes lent by [`Checkpoint::matmul_blocks`] go (a mapped file's
    /// pages, which are read again if touched); anything else is left alone.
    fn drop_pages(&self, _bytes: &[u8]) {}
    /// The length of `tokenizer.ggml.tokens`, also after [`Checkpoint::release_tokenizer_metadata`].
    fn token_count(&self) -> Option<usize> {
        token_list_len(self.metadata())
    }
    /// Frees the tokenizer's arrays (token texts, scores, types, merges) once the tokenizer is
    /// built: for a vocabulary of 262k tokens they hold tens of MB while the weights load.
    fn release_tokenizer_metadata(&mut self) {}
    /// A stacked tensor [n, ...] split along its first dimension (one matrix per expert).
    fn tensor_split(&self, name: &str, device: &Device) -> Result<Vec<QTensor>>;

    /// The name a user knows a tensor by, for messages (an HF directory's own names).
    fn source_name(&self, name: &str) -> String {
        name.to_string()
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.tensor_dims(name).is_some()
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.metadata().get(key)
    }

    fn architecture(&self) -> Result<String> {
        self.get_str("general.architecture")
    }

    fn get_str(&self, key: &str) -> Result<String> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Error::Metadata(format!("'{key}' is not a string"))),
            None => Err(Error::Metadata(format!("missing key '{key}'"))),
        }
    }

    /// Any integer type, as llama.cpp accepts.
    fn get_u64_opt(&self, key: &str) -> Result<Option<u64>> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let n: Option<u64> = match v {
            Value::U8(x) => Some(*x as u64),
            Value::U16(x) => Some(*x as u64),
            Value::U32(x) => Some(*x as u64),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.map(Some).ok_or_else(|| Error::Metadata(format!("'{key}' is not a non-negative integer")))
    }

    fn get_usize(&self, key: &str) -> Result<usize> {
        self.get_u64_opt(key)?
            .map(|v| v as usize)
            .ok_or_else(|| Error::Metadata(format!("missing key '{key}'")))
    }

    fn get_usize_opt(&self, key: &str) -> Result<Option<usize>> {
        Ok(self.get_u64_opt(key)?.map(|v| v as usize))
    }

    fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(_) => Err(Error::Metadata(format!("'{key}' is not a float"))),
        }
    }

    fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Error::Metadata(format!("'{key}' is not a bool"))),
        }
    }

    fn get_array(&self, key: &str) -> Result<Option<&Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(Error::Metadata(format!("'{key}' is not an array"))),
        }
    }
}
