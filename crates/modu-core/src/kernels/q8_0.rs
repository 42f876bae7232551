//! Q8_0: blocks of 32 int8 weights with one f16 scale (34 bytes), against Q8_0 activations;
//! and the definitions every 32-value block type (Q8_0, Q4_0, Q5_0) shares.

use super::act::QuantizedRows;
use super::Kernel;

/// A block type of 32 values starting with an f16 scale `d`: Q8_0, Q4_0, Q5_0. Its definitions
/// ([`Kernel`]) follow from its block size and its signed integers: value i is `d * values[i]`.
pub(super) trait Values32 {
    const BYTES: usize;
    fn values(b: &[u8]) -> [i8; 32];
}

/// The exact conversion of a block's `d`, as plain code that inlines (`to_f32` calls out per
/// block).
#[inline(always)]
fn d(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32_const()
}

impl<T: Values32> Kernel for T {
    const BLOCK: usize = 32;
    const BYTES: usize = <T as Values32>::BYTES;
    const ACT_BLOCK: usize = 32;

    fn dequantize_block(b: &[u8], out: &mut [f32]) {
        let d = d(b);
        for (o, v) in out[..32].iter_mut().zip(T::values(b)) {
            *o = d * v as f32;
        }
    }

    /// Each block's sum is an exact integer `s`, and `sum = fma(d * d_y, s, sum)` block after
    /// block (see `Kernel`).
    #[inline(always)]
    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32 {
        let (qs, ds) = (a.row_qs(r), a.row_d(r));
        let mut sum = 0f32;
        for (i, b) in w.chunks_exact(<T as Values32>::BYTES).enumerate() {
            let s = dot_i8(&T::values(b), &qs[32 * i..32 * i + 32]);
            sum = (d(b) * ds[i]).mul_add(s as f32, sum);
        }
        sum
    }
}

/// `Σ x_i y_i` in exact integers.
#[inline(always)]
pub(super) fn dot_i8(x: &[i8], y: &[i8]) -> i32 {
    x.iter().zip(y).map(|(&a, &b)| a as i32 * b as i32).sum()
}

pub struct Q8_0;

impl Values32 for Q8_0 {
    const BYTES: usize = 34;

    #[inline(always)]
    fn values(b: &[u8]) -> [i8; 32] {
        std::array::from_fn(|i| b[2 + i] as i8)
    }
}
