//! Q6_K rows repacked eight at a time, as Q4_K's are (`q4_k_x8`): one `maddubs` multiplies 8
//! values of four rows, the two products of a 16-value sub-block sum in 16 bits (a pair is at
//! most 2 * 63 * 127) before one `madd` with the four rows' scales, and the -32 offset is taken
//! once per block from the activations' 16-value sums. The bytes are the file's (210 per block
//! and row), reordered.

use super::act::QuantizedRows;
use super::q4_k_x8::LANE_ROW;

/// Bytes of one block of eight rows.
const GROUP_BYTES: usize = 8 * 210;

/// For each group of eight rows `g` and block `b`, at `(g * kb + b) * GROUP_BYTES`:
/// - bytes 0..16: the eight rows' f16 `d`, in [`LANE_ROW`] order;
/// - 16..144: the int8 scales, scale j of the row in lane l at `16 + 8j + l`;
/// - 144..1680: the 6-bit values. For half n (values 128n..128n+128), rows 4h..4h+4 and piece p
///   (0..4), 96 bytes at `144 + ((2n + h) * 4 + p) * 96`: low-nibble bytes 64n + 8p.., then
///   64n + 32 + 8p.., then high-bit bytes 32n + 8p.., 8 of each for each of the four rows in turn.
#[derive(Debug)]
pub struct Packed {
    pub kb: usize,
    buf: super::buf::WeightBuf,
}

/// Where the parts of row `j`'s block go in its group's block: (packed offset, block offset,
/// length).
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

impl Packed {
    /// `n` must be a multiple of eight. `done` receives the source rows, a few MiB at a time, once
    /// they are packed.
    pub fn from_blocks(data: &[u8], n: usize, k: usize, done: &dyn Fn(&[u8])) -> std::io::Result<Self> {
        debug_assert!(n % 8 == 0);
        let kb = k / 256;
        let mut buf = super::buf::WeightBuf::zeroed(n * kb * 210)?;
        let dst = buf.bytes_mut();
        let row_bytes = kb * 210;
        let rows_per_chunk = (super::buf::CHUNK / row_bytes.max(1)).max(1);
        for (c, src) in data.chunks((rows_per_chunk * row_bytes).max(1)).enumerate() {
            for (i, row) in src.chunks_exact(row_bytes).enumerate() {
                let row_index = c * rows_per_chunk + i;
                let (g, j) = (row_index / 8, row_index % 8);
                for (b, blk) in row.chunks_exact(210).enumerate() {
                    let at = (g * kb + b) * GROUP_BYTES;
                    for (to, from, len) in places(j) {
                        dst[at + to..at + to + len].copy_from_slice(&blk[from..from + len]);
                    }
                }
            }
            done(src);
        }
        Ok(Self { kb, buf })
    }

    /// Row `row` in the file's layout.
    pub fn row(&self, row: usize) -> Vec<u8> {
        let (g, j) = (row / 8, row % 8);
        let mut out = vec![0u8; self.kb * 210];
        for (b, blk) in out.chunks_exact_mut(210).enumerate() {
            let at = (g * self.kb + b) * GROUP_BYTES;
            for (to, from, len) in places(j) {
                blk[from..from + len].copy_from_slice(&self.buf.bytes()[at + to..at + to + len]);
            }
        }
        out
    }

    /// Activation rows `rows` against the eight rows of group `g`; `out[r][l]` is weight row
    /// `8g + LANE_ROW[l]`.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `g` must be a group of this matrix.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn tile_avx2<const R: usize>(&self, g: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 8]; R]) {
        let start = g * self.kb * GROUP_BYTES;
        assert!(start + self.kb * GROUP_BYTES <= self.buf.bytes().len() && a.blocks_per_row() == self.kb && a.block == 256);
        unsafe { tile(self.buf.bytes().as_ptr().add(start), self.kb, a, rows, out) }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte of every row's blocks comes back from the packed layout where it was put.
    #[test]
    fn packing_round_trips() {
        let (n, kb) = (16, 3);
        let data: Vec<u8> = (0..n * kb * 210).map(|i| (i * 2654435761usize >> 11) as u8).collect();
        let p = Packed::from_blocks(&data, n, kb * 256, &|_| {}).unwrap();
        for row in 0..n {
            assert_eq!(p.row(row), data[row * kb * 210..(row + 1) * kb * 210], "row {row}");
        }
    }

    /// The layout places every byte of a group's block exactly once.
    #[test]
    fn places_cover_the_block() {
        let mut seen = vec![0u8; GROUP_BYTES];
        for j in 0..8 {
            for (to, _, len) in places(j) {
                for s in &mut seen[to..to + len] {
                    *s += 1;
                }
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
    }
}
