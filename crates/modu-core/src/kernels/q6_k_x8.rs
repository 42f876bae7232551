//! Q6_K in the interleaved layout of `x8`: the two products of a 16-value sub-block (a pair is
//! at most 2 * 63 * 127) sum in 16 bits before one `madd` with four rows' scales, and the -32
//! offset is taken once per block from the activations' 16-value sums.

use super::act::QuantizedRows;
use super::x8::{Layout, LANE_ROW};

/// Bytes of one block of eight rows.
const GROUP_BYTES: usize = 8 * <super::q6_k::Q6K as super::Kernel>::BYTES;

/// For each group of eight rows and block, in the group's block of 8 * 210 bytes:
/// - bytes 0..16: the eight rows' f16 `d`, in [`LANE_ROW`] order;
/// - 16..144: the int8 scales, scale j of the row in lane l at `16 + 8j + l`;
/// - 144..1680: the 6-bit values. For half n (values 128n..128n+128), rows 4h..4h+4 and piece p
///   (0..4), 96 bytes at `144 + ((2n + h) * 4 + p) * 96`: low-nibble bytes 64n + 8p.., then
///   64n + 32 + 8p.., then high-bit bytes 32n + 8p.., 8 of each for each of the four rows in turn.
#[derive(Debug)]
pub struct Q6KX8;

impl Layout for Q6KX8 {
    type Blocks = super::q6_k::Q6K;

    fn places(j: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (l, h, c) = (LANE_ROW[j], j / 4, j % 4);
        let head = [(2 * l, 208, 2)].into_iter().chain((0..16).map(move |s| (16 + 8 * s + l, 192 + s, 1)));
        let quants = (0..2).flat_map(move |n| {
            (0..4).flat_map(move |p| {
                let at = 144 + ((2 * n + h) * 4 + p) * 96 + 8 * c;
                [(at, 64 * n + 8 * p, 8), (at + 32, 64 * n + 32 + 8 * p, 8), (at + 64, 128 + 32 * n + 8 * p, 8)]
            })
        });
        head.chain(quants)
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
    let m30 = _mm256_set1_epi8(0x30);
    // The scales of rows 4h..4h+4 (lanes 0, 1, 4, 5 or 2, 3, 6, 7), each repeated for the four
    // 16-bit lanes a row's products occupy.
    #[rustfmt::skip]
    let pick = [
        _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 4, 4, 4, 4, 5, 5, 5, 5),
        _mm_setr_epi8(2, 2, 2, 2, 3, 3, 3, 3, 6, 6, 6, 6, 7, 7, 7, 7),
    ];
    let mut acc = [_mm256_setzero_ps(); R];
    let yq: [*const i8; R] = std::array::from_fn(|r| a.row_qs(rows[r]).as_ptr());
    let yd: [*const f32; R] = std::array::from_fn(|r| a.row_d(rows[r]).as_ptr());
    let yb: [*const i16; R] = std::array::from_fn(|r| a.row_bsums(rows[r]).as_ptr());
    for b in 0..kb {
        let blk = blocks.add(b * GROUP_BYTES);
        if super::x8::streams::<R>() {
            super::x8::prefetch_ahead(blk, GROUP_BYTES);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        macro_rules! scale8 {
            ($j:expr) => {
                _mm_loadl_epi64(blk.add(16 + 8 * $j) as *const __m128i)
            };
        }
        let mut sumi = [[_mm256_setzero_si256(); R]; 2];
        for (h, sumi) in sumi.iter_mut().enumerate() {
            for n in 0..2 {
                for p2 in 0..2 {
                    macro_rules! load {
                        ($p:expr, $part:expr) => {
                            _mm256_loadu_si256(blk.add(144 + ((2 * n + h) * 4 + $p) * 96 + 32 * $part) as *const __m256i)
                        };
                    }
                    for t in 0..4 {
                        let mut w = [_mm256_setzero_si256(); 2];
                        for (e, w) in w.iter_mut().enumerate() {
                            let p = 2 * p2 + e;
                            let low = load!(p, t & 1);
                            let low = if t < 2 { low } else { _mm256_srli_epi16(low, 4) };
                            let qh = load!(p, 2);
                            let high = match t {
                                0 => _mm256_slli_epi16(qh, 4),
                                1 => _mm256_slli_epi16(qh, 2),
                                2 => qh,
                                _ => _mm256_srli_epi16(qh, 2),
                            };
                            *w = _mm256_or_si256(_mm256_and_si256(low, m4), _mm256_and_si256(high, m30));
                        }
                        let s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scale8!(8 * n + 2 * t + p2), pick[h]));
                        for r in 0..R {
                            let y = yq[r].add(b * 256 + 128 * n + 32 * t + 16 * p2);
                            let x0 = _mm256_set1_epi64x(std::ptr::read_unaligned(y as *const i64));
                            let x1 = _mm256_set1_epi64x(std::ptr::read_unaligned(y.add(8) as *const i64));
                            let t16 = _mm256_add_epi16(_mm256_maddubs_epi16(w[0], x0), _mm256_maddubs_epi16(w[1], x1));
                            sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(t16, s));
                        }
                    }
                }
            }
        }
        // Scales of sub-blocks (2q, 2q + 1) as two 16-bit values per row, rows in lane order.
        let mut pairs = [_mm256_setzero_si256(); 8];
        for (q, pair) in pairs.iter_mut().enumerate() {
            *pair = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(scale8!(2 * q), scale8!(2 * q + 1)));
        }
        for r in 0..R {
            let s = _mm256_hadd_epi32(sumi[0][r], sumi[1][r]);
            let bs = yb[r].add(b * 16) as *const i32;
            let mut off = _mm256_setzero_si256();
            for (q, pair) in pairs.iter().enumerate() {
                off = _mm256_add_epi32(off, _mm256_madd_epi16(*pair, _mm256_set1_epi32(std::ptr::read_unaligned(bs.add(q)))));
            }
            let s = _mm256_sub_epi32(s, _mm256_slli_epi32(off, 5));
            let dy = _mm256_set1_ps(*yd[r].add(b));
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(s), acc[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
}
