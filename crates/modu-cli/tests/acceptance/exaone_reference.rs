//! EXAONE through the GGUF path against HF transformers: the committed tiny checkpoints of
//! tests/fixtures (made by make_reference.py) are written as f32 GGUF files with llama.cpp's
//! tensor names and metadata, then modu's logits at every position must equal transformers'
//! to 1e-4 in exact arithmetic. The exaone4 hybrid fixture has a window (8) shorter than the
//! prompt (24) and a global layer without RoPE, so it catches the NoPE and window rules; the
//! exaone (3.x) fixture keeps the original tensor names, tied embeddings and llama3 RoPE.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use modu_core::models::layers::LoadOptions;
use modu_core::models::Logits;

use crate::gguf_builder::{build, T, V};
use crate::scratch;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn f32_tensor(name: &str, t: &Tensor) -> T {
    let dims: Vec<u64> = t.dims().iter().rev().map(|&d| d as u64).collect();
    let data: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    T { name: name.into(), dims, type_id: 0, data: data.iter().flat_map(|v| v.to_le_bytes()).collect() }
}

/// llama.cpp's `rope_freqs` for llama3 scaling: per-frequency divisors (spec §2.0).
fn llama3_divisors(rope: &serde_json::Value, head_dim: usize) -> Vec<f32> {
    let base = rope["rope_theta"].as_f64().unwrap();
    let factor = rope["factor"].as_f64().unwrap();
    let (lo, hi) = (rope["low_freq_factor"].as_f64().unwrap(), rope["high_freq_factor"].as_f64().unwrap());
    let old = rope["original_max_position_embeddings"].as_f64().unwrap();
    (0..head_dim / 2)
        .map(|i| {
            let wavelen = 2.0 * std::f64::consts::PI * base.powf(2.0 * i as f64 / head_dim as f64);
            let div = if wavelen < old / hi {
                1.0
            } else if wavelen > old / lo {
                factor
            } else {
                let s = (old / wavelen - lo) / (hi - lo);
                1.0 / ((1.0 - s) / factor + s)
            };
            div as f32
        })
        .collect()
}

/// Per-layer module names, HF -> GGUF, as llama.cpp's converter maps them (spec §4; note the
/// trap: HF `post_attention_layernorm` is a post-norm in exaone4 but the pre-MLP norm in exaone,
/// whose original checkpoints call it `ln_2`).
const EXAONE4_RENAMES: &[(&str, &str)] = &[
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("post_attention_layernorm", "post_attention_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];
const EXAONE_RENAMES: &[(&str, &str)] = &[
    ("attn.attention.q_proj", "attn_q"),
    ("attn.attention.k_proj", "attn_k"),
    ("attn.attention.v_proj", "attn_v"),
    ("attn.attention.out_proj", "attn_output"),
    ("ln_1", "attn_norm"),
    ("ln_2", "ffn_norm"),
    ("mlp.c_fc_0", "ffn_gate"),
    ("mlp.c_fc_1", "ffn_up"),
    ("mlp.c_proj", "ffn_down"),
];

/// Writes an HF checkpoint directory of `arch` (exaone or exaone4) as an f32 GGUF, the way
/// llama.cpp's converter names it.
fn hf_to_gguf(dir: &Path, out: &Path, arch: &str) {
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let weights: HashMap<String, Tensor> = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let u = |k: &str| V::U32(cfg[k].as_u64().unwrap() as u32);
    let key = |k: &str| format!("{arch}.{k}");
    let vocab = cfg["vocab_size"].as_u64().unwrap() as usize;
    let head_dim = cfg["head_dim"].as_u64().unwrap() as usize;
    let rope = &cfg["rope_parameters"];
    let mut kvs = vec![
        ("general.architecture".to_string(), V::Str(arch.into())),
        (key("context_length"), u("max_position_embeddings")),
        (key("embedding_length"), u("hidden_size")),
        (key("block_count"), u("num_hidden_layers")),
        (key("feed_forward_length"), u("intermediate_size")),
        (key("attention.head_count"), u("num_attention_heads")),
        (key("attention.head_count_kv"), u("num_key_value_heads")),
        (key("attention.key_length"), u("head_dim")),
        (key("attention.layer_norm_rms_epsilon"), V::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32)),
        (key("rope.freq_base"), V::F32(rope["rope_theta"].as_f64().unwrap() as f32)),
        ("tokenizer.ggml.model".into(), V::Str("llama".into())),
        ("tokenizer.ggml.tokens".into(), V::StrArr((0..vocab).map(|i| format!("t{i}")).collect())),
        ("tokenizer.ggml.scores".into(), V::F32Arr(vec![0.0; vocab])),
        ("tokenizer.ggml.token_type".into(), V::I32Arr(vec![1; vocab])),
    ];
    if let Some(w) = cfg["sliding_window"].as_u64() {
        kvs.push((key("attention.sliding_window"), V::U32(w as u32)));
        let pattern = cfg["layer_types"].as_array().unwrap().iter().map(|t| t == "sliding_attention").collect();
        kvs.push((key("attention.sliding_window_pattern"), V::BoolArr(pattern)));
    }
    let mut tensors = Vec::new();
    if rope["rope_type"] == "llama3" {
        let div = llama3_divisors(rope, head_dim);
        tensors.push(f32_tensor("rope_freqs.weight", &Tensor::new(div, &Device::Cpu).unwrap()));
    }
    let (renames, layer_prefix) = match arch {
        "exaone4" => (EXAONE4_RENAMES, "model.layers."),
        _ => (EXAONE_RENAMES, "transformer.h."),
    };
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    for hf in names {
        let gguf = match hf.as_str() {
            "model.embed_tokens.weight" | "transformer.wte.weight" => "token_embd.weight".to_string(),
            "model.norm.weight" | "transformer.ln_f.weight" => "output_norm.weight".to_string(),
            "lm_head.weight" => "output.weight".to_string(),
            other => {
                let rest = other.strip_prefix(layer_prefix).unwrap_or_else(|| panic!("unexpected tensor {other}"));
                let (layer, rest) = rest.split_once('.').unwrap();
                let module = rest.strip_suffix(".weight").unwrap();
                let (_, to) = renames.iter().find(|(from, _)| *from == module).unwrap_or_else(|| panic!("unmapped {other}"));
                format!("blk.{layer}.{to}.weight")
            }
        };
        tensors.push(f32_tensor(&gguf, &weights[hf]));
    }
    std::fs::write(out, build(&kvs, &tensors)).unwrap();
}

fn check(variant: &str, arch: &str) {
    let dir = fixture(variant);
    let out = scratch(&format!("exaone-{variant}")).join("model.gguf");
    hf_to_gguf(&dir, &out, arch);
    let reference = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = reference["input_ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
    let mut m = modu_core::loader::load_with(&out, &Device::Cpu, LoadOptions::exact()).unwrap();
    let logits = m.model.forward(&ids, 0, Logits::All).unwrap();
    let diff = (logits - &reference["logits"]).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "{variant}: max |modu - transformers| = {diff}");
}

#[test]
fn exaone4_dense_gguf_matches_transformers() {
    check("exaone4_dense", "exaone4");
}

#[test]
fn exaone4_hybrid_gguf_matches_transformers() {
    check("exaone4_hybrid", "exaone4");
}

#[test]
fn exaone3_gguf_matches_transformers() {
    check("exaone", "exaone");
}
