//! EXAONE against HF transformers. tests/fixtures holds tiny random checkpoints of every
//! architecture, saved by transformers itself, with its logits for a 24-token prompt (window 8
//! in the hybrid ones). modu must reproduce those logits at every position to 1e-4, in exact
//! arithmetic, from the HF directory (both config spellings, f32 and sharded bf16) and from the
//! GGUF files `modu convert` writes (f32 and f16). Fixture weights are exact in f16 and bf16, so
//! every format carries the same numbers.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use modu_core::convert::{self, OutType};
use modu_core::formats::hf::HfCheckpoint;
use modu_core::models::layers::LoadOptions;
use modu_core::models::{exaone4, CausalLm, Logits};

use crate::scratch;

const VARIANTS: [&str; 5] = ["exaone", "exaone4_dense", "exaone4_hybrid", "exaone_moe", "exaone4_5"];
const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

struct Reference {
    ids: Vec<u32>,
    logits: Tensor,
}

fn reference(variant: &str) -> Reference {
    let r = candle_core::safetensors::load(fixture(variant).join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids = r["input_ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
    Reference { ids, logits: r["logits"].clone() }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn load(path: &Path) -> Box<dyn CausalLm> {
    modu_core::loader::load_with(path, &Device::Cpu, LoadOptions::exact())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .model
}

fn assert_matches(label: &str, model: &mut dyn CausalLm, r: &Reference) {
    model.truncate(0);
    let logits = model.forward(&r.ids, 0, Logits::All).unwrap();
    let d = max_diff(&logits, &r.logits);
    assert!(d < TOL, "{label}: max |modu - transformers| = {d}");
}

/// A copy of a fixture directory with some files replaced (weights are linked, not copied).
fn variant_dir(variant: &str, tag: &str, replace: &[(&str, &[u8])]) -> PathBuf {
    let src = fixture(variant);
    let dir = scratch(&format!("{variant}-{tag}"));
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if replace.iter().any(|(n, _)| *n == name) {
            continue;
        }
        std::os::unix::fs::symlink(e.path(), dir.join(&name)).unwrap();
    }
    for (name, bytes) in replace {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir
}

#[test]
fn hf_directories_match_transformers() {
    for v in VARIANTS {
        assert_matches(&format!("{v} (HF directory)"), load(&fixture(v)).as_mut(), &reference(v));
    }
}

/// The spelling LG publishes on the hub (num_layers, layer_norm_epsilon, rope_theta +
/// rope_scaling, exaone4_5_text, no layer_types in the dense 1.2B-like config).
#[test]
fn hub_spelling_configs_match_transformers() {
    for v in VARIANTS {
        let hub = std::fs::read(fixture(v).join("config.hub.json")).unwrap();
        let dir = variant_dir(v, "hub", &[("config.json", &hub)]);
        assert_matches(&format!("{v} (hub config)"), load(&dir).as_mut(), &reference(v));
    }
}

#[test]
fn converted_gguf_f32_and_f16_match_transformers() {
    for v in VARIANTS {
        let ckpt = HfCheckpoint::open(&fixture(v)).unwrap();
        let dir = scratch(&format!("convert-{v}"));
        for ty in [OutType::F32, OutType::F16] {
            let out = dir.join(format!("{v}-{ty:?}.gguf"));
            convert::convert(&ckpt, &out, ty, |_, _, _| {}).unwrap();
            let mut loaded = modu_core::loader::load_with(&out, &Device::Cpu, LoadOptions::exact()).unwrap();
            assert_matches(&format!("{v} (GGUF {ty:?})"), loaded.model.as_mut(), &reference(v));
            // The vocabulary travels with the weights: GGUF and HF directory tokenize alike.
            let tok_ref: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(fixture(v).join("tokenizer_reference.json")).unwrap()).unwrap();
            for (text, ids) in tok_ref["texts"].as_array().unwrap().iter().zip(tok_ref["ids"].as_array().unwrap()) {
                let want: Vec<u32> = ids.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
                let got = loaded.tokenizer.encode(text.as_str().unwrap(), false, true).unwrap();
                assert_eq!(got, want, "{v} {ty:?}: tokens of {text}");
            }
        }
        let f32_len = std::fs::metadata(dir.join(format!("{v}-F32.gguf"))).unwrap().len();
        let f16_len = std::fs::metadata(dir.join(format!("{v}-F16.gguf"))).unwrap().len();
        assert!(f16_len * 10 < f32_len * 6, "{v}: f16 file {f16_len} B is not about half of f32 {f32_len} B");
    }
}

/// bf16 weights split over two shards by an index, experts of one layer in different shards.
#[test]
fn sharded_bf16_checkpoint_matches_transformers() {
    let v = "exaone_moe";
    let weights = candle_core::safetensors::load(fixture(v).join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let dir = variant_dir(v, "bf16-sharded", &[]);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let mut shards: [std::collections::HashMap<String, Tensor>; 2] = Default::default();
    let mut map = serde_json::Map::new();
    for (i, n) in names.iter().enumerate() {
        let t = weights[*n].to_dtype(DType::BF16).unwrap();
        shards[i % 2].insert((*n).clone(), t);
        map.insert((*n).clone(), format!("model-0000{}-of-00002.safetensors", i % 2 + 1).into());
    }
    for (i, s) in shards.iter().enumerate() {
        candle_core::safetensors::save(s, dir.join(format!("model-0000{}-of-00002.safetensors", i + 1))).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_matches("exaone_moe (bf16, 2 shards)", load(&dir).as_mut(), &reference(v));
}

/// Prefill k tokens, then one token at a time through the KV cache (past the window of 8).
#[test]
fn prefill_then_decode_equals_full_prefill() {
    for v in VARIANTS {
        let r = reference(v);
        let mut m = load(&fixture(v));
        let k = 5;
        let mut rows = vec![m.forward(&r.ids[..k], 0, Logits::All).unwrap()];
        for (i, &id) in r.ids.iter().enumerate().skip(k) {
            rows.push(m.forward(&[id], i, Logits::All).unwrap());
        }
        let stepped = Tensor::cat(&rows, 0).unwrap();
        let d = max_diff(&stepped, &r.logits);
        assert!(d < TOL, "{v}: stepwise decode differs from transformers by {d}");
    }
}

/// One sliding layer (window 8) taken from the hybrid fixture.
fn sliding_only_model() -> Box<dyn CausalLm> {
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("exaone4_hybrid").join("config.json")).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 1.into();
    cfg["layer_types"] = serde_json::json!(["sliding_attention"]);
    cfg["max_position_embeddings"] = 4096.into();
    let dir = variant_dir("exaone4_hybrid", "sliding-only", &[("config.json", cfg.to_string().as_bytes())]);
    load(&dir)
}

#[test]
fn sliding_only_model_ignores_tokens_older_than_the_window() {
    let mut m = sliding_only_model();
    let ids = reference("exaone4_hybrid").ids;
    let last = |m: &mut dyn CausalLm, ids: &[u32]| {
        m.truncate(0);
        m.forward(ids, 0, Logits::Last).unwrap()
    };
    let base = last(m.as_mut(), &ids);
    // Tokens 0..16 are outside the window of the last position (23): no effect at all.
    let mut far = ids.clone();
    for t in far.iter_mut().take(16) {
        *t = (*t + 7) % 512;
    }
    assert_eq!(max_diff(&last(m.as_mut(), &far), &base), 0.0, "a token older than the window changed the logits");
    // Control: token 16 is inside the window and must matter.
    let mut near = ids.clone();
    near[16] = (near[16] + 7) % 512;
    assert!(max_diff(&last(m.as_mut(), &near), &base) > 1e-3, "a token inside the window had no effect");

    // Decoding far beyond the window keeps the sliding cache bounded and exact.
    let long: Vec<u32> = (0..300u32).map(|i| (i * 37 + 11) % 512).collect();
    m.truncate(0);
    let full = m.forward(&long, 0, Logits::All).unwrap();
    m.truncate(0);
    let mut rows = vec![m.forward(&long[..3], 0, Logits::All).unwrap()];
    let mut bytes_at = Vec::new();
    for (i, &id) in long.iter().enumerate().skip(3) {
        rows.push(m.forward(&[id], i, Logits::All).unwrap());
        if i == 100 || i == 299 {
            bytes_at.push(m.kv_bytes());
        }
    }
    let d = max_diff(&Tensor::cat(&rows, 0).unwrap(), &full);
    assert!(d < TOL, "stepwise decode over 300 tokens differs from full prefill by {d}");
    assert_eq!(bytes_at[0], bytes_at[1], "the sliding layer's KV cache grew with the sequence");
    assert_eq!(m.info().kv_bytes_per_token, 0, "a sliding-only model adds no KV bytes per token");
}

/// Trap 1 of the spec: RoPE on the global layer of a hybrid model must change the logits, so the
/// reference comparison above would catch a lost NoPE rule.
#[test]
fn rope_on_a_global_layer_changes_the_logits() {
    let v = "exaone4_hybrid";
    let r = reference(v);
    let ckpt = HfCheckpoint::open(&fixture(v)).unwrap();
    let cfg = exaone4::Config::from_checkpoint(&ckpt, &Device::Cpu).unwrap();
    assert_eq!(cfg.rope_layers, vec![true, true, true, false], "NoPE on the global layer only");
    let mut m = exaone4::build(&cfg, &ckpt, &Device::Cpu, LoadOptions::exact()).unwrap();
    assert_matches("hybrid as configured", &mut m, &r);
    let mut wrong = cfg.clone();
    wrong.rope_layers = vec![true; 4];
    let mut m = exaone4::build(&wrong, &ckpt, &Device::Cpu, LoadOptions::exact()).unwrap();
    let logits = m.forward(&r.ids, 0, Logits::All).unwrap();
    let d = max_diff(&logits, &r.logits);
    assert!(d > 1e-2, "RoPE on the global layer moved the logits by only {d}");
}

/// Trap 3 of the spec: MTP / NextN layers ride along in K-EXAONE and EXAONE 4.5 files but never
/// run and never count as decoder layers. HF: `mtp.*` tensors and `num_nextn_predict_layers`.
/// GGUF: the NextN block appended after the real layers and counted in `block_count`.
#[test]
fn mtp_and_nextn_layers_are_ignored() {
    use candle_core::quantized::gguf_file::Value;
    use modu_core::formats::checkpoint::Checkpoint;
    use modu_core::formats::gguf::GgufFile;
    use modu_core::formats::gguf_writer::{self, TensorSpec};

    // HF: an EXAONE 4.5 directory with an MTP head.
    let v = "exaone4_5";
    let mut w = candle_core::safetensors::load(fixture(v).join("model.safetensors"), &Device::Cpu).unwrap();
    let layer3: Vec<(String, Tensor)> = w
        .iter()
        .filter_map(|(k, t)| k.strip_prefix("model.language_model.layers.3.").map(|s| (format!("mtp.layers.0.{s}"), t.clone())))
        .collect();
    assert!(!layer3.is_empty());
    w.extend(layer3);
    w.insert("mtp.fc.weight".into(), Tensor::ones((64, 128), DType::F32, &Device::Cpu).unwrap());
    for n in ["mtp.pre_fc_norm_embedding.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.norm.weight"] {
        w.insert(n.into(), Tensor::ones(64, DType::F32, &Device::Cpu).unwrap());
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(v).join("config.json")).unwrap()).unwrap();
    cfg["text_config"]["num_nextn_predict_layers"] = 1.into();
    let dir = variant_dir(v, "mtp", &[("config.json", cfg.to_string().as_bytes())]);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
    let mut m = load(&dir);
    assert_eq!(m.info().n_layers, 4);
    assert_matches("exaone4_5 with an MTP head", m.as_mut(), &reference(v));

    // GGUF: a K-EXAONE file with one NextN block (blk.4) after its 4 layers.
    let v = "exaone_moe";
    let d = scratch("nextn");
    let plain = d.join("plain.gguf");
    convert::convert(&HfCheckpoint::open(&fixture(v)).unwrap(), &plain, OutType::F32, |_, _, _| {}).unwrap();
    let g = GgufFile::open(&plain).unwrap();
    let mut md: Vec<(String, Value)> = g.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, val) in md.iter_mut() {
        match k.as_str() {
            "exaone-moe.block_count" => *val = Value::U32(5),
            "exaone-moe.nextn_predict_layers" => *val = Value::U32(1),
            "exaone-moe.attention.sliding_window_pattern" => {
                if let Value::Array(a) = val {
                    a.push(Value::Bool(false));
                }
            }
            _ => {}
        }
    }
    let mut names = g.tensor_names();
    let extra: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix("blk.3.").map(|s| format!("blk.4.{s}")))
        .chain(["blk.4.nextn.eh_proj.weight".to_string(), "blk.4.nextn.enorm.weight".into(), "blk.4.nextn.hnorm.weight".into()])
        .collect();
    names.extend(extra);
    let source = |n: &str| -> String {
        match n {
            "blk.4.nextn.eh_proj.weight" => "blk.3.ffn_gate_shexp.weight".into(),
            "blk.4.nextn.enorm.weight" | "blk.4.nextn.hnorm.weight" => "blk.3.attn_norm.weight".into(),
            _ => n.replace("blk.4.", "blk.3."),
        }
    };
    let specs: Vec<TensorSpec> = names
        .iter()
        .map(|n| {
            let q = g.tensor(&source(n), &Device::Cpu).unwrap();
            TensorSpec { name: n.clone(), dims: q.shape().dims().to_vec(), dtype: q.dtype() }
        })
        .collect();
    let with_nextn = d.join("nextn.gguf");
    gguf_writer::write(&with_nextn, &md, &specs, |i| Ok(g.tensor(&source(&specs[i].name), &Device::Cpu)?.data()?.into_owned())).unwrap();
    let mut m = load(&with_nextn);
    assert_eq!(m.info().n_layers, 4, "the NextN block must not run");
    assert_matches("exaone-moe GGUF with a NextN block", m.as_mut(), &reference(v));
}

/// Continuous batching: three sequences at different stages (prefill chunks and decode steps in
/// the same pass, each in its own cache slot) give the same logits as transformers' single run.
#[test]
fn batched_sequences_equal_single_runs() {
    use modu_core::models::BatchItem;
    for v in ["exaone4_hybrid", "exaone_moe"] {
        let r = reference(v);
        let mut m = load(&fixture(v));
        let want = |pos: usize| r.logits.get(pos).unwrap().unsqueeze(0).unwrap();
        // Slot s starts with a prefill of 3 + 4s tokens, then all decode together past the window.
        let mut lens: Vec<usize> = (0..3).map(|s| 3 + 4 * s).collect();
        let batch: Vec<BatchItem> = (0..3).map(|s| BatchItem { slot: s + 1, ids: &r.ids[..lens[s]], offset: 0 }).collect();
        let out = m.forward_batch(&batch).unwrap();
        for s in 0..3 {
            let d = max_diff(&out.get(s).unwrap().unsqueeze(0).unwrap(), &want(lens[s] - 1));
            assert!(d < TOL, "{v} slot {s} prefill: {d}");
        }
        while lens[0] < r.ids.len() {
            let items: Vec<(usize, usize)> = (0..3).filter(|&s| lens[s] < r.ids.len()).map(|s| (s, lens[s])).collect();
            let batch: Vec<BatchItem> = items.iter().map(|&(s, l)| BatchItem { slot: s + 1, ids: &r.ids[l..l + 1], offset: l }).collect();
            let out = m.forward_batch(&batch).unwrap();
            for (row, &(s, l)) in items.iter().enumerate() {
                let d = max_diff(&out.get(row).unwrap().unsqueeze(0).unwrap(), &want(l));
                assert!(d < TOL, "{v} slot {s} position {l}: {d}");
                lens[s] += 1;
            }
        }
        m.free_slot(2);
        assert_eq!(m.cached_len_slot(2), 0);
        assert_eq!(m.cached_len_slot(1), r.ids.len());
    }
}
