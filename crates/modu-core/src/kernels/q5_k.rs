//! Q5_K: super-blocks of 256 5-bit weights (176 bytes): f16 d and dmin, twelve bytes packing
//! eight 6-bit scales and minimums (as Q4_K), 32 bytes of high bits, then 128 bytes of nibbles.
//! Value = d*sc*q - dmin*m, with (sc, m) per 32 values. The low nibbles of bytes 32i..32i+32 are
//! values 64i..64i+32 and take bit 2i of the high-bit bytes; the high nibbles are the next 32
//! and take bit 2i + 1.

use super::act::QuantizedRows;
use super::Kernel;

pub struct Q5K;

/// The unsigned 5-bit values l and l + 32 of 64-value chunk `i`.
fn values(b: &[u8], i: usize, l: usize) -> (u8, u8) {
    let (q, h) = (b[48 + 32 * i + l], b[16 + l]);
    ((q & 0xF) | (((h >> (2 * i)) & 1) << 4), (q >> 4) | (((h >> (2 * i + 1)) & 1) << 4))
}

impl Kernel for Q5K {
    const BLOCK: usize = 256;
    const BYTES: usize = 176;
    const ACT_BLOCK: usize = 256;

    fn dequantize_block(b: &[u8], out: &mut [f32]) {
        super::q4_k::dequantize_k(b, out, values)
    }

    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32 {
        super::q4_k::dot_scalar_k(w, Self::BYTES, a, r, values)
    }

    /// Q4_K's tile with each nibble completed by its high bit.
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile_avx2<const R: usize>(w: &[u8], a: &QuantizedRows, rows: [usize; R], out: &mut [f32; R]) {
        unsafe { super::q4_k::tile::<R, true>(w, a, rows, out) }
    }
}
