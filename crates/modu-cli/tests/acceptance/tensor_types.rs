//! Every supported architecture loads and runs, and every supported tensor type computes the
//! same model: tiny models with identical weights stored as F32, F16, BF16, Q8_0, Q4_0, Q5_0,
//! Q4_K, Q5_K and Q6_K must give logits close to the F32 model's.

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use modu_core::models::Logits;

use crate::gguf_builder::{build, tiny_model};
use crate::scratch;

fn logits(arch: &str, dtype: GgmlDType, dir: &std::path::Path) -> Tensor {
    let (kvs, ts) = tiny_model(arch, dtype);
    let path = dir.join(format!("{arch}-{dtype:?}.gguf"));
    std::fs::write(&path, build(&kvs, &ts)).unwrap();
    let mut m = modu_core::loader::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{arch} {dtype:?}: {e}"));
    let ids: Vec<u32> = (0..12u32).map(|i| 1 + (i * 37) % 299).collect();
    m.model.forward(&ids, 0, Logits::All).unwrap()
}

fn cosine(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap();
    let b = b.flatten_all().unwrap();
    let dot = (&a * &b).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    let na = a.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    let nb = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    dot / (na * nb)
}

// Catches a block type decoded wrongly or routed to the wrong kernel: that gives logits
// unrelated to the F32 model's (cosine near 0), while honest quantization error here stays
// within the bounds below (measured: F16 0.999999, Q8_0 0.9998, Q6_K 0.998, Q5 0.99, Q4 0.97).
#[test]
fn every_tensor_type_computes_the_same_model() {
    let dir = scratch("tensor-types");
    let reference = logits("llama", GgmlDType::F32, &dir);
    let cases = [
        (GgmlDType::F16, 0.99999),
        (GgmlDType::BF16, 0.9999),
        (GgmlDType::Q8_0, 0.999),
        (GgmlDType::Q6K, 0.995),
        (GgmlDType::Q5K, 0.99),
        (GgmlDType::Q5_0, 0.99),
        (GgmlDType::Q4K, 0.95),
        (GgmlDType::Q4_0, 0.95),
    ];
    let mut report = Vec::new();
    for (dtype, min_cos) in cases {
        let c = cosine(&logits("llama", dtype, &dir), &reference);
        report.push(format!("{dtype:?}: cosine {c:.6}"));
        assert!(c >= min_cos, "{dtype:?}: cosine {c} < {min_cos}\n{}", report.join("\n"));
    }
    eprintln!("{}", report.join("\n"));
}

// Catches an architecture whose tensor map or config reading is broken: each loads from GGUF,
// runs, gives finite logits that differ from the llama reading of the same weights (the
// architectures really compute different functions).
#[test]
fn every_architecture_loads_and_runs() {
    let dir = scratch("archs");
    let llama = logits("llama", GgmlDType::Q8_0, &dir);
    for arch in ["qwen3", "exaone", "exaone4"] {
        let l = logits(arch, GgmlDType::Q8_0, &dir);
        assert_eq!(l.dims(), llama.dims(), "{arch}");
        let finite = l.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite());
        assert!(finite, "{arch}: non-finite logits");
        let c = cosine(&l, &llama);
        assert!(c < 0.9999, "{arch} computes exactly llama's function (cosine {c})");
    }
}
