//! Q8_0 in the interleaved layout of `x8`: each 32 bytes a `maddubs` reads are four values of
//! each of eight rows, against four activation values broadcast to all eight, so a block's eight
//! sums finish in eight lanes with no horizontal adds. `maddubs` needs one unsigned operand; it
//! takes the weights' magnitudes (|-128| is 128 as a byte, so every file value is exact) and the
//! activations carry the weights' signs. A product pair is at most 2 * 128 * 127: no saturation.

use super::act::QuantizedRows;
use super::x8::{Layout, LANE_ROW};

/// Bytes of one block of eight rows.
const GROUP_BYTES: usize = 8 * <super::q8_0::Q8_0 as super::q8_0::Values32>::BYTES;

/// For each group of eight rows and block, in the group's block of 8 * 34 bytes:
/// - bytes 0..16: the eight rows' f16 `d`, in [`LANE_ROW`] order;
/// - 16..272: the quants. For piece c (0..8), 32 bytes at `16 + 32c`: values 4c..4c+4 of the
///   row in lane l at `16 + 32c + 4l`.
#[derive(Debug)]
pub struct Q8X8;

impl Layout for Q8X8 {
    type Blocks = super::q8_0::Q8_0;

    fn places(j: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let l = LANE_ROW[j];
        [(2 * l, 0, 2)].into_iter().chain((0..8).map(move |c| (16 + 32 * c + 4 * l, 2 + 4 * c, 4)))
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const R: usize>(blocks: *const u8, kb: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 8]; R]) {
        unsafe { tile(blocks, kb, a, rows, out) }
    }
}

/// Each block's eight sums are exact integers, then scaled and accumulated in f32 as the
/// definition (`q8_0`'s `Kernel` for the `Values32` types) does, lane by lane. Rows go through
/// each block eight at a time, then four, then the rest, so the weights' magnitudes are taken
/// once for several rows and the integer sums stay in registers. Each (activation row, weight
/// row) runs the same instructions whatever R is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const R: usize>(blocks: *const u8, kb: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 8]; R]) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); R];
    let yq: [*const i8; R] = std::array::from_fn(|r| a.row_qs(rows[r]).as_ptr());
    let yd: [*const f32; R] = std::array::from_fn(|r| a.row_d(rows[r]).as_ptr());
    for b in 0..kb {
        let blk = blocks.add(b * GROUP_BYTES);
        if super::x8::streams::<R>() {
            super::x8::prefetch_ahead(blk, GROUP_BYTES);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let mut r0 = 0;
        while r0 + 8 <= R {
            unsafe { block_rows::<8>(blk, d, b, &yq[r0..r0 + 8], &yd[r0..r0 + 8], &mut acc[r0..r0 + 8]) };
            r0 += 8;
        }
        while r0 + 4 <= R {
            unsafe { block_rows::<4>(blk, d, b, &yq[r0..r0 + 4], &yd[r0..r0 + 4], &mut acc[r0..r0 + 4]) };
            r0 += 4;
        }
        unsafe {
            match R - r0 {
                3 => block_rows::<3>(blk, d, b, &yq[r0..], &yd[r0..], &mut acc[r0..]),
                2 => block_rows::<2>(blk, d, b, &yq[r0..], &yd[r0..], &mut acc[r0..]),
                1 => block_rows::<1>(blk, d, b, &yq[r0..], &yd[r0..], &mut acc[r0..]),
                _ => {}
            }
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
}

/// Block `b` of the group at `blk` (scales `d`, one lane per row) against N activation rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_rows<const N: usize>(
    blk: *const u8,
    d: std::arch::x86_64::__m256,
    b: usize,
    yq: &[*const i8],
    yd: &[*const f32],
    acc: &mut [std::arch::x86_64::__m256],
) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut s = [_mm256_setzero_si256(); N];
    for c in 0..8 {
        let w = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
        let aw = _mm256_abs_epi8(w);
        for r in 0..N {
            let y = _mm256_set1_epi32(std::ptr::read_unaligned(yq[r].add(b * 32 + 4 * c) as *const i32));
            let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(y, w));
            s[r] = _mm256_add_epi32(s[r], _mm256_madd_epi16(p, ones));
        }
    }
    for r in 0..N {
        let dy = _mm256_set1_ps(*yd[r].add(b));
        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(s[r]), acc[r]);
    }
}
