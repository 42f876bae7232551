//! Q5_K: super-blocks of 256 5-bit weights (176 bytes): f16 d and dmin, twelve bytes packing
//! eight 6-bit scales and minimums (as Q4_K), 32 bytes of high bits, then 128 bytes of nibbles.
//! Value = d*sc*q - dmin*m, with (sc, m) per 32 values. The low nibbles of bytes 32i..32i+32 are
//! values 64i..64i+32 and take bit 2i of the high-bit bytes; the high nibbles are the next 32
//! and take bit 2i + 1.

use super::act::QuantizedRows;
use super::Kernel;

pub struct Q5K;

/// The unsigned 5-bit values of a block: Q4_K's nibbles, each completed by its high bit.
#[inline(always)]
fn values(b: &[u8]) -> [u8; 256] {
    let mut v = [0u8; 256];
    for i in 0..4 {
        for (l, (&q, &h)) in b[48 + 32 * i..80 + 32 * i].iter().zip(&b[16..48]).enumerate() {
            v[64 * i + l] = (q & 0xF) | (((h >> (2 * i)) & 1) << 4);
            v[64 * i + 32 + l] = (q >> 4) | (((h >> (2 * i + 1)) & 1) << 4);
        }
    }
    v
}

impl Kernel for Q5K {
    const BLOCK: usize = 256;
    const BYTES: usize = 176;
    const ACT_BLOCK: usize = 256;

    fn dequantize_block(b: &[u8], out: &mut [f32]) {
        super::q4_k::dequantize_k(b, out, values)
    }

    #[inline(always)]
    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32 {
        super::q4_k::dot_scalar_k(w, Self::BYTES, a, r, values)
    }
}
