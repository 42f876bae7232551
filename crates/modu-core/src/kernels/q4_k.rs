//! Q4_K: super-blocks of 256 4-bit weights (144 bytes): f16 d and dmin, twelve bytes packing
//! eight 6-bit scales and minimums, then 128 bytes of nibbles. Value = d*sc*q - dmin*m, with
//! (sc, m) per 32 values. The low nibbles of bytes 32i..32i+32 are values 64i..64i+32, the
//! high nibbles the next 32.

use super::act::QuantizedRows;
use super::Kernel;

pub struct Q4K;

fn f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The 6-bit scale and minimum of sub-block `j` (0..8).
fn scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        ((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))
    }
}

pub(super) fn scales_mins(b: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = scale_min(&b[4..16], j);
    }
    (sc, mn)
}

impl Kernel for Q4K {
    const BLOCK: usize = 256;
    const BYTES: usize = 144;
    const ACT_BLOCK: usize = 256;

    fn dequantize_block(b: &[u8], out: &mut [f32]) {
        dequantize_k(b, out, nibbles)
    }

    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32 {
        dot_scalar_k(w, Self::BYTES, a, r, nibbles)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn tile_avx2<const R: usize>(w: &[u8], a: &QuantizedRows, rows: [usize; R], out: &mut [f32; R]) {
        unsafe { tile::<R, false>(w, a, rows, out) }
    }
}

/// The unsigned values l and l + 32 of 64-value chunk `i` (0..4) of a Q4_K block.
fn nibbles(b: &[u8], i: usize, l: usize) -> (u8, u8) {
    let q = b[16 + 32 * i + l];
    (q & 0xF, q >> 4)
}

/// The definition of a block of Q4_K or Q5_K, whose `values(block, i, l)` are the unsigned
/// values l and l + 32 of 64-value chunk i.
pub(super) fn dequantize_k(b: &[u8], out: &mut [f32], values: fn(&[u8], usize, usize) -> (u8, u8)) {
    let (d, dmin) = (f16(b, 0), f16(b, 2));
    let (sc, mn) = scales_mins(b);
    for i in 0..4 {
        for l in 0..32 {
            let (lo, hi) = values(b, i, l);
            out[64 * i + l] = d * sc[2 * i] as f32 * lo as f32 - dmin * mn[2 * i] as f32;
            out[64 * i + 32 + l] = d * sc[2 * i + 1] as f32 * hi as f32 - dmin * mn[2 * i + 1] as f32;
        }
    }
}

/// The definition of a Q4_K or Q5_K row (blocks of `bytes`) against activation row `r`.
pub(super) fn dot_scalar_k(w: &[u8], bytes: usize, a: &QuantizedRows, r: usize, values: fn(&[u8], usize, usize) -> (u8, u8)) -> f32 {
    let (qs, ds, s32) = (a.row_qs(r), a.row_d(r), a.row_sums32(r));
    let mut sum = 0f32;
    for (i, b) in w.chunks_exact(bytes).enumerate() {
        let (sc, mn) = scales_mins(b);
        let y = &qs[i * 256..(i + 1) * 256];
        let mut sumi = 0i32;
        for j in 0..4 {
            let lo: i32 = (0..32).map(|l| values(b, j, l).0 as i32 * y[64 * j + l] as i32).sum();
            let hi: i32 = (0..32).map(|l| values(b, j, l).1 as i32 * y[64 * j + 32 + l] as i32).sum();
            sumi += sc[2 * j] as i32 * lo + sc[2 * j + 1] as i32 * hi;
        }
        let summ: i32 = (0..8).map(|j| mn[j] as i32 * s32[i * 8 + j] as i32).sum();
        sum += f16(b, 0) * ds[i] * sumi as f32 - f16(b, 2) * ds[i] * summ as f32;
    }
    sum
}

/// The six-bit scales and minimums of a super-block as sixteen bytes: scales in 0..8, minimums
/// in 8..16 (the same values as [`scale_min`], unpacked with four 32-bit operations).
#[inline(always)]
pub(super) fn unpack_scales(packed: &[u8]) -> [u8; 16] {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let (u0, u1, u2) = (w(0), w(1), w(2));
    let out = [
        u0 & K1,
        (u2 & K2) | (((u0 >> 6) & K3) << 4),
        u1 & K1,
        ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4),
    ];
    let mut b = [0u8; 16];
    for (i, v) in out.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// The unpacked nibbles of a super-block are shared by all R rows; each 64-value chunk is
/// unpacked when it is used, so that R running sums stay in registers. With `HIGH_BITS` the
/// block is Q5_K's: 32 bytes of high bits after the scales, bit 2i completing chunk i's low
/// nibbles and bit 2i + 1 its high ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile<const R: usize, const HIGH_BITS: bool>(w: &[u8], a: &QuantizedRows, rows: [usize; R], out: &mut [f32; R]) {
    use super::avx2::{f16_to_f32, hsum};
    use std::arch::x86_64::*;
    let nb = a.blocks_per_row();
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); R];
    let yq: [*const i8; R] = std::array::from_fn(|r| a.row_qs(rows[r]).as_ptr());
    let yd: [*const f32; R] = std::array::from_fn(|r| a.row_d(rows[r]).as_ptr());
    let yb: [*const i16; R] = std::array::from_fn(|r| a.row_bsums(rows[r]).as_ptr());
    for b in 0..nb {
        let (bytes, qs_at) = if HIGH_BITS { (176, 48) } else { (144, 16) };
        let blk = w.as_ptr().add(b * bytes);
        let d = f16_to_f32(u16::from_le_bytes([*blk, *blk.add(1)]));
        let dmin = f16_to_f32(u16::from_le_bytes([*blk.add(2), *blk.add(3)]));
        let sm = unpack_scales(std::slice::from_raw_parts(blk.add(4), 12));
        let sm = _mm_loadu_si128(sm.as_ptr() as *const __m128i);
        // Scales as i16 in both 128-bit lanes; sub-block j's scale is picked into every lane by
        // a byte shuffle. Minimums as i16, each twice: one per 16-value activation sum.
        let sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        let mn = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
        let mins = _mm256_set_m128i(_mm_unpackhi_epi16(mn, mn), _mm_unpacklo_epi16(mn, mn));
        let mut sumi = [_mm256_setzero_si256(); R];
        let qh = if HIGH_BITS { _mm256_loadu_si256(blk.add(16) as *const __m256i) } else { _mm256_setzero_si256() };
        for i in 0..4 {
            let raw = _mm256_loadu_si256(blk.add(qs_at + 32 * i) as *const __m256i);
            let mut lo = _mm256_and_si256(raw, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            if HIGH_BITS {
                // Bits 2i and 2i + 1 of each high-bit byte, moved to bit 4.
                let one = _mm256_set1_epi8(1);
                let (s_lo, s_hi) = (_mm_cvtsi32_si128(2 * i as i32), _mm_cvtsi32_si128(2 * i as i32 + 1));
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s_lo), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s_hi), one), 4));
            }
            let j = 2 * i as i16;
            let s_lo = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(0x0100 + 0x0202 * j));
            let s_hi = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(0x0100 + 0x0202 * (j + 1)));
            for r in 0..R {
                let y = yq[r].add(b * 256 + 64 * i);
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(y as *const __m256i)), s_lo);
                let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256(y.add(32) as *const __m256i)), s_hi);
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p_lo, p_hi));
            }
        }
        let (vd, vdmin) = (_mm256_set1_ps(d), _mm256_set1_ps(dmin));
        for r in 0..R {
            // The minimums: one lane per sub-block, m_j times the sum of its activations.
            let summ = _mm256_madd_epi16(mins, _mm256_loadu_si256(yb[r].add(b * 16) as *const __m256i));
            let t = _mm256_fnmadd_ps(vdmin, _mm256_cvtepi32_ps(summ), _mm256_mul_ps(vd, _mm256_cvtepi32_ps(sumi[r])));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(*yd[r].add(b)), t, acc[r]);
        }
    }
    for r in 0..R {
        out[r] = hsum(acc[r]);
    }
}

#[cfg(test)]
mod tests {
    /// The 32-bit unpacking equals the byte-wise definition for every byte pattern position.
    #[test]
    fn unpacked_scales_equal_the_definition() {
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..1000 {
            let packed: [u8; 12] = std::array::from_fn(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            });
            let u = super::unpack_scales(&packed);
            for j in 0..8 {
                assert_eq!((u[j], u[8 + j]), super::scale_min(&packed, j), "{packed:?} sub-block {j}");
            }
        }
    }
}
