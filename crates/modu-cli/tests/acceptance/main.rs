//! End-to-end tests of the `modu` binary and the engine: bad input, and the real Gemma 3 270M
//! model against llama.cpp's reference figures (../shared/reference/gemma3-270m.json).
//! One test binary keeps the build short.

mod bad_input;
mod chat_cli;
mod exaone_reference;
mod gemma;
mod gguf_builder;
mod hf_bad_input;
mod lora;
mod tensor_types;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The test-model cache that scripts/fetch-test-models.sh fills.
pub fn test_models_dir() -> PathBuf {
    std::env::var_os("MODU_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/modu/test-models"))
}

pub fn gemma_path() -> PathBuf {
    let p = test_models_dir().join("gemma-3-270m-q4_k_m.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-test-models.sh first", p.display());
    p
}

pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

pub fn reference() -> serde_json::Value {
    let p = shared_dir().join("reference/gemma3-270m.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).expect("reference JSON")
}

/// A scratch directory unique to one test, under cargo's target directory, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("acceptance-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the modu binary with address space capped, so any allocation sized from a corrupt
/// header fails loudly instead of succeeding.
pub fn modu_limited(args: &[&str], limit_kib: u64) -> Output {
    let bin = env!("CARGO_BIN_EXE_modu");
    let mut script = format!("ulimit -v {limit_kib}; exec \"$0\"");
    for i in 0..args.len() {
        script.push_str(&format!(" \"${}\"", i + 1));
    }
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(bin)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("spawn modu")
}

pub fn modu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_modu"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("spawn modu")
}
