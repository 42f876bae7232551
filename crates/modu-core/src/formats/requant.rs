//! Lossless re-encoding of legacy 32-element quant blocks (Q4_0, Q5_0) as Q8_0.
//!
//! Their values are small integers times one f16 scale, which Q8_0 holds exactly, and candle has
//! SIMD kernels for Q8_0 but only scalar ones for Q5_0: off the CPU (candle's matmul on other
//! devices) the weights are re-encoded, at 34 bytes per block instead of 18 or 22. On the CPU our
//! own kernels take Q4_0 and Q5_0 as they are.

use candle_core::quantized::{ggml_file, GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{Error, Result};

const QK: usize = 32;
const Q8_0_BYTES: usize = 2 + QK;

/// True for the block types [`to_q8_0`] converts.
pub fn converts(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q5_0)
}

/// Re-encodes raw GGUF tensor bytes of `dtype` as a Q8_0 tensor with the same values.
pub fn to_q8_0(dtype: GgmlDType, raw: &[u8], dims: &[usize], device: &Device) -> Result<QTensor> {
    let out = to_q8_0_bytes(dtype, raw)?;
    Ok(ggml_file::qtensor_from_ggml(GgmlDType::Q8_0, &out, dims.to_vec(), device)?)
}

/// The Q8_0 blocks of [`to_q8_0`], as bytes.
fn to_q8_0_bytes(dtype: GgmlDType, raw: &[u8]) -> Result<Vec<u8>> {
    let block_bytes = dtype.type_size();
    if raw.len() % block_bytes != 0 {
        return Err(Error::Invalid(format!("{dtype:?} data is not a whole number of blocks")));
    }
    let mut out = Vec::with_capacity(raw.len() / block_bytes * Q8_0_BYTES);
    for block in raw.chunks_exact(block_bytes) {
        // Both layouts start with the f16 scale, which Q8_0 keeps as is.
        out.extend_from_slice(&block[..2]);
        let mut q = [0i8; QK];
        match dtype {
            GgmlDType::Q4_0 => {
                let qs = &block[2..18];
                for j in 0..QK / 2 {
                    q[j] = (qs[j] & 0x0F) as i8 - 8;
                    q[j + QK / 2] = (qs[j] >> 4) as i8 - 8;
                }
            }
            GgmlDType::Q5_0 => {
                let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                let qs = &block[6..22];
                for j in 0..QK / 2 {
                    let lo = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
                    let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
                    q[j] = lo as i8 - 16;
                    q[j + QK / 2] = hi as i8 - 16;
                }
            }
            other => return Err(Error::Invalid(format!("cannot re-encode {other:?} as Q8_0"))),
        }
        out.extend(q.iter().map(|&v| v as u8));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    // Catches any bit-unpacking mistake: the re-encoded tensor must hold exactly the values
    // candle's own decoder reads from the original blocks.
    #[test]
    fn requantized_values_are_identical() {
        let dev = Device::Cpu;
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q5_0] {
            let (rows, cols) = (3, 96);
            let n_blocks = rows * cols / QK;
            let mut raw = random_bytes(n_blocks * dtype.type_size(), 7 + dtype.type_size() as u64);
            // Keep scales finite and modest: f16 0x3C00 = 1.0 with random low mantissa bits.
            for b in raw.chunks_exact_mut(dtype.type_size()) {
                b[1] = 0x3C;
            }
            let orig = ggml_file::qtensor_from_ggml(dtype, &raw, vec![rows, cols], &dev).unwrap();
            let conv = to_q8_0(dtype, &raw, &[rows, cols], &dev).unwrap();
            assert_eq!(conv.dtype(), GgmlDType::Q8_0);
            let a: Vec<f32> = orig.dequantize(&dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = conv.dequantize(&dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "{dtype:?}");
            assert!(a.iter().any(|v| *v != 0.0));
        }
    }
}
