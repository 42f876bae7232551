//! Q8_0: blocks of 32 int8 weights with one f16 scale (34 bytes), against Q8_0 activations.

use super::act::QuantizedRows;

/// The definitions of the 32-value block types (Q8_0, Q4_0, Q5_0), which all start with an f16
/// `d`: the block's values, `d * value(b, i)` with `value` the signed integer of value i.
pub(super) fn dequantize_32(b: &[u8], out: &mut [f32], value: fn(&[u8], usize) -> i32) {
    let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    for (i, o) in out[..32].iter_mut().enumerate() {
        *o = d * value(b, i) as f32;
    }
}

/// A row of `bytes`-byte blocks against activation row `r` (blocks of 32), exact integer sums
/// per block scaled in f32.
pub(super) fn dot_scalar_32(w: &[u8], bytes: usize, a: &QuantizedRows, r: usize, value: fn(&[u8], usize) -> i32) -> f32 {
    let (qs, ds) = (a.row_qs(r), a.row_d(r));
    let mut sum = 0f32;
    for (i, b) in w.chunks_exact(bytes).enumerate() {
        let s: i32 = (0..32).map(|j| value(b, j) * qs[32 * i + j] as i32).sum();
        sum += half::f16::from_le_bytes([b[0], b[1]]).to_f32() * ds[i] * s as f32;
    }
    sum
}

/// 32 bytes, aligned so that a block's quants are one aligned load.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
pub struct Quants32(pub [i8; 32]);

/// Q8_0 rows repacked in groups of four: for group g and block b, the four rows' scales
/// (`d[(g * kb + b) * 4 + j]`) and quants (`qs[...]`) sit side by side, so that a tile of four
/// columns reads two forward streams, and the four sums reduce with two horizontal adds.
/// Rows past `n` (to a multiple of four) are zero.
#[derive(Debug)]
pub struct Packed {
    pub kb: usize,
    pub d: Vec<u16>,
    qs_buf: super::buf::WeightBuf,
}

impl Packed {
    /// `done` receives the source rows, a few MiB at a time, once they are packed.
    pub fn from_blocks(data: &[u8], n: usize, k: usize, done: &dyn Fn(&[u8])) -> std::io::Result<Self> {
        let kb = k / 32;
        let groups = n.div_ceil(4);
        let mut d = vec![0u16; groups * kb * 4];
        let mut qs_buf = super::buf::WeightBuf::zeroed(groups * kb * 4 * 32)?;
        let qs = qs_buf.cast_mut::<Quants32>();
        let row_bytes = kb * 34;
        let rows_per_chunk = (super::buf::CHUNK / row_bytes.max(1)).max(1);
        for (c, src) in data.chunks((rows_per_chunk * row_bytes).max(1)).enumerate() {
            for row in c * rows_per_chunk..c * rows_per_chunk + src.len() / row_bytes {
                let (g, j) = (row / 4, row % 4);
                for b in 0..kb {
                    let blk = &data[(row * kb + b) * 34..(row * kb + b + 1) * 34];
                    let at = (g * kb + b) * 4 + j;
                    d[at] = u16::from_le_bytes([blk[0], blk[1]]);
                    for (o, &q) in qs[at].0.iter_mut().zip(&blk[2..34]) {
                        *o = q as i8;
                    }
                }
            }
            done(src);
        }
        Ok(Self { kb, d, qs_buf })
    }

    fn qs(&self) -> &[Quants32] {
        self.qs_buf.cast()
    }

    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let (g, j) = (row / 4, row % 4);
        for b in 0..self.kb {
            let at = (g * self.kb + b) * 4 + j;
            let d = half::f16::from_bits(self.d[at]).to_f32();
            for (o, &q) in out[b * 32..(b + 1) * 32].iter_mut().zip(&self.qs()[at].0) {
                *o = d * q as f32;
            }
        }
    }

    /// The definition: row `col` against activation row `r`.
    pub fn dot_scalar(&self, col: usize, a: &QuantizedRows, r: usize) -> f32 {
        let (g, j) = (col / 4, col % 4);
        let (qs, ds) = (a.row_qs(r), a.row_d(r));
        let mut sum = 0f32;
        for b in 0..self.kb {
            let at = (g * self.kb + b) * 4 + j;
            let s: i32 = self.qs()[at].0.iter().zip(&qs[b * 32..(b + 1) * 32]).map(|(&x, &y)| x as i32 * y as i32).sum();
            sum += half::f16::from_bits(self.d[at]).to_f32() * ds[b] * s as f32;
        }
        sum
    }

    /// Activation rows `rows` against the four columns of group `g`.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `g` must be a group of this matrix.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn tile_avx2<const R: usize>(&self, g: usize, a: &QuantizedRows, rows: [usize; R], out: &mut [[f32; 4]; R]) {
        unsafe { tile4(self.kb, self.d[g * self.kb * 4..].as_ptr(), self.qs()[g * self.kb * 4..].as_ptr(), a, rows, out) }
    }
}

/// Each (row, column) pair runs the same instructions in the same order whatever R is, so a
/// sequence's numbers do not depend on what it is batched with.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile4<const R: usize>(
    kb: usize,
    d: *const u16,
    qs: *const Quants32,
    a: &QuantizedRows,
    rows: [usize; R],
    out: &mut [[f32; 4]; R],
) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm_setzero_ps(); R];
    let yq: [*const i8; R] = std::array::from_fn(|r| a.row_qs(rows[r]).as_ptr());
    let yd: [*const f32; R] = std::array::from_fn(|r| a.row_d(rows[r]).as_ptr());
    for b in 0..kb {
        let q = qs.add(b * 4);
        let dx = _mm_cvtph_ps(_mm_loadl_epi64(d.add(b * 4) as *const __m128i));
        let x: [__m256i; 4] = std::array::from_fn(|j| _mm256_load_si256(q.add(j) as *const __m256i));
        let ax: [__m256i; 4] = std::array::from_fn(|j| _mm256_abs_epi8(x[j]));
        for r in 0..R {
            let y = _mm256_loadu_si256(yq[r].add(b * 32) as *const __m256i);
            // |x| * (y * sign x) = x * y: maddubs needs one unsigned operand. Taking it from the
            // weights keeps a file's -128 exact (its magnitude is 128 as a byte), and the
            // activations are never -128.
            let p: [__m256i; 4] =
                std::array::from_fn(|j| _mm256_madd_epi16(_mm256_maddubs_epi16(ax[j], _mm256_sign_epi8(y, x[j])), ones));
            let s = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let dxy = _mm_mul_ps(dx, _mm_set1_ps(*yd[r].add(b)));
            acc[r] = _mm_fmadd_ps(dxy, _mm_cvtepi32_ps(s), acc[r]);
        }
    }
    for r in 0..R {
        _mm_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
}
