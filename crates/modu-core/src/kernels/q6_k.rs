//! Q6_K: super-blocks of 256 6-bit weights (210 bytes): 128 bytes of low nibbles, 64 bytes of
//! high bit pairs, sixteen int8 scales (one per 16 values), then the f16 scale d.
//! Value = d * sc * (q - 32). Each half of 128 values takes 64 low-nibble bytes and 32 high bytes:
//! value l + 32t (t = 0..4) has low nibble from byte l (t even) or l + 32 (t odd), low or high
//! half (t < 2 or not), and high bits (qh[l] >> 2t) & 3.

use super::act::QuantizedRows;
use super::Kernel;

pub struct Q6K;

fn d(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[208], b[209]]).to_f32()
}

/// The unsigned 6-bit value of element `32t + l` of half `h`.
fn value(b: &[u8], h: usize, t: usize, l: usize) -> i32 {
    let ql = &b[64 * h..64 * h + 64];
    let qh = b[128 + 32 * h + l];
    let lo = ql[l + 32 * (t & 1)];
    let lo = if t < 2 { lo & 0xF } else { lo >> 4 };
    (lo | (((qh >> (2 * t)) & 3) << 4)) as i32
}

impl Kernel for Q6K {
    const BLOCK: usize = 256;
    const BYTES: usize = 210;
    const ACT_BLOCK: usize = 256;

    fn dequantize_block(b: &[u8], out: &mut [f32]) {
        let dd = d(b);
        for h in 0..2 {
            for t in 0..4 {
                for l in 0..32 {
                    let i = 128 * h + 32 * t + l;
                    let sc = b[192 + i / 16] as i8;
                    out[i] = dd * sc as f32 * (value(b, h, t, l) - 32) as f32;
                }
            }
        }
    }

    fn dot_scalar(w: &[u8], a: &QuantizedRows, r: usize) -> f32 {
        let (qs, ds) = (a.row_qs(r), a.row_d(r));
        let mut sum = 0f32;
        for (blk, b) in w.chunks_exact(210).enumerate() {
            let y = &qs[blk * 256..(blk + 1) * 256];
            let mut group = [0i32; 16];
            for h in 0..2 {
                for t in 0..4 {
                    for l in 0..32 {
                        let i = 128 * h + 32 * t + l;
                        group[i / 16] += (value(b, h, t, l) - 32) * y[i] as i32;
                    }
                }
            }
            let sumi: i32 = group.iter().enumerate().map(|(g, s)| (b[192 + g] as i8) as i32 * s).sum();
            sum += d(b) * ds[blk] * sumi as f32;
        }
        sum
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn tile_avx2<const R: usize>(w: &[u8], a: &QuantizedRows, rows: [usize; R], out: &mut [f32; R]) {
        unsafe { tile(w, a, rows, out) }
    }
}

/// The six-bit values are unpacked once per super-block for all R rows; the -32
/// offset is taken once per super-block from the activations' 16-value sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const R: usize>(w: &[u8], a: &QuantizedRows, rows: [usize; R], out: &mut [f32; R]) {
    use super::avx2::{f16_to_f32, hsum};
    use std::arch::x86_64::*;
    let nb = a.blocks_per_row();
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); R];
    let yq: [*const i8; R] = std::array::from_fn(|r| a.row_qs(rows[r]).as_ptr());
    let yd: [*const f32; R] = std::array::from_fn(|r| a.row_d(rows[r]).as_ptr());
    let yb: [*const i16; R] = std::array::from_fn(|r| a.row_bsums(rows[r]).as_ptr());
    for b in 0..nb {
        let blk = w[b * 210..(b + 1) * 210].as_ptr();
        let dd = f16_to_f32(u16::from_le_bytes([*blk.add(208), *blk.add(209)]));
        let sc8 = _mm_loadu_si128(blk.add(192) as *const __m128i);
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        // Scales as i16; group g (32 values) needs scale 2g in its low 128-bit lane and 2g + 1 in
        // its high lane, picked by a byte shuffle from a register holding its eight scales twice.
        let halves = [_mm256_permute2x128_si256(sc16, sc16, 0x00), _mm256_permute2x128_si256(sc16, sc16, 0x11)];
        let mut sumi = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let la = _mm256_loadu_si256(blk.add(64 * h) as *const __m256i);
            let lb = _mm256_loadu_si256(blk.add(64 * h + 32) as *const __m256i);
            let hb = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
            for t in 0..4 {
                let g = 4 * h + t;
                let low = if t & 1 == 0 { la } else { lb };
                let low = if t < 2 { low } else { _mm256_srli_epi16(low, 4) };
                let high = match t {
                    0 => _mm256_slli_epi16(hb, 4),
                    1 => _mm256_slli_epi16(hb, 2),
                    2 => hb,
                    _ => _mm256_srli_epi16(hb, 2),
                };
                let q = _mm256_or_si256(_mm256_and_si256(low, m4), _mm256_and_si256(high, m2));
                let e = 4 * (g as i16 % 4);
                let pick = _mm256_set_m128i(_mm_set1_epi16(((e + 3) << 8) | (e + 2)), _mm_set1_epi16(((e + 1) << 8) | e));
                let s = _mm256_shuffle_epi8(halves[g / 4], pick);
                for r in 0..R {
                    let y = _mm256_loadu_si256(yq[r].add(b * 256 + 32 * g) as *const __m256i);
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), s));
                }
            }
        }
        for r in 0..R {
            let mut sumi = sumi[r];
            let bs = _mm256_loadu_si256(yb[r].add(b * 16) as *const __m256i);
            let off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);
            sumi = _mm256_sub_epi32(sumi, off);
            let dy = *yd[r].add(b);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dd * dy), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    for r in 0..R {
        out[r] = hsum(acc[r]);
    }
}
