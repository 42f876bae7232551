//! Building blocks shared by the architectures: quantized linear layers, RMSNorm, rotary
//! embeddings, masked attention. Each architecture file composes these in its own order.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};
use half::f16;

use crate::engine::kv_cache::KvCache;
use crate::kernels::QMatrix;
use crate::error::{Error, Result};
use crate::formats::checkpoint::Checkpoint;

/// How weights and caches are held in memory, and how activations are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Dequantize every weight to f32: exact reference arithmetic for tests, at 4-8x the memory.
    pub dequantize: bool,
    /// KV cache element type: F16 as llama.cpp (and its f16 attention arithmetic), F32 exact.
    pub kv_dtype: DType,
    /// Round activations where ggml does (its f16 GELU table), so near-ties fall as in llama.cpp.
    pub ggml_rounding: bool,
    /// Quantized products on the kernels' definitions instead of their AVX2 tiles: the same
    /// numbers, bit for bit, several times slower (what shows that the tiles change nothing).
    pub portable_kernels: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dequantize: false, kv_dtype: DType::F16, ggml_rounding: true, portable_kernels: false }
    }
}

impl LoadOptions {
    /// f32 weights, f32 cache, no extra rounding: the arithmetic of a reference implementation.
    pub fn exact() -> Self {
        Self { dequantize: true, kv_dtype: DType::F32, ggml_rounding: false, portable_kernels: false }
    }
}

/// Loads GGUF tensors by name and checks their shapes against what the config implies.
pub struct Weights<'a> {
    pub gguf: &'a dyn Checkpoint,
    pub device: &'a Device,
    pub opts: LoadOptions,
}

impl<'a> Weights<'a> {
    pub fn new(gguf: &'a dyn Checkpoint, device: &'a Device, opts: LoadOptions) -> Self {
        Self { gguf, device, opts }
    }

    fn matmul(&self, q: std::sync::Arc<candle_core::quantized::QTensor>) -> Result<LinearWeight> {
        if self.opts.dequantize {
            return Ok(LinearWeight::Candle(QMatMul::Tensor(q.dequantize(self.device)?)));
        }
        if self.device.is_cpu() {
            if let Some(m) = QMatrix::from_qtensor(&q, !self.opts.portable_kernels)? {
                return Ok(LinearWeight::Kernel(std::sync::Arc::new(m)));
            }
        }
        Ok(LinearWeight::Candle(QMatMul::from_arc(q)?))
    }

    pub fn has(&self, name: &str) -> bool {
        self.gguf.has_tensor(name)
    }

    fn check_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        let got = self
            .gguf
            .tensor_dims(name)
            .ok_or_else(|| Error::MissingTensor(self.gguf.source_name(name)))?;
        if got != expected {
            return Err(Error::TensorShape {
                name: self.gguf.source_name(name),
                got: got.to_vec(),
                expected: expected.to_vec(),
            });
        }
        Ok(())
    }

    /// Our kernels' copy of a matrix [n, k], built straight from the checkpoint's stored blocks
    /// (no intermediate tensor, so loading never holds a weight twice); None where the kernels or
    /// the checkpoint cannot do that.
    fn kernel_matrix(&self, name: &str, n: usize, k: usize) -> Result<Option<std::sync::Arc<QMatrix>>> {
        if self.opts.dequantize || !self.device.is_cpu() {
            return Ok(None);
        }
        let Some((dtype, bytes)) = self.gguf.matmul_blocks(name)? else { return Ok(None) };
        let Some(format) = crate::kernels::QFormat::of(dtype) else { return Ok(None) };
        let m = QMatrix::with_kernels(format, n, k, &bytes, !self.opts.portable_kernels, &|done| self.gguf.drop_pages(done))?;
        Ok(Some(std::sync::Arc::new(m)))
    }

    /// A weight matrix [out, in] kept quantized.
    pub fn linear(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
        self.check_shape(name, &[out_dim, in_dim])?;
        if let Some(m) = self.kernel_matrix(name, out_dim, in_dim)? {
            return Ok(Linear { w: LinearWeight::Kernel(m), out_dim });
        }
        let q = std::sync::Arc::new(self.gguf.tensor_for_matmul(name, self.device)?);
        Ok(Linear { w: self.matmul(q)?, out_dim })
    }

    /// A vector dequantized to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        self.check_shape(name, &[len])?;
        Ok(self.gguf.tensor(name, self.device)?.dequantize(self.device)?)
    }

    /// A matrix [rows, cols] dequantized to f32 (MoE router weights, which run in f32).
    pub fn matrix_f32(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
        self.check_shape(name, &[rows, cols])?;
        Ok(self.gguf.tensor(name, self.device)?.dequantize(self.device)?)
    }

    /// A stacked weight [n, out, in] as n linear layers (one per expert).
    pub fn linears(&self, name: &str, n: usize, out_dim: usize, in_dim: usize) -> Result<Vec<Linear>> {
        self.check_shape(name, &[n, out_dim, in_dim])?;
        self.gguf
            .tensor_split(name, self.device)?
            .into_iter()
            .map(|q| Ok(Linear { w: self.matmul(std::sync::Arc::new(q))?, out_dim }))
            .collect()
    }

    pub fn rms_norm(&self, name: &str, len: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: self.vector(name, len)?, eps })
    }

    pub fn embedding(&self, name: &str, vocab: usize, hidden: usize) -> Result<Embedding> {
        self.check_shape(name, &[vocab, hidden])?;
        if let Some(m) = self.kernel_matrix(name, vocab, hidden)? {
            return Ok(Embedding { table: EmbeddingTable::Kernel(m), hidden, device: self.device.clone() });
        }
        let q = std::sync::Arc::new(self.gguf.tensor(name, self.device)?);
        // Kept once: the kernels' copy serves lookups too when the table is also the output head.
        let table = match self.matmul(q.clone())? {
            LinearWeight::Kernel(m) => EmbeddingTable::Kernel(m),
            LinearWeight::Candle(_) => EmbeddingTable::Candle(q),
        };
        Ok(Embedding { table, hidden, device: self.device.clone() })
    }
}

/// A bias-free linear layer over a (usually quantized) weight.
#[derive(Debug, Clone)]
pub struct Linear {
    w: LinearWeight,
    out_dim: usize,
}

/// Our kernels where the weight type has one (CPU), candle's matmul otherwise.
#[derive(Debug, Clone)]
enum LinearWeight {
    Kernel(std::sync::Arc<QMatrix>),
    Candle(QMatMul),
}

impl Linear {
    pub fn from_qmatmul(w: QMatMul, out_dim: usize) -> Self {
        Self { w: LinearWeight::Candle(w), out_dim }
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.w {
            LinearWeight::Kernel(m) => m.forward(x),
            LinearWeight::Candle(w) => Ok(w.forward(x)?),
        }
    }

    /// Whether the kernel differs for one row and for several, so that a row's result would
    /// depend on what it is batched with. Our kernels never do; candle 0.11 on x86 does for Q6_K
    /// (repacked only for several rows) and float weights (gemm blocking).
    fn kernel_depends_on_rows(&self) -> bool {
        match &self.w {
            LinearWeight::Kernel(_) => false,
            LinearWeight::Candle(QMatMul::QTensor(q)) => q.dtype() == candle_core::quantized::GgmlDType::Q6K,
            LinearWeight::Candle(_) => true,
        }
    }

    /// `x` [1, rows, in] holding the rows of several sequences: one matmul for all rows where
    /// that is exact, else one per sequence, so that batching never changes a sequence's numbers.
    pub fn forward_segments(&self, x: &Tensor, segs: &[crate::models::decoder::Segment]) -> Result<Tensor> {
        if segs.len() <= 1 || !self.kernel_depends_on_rows() {
            return self.forward(x);
        }
        let parts = segs
            .iter()
            .map(|s| self.forward(&x.narrow(1, s.start, s.len)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// Token embedding table, kept quantized; rows are dequantized on lookup.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: EmbeddingTable,
    hidden: usize,
    device: Device,
}

#[derive(Debug, Clone)]
enum EmbeddingTable {
    Kernel(std::sync::Arc<QMatrix>),
    Candle(std::sync::Arc<candle_core::quantized::QTensor>),
}

impl Embedding {
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match &self.table {
            EmbeddingTable::Candle(q) => Ok(q.embedding(ids)?),
            EmbeddingTable::Kernel(m) => {
                let ids_v = ids.flatten_all()?.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids_v.len() * self.hidden];
                for (&id, row) in ids_v.iter().zip(out.chunks_exact_mut(self.hidden)) {
                    if id as usize >= m.out_dim() {
                        return Err(Error::Invalid(format!("token id {id} is outside the vocabulary ({})", m.out_dim())));
                    }
                    m.dequantize_row(id as usize, row);
                }
                let mut shape = ids.dims().to_vec();
                shape.push(self.hidden);
                Ok(Tensor::from_vec(out, shape, &self.device)?)
            }
        }
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The same weights as an output projection (tied embeddings).
    pub fn as_linear(&self, w: &Weights) -> Result<Linear> {
        match &self.table {
            EmbeddingTable::Kernel(m) => Ok(Linear { w: LinearWeight::Kernel(m.clone()), out_dim: m.out_dim() }),
            EmbeddingTable::Candle(q) => {
                let vocab = q.shape().dims()[0];
                Ok(Linear { w: w.matmul(q.clone())?, out_dim: vocab })
            }
        }
    }
}

/// RMSNorm in f32: `w * x / sqrt(mean(x^2) + eps)` over the last dimension.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        Ok(candle_nn::ops::rms_norm(&x, &self.weight, self.eps as f32)?)
    }
}

/// How rotary pairs are laid out in a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (i, i + d/2): rotate-half, "NeoX" (Gemma, Qwen, EXAONE).
    Neox,
    /// Pairs (2i, 2i + 1): GGUF llama after the converter's Q/K permutation.
    Interleaved,
}

/// Rotary position embedding with per-frequency divisors (llama.cpp's `rope_freqs` tensor, which
/// carries llama3 scaling) folded into the inverse frequencies.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    style: RopeStyle,
    device: Device,
    /// cos and sin of the first positions, computed once: every layer and every sequence of a
    /// batch rotates at the same few positions each step. Shared by every `Rope` of the same
    /// frequencies (see [`shared_rope_table`]).
    table: RopeTable,
}

/// cos and sin of positions 0.., `inv_freq.len()` values per position.
type RopeAngles = std::sync::Mutex<(Vec<f32>, Vec<f32>)>;
type RopeTable = std::sync::Arc<RopeAngles>;

/// Positions whose angles are kept (1 KiB each at head_dim 256); later ones are computed per call.
const ROPE_TABLE_POSITIONS: usize = 8192;

/// The angle table of these inverse frequencies, one per distinct set in the process: a model's
/// layers share one or two (Gemma's local and global bases), instead of each layer growing its
/// own copy (18 MiB for Gemma 3 270M at 1,024 positions).
fn shared_rope_table(inv_freq: &[f32]) -> RopeTable {
    use std::sync::{Arc, Mutex, Weak};
    type Entry = (Vec<u32>, Weak<RopeAngles>);
    static TABLES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let key: Vec<u32> = inv_freq.iter().map(|f| f.to_bits()).collect();
    let mut tables = TABLES.lock().unwrap_or_else(|p| p.into_inner());
    tables.retain(|(_, t)| t.strong_count() > 0);
    if let Some(t) = tables.iter().find(|(k, _)| *k == key).and_then(|(_, t)| t.upgrade()) {
        return t;
    }
    let t: RopeTable = Arc::default();
    tables.push((key, Arc::downgrade(&t)));
    t
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32, freq_divisors: Option<&[f32]>, style: RopeStyle, device: &Device) -> Result<Self> {
        let half = head_dim / 2;
        if let Some(d) = freq_divisors {
            if d.len() != half {
                return Err(Error::Metadata(format!(
                    "rope_freqs has {} entries, expected head_dim/2 = {half}",
                    d.len()
                )));
            }
            if d.iter().any(|v| !v.is_finite() || *v <= 0.0) {
                return Err(Error::Metadata("rope_freqs holds a zero, negative or non-finite factor".into()));
            }
        }
        let inv_freq = (0..half)
            .map(|i| {
                let f = 1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64);
                let div = freq_divisors.map(|d| d[i] as f64).unwrap_or(1.0);
                (f / div) as f32
            })
            .collect::<Vec<f32>>();
        let table = shared_rope_table(&inv_freq);
        Ok(Self { inv_freq, style, device: device.clone(), table })
    }

    fn angles(&self, p: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        for &f in &self.inv_freq {
            // Angles in f64: positions times frequencies lose digits in f32 at long contexts.
            let a = p as f64 * f as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }

    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Rotates `x` of shape [batch, heads, seq, head_dim] for positions offset..offset+seq.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        if offset + seq <= ROPE_TABLE_POSITIONS {
            let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
            let have = t.0.len() / half.max(1);
            if have < offset + seq {
                let upto = (offset + seq).next_power_of_two().clamp(64, ROPE_TABLE_POSITIONS);
                let (tc, ts) = &mut *t;
                tc.reserve_exact((upto - have) * half);
                ts.reserve_exact((upto - have) * half);
                for p in have..upto {
                    self.angles(p, tc, ts);
                }
            }
            cos.extend_from_slice(&t.0[offset * half..(offset + seq) * half]);
            sin.extend_from_slice(&t.1[offset * half..(offset + seq) * half]);
        } else {
            for p in offset..offset + seq {
                self.angles(p, &mut cos, &mut sin);
            }
        }
        let cos = Tensor::from_vec(cos, (seq, half), &self.device)?;
        let sin = Tensor::from_vec(sin, (seq, half), &self.device)?;
        let x = x.contiguous()?;
        Ok(match self.style {
            RopeStyle::Neox => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
        })
    }
}

/// Additive attention mask [q_len, kv_len] for queries at positions offset.. attending keys at
/// positions k_start..k_start + kv_len: causal, and with a window W a query at q sees only keys k
/// with q - W < k.
pub fn attention_mask(q_len: usize, offset: usize, k_start: usize, kv_len: usize, window: Option<usize>, device: &Device) -> Result<Option<Tensor>> {
    let needs_window = window.is_some_and(|w| offset + q_len > w + k_start);
    if q_len == 1 && !needs_window {
        return Ok(None);
    }
    let mut m = vec![0f32; q_len * kv_len];
    for i in 0..q_len {
        let q = offset + i;
        for j in 0..kv_len {
            let k = k_start + j;
            let masked = k > q || window.is_some_and(|w| q >= w && k <= q - w);
            if masked {
                m[i * kv_len + j] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Some(Tensor::from_vec(m, (q_len, kv_len), device)?))
}

/// Query rows from which attention runs in the fused f32 kernel, shared out on the pool.
pub const PROMPT_ATTENTION_ROWS: usize = 32;

/// Scaled dot-product attention with grouped KV heads. q: [1, n_head, q_len, hd] in f32 for
/// positions offset..; k, v: [1, n_kv, kv_len, hd] in the cache's dtype for positions
/// k_start..k_start + kv_len;
/// returns [1, q_len, n_head * hd]. Causal, and limited to `window` keys when given.
///
/// With an f16 cache this follows llama.cpp's CPU flash-attention arithmetic (f16 query, online
/// softmax, f16 output accumulator), so that both engines round alike: Gemma's activations are
/// large enough that the rounding decides near-ties. Prompts, and every call with an f32 cache,
/// run the fused f32 kernel of `kernels::attention`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, offset: usize, k_start: usize, window: Option<usize>, scale: f64) -> Result<Tensor> {
    // Decode and short chunks: ggml's one-row kernel and its f16 arithmetic. Long prompts: f32
    // tiles, as llama.cpp's prompt path computes in f32 too.
    if k.dtype() == DType::F16 && q.dim(2)? < PROMPT_ATTENTION_ROWS {
        return attention_f16(q, k, v, offset, k_start, window, scale as f32);
    }
    let (_, n_head, q_len, head_dim) = q.dims4()?;
    let (n_kv, kv_len) = (k.dim(1)?, k.dim(2)?);
    let shape = crate::kernels::attention::Shape {
        n_head,
        n_kv,
        q_len,
        kv_len,
        head_dim,
        offset,
        k_start,
        window,
        scale: scale as f32,
    };
    let qd: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (kd, vd) = (cache_rows_f32(k)?, cache_rows_f32(v)?);
    let mut out = vec![0f32; q_len * n_head * head_dim];
    // Short blocks may run inside a pool task (several sequences decoding at once): only prompt
    // blocks share their work out.
    crate::kernels::attention::attend(&qd, &kd, &vd, &shape, &mut out, q_len >= PROMPT_ATTENTION_ROWS);
    Ok(Tensor::from_vec(out, (1, q_len, n_head * head_dim), q.device())?)
}

/// A cache view [1, heads, len, hd] (f16 or f32) as f32 values [heads, len, hd], read in place
/// from the longer buffer it narrows: candle's to_dtype converts one element per call.
fn cache_rows_f32(t: &Tensor) -> Result<Vec<f32>> {
    use half::slice::HalfFloatSliceExt;
    let (storage, layout) = t.storage_and_layout();
    if let (&[_, h, len, d], &[_, hs, ls, 1]) = (t.dims(), layout.stride()) {
        if ls == d {
            let mut f = vec![0f32; h * len * d];
            match &*storage {
                candle_core::Storage::Cpu(candle_core::CpuStorage::F16(data)) => {
                    for (head, out) in f.chunks_exact_mut(len * d).enumerate() {
                        let at = layout.start_offset() + head * hs;
                        data[at..at + len * d].convert_to_f32_slice(out);
                    }
                    return Ok(f);
                }
                candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) => {
                    for (head, out) in f.chunks_exact_mut(len * d).enumerate() {
                        let at = layout.start_offset() + head * hs;
                        out.copy_from_slice(&data[at..at + len * d]);
                    }
                    return Ok(f);
                }
                _ => {}
            }
        }
    }
    drop(storage);
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
}

/// ggml's f16 dot product on AVX2 (inputs already widened to f32): four 8-lane accumulators fed
/// by fused multiply-adds, reduced pairwise, then horizontally.
#[inline(always)]
fn dot_ggml(a: &[f32], b: &[f32]) -> f32 {
    let n32 = a.len() / 32 * 32;
    let mut acc = [0f32; 32];
    for (ca, cb) in a[..n32].chunks_exact(32).zip(b[..n32].chunks_exact(32)) {
        for l in 0..32 {
            acc[l] = ca[l].mul_add(cb[l], acc[l]);
        }
    }
    let mut x = [0f32; 8];
    for l in 0..8 {
        x[l] = (acc[l] + acc[16 + l]) + (acc[8 + l] + acc[24 + l]);
    }
    let t = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    let mut sum = ((t[0] + t[1]) + (t[2] + t[3])) as f64;
    for i in n32..a.len() {
        sum += (a[i] * b[i]) as f64;
    }
    sum as f32
}

/// Rounds every element to the nearest f16, as storing into an f16 buffer does.
#[inline(always)]
fn round_f16(xs: &mut [f32], scratch: &mut [f16]) {
    use half::slice::HalfFloatSliceExt;
    scratch.convert_from_f32_slice(xs);
    scratch.convert_to_f32_slice(xs);
}

fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_row_fma(q: &[f32], k: &[f32], v: &[f32], keys: std::ops::Range<usize>, scale: f32, dst: &mut [f32]) {
    attend_row_with(q, k, v, keys, scale, dst, |xs| unsafe { round_f16_f16c(xs) })
}

/// [`round_f16`] with F16C instructions in place (round to nearest even, as `half` does).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_f16_f16c(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(c.as_ptr()));
        _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
    }
    for x in chunks.into_remainder() {
        *x = f16::from_f32(*x).to_f32();
    }
}

/// One query row against keys `keys` of one KV head ([kv_len, hd] each): online softmax with the
/// weighted sum of values held in f16, as ggml's kernel does.
fn attend_row(q: &[f32], k: &[f32], v: &[f32], keys: std::ops::Range<usize>, scale: f32, dst: &mut [f32]) {
    let mut scratch = vec![f16::ZERO; q.len()];
    attend_row_with(q, k, v, keys, scale, dst, |xs| round_f16(xs, &mut scratch))
}

#[inline(always)]
fn attend_row_with(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    keys: std::ops::Range<usize>,
    scale: f32,
    dst: &mut [f32],
    mut round: impl FnMut(&mut [f32]),
) {
    let hd = q.len();
    let mut acc = vec![0f32; hd];
    let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
    for key in keys {
        let s = dot_ggml(&k[key * hd..][..hd], q) * scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if s > m {
            ms = (m - s).exp();
            m = s;
            acc.iter_mut().for_each(|a| *a *= ms);
            round(&mut acc);
        } else {
            vs = (s - m).exp();
        }
        for (a, &x) in acc.iter_mut().zip(&v[key * hd..][..hd]) {
            *a = x.mul_add(vs, *a);
        }
        round(&mut acc);
        s_sum = s_sum * ms + vs;
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    for (d, a) in dst.iter_mut().zip(&acc) {
        *d = a * inv;
    }
}

fn attention_f16(q: &Tensor, k: &Tensor, v: &Tensor, offset: usize, k_start: usize, window: Option<usize>, scale: f32) -> Result<Tensor> {
    use rayon::prelude::*;
    let (_, n_head, q_len, hd) = q.dims4()?;
    let n_kv = k.dim(1)?;
    let kv_len = k.dim(2)?;
    let n_rep = n_head / n_kv;
    // The query is rounded to f16 for the dot product with the f16 keys.
    let mut qd: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let mut scratch = vec![f16::ZERO; qd.len()];
    round_f16(&mut qd, &mut scratch);
    let kd = cache_rows_f32(k)?;
    let vd = cache_rows_f32(v)?;
    let mut out = vec![0f32; q_len * n_head * hd];
    // One output row [hd] per (position, head), laid out as [q_len, n_head, hd].
    let fma = has_fma();
    let row = |(row, dst): (usize, &mut [f32])| {
        let (i, h) = (row / n_head, row % n_head);
        let pos = offset + i;
        let kvh = h / n_rep;
        let qrow = &qd[(h * q_len + i) * hd..][..hd];
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w)).max(k_start) - k_start;
        let keys = first..(pos - k_start).min(kv_len - 1) + 1;
        let kh = &kd[kvh * kv_len * hd..][..kv_len * hd];
        let vh = &vd[kvh * kv_len * hd..][..kv_len * hd];
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked by has_fma).
            unsafe { attend_row_fma(qrow, kh, vh, keys, scale, dst) };
            return;
        }
        let _ = fma;
        attend_row(qrow, kh, vh, keys, scale, dst);
    };
    // Decode rows are too small to share out; prompts are not.
    if q_len * n_head * kv_len < 1 << 14 {
        out.chunks_mut(hd).enumerate().for_each(row);
    } else {
        out.par_chunks_mut(hd).enumerate().for_each(row);
    }
    Ok(Tensor::from_vec(out, (1, q_len, n_head * hd), q.device())?)
}

/// Head layout of an attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Self-attention over a KV cache: project, optional per-head RMSNorm on Q and K, optional RoPE
/// (norm first), causal attention limited to `window` keys when given, output projection. The
/// architectures differ only in which of these they switch on, which their files state.
pub struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    rope: Option<Rope>,
    window: Option<usize>,
    heads: Heads,
    kv_dtype: DType,
    /// One cache per sequence slot (slot 0 is the single-sequence path).
    caches: Vec<KvCache>,
}

impl SelfAttention {
    /// Loads `{prefix}.attn_q/k/v/output`, and `attn_q_norm`/`attn_k_norm` when `qk_norm_eps` is given.
    pub fn new(w: &Weights, prefix: &str, heads: Heads, qk_norm_eps: Option<f64>, rope: Option<Rope>, window: Option<usize>) -> Result<Self> {
        let Heads { hidden, n_heads, n_kv_heads, head_dim: hd } = heads;
        let qk_norm = match qk_norm_eps {
            Some(eps) => Some((
                w.rms_norm(&format!("{prefix}.attn_q_norm.weight"), hd, eps)?,
                w.rms_norm(&format!("{prefix}.attn_k_norm.weight"), hd, eps)?,
            )),
            None => None,
        };
        Ok(Self {
            q: w.linear(&format!("{prefix}.attn_q.weight"), n_heads * hd, hidden)?,
            k: w.linear(&format!("{prefix}.attn_k.weight"), n_kv_heads * hd, hidden)?,
            v: w.linear(&format!("{prefix}.attn_v.weight"), n_kv_heads * hd, hidden)?,
            o: w.linear(&format!("{prefix}.attn_output.weight"), hidden, n_heads * hd)?,
            qk_norm,
            rope,
            window,
            heads,
            kv_dtype: w.opts.kv_dtype,
            caches: Vec::new(),
        })
    }

    /// The cache of a slot, if the slot was ever used.
    pub fn cache(&self, slot: usize) -> Option<&KvCache> {
        self.caches.get(slot)
    }

    pub fn cache_mut(&mut self, slot: usize) -> &mut KvCache {
        while self.caches.len() <= slot {
            self.caches.push(KvCache::windowed(self.kv_dtype, self.window));
        }
        &mut self.caches[slot]
    }

    pub fn caches(&self) -> &[KvCache] {
        &self.caches
    }

    /// `x` holds the rows of every segment, one after another; each segment attends to its own
    /// slot's cache at its own positions. Projections and norms run on all rows at once.
    pub fn forward(&mut self, x: &Tensor, segs: &[crate::models::decoder::Segment]) -> Result<Tensor> {
        let Heads { n_heads, n_kv_heads, head_dim, .. } = self.heads;
        let mut q = split_heads(&self.q.forward_segments(x, segs)?, n_heads, head_dim)?;
        let mut k = split_heads(&self.k.forward_segments(x, segs)?, n_kv_heads, head_dim)?;
        let v = split_heads(&self.v.forward_segments(x, segs)?, n_kv_heads, head_dim)?;
        if let Some((qn, kn)) = &self.qk_norm {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let scale = 1.0 / (head_dim as f64).sqrt();
        for seg in segs {
            self.cache_mut(seg.slot);
        }
        // Each segment owns a distinct slot's cache, so the segments attend in parallel.
        let mut by_slot: Vec<Option<&mut KvCache>> = self.caches.iter_mut().map(Some).collect();
        let mut work = Vec::with_capacity(segs.len());
        for seg in segs {
            let cache = by_slot[seg.slot].take().ok_or_else(|| Error::Invalid(format!("slot {} appears twice in a batch", seg.slot)))?;
            work.push((seg, cache));
        }
        let (rope, window, single) = (&self.rope, self.window, segs.len() == 1);
        let one = |(seg, cache): (&crate::models::decoder::Segment, &mut KvCache)| -> Result<Tensor> {
            let part = |t: &Tensor| -> Result<Tensor> {
                Ok(if single { t.clone() } else { t.narrow(2, seg.start, seg.len)?.contiguous()? })
            };
            let (mut qs, mut ks, vs) = (part(&q)?, part(&k)?, part(&v)?);
            if let Some(rope) = rope {
                qs = rope.apply(&qs, seg.offset)?;
                ks = rope.apply(&ks, seg.offset)?;
            }
            let (kc, vc) = cache.append(&ks, &vs)?;
            attention(&qs, &kc, &vc, seg.offset, cache.start(), window, scale)
        };
        // In parallel only when every segment is a decode-sized step: the pool's caller must not
        // reach the pool again from inside its share, and candle's element-wise ops do so from
        // 64k elements on (prompt chunks get there; one row of every model we load does not).
        let small = segs.iter().all(|s| s.len < PROMPT_ATTENTION_ROWS && s.len * n_heads * head_dim < 1 << 14);
        let mut outs: Vec<Tensor> = if single || !small {
            work.into_iter().map(one).collect::<Result<_>>()?
        } else {
            // On the kernels' pool: a second pool's threads would contend with its workers.
            let slots: Vec<std::sync::Mutex<Option<(&crate::models::decoder::Segment, &mut KvCache)>>> =
                work.into_iter().map(|w| std::sync::Mutex::new(Some(w))).collect();
            let results: Vec<std::sync::Mutex<Option<Result<Tensor>>>> = slots.iter().map(|_| std::sync::Mutex::new(None)).collect();
            candle_core::utils::barrier_pool().execute_chunked(slots.len(), |range| {
                for i in range {
                    let item = slots[i].lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(item) = item {
                        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(one(item));
                    }
                }
            });
            results
                .into_iter()
                .map(|r| r.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| Err(Error::Invalid("a segment was not run".into()))))
                .collect::<Result<_>>()?
        };
        let out = if outs.len() == 1 { outs.pop().expect("one segment") } else { Tensor::cat(&outs, 1)? };
        self.o.forward_segments(&out, segs)
    }
}

/// The activation of a gated feed-forward layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU (Llama, Qwen, EXAONE).
    Silu,
    /// GeGLU with tanh-approximated GELU (Gemma); optionally rounded as ggml does.
    GeluTanh { ggml_rounding: bool },
}

/// Gated feed-forward layer: `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Activation,
}

impl GatedMlp {
    /// Loads `{prefix}.ffn_gate`, `.ffn_up` and `.ffn_down`.
    pub fn new(w: &Weights, prefix: &str, hidden: usize, ffn: usize, act: Activation) -> Result<Self> {
        Self::named(w, prefix, "", hidden, ffn, act)
    }

    /// Loads `{prefix}.ffn_gate{suffix}` etc. (`_shexp`: a MoE's shared expert).
    pub fn named(w: &Weights, prefix: &str, suffix: &str, hidden: usize, ffn: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            gate: w.linear(&format!("{prefix}.ffn_gate{suffix}.weight"), ffn, hidden)?,
            up: w.linear(&format!("{prefix}.ffn_up{suffix}.weight"), ffn, hidden)?,
            down: w.linear(&format!("{prefix}.ffn_down{suffix}.weight"), hidden, ffn)?,
            act,
        })
    }

    pub fn from_linears(gate: Linear, up: Linear, down: Linear, act: Activation) -> Self {
        Self { gate, up, down, act }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_segments(x, &[])
    }

    /// See [`Linear::forward_segments`].
    pub fn forward_segments(&self, x: &Tensor, segs: &[crate::models::decoder::Segment]) -> Result<Tensor> {
        let g = self.gate.forward_segments(x, segs)?;
        if let Some(h) = gated_cpu(&g, &self.up.forward_segments(x, segs)?, self.act)? {
            return self.down.forward_segments(&h, segs);
        }
        let g = match self.act {
            Activation::Silu => candle_nn::ops::silu(&g)?,
            Activation::GeluTanh { ggml_rounding } => gelu_tanh(&g, ggml_rounding)?,
        };
        self.down.forward_segments(&(g * self.up.forward_segments(x, segs)?)?, segs)
    }
}

/// `act(g) * u` in one pass over f32 CPU tensors, shared out on the kernels' pool for prompts:
/// the same per-element arithmetic as the separate candle ops (bitwise), without their
/// intermediate tensors. None where it does not apply (other devices, exact GELU).
fn gated_cpu(g: &Tensor, u: &Tensor, act: Activation) -> Result<Option<Tensor>> {
    if !g.device().is_cpu() || g.dtype() != DType::F32 || u.dtype() != DType::F32 || g.shape() != u.shape() {
        return Ok(None);
    }
    let table = match act {
        Activation::GeluTanh { ggml_rounding: true } => Some(gelu_f16_table()?),
        Activation::Silu => None,
        Activation::GeluTanh { ggml_rounding: false } => return Ok(None),
    };
    let one = |out: &mut [f32], gs: &[f32], us: &[f32]| match table {
        Some(t) => {
            for ((o, &x), &y) in out.iter_mut().zip(gs).zip(us) {
                *o = gelu_ggml(x, f16::from_f32(x), t) * y;
            }
        }
        None => {
            for ((o, &x), &y) in out.iter_mut().zip(gs).zip(us) {
                *o = x / (1.0 + (-x).exp()) * y;
            }
        }
    };
    const CHUNK: usize = 1 << 14;
    let mut out = vec![0f32; g.elem_count()];
    crate::kernels::with_f32_values(g, |gv| {
        crate::kernels::with_f32_values(u, |uv| {
            if out.len() >= 4 * CHUNK {
                let (ptr, len) = (out.as_mut_ptr() as usize, out.len());
                candle_core::utils::barrier_pool().execute_chunked(len.div_ceil(CHUNK), |range| {
                    for c in range {
                        let (a, b) = (c * CHUNK, len.min((c + 1) * CHUNK));
                        // SAFETY: chunk c covers a..b of the buffer, written by this work item alone.
                        let os = unsafe { std::slice::from_raw_parts_mut((ptr as *mut f32).add(a), b - a) };
                        one(os, &gv[a..b], &uv[a..b]);
                    }
                });
            } else {
                one(&mut out, gv, uv);
            }
        })
    })??;
    Ok(Some(Tensor::from_vec(out, g.shape(), g.device())?))
}

/// Splits [1, seq, heads*hd] into [1, heads, seq, hd].
fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (b, seq, _) = x.dims3()?;
    Ok(x.reshape((b, seq, heads, head_dim))?.transpose(1, 2)?.contiguous()?)
}

/// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`). With `ggml_rounding`, as
/// ggml computes it: from a table indexed by the f16 input, holding f16 outputs, and exact
/// outside (-10, 10).
fn gelu_tanh(x: &Tensor, ggml_rounding: bool) -> Result<Tensor> {
    if !ggml_rounding {
        return Ok(x.gelu()?);
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return gelu_ggml_tensor_ops(x);
    }
    use half::slice::HalfFloatSliceExt;
    let table = gelu_f16_table()?;
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    let mut h = vec![f16::ZERO; v.len()];
    h.convert_from_f32_slice(&v);
    let out: Vec<f32> = v.iter().zip(&h).map(|(&x, &h)| gelu_ggml(x, h, table)).collect();
    Ok(Tensor::from_vec(out, x.shape(), x.device())?)
}

/// ggml's GELU of one value: `table` (see [`gelu_f16_table`]) at the value rounded to f16 (`h`),
/// and exact outside (-10, 10).
#[inline(always)]
fn gelu_ggml(x: f32, h: f16, table: &[f16]) -> f32 {
    if x >= 10.0 {
        x
    } else if x <= -10.0 {
        0.0
    } else {
        table[h.to_bits() as usize].to_f32()
    }
}

/// The same rounding in tensor ops, for devices other than the CPU.
fn gelu_ggml_tensor_ops(x: &Tensor) -> Result<Tensor> {
    let x16 = x.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
    let table = x16.gelu()?.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
    let big = x.ge(10f64)?;
    let small = x.le(-10f64)?;
    let out = big.where_cond(x, &table)?;
    Ok(small.where_cond(&x.zeros_like()?, &out)?)
}

/// GELU of every f16 value, rounded to f16: ggml's table, built once with the same arithmetic
/// as the tensor path above.
fn gelu_f16_table() -> Result<&'static [f16]> {
    static TABLE: std::sync::OnceLock<Vec<f16>> = std::sync::OnceLock::new();
    if let Some(t) = TABLE.get() {
        return Ok(t);
    }
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let t = Tensor::from_vec(all, 1 << 16, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .gelu()?
        .to_dtype(DType::F16)?
        .to_vec1::<f16>()?;
    Ok(TABLE.get_or_init(|| t))
}


/// Keeps only the last position of [1, seq, hidden].
pub fn last_position(x: &Tensor) -> Result<Tensor> {
    let seq = x.dim(1)?;
    Ok(x.narrow(1, seq - 1, 1)?)
}


#[cfg(test)]
mod tests {
    use super::*;

    /// Layers of the same frequencies share one angle table, other frequencies get their own,
    /// and a rotation read from a table that another layer grew equals the angles computed
    /// directly (positions on both sides of a growth, and past the kept positions).
    #[test]
    fn rope_tables_are_shared_by_equal_frequencies() {
        let dev = Device::Cpu;
        let a = Rope::new(8, 12_345.0, None, RopeStyle::Neox, &dev).unwrap();
        let b = Rope::new(8, 12_345.0, None, RopeStyle::Neox, &dev).unwrap();
        let c = Rope::new(8, 54_321.0, None, RopeStyle::Neox, &dev).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a.table, &b.table));
        assert!(!std::sync::Arc::ptr_eq(&a.table, &c.table));
        let x = Tensor::ones((1, 1, 3, 8), DType::F32, &dev).unwrap();
        for (rope, offset) in [(&a, 0), (&b, 70), (&a, 200), (&b, ROPE_TABLE_POSITIONS - 1)] {
            let got = rope.apply(&x, offset).unwrap().squeeze(0).unwrap().to_vec3::<f32>().unwrap().remove(0);
            for (i, row) in got.iter().enumerate() {
                for (j, &f) in rope.inv_freq.iter().enumerate() {
                    let t = (offset + i) as f64 * f as f64;
                    // Neox: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin, with x = 1.
                    let (c, s) = (t.cos() as f32, t.sin() as f32);
                    assert!((row[j] - (c - s)).abs() < 1e-6, "offset {offset}, row {i}, pair {j}");
                    assert!((row[j + 4] - (c + s)).abs() < 1e-6, "offset {offset}, row {i}, pair {j}");
                }
            }
        }
        // Growing through `b` filled the table `a` reads.
        assert!(a.table.lock().unwrap().0.len() >= 4 * 200);
    }

    /// The AVX2/F16C attention row must equal the portable one bit for bit (same fused
    /// multiply-adds, same round-to-nearest-even into f16), or results would depend on the CPU.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f16c_attention_row_equals_portable_row() {
        if !has_fma() {
            return;
        }
        let hd = 80;
        let n = 37;
        let r = |i: usize| ((i * 2654435761usize) % 1000) as f32 / 250.0 - 2.0;
        let q: Vec<f32> = (0..hd).map(r).collect();
        let k: Vec<f32> = (0..n * hd).map(|i| r(i + 7)).collect();
        let v: Vec<f32> = (0..n * hd).map(|i| r(i + 13) * 3.0).collect();
        let mut a = vec![0f32; hd];
        let mut b = vec![0f32; hd];
        attend_row(&q, &k, &v, 3..n, 0.11, &mut a);
        unsafe { attend_row_fma(&q, &k, &v, 3..n, 0.11, &mut b) };
        assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        assert!(a.iter().any(|&x| x != 0.0));
    }

    /// The table lookup must give bitwise what the tensor-op version gives (and so what the
    /// greedy Gemma tests were checked with), across the cut-offs at ±10.
    #[test]
    fn gelu_table_equals_tensor_ops() {
        let mut v: Vec<f32> = (0..20_000).map(|i| (i as f32 - 10_000.0) * 1.37e-3 * (1.0 + (i % 7) as f32)).collect();
        v.extend([10.0, -10.0, 9.999, -9.999, 10.001, -10.001, 0.0, -0.0, 1e-8, 65504.0, -70000.0]);
        let x = Tensor::from_vec(v, (1, 20_011), &Device::Cpu).unwrap();
        let a = gelu_tanh(&x, true).unwrap().to_vec2::<f32>().unwrap();
        let b = gelu_ggml_tensor_ops(&x).unwrap().to_vec2::<f32>().unwrap();
        for (p, q) in a[0].iter().zip(&b[0]) {
            assert_eq!(p.to_bits(), q.to_bits(), "{p} vs {q}");
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    // Catches indexing, masking or window mistakes in the f16 kernel: on GQA heads, an odd head
    // size, a query block at an offset and a sliding window, it must agree with the f32 path up
    // to f16 rounding.
    #[test]
    fn f16_attention_matches_f32_attention() {
        let dev = Device::Cpu;
        let (n_head, n_kv, q_len, kv_len, hd) = (4, 2, 5, 9, 80);
        let q = Tensor::randn(0f32, 1.0, (1, n_head, q_len, hd), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, n_kv, kv_len, hd), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, n_kv, kv_len, hd), &dev).unwrap();
        let (k16, v16) = (k.to_dtype(DType::F16).unwrap(), v.to_dtype(DType::F16).unwrap());
        for window in [None, Some(3)] {
            let exact = attention(&q, &k, &v, kv_len - q_len, 0, window, 0.125).unwrap();
            let half = attention(&q, &k16, &v16, kv_len - q_len, 0, window, 0.125).unwrap();
            let d = max_diff(&exact, &half);
            assert!(d < 1e-2, "window {window:?}: {d}");
        }
        // A window changes the result, so the comparison above exercised it.
        let a = attention(&q, &k16, &v16, kv_len - q_len, 0, None, 0.125).unwrap();
        let b = attention(&q, &k16, &v16, kv_len - q_len, 0, Some(3), 0.125).unwrap();
        assert!(max_diff(&a, &b) > 1e-2);
    }

    // Catches a reduction that drops lanes or the tail past the last full 32-block.
    #[test]
    fn ggml_dot_matches_plain_dot() {
        let a: Vec<f32> = (0..80).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..80).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
        assert!((dot_ggml(&a, &b) as f64 - plain).abs() < 1e-5);
    }

    // Catches a mask that lets a query see the future or keys outside its window.
    #[test]
    fn mask_is_causal_and_windowed() {
        let m = attention_mask(3, 2, 0, 5, Some(2), &Device::Cpu).unwrap().unwrap();
        let rows: Vec<Vec<f32>> = m.to_vec2().unwrap();
        let seen: Vec<Vec<bool>> = rows.iter().map(|r| r.iter().map(|v| v.is_finite()).collect()).collect();
        assert_eq!(seen[0], [false, true, true, false, false]);
        assert_eq!(seen[2], [false, false, false, true, true]);
    }
}

#[cfg(test)]
mod prompt_attention_tests {
    use super::*;

    // Catches a prompt-path reader that takes the wrong rows of an f16 cache view: the same
    // keys and values held in an f16 and an f32 cache must give the same attention.
    #[test]
    fn f16_and_f32_caches_agree_on_prompts() {
        let dev = Device::Cpu;
        let (n_head, n_kv, q_len, hd) = (4, 1, 40, 256);
        let q = Tensor::randn(0f32, 1.0, (1, n_head, q_len, hd), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, n_kv, q_len, hd), &dev).unwrap().to_dtype(DType::F16).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, n_kv, q_len, hd), &dev).unwrap().to_dtype(DType::F16).unwrap();
        let mut c16 = KvCache::windowed(DType::F16, Some(512));
        let mut c32 = KvCache::windowed(DType::F32, Some(512));
        let (k16, v16) = c16.append(&k, &v).unwrap();
        let (k32, v32) = c32.append(&k.to_dtype(DType::F32).unwrap(), &v.to_dtype(DType::F32).unwrap()).unwrap();
        let a = attention(&q, &k16, &v16, 0, 0, Some(512), 0.0625).unwrap();
        let b = attention(&q, &k32, &v32, 0, 0, Some(512), 0.0625).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_keepdim(2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(d.iter().all(|&x| x < 1e-5), "{d:?}");
    }
}
