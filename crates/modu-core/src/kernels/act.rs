//! Activations quantized to int8 before a quantized matrix product, as ggml does: blocks of 32
//! with one scale (for Q8_0, Q4_0 and Q5_0 weights) or super-blocks of 256 with one scale and the sums of each
//! 16 values (for the k-quants, whose offsets and minimums then cost one multiply per group).
//!
//! The scales are computed as ggml computes them, so that activations round to the same integers
//! as in llama.cpp: blocks of 32 use `d = amax / 127` and multiply by `127 / amax`; super-blocks
//! of 256 use `iscale = -127 / max` (max: the value of largest magnitude, with its sign) and
//! `d = 1 / iscale`. Both round half to even, in the scalar and the AVX2 code alike.

/// `m` rows of activations in blocks of `block` values: `qs[m * k]`, `d[m * k / block]`, and for
/// super-blocks of 256 the sums of each 16 values (`bsums`); for both, the sums of each 32
/// (`sums32`).
#[derive(Debug, Default)]
pub struct QuantizedRows {
    pub k: usize,
    pub block: usize,
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub bsums: Vec<i16>,
    pub sums32: Vec<i16>,
}

impl QuantizedRows {
    pub fn blocks_per_row(&self) -> usize {
        self.k / self.block
    }

    pub fn row_qs(&self, r: usize) -> &[i8] {
        &self.qs[r * self.k..(r + 1) * self.k]
    }

    pub fn row_d(&self, r: usize) -> &[f32] {
        let kb = self.blocks_per_row();
        &self.d[r * kb..(r + 1) * kb]
    }

    pub fn row_bsums(&self, r: usize) -> &[i16] {
        let n = self.k / 16;
        &self.bsums[r * n..(r + 1) * n]
    }

    pub fn row_sums32(&self, r: usize) -> &[i16] {
        let n = self.k / 32;
        &self.sums32[r * n..(r + 1) * n]
    }
}

/// Quantizes `m` rows of `k` values (`k` a multiple of `block`, which is 32 or 256).
pub fn quantize_rows(x: &[f32], m: usize, k: usize, block: usize) -> QuantizedRows {
    debug_assert_eq!(x.len(), m * k);
    debug_assert!(k % block == 0);
    let kb = k / block;
    let sums = block == 256;
    let mut out = QuantizedRows {
        k,
        block,
        qs: vec![0; m * k],
        d: vec![0.0; m * kb],
        bsums: vec![0; if sums { m * k / 16 } else { 0 }],
        sums32: vec![0; m * k / 32],
    };
    let quantize_row = |xr: &[f32], qr: &mut [i8], dr: &mut [f32], br: &mut [i16], sr: &mut [i16]| {
        for ((xb, qb), d) in xr.chunks_exact(block).zip(qr.chunks_exact_mut(block)).zip(dr.iter_mut()) {
            *d = if sums { quantize_super_block(xb, qb) } else { quantize_block(xb, qb) };
        }
        if sums {
            for (g, b) in qr.chunks_exact(16).zip(br.iter_mut()) {
                *b = g.iter().map(|&v| v as i16).sum();
            }
            for (p, s) in br.chunks_exact(2).zip(sr.iter_mut()) {
                // At most 32 * 127: fits.
                *s = p[0] + p[1];
            }
        } else {
            for (g, s) in qr.chunks_exact(32).zip(sr.iter_mut()) {
                *s = g.iter().map(|&v| v as i16).sum();
            }
        }
    };
    let (nb, ns) = (if sums { k / 16 } else { 0 }, k / 32);
    let ptrs = [
        out.qs.as_mut_ptr() as usize,
        out.d.as_mut_ptr() as usize,
        out.bsums.as_mut_ptr() as usize,
        out.sums32.as_mut_ptr() as usize,
    ];
    let rows = |range: std::ops::Range<usize>| {
        for r in range {
            // SAFETY: each row's slices are written by exactly one work item, and lie inside
            // the vectors allocated above.
            let (qr, dr, br, sr) = unsafe {
                (
                    std::slice::from_raw_parts_mut((ptrs[0] as *mut i8).add(r * k), k),
                    std::slice::from_raw_parts_mut((ptrs[1] as *mut f32).add(r * kb), kb),
                    std::slice::from_raw_parts_mut((ptrs[2] as *mut i16).add(r * nb), nb),
                    std::slice::from_raw_parts_mut((ptrs[3] as *mut i16).add(r * ns), ns),
                )
            };
            quantize_row(&x[r * k..(r + 1) * k], qr, dr, br, sr);
        }
    };
    if m * k >= 1 << 16 && m > 1 {
        // Long prompts: rows in parallel on the same pool as the products.
        candle_core::utils::barrier_pool().execute_chunked(m, rows);
    } else {
        rows(0..m);
    }
    out
}

/// A super-block of 256 (ggml's Q8_K): returns the scale, negative when the value of largest
/// magnitude is positive, as ggml's is.
fn quantize_super_block(x: &[f32], q: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the CPU has AVX2 (checked above); x and q hold 256 values.
        unsafe { scale_round_avx2(x, q, iscale) };
        return 1.0 / iscale;
    }
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (iscale * v).round_ties_even().min(127.0) as i8;
    }
    1.0 / iscale
}

/// `q = min(round_half_even(x * scale), 127)`, 32 values at a time, in the same arithmetic as
/// the scalar loops.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scale_round_avx2(x: &[f32], q: &mut [i8], scale: f32) {
    use std::arch::x86_64::*;
    let vs = _mm256_set1_ps(scale);
    let hi = _mm256_set1_ps(127.0);
    let lo = _mm256_set1_ps(-127.0);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (c, qc) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)) {
        let i: [__m256i; 4] = std::array::from_fn(|j| {
            let v = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr().add(8 * j)), vs);
            let r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(r, hi), lo))
        });
        let p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        _mm256_storeu_si256(qc.as_mut_ptr() as *mut __m256i, _mm256_permutevar8x32_epi32(p, order));
    }
}

/// One block of 32 (ggml's Q8_0): returns the scale and writes `round(x * 127 / amax)`.
/// The scale is kept as ggml's Q8_0 blocks keep it, rounded to f16.
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let d = quantize_block_unrounded(x, q);
    half::f16::from_f32(d).to_f32()
}

fn quantize_block_unrounded(x: &[f32], q: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() && x.len() % 32 == 0 {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { quantize_block_avx2(x, q) };
    }
    quantize_block_scalar(x, q)
}

pub(crate) fn quantize_block_scalar(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    d
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block_avx2(x: &[f32], q: &mut [i8]) -> f32 {
    use std::arch::x86_64::*;
    let sign_mask = _mm256_set1_ps(-0.0);
    let mut vmax = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        let v = _mm256_loadu_ps(c.as_ptr());
        vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign_mask, v));
    }
    let m128 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    let m64 = _mm_max_ps(m128, _mm_movehl_ps(m128, m128));
    let m32 = _mm_max_ss(m64, _mm_movehdup_ps(m64));
    let amax = _mm_cvtss_f32(m32);
    let d = amax / 127.0;
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    scale_round_avx2(x, q, id);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 and scalar quantizers must agree exactly, or the two kernel paths would differ
    /// by more than their float summation order.
    #[test]
    fn avx2_and_scalar_quantizers_agree() {
        let mut rng = 12345u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((rng >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 8.0
        };
        let mut x: Vec<f32> = (0..256 * 3).map(|_| next()).collect();
        x[5] = 0.5; // ties land on even integers in both paths
        x[40..72].fill(0.0); // an all-zero block has scale 0 and zero quants
        for block in x.chunks(32) {
            let mut a = [0i8; 32];
            let mut b = [0i8; 32];
            let da = quantize_block_scalar(block, &mut a);
            let db = quantize_block_unrounded(block, &mut b);
            assert_eq!(da.to_bits(), db.to_bits());
            assert_eq!(a, b);
        }
        for sb in x.chunks(256) {
            let mut a = [0i8; 256];
            let mut b = [0i8; 256];
            let iscale = -127.0 / sb.iter().fold(0f32, |m, v| if m.abs() < v.abs() { *v } else { m });
            for (q, &v) in a.iter_mut().zip(sb) {
                *q = (iscale * v).round_ties_even().min(127.0) as i8;
            }
            quantize_super_block(sb, &mut b);
            assert_eq!(a, b);
        }
        let q = quantize_rows(&x, 3, 256, 256);
        assert_eq!(q.bsums.len(), 3 * 16);
        assert_eq!(q.bsums[0], q.qs[..16].iter().map(|&v| v as i16).sum::<i16>());
        assert_eq!(q.sums32[1] as i32, q.qs[32..64].iter().map(|&v| v as i32).sum::<i32>());
        assert!(q.row_d(1).iter().all(|&d| d != 0.0));
        // The value of largest magnitude maps to ∓127 with the sign convention of ggml.
        let (i, _) = x[256..512].iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
        assert_eq!(q.qs[256 + i].unsigned_abs(), 127);
        assert!((q.d[1] * q.qs[256 + i] as f32 - x[256 + i]).abs() < 1e-5);
    }
}
