//! Q4_K and Q5_K in the interleaved layout of `x8`: four products of a 32-value sub-block (a
//! pair is at most 2 * 31 * 127) sum in 16 bits before one `madd` with four rows' scales. Q5_K
//! is Q4_K's layout with each nibble completed by its high bit, kept after the nibbles.

use super::act::QuantizedRows;
use super::x8::Layout;

/// For each group of eight rows and block, in the group's block of 8 * 144 bytes:
/// - bytes 0..16: the eight rows' f16 `d`, in `x8::LANE_ROW` order; 16..32: their `dmin`, alike;
/// - 32..128: the packed 6-bit scales and minimums, as three vectors of eight 32-bit words, word
///   w of row j at `32 + 32 * w + 4 * j`;
/// - 128..1152: the nibbles. For chunk i (the file's bytes 32i..32i+32), half h (rows 4h..4h+4)
///   and piece p, 32 bytes at `128 + ((2i + h) * 4 + p) * 32`: bytes 8p..8p+8 of the chunk for
///   each of the four rows in turn.
#[derive(Debug)]
pub struct Q4KX8;

impl Layout for Q4KX8 {
    type Blocks = super::q4_k::Q4K;

    fn places(j: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (l, h, c) = (super::x8::LANE_ROW[j], j / 4, j % 4);
        let head = [(2 * l, 0, 2), (16 + 2 * l, 2, 2)];
        let words = (0..3).map(move |w| (32 + 32 * w + 4 * j, 4 + 4 * w, 4));
        let quants = (0..4).flat_map(move |i| (0..4).map(move |p| (128 + ((2 * i + h) * 4 + p) * 32 + 8 * c, 16 + 32 * i + 8 * p, 8)));
        head.into_iter().chain(words).chain(quants)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const R: usize>(blocks: *const u8, kb: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 8]; R]) {
        unsafe { tile::<R, false>(blocks, kb, a, rows, out) }
    }
}

/// Q5_K (176-byte blocks: d, dmin and the scales as Q4_K's, then 32 bytes of high bits at
/// 16..48, the nibbles at 48..176): bytes 0..1152 of a group's block as [`Q4KX8`]'s, then
/// 1152..1408 the high bits. For half h (rows 4h..4h+4) and piece p, 32 bytes at
/// `1152 + (4h + p) * 32`: high-bit bytes 8p..8p+8 of each of the four rows in turn, the bytes
/// that complete the nibble bytes of piece p of every chunk (bit 2i for chunk i's low nibbles,
/// 2i + 1 for its high ones).
#[derive(Debug)]
pub struct Q5KX8;

impl Layout for Q5KX8 {
    type Blocks = super::q5_k::Q5K;

    fn places(j: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (h, c) = (j / 4, j % 4);
        let high = (0..4).map(move |p| (1152 + (4 * h + p) * 32 + 8 * c, 16 + 8 * p, 8));
        // Q4_K's places, with the nibbles 32 bytes further on in the row's block.
        Q4KX8::places(j).map(|(to, from, len)| (to, if from >= 16 { from + 32 } else { from }, len)).chain(high)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const R: usize>(blocks: *const u8, kb: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 8]; R]) {
        unsafe { tile::<R, true>(blocks, kb, a, rows, out) }
    }
}

/// The eight rows' sums per block are exact integers; as in llama.cpp's repacked Q4_K product,
/// the scaled sums and the scaled minimum terms accumulate separately over the blocks and are
/// subtracted at the end. Each (activation row, weight row) runs the same instructions whatever
/// R is, so batching never changes a sequence's numbers. HIGH_BITS: Q5_K's layout.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const R: usize, const HIGH_BITS: bool>(
    blocks: *const u8,
    kb: usize,
    a: &QuantizedRows,
    rows: [usize; R],
    out: &mut [[f32; 8]; R],
) {
    use std::arch::x86_64::*;
    let group_bytes = if HIGH_BITS { 8 * 176 } else { 8 * 144 };
    let m4 = _mm256_set1_epi8(0xF);
    let bit4 = _mm256_set1_epi8(0x10);
    let (k1, k2, k3) = (_mm256_set1_epi32(0x3f3f_3f3f), _mm256_set1_epi32(0x0f0f_0f0f), _mm256_set1_epi32(0x0303_0303));
    // Picks byte j of rows (0, 1) into the low lane's 16-bit lanes 0..4 and 4..8, and of rows
    // (2, 3) into the high lane's, from a vector whose two lanes both hold four rows' words.
    let z = -128i8;
    #[rustfmt::skip]
    let pick = _mm256_setr_epi8(
        0, z, 0, z, 0, z, 0, z, 4, z, 4, z, 4, z, 4, z,
        8, z, 8, z, 8, z, 8, z, 12, z, 12, z, 12, z, 12, z,
    );
    // The minimums of sub-blocks (2q, 2q + 1) of each row as two 16-bit values per 32-bit lane.
    let pair_lo = _mm256_setr_epi8(0, z, 1, z, 4, z, 5, z, 8, z, 9, z, 12, z, 13, z, 0, z, 1, z, 4, z, 5, z, 8, z, 9, z, 12, z, 13, z);
    let pair_hi = _mm256_add_epi8(pair_lo, _mm256_set1_epi8(2));
    let lane_row = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_min = [_mm256_setzero_ps(); R];
    let yq: [*const i8; R] = std::array::from_fn(|r| a.row_qs(rows[r]).as_ptr());
    let yd: [*const f32; R] = std::array::from_fn(|r| a.row_d(rows[r]).as_ptr());
    let ys: [*const i16; R] = std::array::from_fn(|r| a.row_sums32(rows[r]).as_ptr());
    for b in 0..kb {
        let blk = blocks.add(b * group_bytes);
        if super::x8::streams::<R>() {
            super::x8::prefetch_ahead(blk, group_bytes);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
        let word = blk.add(32) as *const __m256i;
        let (u0, u1, u2) = (_mm256_loadu_si256(word), _mm256_loadu_si256(word.add(1)), _mm256_loadu_si256(word.add(2)));
        // ggml's 6-bit unpacking, eight rows at once: scales of sub-blocks 0..4 and 4..8, then
        // the minimums, one row per 32-bit lane in row order.
        macro_rules! hi2 {
            ($v:expr) => {
                _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32($v, 6), k3), 4)
            };
        }
        let sc = [_mm256_and_si256(u0, k1), _mm256_or_si256(_mm256_and_si256(u2, k2), hi2!(u0))];
        let mn = [
            _mm256_permutevar8x32_epi32(_mm256_and_si256(u1, k1), lane_row),
            _mm256_permutevar8x32_epi32(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), k2), hi2!(u1)), lane_row),
        ];
        let mins = [
            _mm256_shuffle_epi8(mn[0], pair_lo),
            _mm256_shuffle_epi8(mn[0], pair_hi),
            _mm256_shuffle_epi8(mn[1], pair_lo),
            _mm256_shuffle_epi8(mn[1], pair_hi),
        ];
        let mut sumi = [[_mm256_setzero_si256(); R]; 2];
        for (h, sumi) in sumi.iter_mut().enumerate() {
            let scales = if h == 0 {
                [_mm256_permute2x128_si256(sc[0], sc[0], 0x00), _mm256_permute2x128_si256(sc[1], sc[1], 0x00)]
            } else {
                [_mm256_permute2x128_si256(sc[0], sc[0], 0x11), _mm256_permute2x128_si256(sc[1], sc[1], 0x11)]
            };
            // Q5_K: the high-bit bytes of the four pieces, shifted right once per sub-block, so
            // that bit j of each byte is bit 0 when sub-block j is read (a bit shifted in from
            // the byte above lands at bit 8 - j > 0, never bit 0).
            let mut hb: [__m256i; 4] = std::array::from_fn(|p| {
                if HIGH_BITS {
                    _mm256_loadu_si256(blk.add(1152 + (4 * h + p) * 32) as *const __m256i)
                } else {
                    _mm256_setzero_si256()
                }
            });
            for i in 0..4 {
                let q = blk.add(128 + (2 * i + h) * 128);
                for nib in 0..2 {
                    let j = 2 * i + nib;
                    let s = _mm256_shuffle_epi8(scales[j / 4], _mm256_add_epi8(pick, _mm256_set1_epi8((j % 4) as i8)));
                    let mut w = [_mm256_setzero_si256(); 4];
                    for (p, w) in w.iter_mut().enumerate() {
                        let raw = _mm256_loadu_si256(q.add(32 * p) as *const __m256i);
                        *w = if nib == 0 { _mm256_and_si256(raw, m4) } else { _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4) };
                        if HIGH_BITS {
                            // Bit 0 of each byte to bit 4 (what crosses from the byte below
                            // lands in bits 0..4 and is masked off).
                            *w = _mm256_or_si256(*w, _mm256_and_si256(_mm256_slli_epi16(hb[p], 4), bit4));
                            hb[p] = _mm256_srli_epi16(hb[p], 1);
                        }
                    }
                    for r in 0..R {
                        let y = yq[r].add(b * 256 + 64 * i + 32 * nib);
                        macro_rules! x {
                            ($p:expr) => {
                                _mm256_set1_epi64x(std::ptr::read_unaligned(y.add(8 * $p) as *const i64))
                            };
                        }
                        // Each 16-bit lane sums two products of at most 31 * 127 (15 * 127
                        // for Q4_K); four such sums stay below 2^15.
                        let t = _mm256_add_epi16(
                            _mm256_add_epi16(_mm256_maddubs_epi16(w[0], x!(0)), _mm256_maddubs_epi16(w[1], x!(1))),
                            _mm256_add_epi16(_mm256_maddubs_epi16(w[2], x!(2)), _mm256_maddubs_epi16(w[3], x!(3))),
                        );
                        sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(t, s));
                    }
                }
            }
        }
        for r in 0..R {
            // Rows (0, 1, 4, 5 | 2, 3, 6, 7): the lane order of `LANE_ROW`.
            let s = _mm256_hadd_epi32(sumi[0][r], sumi[1][r]);
            // Σ_j min_j * (sum of the activations of sub-block j), two sub-blocks per madd.
            let y = ys[r].add(b * 8) as *const i32;
            macro_rules! x {
                ($q:expr) => {
                    _mm256_set1_epi32(std::ptr::read_unaligned(y.add($q)))
                };
            }
            let summ = _mm256_add_epi32(
                _mm256_add_epi32(_mm256_madd_epi16(mins[0], x!(0)), _mm256_madd_epi16(mins[1], x!(1))),
                _mm256_add_epi32(_mm256_madd_epi16(mins[2], x!(2)), _mm256_madd_epi16(mins[3], x!(3))),
            );
            let dy = _mm256_set1_ps(*yd[r].add(b));
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(s), acc[r]);
            acc_min[r] = _mm256_fmadd_ps(_mm256_mul_ps(dmin, dy), _mm256_cvtepi32_ps(summ), acc_min[r]);
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), _mm256_sub_ps(acc[r], acc_min[r]));
    }
}
