//! GGUF reader, hardened against hostile files.
//!
//! The header is parsed from a memory map with every length checked against the bytes that remain
//! before anything is allocated, so a corrupt file yields `Error::Gguf` naming the problem and never
//! a panic, an abort or an allocation larger than the file. The result is candle's own
//! [`gguf_file::Content`], so tensor decoding stays candle's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::{ggml_file, GgmlDType, QTensor};
use candle_core::Device;

use super::checkpoint::Checkpoint;
use crate::error::{Error, Result};

const MAX_DIMS: u32 = 4;
const MAX_VALUE_DEPTH: usize = 8;
const MAX_ALIGNMENT: u64 = 1 << 16;

/// An opened, validated GGUF file: metadata and tensor index in memory, tensor data mapped.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    map: memmap2::Mmap,
    /// The token list's length, kept when the list itself is released.
    token_count: Option<usize>,
}

fn gguf_err(msg: impl Into<String>) -> Error {
    Error::Gguf(msg.into())
}

/// Names of ggml tensor types, including those modu cannot decode, for error messages.
pub fn ggml_type_name(id: u32) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("unknown type id {id}"),
    };
    name.to_string()
}

fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// A bounds-checked little-endian cursor over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    v1: bool,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(gguf_err(format!(
                "{what} needs {n} bytes at offset {}, but the file has only {} left (truncated or corrupt)",
                self.pos,
                self.remaining()
            )));
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count or length: u32 in GGUF v1, u64 after.
    fn len(&mut self, what: &str) -> Result<u64> {
        if self.v1 {
            Ok(self.u32(what)? as u64)
        } else {
            self.u64(what)
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        if n > self.remaining() as u64 {
            return Err(gguf_err(format!(
                "{what}: string length {n} runs past the end of the file ({} bytes left)",
                self.remaining()
            )));
        }
        let bytes = self.take(n, what)?;
        let mut bytes = bytes;
        while let Some((0, rest)) = bytes.split_last() {
            bytes = rest;
        }
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        if depth > MAX_VALUE_DEPTH {
            return Err(gguf_err(format!("metadata '{key}': arrays nested too deeply")));
        }
        Ok(match ty {
            0 => Value::U8(self.u8(key)?),
            1 => Value::I8(self.u8(key)? as i8),
            2 => Value::U16(self.u16(key)?),
            3 => Value::I16(self.u16(key)? as i16),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(self.u32(key)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(gguf_err(format!("metadata '{key}': bad bool value {b}"))),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                let elem_ty = self.u32(key)?;
                let n = self.len(key)?;
                let min_size: u64 = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4 | 5 | 6 => 4,
                    10..=12 => 8,
                    8 => {
                        if self.v1 {
                            4
                        } else {
                            8
                        }
                    }
                    9 => 12,
                    t => {
                        return Err(gguf_err(format!(
                            "metadata '{key}': unknown array element type {t}"
                        )))
                    }
                };
                if n.saturating_mul(min_size) > self.remaining() as u64 {
                    return Err(gguf_err(format!(
                        "metadata '{key}': array of {n} elements runs past the end of the file"
                    )));
                }
                let mut vs = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    vs.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(vs)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            t => return Err(gguf_err(format!("metadata '{key}': unknown value type {t}"))),
        })
    }
}

/// Parses and validates a whole GGUF image. Public for tests and fuzzing.
pub fn parse(buf: &[u8]) -> Result<Content> {
    if buf.is_empty() {
        return Err(gguf_err("the file is empty (0 bytes)"));
    }
    let mut c = Cursor { buf, pos: 0, v1: false };
    let magic = c.take(4, "magic").map_err(|_| gguf_err("the file is too short to be GGUF"))?;
    if magic != b"GGUF" {
        return Err(gguf_err(format!(
            "bad magic {:02x?} (expected \"GGUF\"): this is not a GGUF file",
            magic
        )));
    }
    let version = c.u32("version")?;
    let magic = match version {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => return Err(gguf_err(format!("unsupported GGUF version {v}"))),
    };
    c.v1 = version == 1;
    let n_tensors = c.len("tensor count")?;
    let n_kv = c.len("metadata count")?;
    // Every metadata entry takes at least 13 bytes and every tensor entry at least 24.
    let min_bytes = n_kv
        .saturating_mul(13)
        .saturating_add(n_tensors.saturating_mul(24));
    if min_bytes > c.remaining() as u64 {
        return Err(gguf_err(format!(
            "header declares {n_tensors} tensors and {n_kv} metadata entries, more than the {} byte file can hold",
            buf.len()
        )));
    }

    let mut metadata = HashMap::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        if key.is_empty() {
            return Err(gguf_err("metadata key is empty"));
        }
        let ty = c.u32(&key)?;
        let value = c.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(gguf_err(format!("metadata key '{key}' appears twice")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => gguf_file::DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => *a as u64,
        Some(v) => {
            return Err(gguf_err(format!(
                "general.alignment must be a u32, found {:?}",
                v.value_type()
            )))
        }
    };
    if alignment == 0 || !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
        return Err(gguf_err(format!(
            "general.alignment {alignment} is not a power of two up to {MAX_ALIGNMENT}"
        )));
    }

    struct Raw {
        name: String,
        dims: Vec<usize>,
        dtype: GgmlDType,
        offset: u64,
        nbytes: u64,
    }
    let mut raws: Vec<Raw> = Vec::with_capacity(n_tensors as usize);
    let mut seen = std::collections::HashSet::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(gguf_err(format!(
                "tensor '{name}' has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut elems: u64 = 1;
        for _ in 0..n_dims {
            let d = c.len(&name)?;
            if d == 0 {
                return Err(gguf_err(format!("tensor '{name}' has a zero dimension")));
            }
            elems = elems.checked_mul(d).filter(|e| *e < (1u64 << 48)).ok_or_else(|| {
                gguf_err(format!("tensor '{name}': element count overflows"))
            })?;
            dims.push(d as usize);
        }
        let type_id = c.u32(&name)?;
        let dtype = ggml_dtype(type_id).ok_or_else(|| Error::UnsupportedTensorType {
            tensor: name.clone(),
            dtype: ggml_type_name(type_id),
        })?;
        let offset = c.u64(&name)?;
        let block = dtype.block_size() as u64;
        if dims[0] as u64 % block != 0 {
            return Err(gguf_err(format!(
                "tensor '{name}': first dimension {} is not a multiple of the {:?} block size {block}",
                dims[0], dtype
            )));
        }
        let nbytes = elems / block * dtype.type_size() as u64;
        if offset % alignment != 0 {
            return Err(gguf_err(format!(
                "tensor '{name}': data offset {offset} is not aligned to {alignment}"
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(gguf_err(format!("tensor '{name}' appears twice")));
        }
        // GGUF stores dimensions innermost first; candle wants them outermost first.
        dims.reverse();
        raws.push(Raw { name, dims, dtype, offset, nbytes });
    }

    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let data_len = (buf.len() as u64).saturating_sub(data_start);
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(raws.len());
    for (i, r) in raws.iter().enumerate() {
        let end = r.offset.checked_add(r.nbytes).ok_or_else(|| {
            gguf_err(format!("tensor '{}': offset + size overflows", r.name))
        })?;
        if end > data_len {
            return Err(gguf_err(format!(
                "tensor '{}' ({:?}, {} bytes at data offset {}) runs past the end of the file (truncated?)",
                r.name, r.dtype, r.nbytes, r.offset
            )));
        }
        spans.push((r.offset, end, i));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(gguf_err(format!(
                "tensors '{}' and '{}' overlap",
                raws[w[0].2].name, raws[w[1].2].name
            )));
        }
    }

    let tensor_infos = raws
        .into_iter()
        .map(|r| {
            let info = TensorInfo { ggml_dtype: r.dtype, shape: r.dims.into(), offset: r.offset };
            (r.name, info)
        })
        .collect();
    Ok(Content { magic, metadata, tensor_infos, tensor_data_offset: data_start })
}

/// Rejects paths that are not regular files before anything is opened or mapped.
pub fn check_regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { path: path.to_path_buf() },
        _ => Error::Io { path: path.to_path_buf(), source: e },
    })?;
    if meta.is_dir() {
        return Err(Error::NoModelInDir { path: path.to_path_buf() });
    }
    if !meta.is_file() {
        return Err(Error::BadPath {
            path: path.to_path_buf(),
            reason: "not a regular file (device, pipe or socket)".into(),
        });
    }
    Ok(())
}

/// Bytes a tensor's blocks take in the file.
fn stored_bytes(info: &TensorInfo) -> usize {
    info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        check_regular_file(path)?;
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        let len = file
            .metadata()
            .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?
            .len();
        if len == 0 {
            return Err(Error::BadPath {
                path: path.to_path_buf(),
                reason: "invalid GGUF file: the file is empty (0 bytes)".into(),
            });
        }
        // SAFETY: the map is read-only; a model file changed underneath a running process is
        // outside what modu can defend against (as for every mmap-based loader).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        let content = parse(&map).map_err(|e| match e {
            Error::Gguf(msg) => Error::BadPath {
                path: path.to_path_buf(),
                reason: format!("invalid GGUF file: {msg}"),
            },
            other => other,
        })?;
        let token_count = super::checkpoint::token_list_len(&content.metadata);
        Ok(Self { path: path.to_path_buf(), content, map, token_count })
    }

    fn raw(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        let nbytes = stored_bytes(info);
        let start = (self.content.tensor_data_offset + info.offset) as usize;
        // In bounds: parse() checked every tensor's span against the file.
        Ok((info, &self.map[start..start + nbytes]))
    }

    /// Decodes raw tensor bytes; when `for_matmul` off the CPU, re-encodes Q4_0 and Q5_0 losslessly
    /// as Q8_0, which candle multiplies faster (the CPU kernels take them as they are).
    fn decode(&self, dtype: GgmlDType, raw: &[u8], dims: &[usize], for_matmul: bool, device: &Device) -> Result<QTensor> {
        let t = if for_matmul && !device.is_cpu() && super::requant::converts(dtype) {
            super::requant::to_q8_0(dtype, raw, dims, device)
        } else {
            Ok(ggml_file::qtensor_from_ggml(dtype, raw, dims.to_vec(), device)?)
        };
        self.release_bytes(raw);
        t
    }

    /// Drops the file pages of a tensor that has been copied out, so loading does not hold the
    /// file twice in memory (mapped pages count as resident).
    fn release_bytes(&self, raw: &[u8]) {
        #[cfg(unix)]
        {
            let offset = raw.as_ptr() as usize - self.map.as_ptr() as usize;
            // SAFETY: the map is private and read-only, so dropped pages are re-read from the
            // file if touched again; `raw` is not used after this call.
            let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, raw.len()) };
        }
        #[cfg(not(unix))]
        let _ = raw;
    }

    /// Bytes of weights one decoded token reads: every matrix except the token embedding table,
    /// which is read one row per token unless it is also the output layer (no `output.weight`).
    /// Mixture-of-experts files count every expert, so this is an upper bound for them.
    pub fn decode_read_bytes(&self) -> u64 {
        let tied = !self.content.tensor_infos.contains_key("output.weight");
        self.content
            .tensor_infos
            .iter()
            .filter(|(name, i)| i.shape.dims().len() >= 2 && (tied || name.as_str() != "token_embd.weight"))
            .map(|(_, i)| stored_bytes(i) as u64)
            .sum()
    }

    /// Total bytes of tensor data, for memory reports.
    pub fn tensor_bytes(&self) -> u64 {
        self.content
            .tensor_infos
            .values()
            .map(|i| stored_bytes(i) as u64)
            .sum()
    }
}

impl Checkpoint for GgufFile {
    fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    fn token_count(&self) -> Option<usize> {
        self.token_count
    }

    fn release_tokenizer_metadata(&mut self) {
        for key in super::checkpoint::TOKENIZER_ARRAYS {
            self.content.metadata.remove(key);
        }
        self.content.metadata.shrink_to_fit();
        // The header was parsed into owned values: its mapped pages (mostly the token list) are
        // not read again.
        let header = (self.content.tensor_data_offset as usize).min(self.map.len());
        self.release_bytes(&self.map[..header]);
    }

    fn tensor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.content.tensor_infos.keys().cloned().collect();
        names.sort();
        names
    }

    fn tensor_dims(&self, name: &str) -> Option<&[usize]> {
        self.content.tensor_infos.get(name).map(|t| t.shape.dims())
    }

    fn tensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let (info, raw) = self.raw(name)?;
        self.decode(info.ggml_dtype, raw, info.shape.dims(), false, device)
    }

    fn tensor_for_matmul(&self, name: &str, device: &Device) -> Result<QTensor> {
        let (info, raw) = self.raw(name)?;
        self.decode(info.ggml_dtype, raw, info.shape.dims(), true, device)
    }

    fn matmul_blocks(&self, name: &str) -> Result<Option<(GgmlDType, std::borrow::Cow<'_, [u8]>)>> {
        let (info, raw) = self.raw(name)?;
        // Q4_0 and Q5_0 included: the kernels take them as they are.
        Ok(Some((info.ggml_dtype, std::borrow::Cow::Borrowed(raw))))
    }

    fn drop_pages(&self, bytes: &[u8]) {
        let (start, end) = (self.map.as_ptr() as usize, self.map.as_ptr() as usize + self.map.len());
        let at = bytes.as_ptr() as usize;
        if at >= start && at + bytes.len() <= end {
            self.release_bytes(bytes);
        }
    }

    fn tensor_split(&self, name: &str, device: &Device) -> Result<Vec<QTensor>> {
        let (info, raw) = self.raw(name)?;
        let dims = info.shape.dims();
        let n = dims[0];
        let part_dims = &dims[1..];
        let part_elems: usize = part_dims.iter().product();
        let bs = info.ggml_dtype.block_size();
        if n == 0 || part_dims.is_empty() || part_elems % bs != 0 {
            return Err(Error::Metadata(format!("tensor '{name}' of shape {dims:?} cannot be split along its first dimension")));
        }
        let part_bytes = part_elems / bs * info.ggml_dtype.type_size();
        raw.chunks_exact(part_bytes)
            .map(|chunk| self.decode(info.ggml_dtype, chunk, part_dims, true, device))
            .collect()
    }
}
