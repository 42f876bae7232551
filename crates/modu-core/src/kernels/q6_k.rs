//! Q6_K: super-blocks of 256 6-bit weights (210 bytes): 128 bytes of low nibbles, 64 bytes of
//! high bit pairs, sixteen int8 scales (one per 16 values), then the f16 scale d.
//! Value = d * sc * (q - 32). Each half of 128 values takes 64 low-nibble bytes and 32 high bytes:
//! value l + 32t (t = 0..4) has low nibble from byte l (t even) or l + 32 (t odd), low or high
//! half (t < 2 or not), and high bits (qh[l] >> 2t) & 3.

use super::act::QuantizedRows;
use super::Kernel;

pub struct Q6K;

#[inline(always)]
fn d(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[208], b[209]]).to_f32_const()
}

/// The signed values of a block (6 bits less 32): value 128h + 32t + l takes its low four bits
/// from byte 64h + l (t even) or 64h + 32 + l (t odd), low nibble for t < 2 and high nibble
/// otherwise, and its two high bits from bits 2t of byte 128 + 32h + l.
#[inline(always)]
fn values(b: &[u8]) -> [i8; 256] {
    let mut v = [0i8; 256];
    for h in 0..2 {
        let (ql, qh) = (&b[64 * h..64 * h + 64], &b[128 + 32 * h..160 + 32 * h]);
        for t in 0..4 {
            for l in 0..32 {
                let lo = ql[l + 32 * (t & 1)];
                let lo = if t < 2 { lo & 0xF } else { lo >> 4 };
                v[128 * h + 32 * t + l] = (lo | (((qh[l] >> (2 * t)) & 3) << 4)) as i8 - 32;
            }
        }
    }
    v
}

impl Kernel for Q6K {
    const BLOCK: usize = 256;
    const BYTES: usize = 210;
    const ACT_BLOCK: usize = 256;

    fn dequantize_block(b: &[u8], out: &mut [f32]) {
        let dd = d(b);
        for (i, (o, q)) in out[..256].iter_mut().zip(values(b)).enumerate() {
            let sc = b[192 + i / 16] as i8;
            *o = dd * sc as f32 * q as f32;
        }
    }

    /// Each block's exact sum `Σ_g sc_g Σ_{i in g} q_i y_i` over its sixteen groups of 16.
    #[inline(always)]
    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32 {
        let (qs, ds) = (a.row_qs(r), a.row_d(r));
        let mut sum = 0f32;
        for (blk, b) in w.chunks_exact(Self::BYTES).enumerate() {
            let (v, y) = (values(b), &qs[blk * 256..(blk + 1) * 256]);
            let sumi: i32 = (0..16).map(|g| (b[192 + g] as i8) as i32 * super::q8_0::dot_i8(&v[16 * g..16 * g + 16], &y[16 * g..16 * g + 16])).sum();
            sum = (d(b) * ds[blk]).mul_add(sumi as f32, sum);
        }
        sum
    }
}
