//! Bad Hugging Face model directories: each gives a one-line error naming the problem and a
//! non-zero exit, never a panic. Each case corrupts a copy of a fixture that loads (positive
//! control first), so the failure is caused by that corruption alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::bad_input::assert_clean_failure;
use crate::{modu, scratch};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

/// A full copy of a fixture directory.
fn copy(variant: &str, tag: &str) -> PathBuf {
    let dir = scratch(&format!("hf-bad-{tag}"));
    for e in std::fs::read_dir(fixture(variant)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

fn run(dir: &Path) -> std::process::Output {
    modu(&["run", "-m", dir.to_str().unwrap(), "--temp", "0", "-n", "2", "hello"])
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, v.to_string()).unwrap();
}

fn edit_weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let p = dir.join("model.safetensors");
    let mut w = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    f(&mut w);
    candle_core::safetensors::save(&w, &p).unwrap();
}

#[test]
fn intact_hf_directory_runs() {
    for v in ["exaone", "exaone4_hybrid", "exaone_moe", "exaone4_5"] {
        let out = run(&fixture(v));
        assert!(out.status.success(), "{v}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn unknown_model_type() {
    let d = copy("exaone4_dense", "model-type");
    edit_config(&d, |c| c["model_type"] = "mamba".into());
    assert_clean_failure(&run(&d), "model_type 'mamba' is not supported");
}

#[test]
fn missing_tensor() {
    let d = copy("exaone4_dense", "missing");
    edit_weights(&d, |w| {
        w.remove("model.layers.1.self_attn.k_proj.weight").unwrap();
    });
    assert_clean_failure(&run(&d), "model.layers.1.self_attn.k_proj.weight");
}

#[test]
fn wrong_shape() {
    let d = copy("exaone", "shape");
    edit_weights(&d, |w| {
        let t = Tensor::zeros((64, 48), candle_core::DType::F32, &Device::Cpu).unwrap();
        w.insert("transformer.h.0.attn.attention.k_proj.weight".into(), t);
    });
    assert_clean_failure(&run(&d), "has shape [64, 48], expected [48, 64]");
}

#[test]
fn index_pointing_outside_the_directory() {
    let d = copy("exaone4_dense", "index");
    std::fs::rename(d.join("model.safetensors"), d.join("model-00001-of-00001.safetensors")).unwrap();
    let w = candle_core::safetensors::load(d.join("model-00001-of-00001.safetensors"), &Device::Cpu).unwrap();
    let mut map: serde_json::Map<String, serde_json::Value> =
        w.keys().map(|k| (k.clone(), "model-00001-of-00001.safetensors".into())).collect();
    map.insert("model.norm.weight".into(), "../../../etc/outside.safetensors".into());
    std::fs::write(d.join("model.safetensors.index.json"), serde_json::json!({"weight_map": map}).to_string()).unwrap();
    assert_clean_failure(&run(&d), "points outside the model directory");
}

#[test]
fn pickle_weights_are_never_loaded() {
    let d = copy("exaone4_dense", "pickle");
    std::fs::rename(d.join("model.safetensors"), d.join("pytorch_model.bin")).unwrap();
    assert_clean_failure(&run(&d), "never unpickles");
}

#[test]
fn corrupt_safetensors() {
    let d = copy("exaone4_dense", "corrupt");
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(&run(&d), "invalid safetensors");
}

#[test]
fn nan_or_zero_rope_factors() {
    let d = copy("exaone", "rope-zero");
    edit_config(&d, |c| c["rope_parameters"]["factor"] = 0.0.into());
    assert_clean_failure(&run(&d), "'factor' = 0 must be a positive finite number");

    let d = copy("exaone", "rope-nan");
    let p = d.join("config.json");
    let text = std::fs::read_to_string(&p).unwrap();
    let re = text.replacen("\"factor\": 8.0", "\"factor\": NaN", 1);
    assert_ne!(text, re, "the fixture's factor field was not found");
    std::fs::write(&p, re).unwrap();
    assert_clean_failure(&run(&d), "NaN");

    // The same in a GGUF: a rope_freqs tensor holding a zero.
    let src = modu_core::formats::hf::HfCheckpoint::open(&fixture("exaone")).unwrap();
    let out = scratch("hf-bad-rope-gguf").join("m.gguf");
    modu_core::convert::convert(&src, &out, modu_core::convert::OutType::F32, |_, _, _| {}).unwrap();
    let mut bytes = std::fs::read(&out).unwrap();
    let g = modu_core::formats::gguf::GgufFile::open(&out).unwrap();
    let info = &g.content.tensor_infos["rope_freqs.weight"];
    let at = (g.content.tensor_data_offset + info.offset) as usize;
    drop(g);
    bytes[at..at + 4].copy_from_slice(&0f32.to_le_bytes());
    std::fs::write(&out, &bytes).unwrap();
    assert_clean_failure(&run(&out), "rope_freqs holds a zero");
}
