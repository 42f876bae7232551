//! Weight rows interleaved eight at a time, so that one multiply covers several weight rows.
//!
//! In GGUF's layout one `maddubs` multiplies 32 values of one row, so every product needs its
//! own `madd` with its sub-block's scale. Interleaved, the 32 bytes a `maddubs` reads are 8
//! values of each of four rows, with eight activation values broadcast against them; the
//! products of a sub-block sum in 16 bits before one `madd` (with the four rows' sub-block
//! scales for the k-quants, with ones for the 32-value types, whose one scale per block is
//! applied in f32), and the sums of eight rows finish as one vector. Q8_0, whose products
//! cannot sum in 16 bits, reads four values of each of eight rows instead. The bytes are the file's, reordered: each type
//! ([`Layout`]) says where every part of a row's block goes in its group's block, and brings
//! the AVX2 tile that reads that layout (`q8_0_x8`, `q4_0`, `q5_0`, `q4_k_x8` for Q4_K and
//! Q5_K, `q6_k_x8`).

use super::act::QuantizedRows;
use super::Kernel;

/// The order of the rows in the lanes of a finished group sum: what `hadd` of the two halves'
/// sums yields (rows 0..4 in the first half, 4..8 in the second). Its own inverse.
pub const LANE_ROW: [usize; 8] = [0, 1, 4, 5, 2, 3, 6, 7];

/// A block type in its interleaved layout.
pub(crate) trait Layout {
    /// The block type, with its definitions on the file's layout.
    type Blocks: Kernel;
    /// Where the parts of row `j`'s (0..8) block go in its group's block of
    /// `8 * Blocks::BYTES`:
    /// (offset in the group's block, offset in the row's block, length). Every byte of the
    /// group's block is placed exactly once.
    fn places(j: usize) -> impl Iterator<Item = (usize, usize, usize)>;
    /// Activation rows `rows` against the group whose `kb` blocks start at `blocks`; `out[r][l]`
    /// is the group's row `LANE_ROW[l]`.
    ///
    /// Each lane's result is bitwise the definition's (`Kernel::dot_scalar`).
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `blocks` holds `kb` group blocks; `a` has `kb` blocks of
    /// `Blocks::ACT_BLOCK` per row.
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const R: usize>(blocks: *const u8, kb: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 8]; R]);
}

/// Asks the cache for the weights about 4 KiB past the group block at `blk` (one block's worth)
/// while that block is multiplied. A product of few activation rows reads each weight once, and
/// with the hardware prefetcher alone decode was 5-25% slower (EXAONE-1.2B-shaped Q4_K_M and
/// Gemma 3 270M, alternated runs on two cores). A prefetch past the end of the weights is
/// harmless: it never faults.
///
/// # Safety
/// None beyond the CPU having SSE; `blk` is not dereferenced.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn prefetch_ahead(blk: *const u8, group_bytes: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let ahead = blk.wrapping_add(4096);
    let mut o = 0;
    while o < group_bytes {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8) };
        o += 64;
    }
}

/// Whether a tile of R activation rows streams its weights (decode, small batches) and so
/// prefetches them; with more rows the group's blocks are reused from the cache.
pub(crate) const fn streams<const R: usize>() -> bool {
    R <= 4
}

/// A matrix of `L` blocks, rows in groups of eight: group g's block b at
/// `(g * kb + b) * 8 * L::Blocks::BYTES`. Rows past the matrix's (to a multiple of eight) are zero.
#[derive(Debug)]
pub struct Packed<L> {
    pub kb: usize,
    buf: super::buf::WeightBuf,
    // A marker only: no L is stored, so the matrix is Send and Sync whatever L is.
    layout: std::marker::PhantomData<fn() -> L>,
}

impl<L: Layout> Packed<L> {
    const BYTES: usize = L::Blocks::BYTES;
    const GROUP_BYTES: usize = 8 * Self::BYTES;

    /// `data`: `n` rows in the file's layout. `done` receives them, a few MiB at a time, once
    /// they are packed.
    pub fn from_blocks(data: &[u8], n: usize, k: usize, done: &dyn Fn(&[u8])) -> std::io::Result<Self> {
        let kb = k / L::Blocks::BLOCK;
        let mut buf = super::buf::WeightBuf::zeroed(n.div_ceil(8) * kb * Self::GROUP_BYTES)?;
        let dst = buf.bytes_mut();
        let row_bytes = kb * Self::BYTES;
        let rows_per_chunk = (super::buf::CHUNK / row_bytes.max(1)).max(1);
        for (c, src) in data.chunks((rows_per_chunk * row_bytes).max(1)).enumerate() {
            for (i, row) in src.chunks_exact(row_bytes).enumerate() {
                let row_index = c * rows_per_chunk + i;
                let (g, j) = (row_index / 8, row_index % 8);
                for (b, blk) in row.chunks_exact(Self::BYTES).enumerate() {
                    let at = (g * kb + b) * Self::GROUP_BYTES;
                    for (to, from, len) in L::places(j) {
                        dst[at + to..at + to + len].copy_from_slice(&blk[from..from + len]);
                    }
                }
            }
            done(src);
        }
        Ok(Self { kb, buf, layout: std::marker::PhantomData })
    }

    /// Row `row` in the file's layout.
    pub fn row(&self, row: usize) -> Vec<u8> {
        let (g, j) = (row / 8, row % 8);
        let mut out = vec![0u8; self.kb * Self::BYTES];
        for (b, blk) in out.chunks_exact_mut(Self::BYTES).enumerate() {
            let at = (g * self.kb + b) * Self::GROUP_BYTES;
            for (to, from, len) in L::places(j) {
                blk[from..from + len].copy_from_slice(&self.buf.bytes()[at + to..at + to + len]);
            }
        }
        out
    }

    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        for (b, o) in self.row(row).chunks_exact(Self::BYTES).zip(out.chunks_exact_mut(L::Blocks::BLOCK)) {
            L::Blocks::dequantize_block(b, o);
        }
    }

    /// Activation rows `rows` against the eight rows of group `g`; `out[r][l]` is weight row
    /// `8g + LANE_ROW[l]`.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn tile_avx2<const R: usize>(&self, g: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 8]; R]) {
        let start = g * self.kb * Self::GROUP_BYTES;
        assert!(start + self.kb * Self::GROUP_BYTES <= self.buf.bytes().len());
        assert!(a.blocks_per_row() == self.kb && a.block == L::Blocks::ACT_BLOCK);
        unsafe { L::tile(self.buf.bytes().as_ptr().add(start), self.kb, a, rows, out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte of a group's block is placed once, and every byte of every row's blocks comes
    /// back from the packed layout where it was put.
    fn layout_round_trips<L: Layout>() {
        let bytes = L::Blocks::BYTES;
        let mut seen = vec![0u8; 8 * bytes];
        for j in 0..8 {
            for (to, _, len) in L::places(j) {
                seen[to..to + len].iter_mut().for_each(|s| *s += 1);
            }
        }
        assert!(seen.iter().all(|&s| s == 1), "{seen:?}");
        for (n, kb) in [(16, 3), (13, 2)] {
            let data: Vec<u8> = (0..n * kb * bytes).map(|i| (i * 2654435761usize >> 11) as u8).collect();
            let p = Packed::<L>::from_blocks(&data, n, kb * L::Blocks::BLOCK, &|_| {}).unwrap();
            for row in 0..n {
                assert_eq!(p.row(row), data[row * kb * bytes..(row + 1) * kb * bytes], "n={n} row {row}");
            }
            // The padding rows of the last group are zero.
            for row in n..n.div_ceil(8) * 8 {
                assert!(p.row(row).iter().all(|&x| x == 0), "n={n} padding row {row}");
            }
        }
    }

    #[test]
    fn layouts_round_trip() {
        layout_round_trips::<super::super::q8_0_x8::Q8X8>();
        layout_round_trips::<super::super::q4_k_x8::Q4KX8>();
        layout_round_trips::<super::super::q4_k_x8::Q5KX8>();
        layout_round_trips::<super::super::q6_k_x8::Q6KX8>();
        layout_round_trips::<super::super::q5_0::Q5X8>();
        layout_round_trips::<super::super::q4_0::Q4X8>();
    }
}
