//! Quantized matrix products on the CPU, written for this engine: the activations are quantized
//! to int8 once per product, and each weight block is unpacked once for up to eight activation
//! rows, so a batch of sequences reads the weights once.
//!
//! Each weight type (Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K) has a definition on the file's blocks
//! ([`Kernel`]: `q8_0`, `q4_0`, `q5_0`, `q4_k`, `q5_k`, `q6_k`): its block's integer sums are
//! exact, and the order of its float operations is fixed. Where the CPU has AVX2, rows are
//! interleaved eight at a time at load (`x8`, with the tiles in `q8_0_x8`, `q4_0`, `q5_0`,
//! `q4_k_x8` for Q4_K and Q5_K, and `q6_k_x8`), so that one multiply serves four or eight weight
//! rows and a block's eight sums finish as one vector; each lane does the definition's float
//! operations in the definition's order, so the AVX2 tiles give the definitions' results bit for
//! bit. Elsewhere the definitions run on the file's blocks. Every (row, column) dot product runs
//! the same instructions whatever the batch holds, so batching never changes a sequence's
//! numbers; nor does a CPU without AVX2 change a product's. Work is spread over candle's worker
//! pool, which parks its threads when idle.

pub mod act;
pub mod attention;
mod buf;
mod q4_0;
mod q4_k;
mod q4_k_x8;
mod q5_0;
mod q5_k;
mod q6_k;
mod q6_k_x8;
mod q8_0;
mod q8_0_x8;
mod x8;

use act::QuantizedRows;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;

use crate::error::{Error, Result};

/// A weight type's definitions on the file's blocks.
///
/// `dot_scalar` is the product of one weight row with one activation row: per block, exact
/// integer sums of weight and activation integers (with the block's integer scales and offsets),
/// turned to f32 and accumulated as `sum = fma(d * d_y, s, sum)` block after block (`d` the
/// block's scale, `d_y` the activation block's); the k-quants with minimums accumulate
/// `fma(dmin * d_y, s_min, mins)` apart and return `sum - mins`. The AVX2 tiles keep this order,
/// so that their results are bitwise the definition's.
pub(crate) trait Kernel {
    /// Weights per block, bytes per block, activation block size.
    const BLOCK: usize;
    const BYTES: usize;
    const ACT_BLOCK: usize;
    fn dequantize_block(b: &[u8], out: &mut [f32]);
    /// The definition: one weight row against activation row `r`.
    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32;
}

/// Whether the AVX2 tiles can run here (AVX2, FMA and F16C; `MODU_NO_AVX2` set turns them off).
pub fn simd_available() -> bool {
    has_avx2()
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

    /// Weights and bytes per block.
    fn block(self) -> (usize, usize) {
        fn of<K: Kernel>() -> (usize, usize) {
            (K::BLOCK, K::BYTES)
        }
        match self {
            Self::Q8_0 => of::<q8_0::Q8_0>(),
            Self::Q4_0 => of::<q4_0::Q4_0>(),
            Self::Q5_0 => of::<q5_0::Q5_0>(),
            Self::Q4K => of::<q4_k::Q4K>(),
            Self::Q5K => of::<q5_k::Q5K>(),
            Self::Q6K => of::<q6_k::Q6K>(),
        }
    }
}

/// A weight matrix [n, k] (n output rows of k inputs), interleaved eight rows at a time for the
/// AVX2 tiles, or in the file's blocks for the definitions.
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
    Q8x8(x8::Packed<q8_0_x8::Q8X8>),
    Q4x8(x8::Packed<q4_0::Q4X8>),
    Q4Kx8(x8::Packed<q4_k_x8::Q4KX8>),
    Q5Kx8(x8::Packed<q4_k_x8::Q5KX8>),
    Q5x8(x8::Packed<q5_0::Q5X8>),
    Q6Kx8(x8::Packed<q6_k_x8::Q6KX8>),
}

impl QMatrix {
    /// None when the tensor's type has no kernel here. `simd`: as in [`QMatrix::with_kernels`].
    pub fn from_qtensor(q: &QTensor, simd: bool) -> Result<Option<Self>> {
        let Some(format) = QFormat::of(q.dtype()) else { return Ok(None) };
        let dims = q.shape().dims();
        let &[n, k] = dims else { return Ok(None) };
        Self::with_kernels(format, n, k, &q.data()?, simd, &|_| {}).map(Some)
    }

    /// With the AVX2 tiles where the CPU has them.
    pub fn new(format: QFormat, n: usize, k: usize, data: &[u8]) -> Result<Self> {
        Self::with_kernels(format, n, k, data, has_avx2(), &|_| {})
    }

    /// `data`: the file's blocks, `n` rows of `k` weights. `simd`: interleave the rows for the
    /// AVX2 tiles (where the CPU has them; otherwise ignored); without, every product runs on the
    /// definitions, slower, to the same bits. `done` receives each consumed stretch of `data` (a
    /// few MiB, in order), so that a loader can drop a mapped file's pages as they are copied
    /// and never hold a large weight twice.
    pub fn with_kernels(format: QFormat, n: usize, k: usize, data: &[u8], simd: bool, done: &dyn Fn(&[u8])) -> Result<Self> {
        let (block, bytes) = format.block();
        if k % block != 0 || data.len() != n * (k / block) * bytes {
            return Err(Error::Invalid(format!(
                "{format:?} matrix [{n}, {k}] cannot hold {} bytes (rows must be whole blocks of {block})",
                data.len()
            )));
        }
        let packed = |data| -> std::io::Result<Storage> {
            Ok(match format {
                QFormat::Q8_0 => Storage::Q8x8(x8::Packed::from_blocks(data, n, k, done)?),
                QFormat::Q4_0 => Storage::Q4x8(x8::Packed::from_blocks(data, n, k, done)?),
                QFormat::Q5_0 => Storage::Q5x8(x8::Packed::from_blocks(data, n, k, done)?),
                QFormat::Q4K => Storage::Q4Kx8(x8::Packed::from_blocks(data, n, k, done)?),
                QFormat::Q5K => Storage::Q5Kx8(x8::Packed::from_blocks(data, n, k, done)?),
                QFormat::Q6K => Storage::Q6Kx8(x8::Packed::from_blocks(data, n, k, done)?),
            })
        };
        let storage = if simd && has_avx2() { packed(data) } else { buf::WeightBuf::from_bytes(data, done).map(Storage::Blocks) };
        Ok(Self { format, n, k, storage: storage.map_err(io_error)? })
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// Row `i` as f32 (embedding lookups).
    pub fn dequantize_row(&self, i: usize, out: &mut [f32]) {
        fn blocks<K: Kernel>(data: &[u8], k: usize, i: usize, out: &mut [f32]) {
            let rb = k / K::BLOCK * K::BYTES;
            for (b, o) in data[i * rb..(i + 1) * rb].chunks_exact(K::BYTES).zip(out.chunks_exact_mut(K::BLOCK)) {
                K::dequantize_block(b, o);
            }
        }
        match &self.storage {
            Storage::Q8x8(p) => p.dequantize_row(i, out),
            Storage::Q4x8(p) => p.dequantize_row(i, out),
            Storage::Q5x8(p) => p.dequantize_row(i, out),
            Storage::Q4Kx8(p) => p.dequantize_row(i, out),
            Storage::Q5Kx8(p) => p.dequantize_row(i, out),
            Storage::Q6Kx8(p) => p.dequantize_row(i, out),
            Storage::Blocks(d) => {
                let (data, k) = (d.bytes(), self.k);
                match self.format {
                    QFormat::Q8_0 => blocks::<q8_0::Q8_0>(data, k, i, out),
                    QFormat::Q4_0 => blocks::<q4_0::Q4_0>(data, k, i, out),
                    QFormat::Q5_0 => blocks::<q5_0::Q5_0>(data, k, i, out),
                    QFormat::Q4K => blocks::<q4_k::Q4K>(data, k, i, out),
                    QFormat::Q5K => blocks::<q5_k::Q5K>(data, k, i, out),
                    QFormat::Q6K => blocks::<q6_k::Q6K>(data, k, i, out),
                }
            }
        }
    }

    /// `out[m, n] = x[m, k] · selfᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "activation length");
        assert_eq!(out.len(), m * self.n, "output length");
        let (n, k) = (self.n, self.k);
        match &self.storage {
            Storage::Q8x8(p) => matmul_x8(p, n, k, x, m, out),
            Storage::Q4x8(p) => matmul_x8(p, n, k, x, m, out),
            Storage::Q5x8(p) => matmul_x8(p, n, k, x, m, out),
            Storage::Q4Kx8(p) => matmul_x8(p, n, k, x, m, out),
            Storage::Q5Kx8(p) => matmul_x8(p, n, k, x, m, out),
            Storage::Q6Kx8(p) => matmul_x8(p, n, k, x, m, out),
            Storage::Blocks(d) => match self.format {
                QFormat::Q8_0 => matmul::<q8_0::Q8_0>(d.bytes(), n, k, x, m, out),
                QFormat::Q4_0 => matmul::<q4_0::Q4_0>(d.bytes(), n, k, x, m, out),
                QFormat::Q5_0 => matmul::<q5_0::Q5_0>(d.bytes(), n, k, x, m, out),
                QFormat::Q4K => matmul::<q4_k::Q4K>(d.bytes(), n, k, x, m, out),
                QFormat::Q5K => matmul::<q5_k::Q5K>(d.bytes(), n, k, x, m, out),
                QFormat::Q6K => matmul::<q6_k::Q6K>(d.bytes(), n, k, x, m, out),
            },
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

/// Weight rows per work item: their blocks stay in cache while every activation row passes.
const COLS_PER_ITEM: usize = 16;

/// The definitions on the file's blocks. Where the CPU has AVX2 and FMA (the interleaved tiles
/// are turned off for this matrix), the same code is compiled for them: the integer sums are exact
/// and `mul_add` is one fused multiply-add either way, so only the speed differs.
fn matmul<K: Kernel>(w: &[u8], n: usize, k: usize, x: &[f32], m: usize, out: &mut [f32]) {
    let a = act::quantize_rows(x, m, k, K::ACT_BLOCK);
    let rb = k / K::BLOCK * K::BYTES;
    let out = Out { ptr: out.as_mut_ptr(), n };
    let items = n.div_ceil(COLS_PER_ITEM);
    let avx2 = has_avx2();
    spread(items, n * k * m, |range| {
        for item in range {
            let cols = item * COLS_PER_ITEM..n.min((item + 1) * COLS_PER_ITEM);
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA; these columns are written by this item alone.
                unsafe { definitions_avx2::<K>(w, rb, &a, m, cols, out) };
                continue;
            }
            let _ = avx2;
            // SAFETY: these columns are written by this work item alone.
            unsafe { definitions::<K>(w, rb, &a, m, cols, out) };
        }
    });
}

/// # Safety
/// No other thread writes columns `cols` of `out`.
#[inline(always)]
unsafe fn definitions<K: Kernel>(w: &[u8], rb: usize, a: &QuantizedRows, m: usize, cols: std::ops::Range<usize>, out: Out) {
    for c in cols {
        for r in 0..m {
            unsafe { out.put(r, c, K::dot_scalar(&w[c * rb..(c + 1) * rb], a, r)) };
        }
    }
}

/// # Safety
/// As [`definitions`], and the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn definitions_avx2<K: Kernel>(w: &[u8], rb: usize, a: &QuantizedRows, m: usize, cols: std::ops::Range<usize>, out: Out) {
    unsafe { definitions::<K>(w, rb, a, m, cols, out) }
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

/// Rows interleaved eight at a time (the last group padded with zero rows); see `x8`.
#[allow(unused_variables)]
fn matmul_x8<L: x8::Layout>(p: &x8::Packed<L>, n: usize, k: usize, x: &[f32], m: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let a = act::quantize_rows(x, m, k, L::Blocks::ACT_BLOCK);
        let out = Out { ptr: out.as_mut_ptr(), n };
        const GROUPS_PER_ITEM: usize = COLS_PER_ITEM / 8;
        let groups = n.div_ceil(8);
        spread(groups.div_ceil(GROUPS_PER_ITEM), n * k * m, |range| {
            for g in range.start * GROUPS_PER_ITEM..groups.min(range.end * GROUPS_PER_ITEM) {
                // SAFETY: interleaved matrices are made only where the CPU has AVX2, FMA and
                // F16C; group g's columns are written by this work item alone.
                unsafe { group_avx2(p, g, &a, m, out) };
            }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("interleaved matrices are made only for the AVX2 tiles");
}

/// All activation rows against the eight columns of group `g` (those below `n`), in tiles of
/// up to eight rows.
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
                    let c = 8 * g + x8::LANE_ROW[l];
                    if c < out.n {
                        out.put(r0 + i, c, v);
                    }
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

    /// A [n, k] matrix quantized by candle (an independent encoder), ours built from its bytes
    /// (interleaved for the AVX2 tiles with `simd` where the CPU has them, else in its blocks).
    fn quantized(dtype: GgmlDType, n: usize, k: usize, seed: u64, simd: bool) -> (QMatrix, Vec<f32>) {
        let w = Tensor::from_vec(random(n * k, seed), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let reference = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (QMatrix::from_qtensor(&q, simd).unwrap().unwrap(), reference)
    }

    /// Both ways a matrix is kept: the definitions' (false) and, where the CPU has AVX2, the
    /// tiles' (true).
    fn ways() -> Vec<bool> {
        if has_avx2() {
            vec![false, true]
        } else {
            vec![false]
        }
    }

    const TYPES: [GgmlDType; 6] = [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q5_0, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K];

    fn act_block(dtype: GgmlDType) -> usize {
        if matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q5_0) {
            32
        } else {
            256
        }
    }

    /// Our block decoding equals candle's dequantization for every type, in both layouts: catches
    /// a misread layout (nibble order, 6-bit scale packing, the Q6_K high-bit pairs).
    #[test]
    fn dequantized_rows_equal_candles() {
        for (dtype, n) in TYPES.into_iter().flat_map(|t| [(t, 5), (t, 8), (t, 13)]) {
            for simd in ways() {
                let k = 512;
                let (qm, reference) = quantized(dtype, n, k, 7, simd);
                let mut row = vec![0f32; k];
                for i in 0..n {
                    qm.dequantize_row(i, &mut row);
                    assert_eq!(row, reference[i * k..(i + 1) * k], "{dtype:?} simd={simd} n={n} row {i}");
                }
            }
        }
    }

    /// The definitions against f64 products of the dequantized weights and the dequantized int8
    /// activations (exact up to float rounding), and the AVX2 tiles against the definitions, bit
    /// for bit: every type, odd shapes (n not a multiple of the eight-row groups, m = 1..9 covering
    /// every row remainder of the tiles), k of one and several blocks.
    #[test]
    fn kernels_match_the_definition() {
        for dtype in TYPES {
            for (n, k) in [(1, 256), (7, 256), (8, 256), (37, 512), (16, 768)] {
                let seed = n as u64 * 31 + k as u64;
                let (plain, wf) = quantized(dtype, n, k, seed, false);
                let tiles = has_avx2().then(|| quantized(dtype, n, k, seed, true).0);
                for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 17] {
                    let x = random(m * k, 99 + m as u64);
                    let a = act::quantize_rows(&x, m, k, act_block(dtype));
                    let xq: Vec<f64> = (0..m * k).map(|i| a.qs[i] as f64 * a.d[i / a.block] as f64).collect();
                    let mut out = vec![0f32; m * n];
                    plain.matmul(&x, m, &mut out);
                    for r in 0..m {
                        for c in 0..n {
                            let exact: f64 = (0..k).map(|i| xq[r * k + i] * wf[c * k + i] as f64).sum();
                            let scale: f64 = (0..k).map(|i| (xq[r * k + i] * wf[c * k + i] as f64).abs()).sum();
                            let got = out[r * n + c] as f64;
                            assert!(
                                (got - exact).abs() <= 1e-5 * scale.max(1.0),
                                "{dtype:?} n={n} k={k} m={m} ({r},{c}): {got} vs {exact}"
                            );
                        }
                    }
                    if let Some(tiles) = &tiles {
                        let mut fast = vec![0f32; m * n];
                        tiles.matmul(&x, m, &mut fast);
                        for (i, (f, p)) in fast.iter().zip(&out).enumerate() {
                            assert_eq!(f.to_bits(), p.to_bits(), "{dtype:?} n={n} k={k} m={m} ({},{}): tile {f} vs definition {p}", i / n, i % n);
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
            for simd in ways() {
                let k = 512;
                let (qm, _) = quantized(dtype, n, k, 3, simd);
                let x = random(11 * k, 5);
                let mut batched = vec![0f32; 11 * n];
                qm.matmul(&x, 11, &mut batched);
                for r in 0..11 {
                    let mut alone = vec![0f32; n];
                    qm.matmul(&x[r * k..(r + 1) * k], 1, &mut alone);
                    assert_eq!(alone, batched[r * n..(r + 1) * n], "{dtype:?} simd={simd} n={n} row {r}");
                }
            }
        }
    }

    /// The definitions compiled for AVX2 and FMA (how they run here when the tiles are off) give
    /// the plain build's results bit for bit (how they run on CPUs without AVX2): exact integer
    /// sums, one fused multiply-add per block either way.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn definitions_do_not_depend_on_the_instruction_set() {
        fn check<K: Kernel>(dtype: GgmlDType) {
            let (n, k, m) = (9, 512, 5);
            let (qm, _) = quantized(dtype, n, k, 17, false);
            let Storage::Blocks(w) = &qm.storage else { panic!("{dtype:?}: not in blocks") };
            let x = random(m * k, 23);
            let a = act::quantize_rows(&x, m, k, K::ACT_BLOCK);
            let rb = k / K::BLOCK * K::BYTES;
            let (mut plain, mut built) = (vec![0f32; m * n], vec![0f32; m * n]);
            // SAFETY: one thread writes every column; the CPU has AVX2 and FMA (checked).
            unsafe {
                definitions::<K>(w.bytes(), rb, &a, m, 0..n, Out { ptr: plain.as_mut_ptr(), n });
                definitions_avx2::<K>(w.bytes(), rb, &a, m, 0..n, Out { ptr: built.as_mut_ptr(), n });
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&plain), bits(&built), "{dtype:?}");
        }
        if !has_avx2() {
            return;
        }
        check::<q8_0::Q8_0>(GgmlDType::Q8_0);
        check::<q4_0::Q4_0>(GgmlDType::Q4_0);
        check::<q5_0::Q5_0>(GgmlDType::Q5_0);
        check::<q4_k::Q4K>(GgmlDType::Q4K);
        check::<q5_k::Q5K>(GgmlDType::Q5K);
        check::<q6_k::Q6K>(GgmlDType::Q6K);
    }

    /// Every type and row count is interleaved for the AVX2 tiles where the CPU has them, and
    /// kept in its blocks otherwise, so the tests above cover both layouts.
    #[test]
    fn layout_follows_the_cpu() {
        let interleaved = |dtype, n, simd| !matches!(quantized(dtype, n, 256, 1, simd).0.storage, Storage::Blocks(_));
        for dtype in TYPES {
            for n in [7, 16] {
                assert_eq!(interleaved(dtype, n, true), has_avx2(), "{dtype:?} n={n}");
                assert!(!interleaved(dtype, n, false), "{dtype:?} n={n}");
            }
        }
    }

    /// ggml's quantizers never write -128 into a Q8_0 block, but a file may hold it: both
    /// layouts multiply it exactly (the AVX2 tile as 128 with the activation's sign flipped),
    /// against activations of both signs, and the tile gives the definition's bits: 8 and 12 rows
    /// (one whole group of eight, and one and a half), one activation row and eleven.
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
            for m in [1, 11] {
                let mut by_way = Vec::new();
                for simd in ways() {
                    let qm = QMatrix::with_kernels(QFormat::Q8_0, n, k, &data, simd, &|_| {}).unwrap();
                    let x = random(m * k, 11);
                    let a = act::quantize_rows(&x, m, k, 32);
                    let mut out = vec![0f32; m * n];
                    qm.matmul(&x, m, &mut out);
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
                    by_way.push(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
                }
                assert!(by_way.windows(2).all(|w| w[0] == w[1]), "n={n} m={m}: the tile differs from the definition");
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
            let q = QTensor::quantize(&w, dtype).unwrap();
            for (way, m) in [("tiles", 1usize), ("tiles", 64), ("definitions", 1), ("definitions", 64)] {
                if way == "tiles" && !has_avx2() {
                    continue;
                }
                let qm = QMatrix::from_qtensor(&q, way == "tiles").unwrap().unwrap();
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
                eprintln!("{dtype:?} {way} m={m}: {:.1} GMAC/s", (reps * m * n * k) as f64 / s / 1e9);
            }
        }
    }
}
