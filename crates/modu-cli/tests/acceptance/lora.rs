//! LoRA against HF PEFT. tests/fixtures/{exaone4_hybrid,gemma3}/lora holds a PEFT adapter with
//! random A and B, and PyTorch's loss, gradients and one AdamW step for a 24-token example whose
//! last 14 tokens are the answer (tests/fixtures/make_lora_reference.py). modu's training forward
//! must give the same loss and gradients, its optimizer the same step, and both its training
//! and inference paths the same adapted logits, all within 1e-4.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use modu_core::formats::hf::HfCheckpoint;
use modu_core::models::layers::LoadOptions;
use modu_core::models::Logits;
use modu_core::train::lora::{self, Adapter};
use modu_core::train::model::TrainModel;
use modu_core::train::trainer::{group_gradients, AdamW};

use crate::{gemma_path, modu, scratch};

const TOL: f32 = 1e-4;
const FIXTURES: [&str; 2] = ["exaone4_hybrid", "gemma3"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

struct LoraRef {
    ids: Vec<u32>,
    /// (position, token): the logits at position predict token (HF's shifted labels).
    targets: Vec<(usize, u32)>,
    logits: Tensor,
    loss: f32,
    tensors: HashMap<String, Tensor>,
}

fn lora_reference(name: &str) -> LoraRef {
    let r = candle_core::safetensors::load(fixture(name).join("lora/reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = r["input_ids"].flatten_all().unwrap().to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
    let labels = r["labels"].flatten_all().unwrap().to_vec1::<i64>().unwrap();
    let targets = (1..labels.len()).filter(|&j| labels[j] != -100).map(|j| (j - 1, labels[j] as u32)).collect();
    let loss = r["loss"].to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    LoraRef { ids, targets, logits: r["logits"].clone(), loss, tensors: r }
}

fn adapter_dir(name: &str) -> PathBuf {
    fixture(name).join("lora/adapter")
}

#[test]
fn gemma3_hf_directory_matches_transformers() {
    let dir = fixture("gemma3");
    let r = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = r["input_ids"].to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
    let mut m = modu_core::loader::load_with(&dir, &Device::Cpu, LoadOptions::exact()).unwrap().model;
    let logits = m.forward(&ids, 0, Logits::All).unwrap();
    let d = max_diff(&logits, &r["logits"]);
    assert!(d < TOL, "gemma3 HF fixture: max |modu - transformers| = {d}");
}

#[test]
fn lora_gradients_and_adamw_step_match_peft() {
    for name in FIXTURES {
        let r = lora_reference(name);
        let base = HfCheckpoint::open(&fixture(name)).unwrap();
        let model = TrainModel::from_checkpoint(&base, &Device::Cpu).unwrap();
        let adapter = Adapter::load(&adapter_dir(name), &base, &Device::Cpu).unwrap();
        assert_eq!(adapter.pairs.len(), 7 * model.spec.layers.len(), "{name}: every projection of every layer is adapted");

        // Logits of the adapted model (training forward).
        let d = max_diff(&model.logits(&r.ids, Some(&adapter)).unwrap(), &r.logits);
        assert!(d < TOL, "{name}: adapted logits differ from PEFT's by {d}");
        // And without the adapter they must differ, or the check above proves nothing.
        let d0 = max_diff(&model.logits(&r.ids, None).unwrap(), &r.logits);
        assert!(d0 > 0.1, "{name}: the adapter changes the logits by only {d0}");

        let ex = modu_core::train::data::Example { ids: r.ids.clone(), targets: r.targets.clone(), line: 1 };
        assert_eq!(ex.targets.len(), 14);
        let mut rng = lora::SplitMix(0);
        let (loss, grads) = group_gradients(&model, &adapter, &[&ex], 0.0, &mut rng).unwrap();
        assert!((loss as f32 - r.loss).abs() < TOL, "{name}: loss {loss} vs PEFT {}", r.loss);

        let mut checked = 0;
        let mut worst = 0f32;
        for gguf in adapter.pairs.keys() {
            for half in ['A', 'B'] {
                let key = adapter.peft_name(gguf, half);
                let want = r.tensors.get(&format!("grad.{key}")).unwrap_or_else(|| panic!("{name}: no reference gradient for {key}"));
                let vname = format!("{gguf}.lora_{}", half.to_ascii_lowercase());
                let got = grads.get(&vname).unwrap_or_else(|| panic!("{name}: no gradient for {vname}"));
                let d = max_diff(got, want);
                let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                assert!(scale > 1e-4, "{name}: reference gradient of {key} is zero; the check would be empty");
                worst = worst.max(d);
                assert!(d < TOL, "{name}: gradient of {key} differs from PEFT's by {d} (max |g| {scale})");
                checked += 1;
            }
        }
        assert_eq!(checked, 2 * adapter.pairs.len());

        // One AdamW step (lr 1e-2, weight decay 0.01), as torch.optim.AdamW takes it.
        let mut opt = AdamW::new(1e-2, 0.01);
        opt.update(&adapter.vars(), &grads).unwrap();
        for (gguf, pair) in &adapter.pairs {
            for (half, var) in [('A', &pair.a), ('B', &pair.b)] {
                let key = adapter.peft_name(gguf, half);
                let d = max_diff(var.as_tensor(), &r.tensors[&format!("step.{key}")]);
                assert!(d < TOL, "{name}: AdamW step of {key} differs from torch's by {d}");
            }
        }
        eprintln!("{name}: loss {loss:.6} (PEFT {:.6}), {checked} gradients within {worst:.2e}", r.loss);
    }
}

#[test]
fn peft_adapters_run_in_the_inference_engine() {
    for name in FIXTURES {
        let r = lora_reference(name);
        let mut m = modu_core::loader::load_adapted(&fixture(name), Some(&adapter_dir(name)), &Device::Cpu, LoadOptions::exact()).unwrap().model;
        let d = max_diff(&m.forward(&r.ids, 0, Logits::All).unwrap(), &r.logits);
        assert!(d < TOL, "{name}: `--adapter` logits differ from PEFT's by {d}");
        // Through the binary: modu logits --adapter.
        let out = scratch(&format!("lora-logits-{name}")).join("logits.safetensors");
        let ids = r.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let o = modu(&[
            "logits", "-m", fixture(name).to_str().unwrap(), "--adapter", adapter_dir(name).to_str().unwrap(),
            "--ids", &ids, "--exact", "--out", out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let l = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
        let d = max_diff(&l["logits"], &r.logits);
        assert!(d < TOL, "{name}: modu logits --adapter differs from PEFT by {d}");
    }
}

/// A saved adapter has PEFT's file names, tensor names, shapes and config, and loads back equal.
#[test]
fn saved_adapters_have_peft_layout_and_round_trip() {
    for name in FIXTURES {
        let base = HfCheckpoint::open(&fixture(name)).unwrap();
        let a = Adapter::load(&adapter_dir(name), &base, &Device::Cpu).unwrap();
        let dir = scratch(&format!("lora-save-{name}"));
        a.save(&dir, "tiny").unwrap();
        let ours = candle_core::safetensors::load(dir.join(lora::WEIGHTS_FILE), &Device::Cpu).unwrap();
        let peft = candle_core::safetensors::load(adapter_dir(name).join(lora::WEIGHTS_FILE), &Device::Cpu).unwrap();
        let mut k1: Vec<&String> = ours.keys().collect();
        let mut k2: Vec<&String> = peft.keys().collect();
        k1.sort();
        k2.sort();
        assert_eq!(k1, k2, "{name}: tensor names differ from PEFT's");
        for (k, t) in &peft {
            assert_eq!(max_diff(&ours[k], t), 0.0, "{name}: {k}");
        }
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(lora::CONFIG_FILE)).unwrap()).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(adapter_dir(name).join(lora::CONFIG_FILE)).unwrap()).unwrap();
        for k in ["peft_type", "r", "lora_alpha", "task_type", "bias", "use_rslora", "use_dora", "fan_in_fan_out"] {
            assert_eq!(cfg[k], theirs[k], "{name}: adapter_config.json field {k}");
        }
        let again = Adapter::load(&dir, &base, &Device::Cpu).unwrap();
        assert_eq!(again.pairs.len(), a.pairs.len());
        // The other fixture's adapter does not fit this base.
        let other = FIXTURES.iter().find(|o| **o != name).unwrap();
        let e = match Adapter::load(&dir, &HfCheckpoint::open(&fixture(other)).unwrap(), &Device::Cpu) {
            Ok(_) => panic!("{name}'s adapter loaded onto {other}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("was trained on") || e.contains("does not have") || e.contains("base weight is"), "{e}");
    }
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn completion_data(dir: &Path) -> PathBuf {
    // Tiny-vocabulary text: the byte-level fixture tokenizer encodes any ASCII.
    let lines: Vec<String> = (0..8).map(|i| serde_json::json!({"prompt": format!("item {i} is"), "completion": format!(" number {}", i % 3)}).to_string()).collect();
    let p = dir.join("train.jsonl");
    write_lines(&p, &lines);
    p
}

fn report_losses(path: &Path) -> Vec<f64> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["losses"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// `modu tune` on the tiny gemma3 fixture: the loss falls, the adapter loads in `modu run`,
/// a stopped run resumes from its checkpoint to the same result as an uninterrupted one.
#[test]
fn tune_trains_saves_and_resumes() {
    let dir = scratch("tune-tiny");
    let data = completion_data(&dir);
    let base = fixture("gemma3");
    let common = |out: &Path, extra: &[&str]| -> std::process::Output {
        let mut a = vec!["tune", "-m", base.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--lr", "1e-2", "--epochs", "4", "--batch", "4", "--seed", "3", "--dropout", "0"];
        a.extend_from_slice(extra);
        modu(&a)
    };
    let full = dir.join("full");
    let rep = dir.join("full.json");
    let o = common(&full, &["--report", rep.to_str().unwrap(), "--eval", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let losses = report_losses(&rep);
    assert_eq!(losses.len(), 8);
    assert!(losses[7] < 0.7 * losses[0], "loss did not fall: {losses:?}");
    assert!(full.join(lora::WEIGHTS_FILE).is_file() && full.join(lora::CONFIG_FILE).is_file());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("epoch 4: eval loss"), "{stderr}");

    // Stopped after 3 steps (the stop flag Ctrl-C sets), then resumed: the same losses as the
    // uninterrupted run.
    let part = dir.join("part");
    let rep2 = dir.join("part.json");
    let o = common(&part, &["--interrupt-after", "3", "--report", rep2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(part.join("checkpoint/trainer_state.json").is_file());
    assert!(!part.join(lora::WEIGHTS_FILE).exists(), "an interrupted run wrote the final adapter");
    assert_eq!(report_losses(&rep2).len(), 3);
    let o = common(&part, &[]);
    assert!(!o.status.success(), "an existing checkpoint must not be overwritten without --resume or --force");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let o = common(&part, &["--resume", "--report", rep2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let l2 = report_losses(&rep2);
    assert_eq!(l2.len(), 8);
    for (a, b) in l2.iter().zip(&losses) {
        assert!((a - b).abs() < 1e-4, "resumed run {l2:?} differs from the uninterrupted one {losses:?}");
    }

    // A real Ctrl-C (SIGINT) mid-run: exit 130 with a checkpoint that a resumed run continues.
    let sig = dir.join("sigint");
    let sig_rep = dir.join("sigint.json");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["tune", "-m", base.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", sig.to_str().unwrap(), "--epochs", "2000", "--batch", "4", "--lr", "1e-3", "--report", sig_rep.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_modu")).args(args(&[])).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("resume with --resume"), "{err}");
    let done = report_losses(&sig_rep).len();
    assert!(done >= 1 && done < 4000, "{done} steps before the signal");
    let o = modu(&args(&["--resume", "--interrupt-after", &(done + 1).to_string()]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(report_losses(&sig_rep).len(), done + 1, "the resumed run did not continue from step {done}");

    // The adapter runs: modu run --adapter gives different text from the base.
    let o = modu(&["run", "-m", base.to_str().unwrap(), "--adapter", full.to_str().unwrap(), "--temp", "0", "-n", "4", "item 1 is"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // And merges into a GGUF that loads and gives the adapted logits.
    let merged = dir.join("merged.gguf");
    let o = modu(&["merge", "-m", base.to_str().unwrap(), "--adapter", full.to_str().unwrap(), "--out", merged.to_str().unwrap(), "--type", "f32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ids = [1u32, 40, 41, 42, 43];
    let mut a = modu_core::loader::load_adapted(&base, Some(&full), &Device::Cpu, LoadOptions::exact()).unwrap().model;
    let mut b = modu_core::loader::load_with(&merged, &Device::Cpu, LoadOptions::exact()).unwrap().model;
    let mut c = modu_core::loader::load_with(&base, &Device::Cpu, LoadOptions::exact()).unwrap().model;
    let (la, lb, lc) = (a.forward(&ids, 0, Logits::All).unwrap(), b.forward(&ids, 0, Logits::All).unwrap(), c.forward(&ids, 0, Logits::All).unwrap());
    assert!(max_diff(&la, &lb) < TOL, "merged GGUF differs from base + adapter by {}", max_diff(&la, &lb));
    assert!(max_diff(&la, &lc) > 1e-2, "the trained adapter does not change the logits");
}

/// Every bad input a user can give `modu tune`: a clear error, a non-zero exit, nothing written.
#[test]
fn tune_refuses_bad_input_and_writes_nothing() {
    let dir = scratch("tune-bad");
    let base = fixture("gemma3");
    let good = completion_data(&dir);
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let malformed = dir.join("malformed.jsonl");
    let ok = std::fs::read_to_string(&good).unwrap();
    std::fs::write(&malformed, format!("{ok}{{\"prompt\": \"x\", \"completion\": }}\n")).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--data".into(), empty.display().to_string()], "holds no examples"),
        (vec!["--data".into(), malformed.display().to_string()], "line 9: not valid JSON"),
        (vec!["--data".into(), dir.join("missing.jsonl").display().to_string()], "no such file"),
        (vec!["--data".into(), good.display().to_string(), "--rank".into(), "0".into()], "rank must be between 1"),
        (vec!["--data".into(), good.display().to_string(), "--alpha".into(), "NaN".into()], "alpha must be a positive finite number"),
        (vec!["--data".into(), good.display().to_string(), "--targets".into(), "q_proj,wizard".into()], "unknown LoRA target 'wizard'"),
        (vec!["--data".into(), good.display().to_string(), "--adapter".into(), adapter_dir("gemma3").display().to_string()], "does not start from --adapter"),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let out = dir.join(format!("out{i}"));
        let mut a: Vec<String> = vec!["tune".into(), "-m".into(), base.display().to_string(), "--out".into(), out.display().to_string()];
        a.extend(extra.iter().cloned());
        let o = modu(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "case {i} succeeded");
        assert!(err.contains(want), "case {i}: expected '{want}' in: {err}");
        assert!(!err.contains("panicked"), "case {i} panicked: {err}");
        assert!(!out.exists(), "case {i} wrote {}", out.display());
    }
    // Adapters that do not fit the base: one saved by modu for exaone4 (its file names the
    // architecture), and a PEFT one whose shapes differ (the exaone fixture's head_dim is 24).
    let saved = dir.join("exaone4-adapter");
    let hybrid = HfCheckpoint::open(&fixture("exaone4_hybrid")).unwrap();
    Adapter::load(&adapter_dir("exaone4_hybrid"), &hybrid, &Device::Cpu).unwrap().save(&saved, "tiny").unwrap();
    let exaone = fixture("exaone");
    let peft = adapter_dir("exaone4_hybrid");
    for (model, adapter, want) in [(&base, &saved, "was trained on a 'exaone4' model"), (&exaone, &peft, "was the adapter made for another model?")] {
        let merged = dir.join("m.gguf");
        for cmd in ["run", "merge", "eval"] {
            let mut a = vec![cmd, "-m", model.to_str().unwrap(), "--adapter", adapter.to_str().unwrap()];
            match cmd {
                "merge" => a.extend(["--out", merged.to_str().unwrap()]),
                "eval" => a.extend(["--data", good.to_str().unwrap()]),
                _ => a.extend(["--temp", "0", "-n", "2", "hi"]),
            }
            let o = modu(&a);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success() && !err.contains("panicked"), "{cmd}: {err}");
            assert!(err.contains(want), "{cmd}: expected '{want}' in: {err}");
            assert!(!merged.exists());
        }
    }
    // A too-long example is cut, with a warning naming its line.
    let long = dir.join("long.jsonl");
    write_lines(&long, &[serde_json::json!({"prompt": "a ".repeat(40), "completion": " b b b"}).to_string(), serde_json::json!({"prompt": "c", "completion": " d"}).to_string()]);
    let out = dir.join("long-out");
    let o = modu(&["tune", "-m", base.to_str().unwrap(), "--data", long.to_str().unwrap(), "--out", out.to_str().unwrap(), "--max-len", "16", "--max-steps", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("example on line 1 has") && err.contains("cut to --max-len 16"), "{err}");
}

/// On the real Gemma 3 270M (Q4_K_M, dequantized): a few steps on one batch lower its loss.
#[test]
fn tune_lowers_the_loss_on_gemma() {
    let dir = scratch("tune-gemma");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/tasks/debian-section/train.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&src).unwrap().lines().take(4).map(str::to_string).collect();
    let data = dir.join("four.jsonl");
    write_lines(&data, &lines);
    let rep = dir.join("report.json");
    let out = dir.join("adapter");
    let o = modu(&[
        "tune", "-m", gemma_path().to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(),
        "--batch", "4", "--epochs", "4", "--lr", "2e-3", "--dropout", "0", "--report", rep.to_str().unwrap(), "-t", "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let losses = report_losses(&rep);
    assert_eq!(losses.len(), 4);
    assert!(losses[3] < 0.8 * losses[0], "loss did not fall: {losses:?}");
    assert!(out.join(lora::WEIGHTS_FILE).is_file());
}

/// Training and evaluation ask in the same form: after memorizing four chat examples (chat
/// template, and the plain `Answer:` form), `modu eval` with the adapter answers all four
/// exactly, while the base answers none; the few-shot path runs in both forms.
#[test]
fn eval_asks_as_tune_taught() {
    let dir = scratch("tune-eval");
    let base = fixture("gemma3");
    let answers = ["red", "blue", "green", "black"];
    let lines: Vec<String> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| serde_json::json!({"messages": [{"role": "user", "content": format!("Color of item {i}?")}, {"role": "assistant", "content": a}]}).to_string())
        .collect();
    let data = dir.join("colors.jsonl");
    write_lines(&data, &lines);
    let accuracy = |args: &[&str]| -> f64 {
        let mut a = vec!["eval", "-m", base.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json", "--max-tokens", "6"];
        a.extend_from_slice(args);
        let o = modu(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["examples"], 4);
        v["accuracy"].as_f64().unwrap()
    };
    for format in ["chat", "raw"] {
        let out = dir.join(format);
        let o = modu(&[
            "tune", "-m", base.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--format", format,
            "--epochs", "40", "--batch", "4", "--lr", "1e-2", "--dropout", "0",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(accuracy(&["--format", format, "--adapter", out.to_str().unwrap()]), 100.0, "{format}: the adapter did not learn its four answers");
        assert_eq!(accuracy(&["--format", format]), 0.0, "{format}: the random base knows the answers?");
        accuracy(&["--format", format, "--few-shot", "2", "--shots", data.to_str().unwrap()]);
    }
}

/// The training forward (differentiable ops only) reproduces transformers' logits for every
/// fixture architecture it supports, EXAONE 3.x and the EXAONE 4.5 text tower included.
#[test]
fn training_forward_matches_transformers_on_every_fixture() {
    for name in ["exaone", "exaone4_dense", "exaone4_hybrid", "exaone4_5", "gemma3"] {
        let dir = fixture(name);
        let r = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
        let ids: Vec<u32> = r["input_ids"].flatten_all().unwrap().to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect();
        let base = HfCheckpoint::open(&dir).unwrap();
        let model = TrainModel::from_checkpoint(&base, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = max_diff(&model.logits(&ids, None).unwrap(), &r["logits"]);
        assert!(d < TOL, "{name}: training forward differs from transformers by {d}");
    }
    // An architecture it cannot train is refused by name.
    let moe = HfCheckpoint::open(&fixture("exaone_moe")).unwrap();
    let e = TrainModel::from_checkpoint(&moe, &Device::Cpu).err().expect("exaone-moe has no training forward").to_string();
    assert!(e.contains("LoRA training supports") && e.contains("exaone-moe"), "{e}");
}
