//! GGUF v3 writer that streams tensors: the header (with every tensor's type, shape and offset)
//! is written first, then each tensor's bytes as they are produced, so converting a model never
//! holds more than one tensor in memory. The file appears under its name only when complete.

use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;

use crate::error::{Error, Result};

pub const ALIGNMENT: u64 = 32;

/// One tensor of the file to write: name, row-major dims (outermost first), storage type.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: GgmlDType,
}

impl TensorSpec {
    pub fn n_bytes(&self) -> usize {
        let elems: usize = self.dims.iter().product();
        elems / self.dtype.block_size() * self.dtype.type_size()
    }
}

/// ggml's type id of a storage type.
pub fn ggml_type_id(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

fn put_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(w: &mut impl Write, v: &Value) -> Result<()> {
    let io = |e: std::io::Error| Error::Invalid(format!("writing GGUF: {e}"));
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[*x as u8]),
        Value::String(s) => put_str(w, s),
        Value::Array(items) => {
            let t = items.first().map(type_id).unwrap_or(4);
            if items.iter().any(|i| type_id(i) != t) {
                return Err(Error::Invalid("GGUF arrays must hold one value type".into()));
            }
            w.write_all(&t.to_le_bytes()).map_err(io)?;
            w.write_all(&(items.len() as u64).to_le_bytes()).map_err(io)?;
            for i in items {
                put_value(w, i)?;
            }
            Ok(())
        }
    }
    .map_err(io)
}

fn pad(w: &mut impl Write, written: u64) -> std::io::Result<u64> {
    let n = (ALIGNMENT - written % ALIGNMENT) % ALIGNMENT;
    w.write_all(&vec![0u8; n as usize])?;
    Ok(n)
}

/// Writes `path`: `metadata` in the given order, then the tensors, whose bytes `data(i)` returns
/// in the order of `tensors`. Goes through `path.partial` and renames it at the end.
pub fn write(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[TensorSpec],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let partial = path.with_extension("gguf.partial");
    let io = |e: std::io::Error| Error::Io { path: partial.clone(), source: e };
    let file = std::fs::File::create(&partial).map_err(io)?;
    let mut w = BufWriter::new(file);
    let result = (|| -> Result<()> {
        w.write_all(b"GGUF").map_err(io)?;
        w.write_all(&3u32.to_le_bytes()).map_err(io)?;
        w.write_all(&(tensors.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(&(metadata.len() as u64).to_le_bytes()).map_err(io)?;
        for (k, v) in metadata {
            put_str(&mut w, k).map_err(io)?;
            w.write_all(&type_id(v).to_le_bytes()).map_err(io)?;
            put_value(&mut w, v)?;
        }
        let mut offset = 0u64;
        for t in tensors {
            let elems: usize = t.dims.iter().product();
            if elems % t.dtype.block_size() != 0 {
                return Err(Error::Invalid(format!("{}: {elems} values do not fill {:?} blocks", t.name, t.dtype)));
            }
            put_str(&mut w, &t.name).map_err(io)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes()).map_err(io)?;
            // GGUF stores dims innermost first.
            for d in t.dims.iter().rev() {
                w.write_all(&(*d as u64).to_le_bytes()).map_err(io)?;
            }
            w.write_all(&ggml_type_id(t.dtype).to_le_bytes()).map_err(io)?;
            w.write_all(&offset.to_le_bytes()).map_err(io)?;
            let n = t.n_bytes() as u64;
            offset += n + (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT;
        }
        let pos = w.stream_position().map_err(io)?;
        pad(&mut w, pos).map_err(io)?;
        for (i, t) in tensors.iter().enumerate() {
            let bytes = data(i)?;
            if bytes.len() != t.n_bytes() {
                return Err(Error::Invalid(format!("{}: {} bytes produced, {} expected", t.name, bytes.len(), t.n_bytes())));
            }
            w.write_all(&bytes).map_err(io)?;
            pad(&mut w, bytes.len() as u64).map_err(io)?;
        }
        w.flush().map_err(io)?;
        w.get_ref().sync_all().map_err(io)?;
        Ok(())
    })();
    drop(w);
    match result {
        Ok(()) => std::fs::rename(&partial, path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e }),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}
