//! Quantized matrix products on the CPU, written for this engine: the weight stays in its GGUF
//! blocks, the activations are quantized to int8 once per product, and each weight block is
//! unpacked once for up to eight activation rows, so a batch of sequences reads the weights once.
//!
//! Q8_0, Q4_0, Q5_0, Q4_K, Q5_K and Q6_K rows are interleaved eight at a time at load where
//! the row count allows and the CPU has AVX2 (`x8`, with the tiles in `q8_0_x8`, `q4_0`,
//! `q5_0`, `q4_k_x8` (Q4_K and Q5_K) and `q6_k_x8`), so that one multiply serves four or eight weight rows and
//! a block's eight sums finish as one vector.
//!
//! Other shapes keep one kernel per weight type (`q8_0` packed four rows at a time, `q4_k`,
//! `q5_k`, `q6_k` in the file's blocks; Q4_0 and Q5_0 are re-encoded losslessly as Q8_0,
//! see `formats::requant`), each with a scalar definition (the
//! reference, and the path on CPUs without AVX2) and an AVX2 tile. Every (row, column) dot product
//! runs the same instructions whatever the batch holds, so batching never changes a sequence's
//! numbers. Work is spread over candle's worker pool, which parks its threads when idle.

pub mod act;
pub mod attention;
mod buf;
mod q4_0;
mod q4_k;
mod q4_k_x8;
mod q5_0;
mod q6_k_x8;
mod q8_0_x8;
mod x8;
mod q5_k;
mod q6_k;
pub mod q8_0;

use act::QuantizedRows;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;

use crate::error::{Error, Result};

/// A weight type's kernels. `tile_avx2` computes R activation rows against one weight row.
pub(crate) trait Kernel {
    /// Weights per block, bytes per block, activation block size.
    const BLOCK: usize;
    const BYTES: usize;
    const ACT_BLOCK: usize;
    fn dequantize_block(b: &[u8], out: &mut [f32]);
    /// The definition: one weight row against activation row `r`.
    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32;
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `w` holds one whole weight row.
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile_avx2<const R: usize>(w: &[u8], a: &QuantizedRows, rows: [usize; R], out: &mut [f32; R]);
}

pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| {
            std::env::var_os("MODU_NO_AVX2").is_none()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f16_to_f32(bits: u16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

/// The weight types these kernels cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QFormat {
    Q8_0,
    Q4_0,
    Q5_0,
    Q4K,
    Q5K,
    Q6K,
}

impl QFormat {
    pub fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            GgmlDType::Q4_0 => Some(Self::Q4_0),
            GgmlDType::Q5_0 => Some(Self::Q5_0),
            GgmlDType::Q4K => Some(Self::Q4K),
            GgmlDType::Q5K => Some(Self::Q5K),
            GgmlDType::Q6K => Some(Self::Q6K),
            _ => None,
        }
    }

    fn block(self) -> (usize, usize) {
        match self {
            Self::Q8_0 => (32, 34),
            Self::Q4_0 => (32, q4_0::BYTES),
            Self::Q5_0 => (32, q5_0::BYTES),
            Self::Q4K => (q4_k::Q4K::BLOCK, q4_k::Q4K::BYTES),
            Self::Q5K => (q5_k::Q5K::BLOCK, q5_k::Q5K::BYTES),
            Self::Q6K => (q6_k::Q6K::BLOCK, q6_k::Q6K::BYTES),
        }
    }
}

/// A weight matrix [n, k] (n output rows of k inputs): Q8_0, Q4_0, Q5_0, Q4_K, Q5_K and Q6_K
/// interleaved eight rows at a time where n allows and the CPU has AVX2; otherwise Q8_0 repacked
/// four rows at a time (other Q4_0 and Q5_0 shapes become Q8_0), the rest in their GGUF blocks.
#[derive(Debug)]
pub struct QMatrix {
    format: QFormat,
    n: usize,
    k: usize,
    storage: Storage,
}

#[derive(Debug)]
enum Storage {
    Blocks(buf::WeightBuf),
    Q8x4(q8_0::Packed),
    Q8x8(x8::Packed<q8_0_x8::Q8X8>),
    Q4x8(x8::Packed<q4_0::Q4X8>),
    Q4Kx8(x8::Packed<q4_k_x8::Q4KX8>),
    Q5Kx8(x8::Packed<q4_k_x8::Q5KX8>),
    Q5x8(x8::Packed<q5_0::Q5X8>),
    Q6Kx8(x8::Packed<q6_k_x8::Q6KX8>),
}

impl QMatrix {
    /// None when the tensor's type has no kernel here.
    pub fn from_qtensor(q: &QTensor) -> Result<Option<Self>> {
        let Some(format) = QFormat::of(q.dtype()) else { return Ok(None) };
        let dims = q.shape().dims();
        let &[n, k] = dims else { return Ok(None) };
        Self::new(format, n, k, &q.data()?).map(Some)
    }

    pub fn new(format: QFormat, n: usize, k: usize, data: &[u8]) -> Result<Self> {
        Self::new_consuming(format, n, k, data, &|_| {})
    }

    /// Like [`QMatrix::new`], handing each consumed stretch of `data` (a few MiB, in order) to
    /// `done`, so that a loader can drop a mapped file's pages as they are copied and never hold
    /// a large weight twice.
    pub fn new_consuming(format: QFormat, n: usize, k: usize, data: &[u8], done: &dyn Fn(&[u8])) -> Result<Self> {
        let (block, bytes) = format.block();
        if k % block != 0 || data.len() != n * (k / block) * bytes {
            return Err(Error::Invalid(format!(
                "{format:?} matrix [{n}, {k}] cannot hold {} bytes (rows must be whole blocks of {block})",
                data.len()
            )));
        }
        let storage = match format {
            // The interleaved layout pays off only with the AVX2 tile; elsewhere the file's
            // layout serves the scalar definitions directly (Q8_0: four rows at a time).
            QFormat::Q8_0 if n % 8 == 0 && has_avx2() => {
                Storage::Q8x8(x8::Packed::from_blocks(data, n, k, done).map_err(io_error)?)
            }
            QFormat::Q8_0 => Storage::Q8x4(q8_0::Packed::from_blocks(data, n, k, done).map_err(io_error)?),
            QFormat::Q4K if n % 8 == 0 && has_avx2() => {
                Storage::Q4Kx8(x8::Packed::from_blocks(data, n, k, done).map_err(io_error)?)
            }
            QFormat::Q5K if n % 8 == 0 && has_avx2() => {
                Storage::Q5Kx8(x8::Packed::from_blocks(data, n, k, done).map_err(io_error)?)
            }
            QFormat::Q6K if n % 8 == 0 && has_avx2() => {
                Storage::Q6Kx8(x8::Packed::from_blocks(data, n, k, done).map_err(io_error)?)
            }
            QFormat::Q5_0 if n % 8 == 0 && has_avx2() => {
                Storage::Q5x8(x8::Packed::from_blocks(data, n, k, done).map_err(io_error)?)
            }
            QFormat::Q4_0 if n % 8 == 0 && has_avx2() => {
                Storage::Q4x8(x8::Packed::from_blocks(data, n, k, done).map_err(io_error)?)
            }
            QFormat::Q4_0 | QFormat::Q5_0 => {
                // Re-encoded losslessly as Q8_0, whose kernels serve any shape.
                let dtype = if matches!(format, QFormat::Q4_0) { GgmlDType::Q4_0 } else { GgmlDType::Q5_0 };
                let q8 = crate::formats::requant::to_q8_0_bytes(dtype, data)?;
                done(data);
                return Ok(Self { format: QFormat::Q8_0, n, k, storage: Storage::Q8x4(q8_0::Packed::from_blocks(&q8, n, k, &|_| {}).map_err(io_error)?) });
            }
            _ => Storage::Blocks(buf::WeightBuf::from_bytes(data, done).map_err(io_error)?),
        };
        Ok(Self { format, n, k, storage })
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    fn row_bytes(&self) -> usize {
        let (block, bytes) = self.format.block();
        self.k / block * bytes
    }

    /// Row `i` as f32 (embedding lookups).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        match (&self.storage, self.format) {
            (Storage::Q8x4(p), _) => p.dequantize_row(i, out),
            (Storage::Q8x8(p), _) => p.dequantize_row(i, out),
            (Storage::Q4x8(p), _) => p.dequantize_row(i, out),
            (Storage::Q4Kx8(p), _) => p.dequantize_row(i, out),
            (Storage::Q5Kx8(p), _) => p.dequantize_row(i, out),
            (Storage::Q6Kx8(p), _) => p.dequantize_row(i, out),
            (Storage::Q5x8(p), _) => p.dequantize_row(i, out),
            (Storage::Blocks(d), QFormat::Q4K) => dequantize::<q4_k::Q4K>(&d.bytes()[i * rb..(i + 1) * rb], out),
            (Storage::Blocks(d), QFormat::Q5K) => dequantize::<q5_k::Q5K>(&d.bytes()[i * rb..(i + 1) * rb], out),
            (Storage::Blocks(d), _) => dequantize::<q6_k::Q6K>(&d.bytes()[i * rb..(i + 1) * rb], out),
        }
    }

    /// `out[m, n] = x[m, k] · selfᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.matmul_with(x, m, out, has_avx2())
    }

    fn matmul_with(&self, x: &[f32], m: usize, out: &mut [f32], simd: bool) {
        assert_eq!(x.len(), m * self.k, "activation length");
        assert_eq!(out.len(), m * self.n, "output length");
        let (n, k) = (self.n, self.k);
        match (&self.storage, self.format) {
            (Storage::Q8x4(p), _) => matmul_q8x4(p, n, k, x, m, out, simd),
            (Storage::Q8x8(p), _) => matmul_x8(p, n, k, x, m, out, simd),
            (Storage::Q4x8(p), _) => matmul_x8(p, n, k, x, m, out, simd),
            (Storage::Q4Kx8(p), _) => matmul_x8(p, n, k, x, m, out, simd),
            (Storage::Q5Kx8(p), _) => matmul_x8(p, n, k, x, m, out, simd),
            (Storage::Q5x8(p), _) => matmul_x8(p, n, k, x, m, out, simd),
            (Storage::Q6Kx8(p), _) => matmul_x8(p, n, k, x, m, out, simd),
            (Storage::Blocks(d), QFormat::Q4K) => matmul::<q4_k::Q4K>(d.bytes(), n, k, x, m, out, simd),
            (Storage::Blocks(d), QFormat::Q5K) => matmul::<q5_k::Q5K>(d.bytes(), n, k, x, m, out, simd),
            (Storage::Blocks(d), _) => matmul::<q6_k::Q6K>(d.bytes(), n, k, x, m, out, simd),
        }
    }

    /// `x` [..., k] -> [..., n], on the CPU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let k = *dims.last().ok_or_else(|| Error::Invalid("matmul of a scalar".into()))?;
        if k != self.k {
            return Err(Error::Invalid(format!("matmul: input has {k} columns, weight expects {}", self.k)));
        }
        let m = x.elem_count() / k;
        let mut out = vec![0f32; m * self.n];
        with_f32_values(x, |xs| self.matmul(xs, m, &mut out))?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("non-empty") = self.n;
        Ok(Tensor::from_vec(out, shape, x.device())?)
    }
}

/// Calls `f` with the values of `x` in row-major order: read in place from a contiguous f32 CPU
/// tensor (activations of megabytes are not copied), converted into a new buffer otherwise.
pub(crate) fn with_f32_values<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = x.storage_and_layout();
        if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&data[a..b]));
        }
    }
    let v = x.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&v))
}

fn io_error(e: std::io::Error) -> Error {
    Error::Invalid(format!("cannot allocate weight memory: {e}"))
}

fn dequantize<K: Kernel>(row: &[u8], out: &mut [f32]) {
    for (b, o) in row.chunks_exact(K::BYTES).zip(out.chunks_exact_mut(K::BLOCK)) {
        K::dequantize_block(b, o);
    }
}

/// Weight rows per work item: their blocks stay in cache while every activation row passes.
const COLS_PER_ITEM: usize = 16;

fn matmul<K: Kernel>(w: &[u8], n: usize, k: usize, x: &[f32], m: usize, out: &mut [f32], simd: bool) {
    let a = act::quantize_rows(x, m, k, K::ACT_BLOCK);
    let rb = k / K::BLOCK * K::BYTES;
    let out = Out { ptr: out.as_mut_ptr(), n };
    let items = n.div_ceil(COLS_PER_ITEM);
    let run = |range: std::ops::Range<usize>| {
        for item in range {
            let cols = item * COLS_PER_ITEM..n.min((item + 1) * COLS_PER_ITEM);
            if !simd {
                for r in 0..m {
                    for c in cols.clone() {
                        // SAFETY: each (row, column) of `out` is written by exactly one work item.
                        unsafe { out.put(r, c, K::dot_scalar(&w[c * rb..(c + 1) * rb], &a, r)) };
                    }
                }
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `simd` is true only when the CPU has AVX2, FMA and F16C; the columns of
            // this item are written by it alone.
            unsafe {
                columns_avx2::<K>(&a, m, cols, w, rb, out)
            };
        }
    };
    spread(items, n * k * m, run);
}

/// The output matrix [m, n], shared by the work items: each writes its own columns.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: work items write disjoint elements (see `put`).
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

impl Out {
    /// # Safety
    /// `r < m`, `c < n`, and no other thread writes element (r, c).
    #[inline(always)]
    unsafe fn put(self, r: usize, c: usize, v: f32) {
        unsafe { *self.ptr.add(r * self.n + c) = v }
    }
}

/// Runs `f(range)` over work items on the pool when the product is big enough to share.
fn spread(items: usize, macs: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    if macs >= 1 << 17 && items > 1 {
        candle_core::utils::barrier_pool().execute_chunked(items, f);
    } else {
        f(0..items);
    }
}

/// Rows interleaved eight at a time (n a multiple of eight); see `x8`.
fn matmul_x8<L: x8::Layout>(p: &x8::Packed<L>, n: usize, k: usize, x: &[f32], m: usize, out: &mut [f32], simd: bool) {
    let a = act::quantize_rows(x, m, k, L::ACT_BLOCK);
    let out = Out { ptr: out.as_mut_ptr(), n };
    const GROUPS_PER_ITEM: usize = COLS_PER_ITEM / 8;
    let groups = n / 8;
    spread(groups.div_ceil(GROUPS_PER_ITEM), n * k * m, |range| {
        for g in range.start * GROUPS_PER_ITEM..groups.min(range.end * GROUPS_PER_ITEM) {
            if !simd {
                for c in 8 * g..8 * g + 8 {
                    let row = p.row(c);
                    for r in 0..m {
                        // SAFETY: each (row, column) of `out` is written by exactly one work item.
                        unsafe { out.put(r, c, L::dot_scalar(&row, &a, r)) };
                    }
                }
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `simd` is true only when the CPU has AVX2, FMA and F16C; group g's columns
            // are written by this work item alone.
            unsafe {
                group_avx2(p, g, &a, m, out)
            };
        }
    });
}

/// All activation rows against the eight columns of group `g`, in tiles of up to eight rows.
///
/// # Safety
/// AVX2, FMA and F16C; no other thread writes these columns of `out`.
#[cfg(target_arch = "x86_64")]
unsafe fn group_avx2<L: x8::Layout>(p: &x8::Packed<L>, g: usize, a: &QuantizedRows, m: usize, out: Out) {
    unsafe fn rows_tile<L: x8::Layout, const R: usize>(p: &x8::Packed<L>, g: usize, a: &QuantizedRows, r0: usize, out: Out) {
        let mut o = [[0f32; 8]; R];
        unsafe {
            p.tile_avx2::<R>(g, a, std::array::from_fn(|i| r0 + i), &mut o);
            for (i, row) in o.iter().enumerate() {
                for (l, &v) in row.iter().enumerate() {
                    out.put(r0 + i, 8 * g + x8::LANE_ROW[l], v);
                }
            }
        }
    }
    let mut r = 0;
    unsafe {
        while r + 8 <= m {
            rows_tile::<L, 8>(p, g, a, r, out);
            r += 8;
        }
        match m - r {
            7 => rows_tile::<L, 7>(p, g, a, r, out),
            6 => rows_tile::<L, 6>(p, g, a, r, out),
            5 => rows_tile::<L, 5>(p, g, a, r, out),
            4 => rows_tile::<L, 4>(p, g, a, r, out),
            3 => rows_tile::<L, 3>(p, g, a, r, out),
            2 => rows_tile::<L, 2>(p, g, a, r, out),
            1 => rows_tile::<L, 1>(p, g, a, r, out),
            _ => {}
        }
    }
}

fn matmul_q8x4(p: &q8_0::Packed, n: usize, k: usize, x: &[f32], m: usize, out: &mut [f32], simd: bool) {
    let a = act::quantize_rows(x, m, k, 32);
    let out_ptr = out.as_mut_ptr() as usize;
    const GROUPS_PER_ITEM: usize = COLS_PER_ITEM / 4;
    let groups = n.div_ceil(4);
    spread(groups.div_ceil(GROUPS_PER_ITEM), n * k * m, |range| {
        // SAFETY: each (row, column) of `out` is written by exactly one work item.
        let put = |r: usize, c: usize, v: f32| {
            if c < n {
                unsafe { *(out_ptr as *mut f32).add(r * n + c) = v }
            }
        };
        for item in range {
            for g in item * GROUPS_PER_ITEM..groups.min((item + 1) * GROUPS_PER_ITEM) {
                if !simd {
                    for r in 0..m {
                        for c in 4 * g..n.min(4 * g + 4) {
                            put(r, c, p.dot_scalar(c, &a, r));
                        }
                    }
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                {
                    let mut r = 0;
                    while r < m {
                        let mut o4 = [[0f32; 4]; 4];
                        let mut o2 = [[0f32; 4]; 2];
                        let mut o1 = [[0f32; 4]; 1];
                        // SAFETY: `simd` is true only when the CPU has AVX2, FMA and F16C.
                        let o: &[[f32; 4]] = if r + 4 <= m {
                            unsafe { p.tile_avx2::<4>(g, &a, [r, r + 1, r + 2, r + 3], &mut o4) };
                            &o4
                        } else if r + 2 <= m {
                            unsafe { p.tile_avx2::<2>(g, &a, [r, r + 1], &mut o2) };
                            &o2
                        } else {
                            unsafe { p.tile_avx2::<1>(g, &a, [r], &mut o1) };
                            &o1
                        };
                        for (i, row) in o.iter().enumerate() {
                            for (j, &v) in row.iter().enumerate() {
                                put(r + i, 4 * g + j, v);
                            }
                        }
                        r += o.len();
                    }
                }
            }
        }
    });
}

/// All activation rows against weight rows `cols`, one column at a time in tiles of up to
/// eight rows: each weight block is unpacked once for every row of the tile.
///
/// # Safety
/// AVX2, FMA and F16C; `w` holds whole rows of `rb` bytes for every column in `cols`; no other
/// thread writes these columns of `out`.
#[cfg(target_arch = "x86_64")]
unsafe fn columns_avx2<K: Kernel>(a: &QuantizedRows, m: usize, cols: std::ops::Range<usize>, w: &[u8], rb: usize, out: Out) {
    unsafe fn rows_tile<K: Kernel, const R: usize>(a: &QuantizedRows, r0: usize, cols: std::ops::Range<usize>, w: &[u8], rb: usize, out: Out) {
        let rows: [usize; R] = std::array::from_fn(|i| r0 + i);
        for c in cols {
            let mut o = [0f32; R];
            unsafe {
                K::tile_avx2::<R>(&w[c * rb..(c + 1) * rb], a, rows, &mut o);
                for (i, &v) in o.iter().enumerate() {
                    out.put(r0 + i, c, v);
                }
            }
        }
    }
    let mut r = 0;
    unsafe {
        while r + 8 <= m {
            rows_tile::<K, 8>(a, r, cols.clone(), w, rb, out);
            r += 8;
        }
        match m - r {
            7 => rows_tile::<K, 7>(a, r, cols, w, rb, out),
            6 => rows_tile::<K, 6>(a, r, cols, w, rb, out),
            5 => rows_tile::<K, 5>(a, r, cols, w, rb, out),
            4 => rows_tile::<K, 4>(a, r, cols, w, rb, out),
            3 => rows_tile::<K, 3>(a, r, cols, w, rb, out),
            2 => rows_tile::<K, 2>(a, r, cols, w, rb, out),
            1 => rows_tile::<K, 1>(a, r, cols, w, rb, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::Device;

    struct Rng(u64);
    impl Rng {
        fn f(&mut self) -> f32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng(seed);
        (0..n).map(|_| rng.f()).collect()
    }

    /// A [n, k] matrix quantized by candle (an independent encoder), ours built from its bytes.
    fn quantized(dtype: GgmlDType, n: usize, k: usize, seed: u64) -> (QMatrix, Vec<f32>) {
        let w = Tensor::from_vec(random(n * k, seed), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let reference = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (QMatrix::from_qtensor(&q).unwrap().unwrap(), reference)
    }

    const TYPES: [GgmlDType; 6] = [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q5_0, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K];

    fn act_block(dtype: GgmlDType) -> usize {
        if matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q5_0) {
            32
        } else {
            256
        }
    }

    /// Our block decoding equals candle's dequantization for every type: catches a misread
    /// layout (nibble order, 6-bit scale packing, the Q6_K high-bit pairs).
    #[test]
    fn dequantized_rows_equal_candles() {
        for (dtype, n) in TYPES.into_iter().flat_map(|t| [(t, 5), (t, 8)]) {
            let k = 512;
            let (qm, reference) = quantized(dtype, n, k, 7);
            let mut row = vec![0f32; k];
            for i in 0..n {
                qm.dequantize_row(i, &mut row);
                assert_eq!(row, reference[i * k..(i + 1) * k], "{dtype:?} n={n} row {i}");
            }
        }
    }

    /// The kernels against f64 products of the dequantized weights and the dequantized int8
    /// activations (exact up to float rounding): every type, scalar and AVX2, odd shapes (n not a
    /// multiple of the tile, m = 1..9 covering every row remainder), k of one and several blocks.
    #[test]
    fn kernels_match_the_definition() {
        for dtype in TYPES {
            for (n, k) in [(1, 256), (7, 256), (8, 256), (37, 512), (16, 768)] {
                let (qm, wf) = quantized(dtype, n, k, n as u64 * 31 + k as u64);
                for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 17] {
                    let x = random(m * k, 99 + m as u64);
                    let a = act::quantize_rows(&x, m, k, act_block(dtype));
                    let xq: Vec<f64> = (0..m * k).map(|i| a.qs[i] as f64 * a.d[i / a.block] as f64).collect();
                    for simd in [false, true] {
                        if simd && !has_avx2() {
                            continue;
                        }
                        let mut out = vec![0f32; m * n];
                        qm.matmul_with(&x, m, &mut out, simd);
                        for r in 0..m {
                            for c in 0..n {
                                let exact: f64 = (0..k).map(|i| xq[r * k + i] * wf[c * k + i] as f64).sum();
                                let scale: f64 = (0..k).map(|i| (xq[r * k + i] * wf[c * k + i] as f64).abs()).sum();
                                let got = out[r * n + c] as f64;
                                assert!(
                                    (got - exact).abs() <= 1e-5 * scale.max(1.0),
                                    "{dtype:?} simd={simd} n={n} k={k} m={m} ({r},{c}): {got} vs {exact}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// A row's result is bitwise the same alone and in a batch of any size: batching sequences
    /// in the server must not change their tokens.
    #[test]
    fn rows_are_batch_invariant() {
        for (dtype, n) in TYPES.into_iter().flat_map(|t| [(t, 45), (t, 48)]) {
            let k = 512;
            let (qm, _) = quantized(dtype, n, k, 3);
            let x = random(11 * k, 5);
            let mut batched = vec![0f32; 11 * n];
            qm.matmul(&x, 11, &mut batched);
            for r in 0..11 {
                let mut alone = vec![0f32; n];
                qm.matmul(&x[r * k..(r + 1) * k], 1, &mut alone);
                assert_eq!(alone, batched[r * n..(r + 1) * n], "{dtype:?} n={n} row {r}");
            }
        }
    }

    /// Q8_0, Q4_0, Q5_0, Q4_K, Q5_K and Q6_K matrices whose rows come in whole groups of eight
    /// are interleaved where the AVX2 tile runs (other Q8_0 shapes are packed four rows at a time,
    /// other Q4_0 and Q5_0 shapes become Q8_0), so the tests above cover every layout (n = 8, 16
    /// and 48 interleaved, the others not).
    #[test]
    fn layout_follows_the_row_count() {
        let storage = |dtype, n| match quantized(dtype, n, 256, 1).0.storage {
            Storage::Blocks(_) => "blocks",
            Storage::Q8x4(_) => "q8x4",
            Storage::Q8x8(_) => "q8x8",
            Storage::Q4x8(_) => "q4x8",
            Storage::Q4Kx8(_) => "q4kx8",
            Storage::Q5Kx8(_) => "q5kx8",
            Storage::Q5x8(_) => "q5x8",
            Storage::Q6Kx8(_) => "q6kx8",
        };
        let avx2 = has_avx2();
        assert_eq!(storage(GgmlDType::Q8_0, 16), if avx2 { "q8x8" } else { "q8x4" });
        assert_eq!(storage(GgmlDType::Q8_0, 37), "q8x4");
        assert_eq!(storage(GgmlDType::Q4K, 16), if avx2 { "q4kx8" } else { "blocks" });
        assert_eq!(storage(GgmlDType::Q4K, 7), "blocks");
        assert_eq!(storage(GgmlDType::Q5K, 16), if avx2 { "q5kx8" } else { "blocks" });
        assert_eq!(storage(GgmlDType::Q5K, 7), "blocks");
        assert_eq!(storage(GgmlDType::Q6K, 16), if avx2 { "q6kx8" } else { "blocks" });
        assert_eq!(storage(GgmlDType::Q6K, 7), "blocks");
        assert_eq!(storage(GgmlDType::Q5_0, 16), if avx2 { "q5x8" } else { "q8x4" });
        assert_eq!(storage(GgmlDType::Q5_0, 37), "q8x4");
        assert_eq!(storage(GgmlDType::Q4_0, 16), if avx2 { "q4x8" } else { "q8x4" });
        assert_eq!(storage(GgmlDType::Q4_0, 37), "q8x4");
    }

    /// ggml's quantizers never write -128 into a Q8_0 block, but a file may hold it: every
    /// layout multiplies it exactly (the AVX2 tiles as 128 with the activation's sign flipped),
    /// against activations of both signs: 8 rows (interleaved where the CPU has AVX2) and 12
    /// (four at a time), one activation row and eleven.
    #[test]
    fn q8_0_weights_of_minus_128_are_exact() {
        let k = 64;
        let d = half::f16::from_f32(0.01);
        for n in [8, 12] {
            let mut data = Vec::new();
            for row in 0..n {
                for b in 0..k / 32 {
                    data.extend_from_slice(&d.to_le_bytes());
                    data.extend((0..32).map(|i| if (i + row + b) % 3 == 0 { 5u8 } else { 0x80 }));
                }
            }
            let qm = QMatrix::new(QFormat::Q8_0, n, k, &data).unwrap();
            for m in [1, 11] {
                let x = random(m * k, 11);
                let a = act::quantize_rows(&x, m, k, 32);
                for simd in [false, true] {
                    if simd && !has_avx2() {
                        continue;
                    }
                    let mut out = vec![0f32; m * n];
                    qm.matmul_with(&x, m, &mut out, simd);
                    for r in 0..m {
                        for c in 0..n {
                            let exact: f64 = (0..k)
                                .map(|i| {
                                    let w = data[c * (k / 32) * 34 + (i / 32) * 34 + 2 + i % 32] as i8;
                                    w as f64 * d.to_f64() * a.qs[r * k + i] as f64 * a.d[r * k / 32 + i / 32] as f64
                                })
                                .sum();
                            let got = out[r * n + c] as f64;
                            assert!(
                                (got - exact).abs() <= 1e-5 * exact.abs().max(1.0),
                                "n={n} m={m} simd={simd} ({r},{c}): {got} vs {exact}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(QMatrix::new(QFormat::Q4K, 2, 100, &[0; 288]).is_err());
        assert!(QMatrix::new(QFormat::Q8_0, 2, 64, &[0; 100]).is_err());
        assert!(QMatrix::new(QFormat::Q8_0, 2, 64, &[0; 136]).is_ok());
    }
}

/// Throughput of each kernel on the pool's threads (`cargo test --release -p modu-core kernel_speed --
/// --ignored --nocapture`): a measurement aid, not a check.
#[cfg(test)]
mod speed {
    use super::*;

    #[test]
    #[ignore]
    fn kernel_speed() {
        use candle_core::{Device, Tensor};
        for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K, GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q5_0] {
            let (n, k) = (2048, 2048);
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let qm = QMatrix::from_qtensor(&QTensor::quantize(&w, dtype).unwrap()).unwrap().unwrap();
            for m in [1usize, 64] {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
                let mut out = vec![0f32; m * n];
                let reps = if m == 1 { 200 } else { 8 };
                qm.matmul(&x, m, &mut out);
                // The best of five timings: this measures the kernel, not the machine's neighbours.
                let s = (0..5)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        for _ in 0..reps {
                            qm.matmul(&x, m, &mut out);
                        }
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min);
                eprintln!("{dtype:?} m={m}: {:.1} GMAC/s", (reps * m * n * k) as f64 / s / 1e9);
            }
        }
    }
}
