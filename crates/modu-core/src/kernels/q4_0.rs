//! Q4_0: blocks of 32 4-bit weights (18 bytes): f16 d, then 16 bytes whose low nibbles are
//! values 0..16 and high nibbles values 16..32. Value = d * (q - 8).
//!
//! With AVX2, rows are interleaved eight at a time ([`Q4X8`], see `x8`), in Q5_0's layout
//! without the high bits: the four products of a block (a pair is at most 2 * 15 * 127) sum in
//! 16 bits before one `madd`, and the -8 offset is taken once per block from the activations'
//! 32-value sums.

use super::act::QuantizedRows;
use super::q8_0::Values32;
use super::x8::{Layout, LANE_ROW};

const BYTES: usize = 18;
/// Bytes of one block of eight rows.
const GROUP_BYTES: usize = 8 * BYTES;

pub struct Q4_0;

impl Values32 for Q4_0 {
    const BYTES: usize = BYTES;

    /// The signed values of a block: their 4 bits less 8.
    #[inline(always)]
    fn values(b: &[u8]) -> [i8; 32] {
        let mut v = [0i8; 32];
        for (i, &q) in b[2..18].iter().enumerate() {
            v[i] = (q & 0xF) as i8 - 8;
            v[i + 16] = (q >> 4) as i8 - 8;
        }
        v
    }
}

/// For each group of eight rows and block, in the group's block of 8 * 18 bytes:
/// - bytes 0..16: the eight rows' f16 `d`, in [`LANE_ROW`] order;
/// - 16..144: the nibbles. For half h (rows 4h..4h+4) and piece p (0..2), 32 bytes at
///   `16 + (2h + p) * 32`: bytes 8p..8p+8 of each of the four rows' 16 in turn.
#[derive(Debug)]
pub struct Q4X8;

impl Layout for Q4X8 {
    type Blocks = Q4_0;

    fn places(j: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (l, h, c) = (LANE_ROW[j], j / 4, j % 4);
        let qs = |p: usize| 16 + (2 * h + p) * 32 + 8 * c;
        [(2 * l, 0, 2), (qs(0), 2, 8), (qs(1), 10, 8)].into_iter()
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const R: usize>(blocks: *const u8, kb: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 8]; R]) {
        unsafe { tile(blocks, kb, a, rows, out) }
    }
}

/// Each block's eight sums are exact integers, then scaled and accumulated in f32. Each
/// (activation row, weight row) runs the same instructions whatever R is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const R: usize>(blocks: *const u8, kb: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 8]; R]) {
    use std::arch::x86_64::*;
    let m4 = _mm256_set1_epi8(0xF);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let yq: [*const i8; R] = std::array::from_fn(|r| a.row_qs(rows[r]).as_ptr());
    let yd: [*const f32; R] = std::array::from_fn(|r| a.row_d(rows[r]).as_ptr());
    let ys: [*const i16; R] = std::array::from_fn(|r| a.row_sums32(rows[r]).as_ptr());
    for b in 0..kb {
        let blk = blocks.add(b * GROUP_BYTES);
        if super::x8::streams::<R>() {
            super::x8::prefetch_ahead(blk, GROUP_BYTES);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let mut sumi = [[_mm256_setzero_si256(); R]; 2];
        for (h, sumi) in sumi.iter_mut().enumerate() {
            let mut w = [_mm256_setzero_si256(); 4];
            for p in 0..2 {
                let raw = _mm256_loadu_si256(blk.add(16 + (2 * h + p) * 32) as *const __m256i);
                // Values 8p.. (low nibbles) and 16 + 8p.. (high).
                w[p] = _mm256_and_si256(raw, m4);
                w[2 + p] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            }
            for r in 0..R {
                let y = yq[r].add(b * 32);
                macro_rules! x {
                    ($at:expr) => {
                        _mm256_set1_epi64x(std::ptr::read_unaligned(y.add($at) as *const i64))
                    };
                }
                // Four products of at most 2 * 15 * 127 each: their 16-bit sum cannot overflow.
                let t = _mm256_add_epi16(
                    _mm256_add_epi16(_mm256_maddubs_epi16(w[0], x!(0)), _mm256_maddubs_epi16(w[1], x!(8))),
                    _mm256_add_epi16(_mm256_maddubs_epi16(w[2], x!(16)), _mm256_maddubs_epi16(w[3], x!(24))),
                );
                sumi[r] = _mm256_madd_epi16(t, ones);
            }
        }
        for r in 0..R {
            let s = _mm256_hadd_epi32(sumi[0][r], sumi[1][r]);
            let s = _mm256_sub_epi32(s, _mm256_set1_epi32(8 * *ys[r].add(b) as i32));
            let dy = _mm256_set1_ps(*yd[r].add(b));
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(s), acc[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
}
