//! Q8_0: blocks of 32 int8 weights with one f16 scale (34 bytes), against Q8_0 activations;
//! and the definitions every 32-value block type (Q8_0, Q4_0, Q5_0) shares.

use super::act::QuantizedRows;
use super::Kernel;

/// The definitions of the 32-value block types, which all start with an f16 `d`, given each
/// type's `values`: the block's 32 signed integers. The values are `d * values[i]`.
#[inline(always)]
pub(super) fn dequantize_32(b: &[u8], out: &mut [f32], values: impl Fn(&[u8]) -> [i8; 32]) {
    let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32_const();
    for (o, v) in out[..32].iter_mut().zip(values(b)) {
        *o = d * v as f32;
    }
}

/// A row of `bytes`-byte blocks against activation row `r` (blocks of 32): each block's sum is
/// an exact integer `s`, and `sum = fma(d * d_y, s, sum)` block after block (see `Kernel`).
#[inline(always)]
pub(super) fn dot_scalar_32(w: &[u8], bytes: usize, a: &QuantizedRows, r: usize, values: impl Fn(&[u8]) -> [i8; 32]) -> f32 {
    let (qs, ds) = (a.row_qs(r), a.row_d(r));
    let mut sum = 0f32;
    for (i, b) in w.chunks_exact(bytes).enumerate() {
        let s = dot_i8(&values(b), &qs[32 * i..32 * i + 32]);
        // The exact conversion, as plain code that inlines (`to_f32` calls out per block).
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32_const();
        sum = (d * ds[i]).mul_add(s as f32, sum);
    }
    sum
}

/// `Σ x_i y_i` in exact integers.
#[inline(always)]
pub(super) fn dot_i8(x: &[i8], y: &[i8]) -> i32 {
    x.iter().zip(y).map(|(&a, &b)| a as i32 * b as i32).sum()
}

pub struct Q8_0;

#[inline(always)]
fn values(b: &[u8]) -> [i8; 32] {
    std::array::from_fn(|i| b[2 + i] as i8)
}

impl Kernel for Q8_0 {
    const BLOCK: usize = 32;
    const BYTES: usize = 34;
    const ACT_BLOCK: usize = 32;

    fn dequantize_block(b: &[u8], out: &mut [f32]) {
        dequantize_32(b, out, values)
    }

    #[inline(always)]
    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32 {
        dot_scalar_32(w, Self::BYTES, a, r, values)
    }
}
