//! `modu convert`: any checkpoint modu reads (an HF directory or a GGUF file) written as GGUF,
//! in the type mix llama.cpp's converter and quantizer would choose, so the file loads in both
//! engines. Tensors are converted one at a time (rows in parallel) and streamed to disk.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::formats::checkpoint::Checkpoint;
use crate::formats::gguf_writer::{self, TensorSpec};

/// Output types of `modu convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Q8_0,
    /// llama.cpp's Q4_0: Q4_0, with Q6_K for the output head.
    Q4_0,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output head, and for attn_v and ffn_down
    /// on the layers that matter most.
    Q4KM,
    /// llama.cpp's Q5_K_M mix: Q4_K_M's with Q5_K in place of Q4_K.
    Q5KM,
}

impl OutType {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Self::F32,
            "f16" => Self::F16,
            "q8_0" => Self::Q8_0,
            "q4_0" => Self::Q4_0,
            "q4_k" | "q4_k_m" => Self::Q4KM,
            "q5_k" | "q5_k_m" => Self::Q5KM,
            other => return Err(Error::Invalid(format!("unknown output type '{other}' (f32, f16, q8_0, q4_0, q4_k, q5_k)"))),
        })
    }

    /// llama.cpp's `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::Q4_0 => 2,
            Self::Q4KM => 15,
            Self::Q5KM => 17,
        }
    }
}

/// llama.cpp's choice of which layers get more bits: the first and last eighth, and every third
/// one in between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as isize - (n / 8) as isize).rem_euclid(3) == 2
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Falls back, as llama.cpp does, when a row is not a whole number of blocks.
fn fit(t: GgmlDType, row: usize) -> GgmlDType {
    if row % t.block_size() == 0 {
        return t;
    }
    let next = match t {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        _ => GgmlDType::F16,
    };
    if row % next.block_size() == 0 {
        next
    } else {
        GgmlDType::F16
    }
}

/// The storage type of each tensor.
pub fn plan(ckpt: &dyn Checkpoint, names: &[String], ty: OutType) -> Vec<GgmlDType> {
    let arch = ckpt.architecture().unwrap_or_default();
    let n_layers = ckpt.get_usize_opt(&format!("{arch}.block_count")).ok().flatten().unwrap_or(1);
    let n_attn_v = names.iter().filter(|n| n.ends_with("attn_v.weight")).count();
    let tied = !names.iter().any(|n| n == "output.weight");
    let mut i_attn_v = 0;
    let mut i_ffn_down = 0;
    let n_experts = ckpt.get_usize_opt(&format!("{arch}.expert_count")).ok().flatten().unwrap_or(0);
    names
        .iter()
        .map(|name| {
            let dims = ckpt.tensor_dims(name).unwrap_or(&[]);
            let row = dims.last().copied().unwrap_or(0);
            let keep_f32 = dims.len() < 2
                || !name.ends_with("weight")
                || name.ends_with("_norm.weight")
                || name.contains("ffn_gate_inp")
                || name == "rope_freqs.weight";
            if keep_f32 {
                return GgmlDType::F32;
            }
            // The output head (the embedding when tied) gets Q6_K in the 4- and 5-bit mixes.
            let head = name == "output.weight" || (tied && name == "token_embd.weight");
            let want = match ty {
                OutType::F32 => GgmlDType::F32,
                OutType::F16 => GgmlDType::F16,
                OutType::Q8_0 => GgmlDType::Q8_0,
                OutType::Q4_0 | OutType::Q4KM | OutType::Q5KM if head => GgmlDType::Q6K,
                OutType::Q4_0 => GgmlDType::Q4_0,
                OutType::Q4KM | OutType::Q5KM => {
                    let base = if ty == OutType::Q4KM { GgmlDType::Q4K } else { GgmlDType::Q5K };
                    if name.ends_with("attn_v.weight") {
                        let more = use_more_bits(i_attn_v, n_attn_v);
                        i_attn_v += 1;
                        if more { GgmlDType::Q6K } else { base }
                    } else if name.contains("ffn_down") {
                        let i = if n_experts > 1 {
                            layer_of(name).unwrap_or(0)
                        } else {
                            i_ffn_down += 1;
                            i_ffn_down - 1
                        };
                        if use_more_bits(i, n_layers) { GgmlDType::Q6K } else { base }
                    } else {
                        base
                    }
                }
            };
            fit(want, row)
        })
        .collect()
}

/// Re-encodes an f32 tensor [.., row] as `dtype`, in parallel over row chunks.
pub fn encode(t: &Tensor, dtype: GgmlDType) -> Result<Vec<u8>> {
    let dims = t.dims();
    let row = *dims.last().unwrap_or(&1);
    let rows = t.elem_count() / row.max(1);
    let flat = t.reshape((rows, row))?;
    let threads = rayon::current_num_threads().max(1);
    let per = rows.div_ceil(threads * 4).max(1);
    let chunks: Vec<(usize, usize)> = (0..rows).step_by(per).map(|s| (s, per.min(rows - s))).collect();
    let parts: Vec<Vec<u8>> = chunks
        .par_iter()
        .map(|&(s, n)| -> Result<Vec<u8>> {
            let values = flat.narrow(0, s, n)?.flatten_all()?.to_vec1::<f32>()?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(Error::Invalid("non-finite values".into()));
            }
            // A fresh tensor: candle's quantize reads the whole storage of a narrowed view.
            let q = QTensor::quantize(&Tensor::from_vec(values, (n, row), &Device::Cpu)?, dtype)?;
            Ok(q.data()?.into_owned())
        })
        .collect::<Result<_>>()?;
    Ok(parts.concat())
}

pub struct Report {
    pub tensors: usize,
    pub bytes: u64,
}

/// Writes `ckpt` to `out` as GGUF of type `ty`; `progress(i, n, name)` is told of each tensor.
pub fn convert(ckpt: &dyn Checkpoint, out: &Path, ty: OutType, mut progress: impl FnMut(usize, usize, &str)) -> Result<Report> {
    let arch = ckpt.architecture()?;
    let mut names = ckpt.tensor_names();
    // llama.cpp's exaone-moe requires an output head of its own.
    let copy_embd_to_output = arch == "exaone-moe" && !names.iter().any(|n| n == "output.weight");
    if copy_embd_to_output {
        names.push("output.weight".into());
    }
    names.sort_by_key(|n| (layer_of(n).map(|l| l + 1).unwrap_or(0), n.clone()));
    let src_name = |n: &str| if copy_embd_to_output && n == "output.weight" { "token_embd.weight".to_string() } else { n.to_string() };

    let types = {
        let view: Vec<String> = names.clone();
        plan(ckpt, &view, ty)
    };
    let specs: Vec<TensorSpec> = names
        .iter()
        .zip(&types)
        .map(|(n, &dtype)| {
            let dims = ckpt.tensor_dims(&src_name(n)).ok_or_else(|| Error::MissingTensor(n.clone()))?.to_vec();
            Ok(TensorSpec { name: n.clone(), dims, dtype })
        })
        .collect::<Result<_>>()?;

    let mut md: Vec<(String, Value)> = ckpt
        .metadata()
        .iter()
        .filter(|(k, _)| k.as_str() != "general.file_type" && k.as_str() != "general.alignment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.push(("general.file_type".into(), Value::U32(ty.file_type())));
    md.push(("general.quantization_version".into(), Value::U32(2)));
    md.sort_by_key(|(k, _)| (k.as_str() != "general.architecture", !k.starts_with("general."), k.clone()));
    md.dedup_by(|a, b| a.0 == b.0);

    let n = specs.len();
    let bytes: u64 = specs.iter().map(|s| s.n_bytes() as u64).sum();
    gguf_writer::write(out, &md, &specs, |i| {
        let spec = &specs[i];
        progress(i, n, &spec.name);
        let q = ckpt.tensor(&src_name(&spec.name), &Device::Cpu)?;
        if q.dtype() == spec.dtype {
            return Ok(q.data()?.into_owned());
        }
        let t = q.dequantize(&Device::Cpu)?;
        encode(&t, spec.dtype).map_err(|e| match e {
            Error::Invalid(m) if m.starts_with("non-finite") => Error::Invalid(format!("tensor '{}' holds NaN or infinite values", spec.name)),
            other => other,
        })
    })?;
    Ok(Report { tensors: n, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_layers_match_llama_cpp() {
        // 30 layers: 0..3 and 26..29, plus every third from 3 (3 + 2 = 5, 8, ...).
        let got: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(got, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    /// Tensor names and shapes only: what [`plan`] reads.
    struct Shapes {
        md: std::collections::HashMap<String, Value>,
        dims: Vec<(String, Vec<usize>)>,
    }

    impl Checkpoint for Shapes {
        fn metadata(&self) -> &std::collections::HashMap<String, Value> {
            &self.md
        }
        fn tensor_names(&self) -> Vec<String> {
            self.dims.iter().map(|(n, _)| n.clone()).collect()
        }
        fn tensor_dims(&self, name: &str) -> Option<&[usize]> {
            self.dims.iter().find(|(n, _)| n == name).map(|(_, d)| d.as_slice())
        }
        fn tensor(&self, name: &str, _: &Device) -> Result<QTensor> {
            Err(Error::MissingTensor(name.into()))
        }
        fn tensor_split(&self, name: &str, _: &Device) -> Result<Vec<QTensor>> {
            Err(Error::MissingTensor(name.into()))
        }
    }

    /// An 8-layer llama-shaped model; `tied` leaves out output.weight.
    fn shapes(tied: bool) -> (Shapes, Vec<String>) {
        let mut md = std::collections::HashMap::new();
        md.insert("general.architecture".to_string(), Value::String("llama".into()));
        md.insert("llama.block_count".to_string(), Value::U32(8));
        let mut dims = vec![("token_embd.weight".to_string(), vec![1024, 512]), ("output_norm.weight".to_string(), vec![512])];
        if !tied {
            dims.push(("output.weight".to_string(), vec![1024, 512]));
        }
        for i in 0..8 {
            for (t, d) in [("attn_norm", vec![512]), ("attn_q", vec![512, 512]), ("attn_v", vec![256, 512]), ("ffn_down", vec![512, 1536])] {
                dims.push((format!("blk.{i}.{t}.weight"), d));
            }
        }
        let names = dims.iter().map(|(n, _)| n.clone()).collect();
        (Shapes { md, dims }, names)
    }

    fn planned(ty: OutType, tied: bool) -> std::collections::HashMap<String, GgmlDType> {
        let (ckpt, names) = shapes(tied);
        let types = plan(&ckpt, &names, ty);
        names.into_iter().zip(types).collect()
    }

    /// llama.cpp's mixes: Q6_K for the output head (the embedding when tied), and in the K mixes
    /// for attn_v and ffn_down on layers 0, 3, 6 and 7 of 8 (`use_more_bits`); norms stay f32.
    #[test]
    fn type_mixes_follow_llama_cpp() {
        for (ty, base) in [(OutType::Q4KM, GgmlDType::Q4K), (OutType::Q5KM, GgmlDType::Q5K)] {
            let t = planned(ty, false);
            assert_eq!(t["output.weight"], GgmlDType::Q6K);
            assert_eq!(t["token_embd.weight"], base);
            assert_eq!(t["output_norm.weight"], GgmlDType::F32);
            for i in 0..8 {
                let more = if [0, 3, 6, 7].contains(&i) { GgmlDType::Q6K } else { base };
                assert_eq!(t[&format!("blk.{i}.attn_v.weight")], more, "{ty:?} layer {i}");
                assert_eq!(t[&format!("blk.{i}.ffn_down.weight")], more, "{ty:?} layer {i}");
                assert_eq!(t[&format!("blk.{i}.attn_q.weight")], base, "{ty:?} layer {i}");
                assert_eq!(t[&format!("blk.{i}.attn_norm.weight")], GgmlDType::F32);
            }
            assert_eq!(planned(ty, true)["token_embd.weight"], GgmlDType::Q6K);
        }
        let t = planned(OutType::Q4_0, false);
        assert_eq!(t["output.weight"], GgmlDType::Q6K);
        assert_eq!(t["token_embd.weight"], GgmlDType::Q4_0);
        assert!((0..8).all(|i| t[&format!("blk.{i}.attn_v.weight")] == GgmlDType::Q4_0 && t[&format!("blk.{i}.ffn_down.weight")] == GgmlDType::Q4_0));
        assert_eq!(planned(OutType::Q4_0, true)["token_embd.weight"], GgmlDType::Q6K);
        assert_eq!(OutType::parse("Q5_K_M").unwrap(), OutType::Q5KM);
        assert_eq!((OutType::Q4_0.file_type(), OutType::Q5KM.file_type()), (2, 17));
        assert!(OutType::parse("q3_k").is_err());
    }

    #[test]
    fn short_rows_fall_back() {
        assert_eq!(fit(GgmlDType::Q4K, 2048), GgmlDType::Q4K);
        assert_eq!(fit(GgmlDType::Q4K, 64), GgmlDType::Q5_0);
        assert_eq!(fit(GgmlDType::Q6K, 64), GgmlDType::Q8_0);
        assert_eq!(fit(GgmlDType::Q8_0, 24), GgmlDType::F16);
    }
}
