//! Q4_K: super-blocks of 256 4-bit weights (144 bytes): f16 d and dmin, twelve bytes packing
//! eight 6-bit scales and minimums, then 128 bytes of nibbles. Value = d*sc*q - dmin*m, with
//! (sc, m) per 32 values. The low nibbles of bytes 32i..32i+32 are values 64i..64i+32, the
//! high nibbles the next 32.

use super::act::QuantizedRows;
use super::Kernel;

pub struct Q4K;

#[inline(always)]
fn f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32_const()
}

/// The 6-bit scale and minimum of sub-block `j` (0..8).
#[inline(always)]
fn scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        ((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))
    }
}

#[inline(always)]
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

    #[inline(always)]
    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32 {
        dot_scalar_k(w, Self::BYTES, a, r, nibbles)
    }
}

/// The unsigned values of a Q4_K block: value 64i + l is the low nibble of byte 32i + l, value
/// 64i + 32 + l its high nibble.
#[inline(always)]
fn nibbles(b: &[u8]) -> [u8; 256] {
    let mut v = [0u8; 256];
    for i in 0..4 {
        for (l, &q) in b[16 + 32 * i..48 + 32 * i].iter().enumerate() {
            v[64 * i + l] = q & 0xF;
            v[64 * i + 32 + l] = q >> 4;
        }
    }
    v
}

/// The definition of a block of Q4_K or Q5_K, whose `values` are the block's 256 unsigned
/// values, sub-block j (scale and minimum j) being values 32j..32j + 32.
#[inline(always)]
pub(super) fn dequantize_k(b: &[u8], out: &mut [f32], values: impl Fn(&[u8]) -> [u8; 256]) {
    let (d, dmin) = (f16(b, 0), f16(b, 2));
    let (sc, mn) = scales_mins(b);
    for (v, (o, q)) in out[..256].iter_mut().zip(values(b)).enumerate() {
        let j = v / 32;
        *o = d * sc[j] as f32 * q as f32 - dmin * mn[j] as f32;
    }
}

/// The definition of a Q4_K or Q5_K row (blocks of `bytes`) against activation row `r`. Each
/// block gives two exact integers, the scaled sum `sumi` and the minimums' sum `summ`; they
/// accumulate apart, `sum = fma(d * d_y, sumi, sum)` and `mins = fma(dmin * d_y, summ, mins)`,
/// and the result is `sum - mins` (as llama.cpp's repacked Q4_K product does).
#[inline(always)]
pub(super) fn dot_scalar_k(w: &[u8], bytes: usize, a: &QuantizedRows, r: usize, values: impl Fn(&[u8]) -> [u8; 256]) -> f32 {
    let (qs, ds, s32) = (a.row_qs(r), a.row_d(r), a.row_sums32(r));
    let (mut sum, mut mins) = (0f32, 0f32);
    for (i, b) in w.chunks_exact(bytes).enumerate() {
        let (sc, mn) = scales_mins(b);
        let (v, y) = (values(b), &qs[i * 256..(i + 1) * 256]);
        let sumi: i32 = (0..8).map(|j| sc[j] as i32 * dot_u8_i8(&v[32 * j..32 * j + 32], &y[32 * j..32 * j + 32])).sum();
        let summ: i32 = (0..8).map(|j| mn[j] as i32 * s32[i * 8 + j] as i32).sum();
        sum = (f16(b, 0) * ds[i]).mul_add(sumi as f32, sum);
        mins = (f16(b, 2) * ds[i]).mul_add(summ as f32, mins);
    }
    sum - mins
}

/// `Σ x_i y_i` in exact integers.
#[inline(always)]
fn dot_u8_i8(x: &[u8], y: &[i8]) -> i32 {
    x.iter().zip(y).map(|(&a, &b)| a as i32 * b as i32).sum()
}
