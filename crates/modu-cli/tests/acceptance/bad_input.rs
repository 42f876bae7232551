//! Acceptance 4 (reliability cases 1-6): every bad model file gives a one-line error naming the
//! problem and a non-zero exit, without a panic and without allocating more than the file.

use std::path::Path;
use std::process::Output;

use crate::gguf_builder::{build, tiny_llama, V};
use crate::{modu, modu_limited, scratch};

/// 1 GiB of address space: far above what loading these small files needs, far below what a
/// size taken from a corrupt header would ask for.
const LIMIT_KIB: u64 = 1 << 20;

pub fn assert_clean_failure(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1, got {:?}; stderr: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(expect), "expected '{expect}' in: {stderr}");
}

fn run_file(path: &Path) -> Output {
    modu_limited(&["run", "-m", path.to_str().unwrap(), "--temp", "0", "-n", "2", "hello"], LIMIT_KIB)
}

fn tiny_bytes() -> Vec<u8> {
    let (kvs, ts) = tiny_llama();
    build(&kvs, &ts)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Byte offset of the `offset` field of the tensor-info entry named `name`.
fn tensor_info_field(bytes: &[u8], name: &str, field: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend(name.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("tensor entry") + needle.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let type_at = at + 4 + 8 * n_dims;
    match field {
        "type" => type_at,
        "offset" => type_at + 4,
        _ => unreachable!(),
    }
}

// Positive control: the untouched file loads and generates, so each failure below is caused by
// its corruption alone.
#[test]
fn intact_tiny_model_runs() {
    let d = scratch("intact");
    let p = write(&d, "tiny.gguf", &tiny_bytes());
    let out = run_file(&p);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn missing_path() {
    assert_clean_failure(&modu(&["run", "-m", "/nonexistent/dir/model.gguf", "hi"]), "no such file");
}

#[test]
fn directory_without_model() {
    let d = scratch("empty-dir");
    std::fs::write(d.join("notes.txt"), "not a model").unwrap();
    assert_clean_failure(&modu(&["run", "-m", d.to_str().unwrap(), "hi"]), "no .gguf model");
}

#[test]
fn zero_byte_file() {
    let d = scratch("zero");
    assert_clean_failure(&run_file(&write(&d, "zero.gguf", b"")), "empty");
}

#[test]
fn truncated_files() {
    let d = scratch("truncated");
    let bytes = tiny_bytes();
    for pct in [10, 50, 99] {
        let cut = bytes.len() * pct / 100;
        let p = write(&d, &format!("cut{pct}.gguf"), &bytes[..cut]);
        let out = run_file(&p);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("runs past the end") || stderr.contains("truncated"),
            "{pct}%: {stderr}"
        );
        assert_clean_failure(&out, "invalid GGUF file");
    }
}

#[test]
fn bad_magic() {
    let d = scratch("magic");
    let mut bytes = tiny_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    assert_clean_failure(&run_file(&write(&d, "magic.gguf", &bytes)), "bad magic");
}

#[test]
fn tensor_data_past_eof() {
    let d = scratch("past-eof");
    let mut bytes = tiny_bytes();
    let at = tensor_info_field(&bytes, "blk.1.ffn_up.weight", "offset");
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_clean_failure(&run_file(&write(&d, "eof.gguf", &bytes)), "'blk.1.ffn_up.weight'");
}

#[test]
fn huge_tensor_count() {
    let d = scratch("n-tensors");
    let mut bytes = tiny_bytes();
    bytes[8..16].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert_clean_failure(&run_file(&write(&d, "count.gguf", &bytes)), "9223372036854775808 tensors");
}

#[test]
fn huge_string_length() {
    let d = scratch("strlen");
    let mut bytes = tiny_bytes();
    // The first metadata key's length prefix follows the 24-byte header.
    bytes[24..32].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert_clean_failure(&run_file(&write(&d, "strlen.gguf", &bytes)), "string length 9223372036854775808");
}

#[test]
fn unknown_architecture() {
    let d = scratch("arch");
    let (mut kvs, ts) = tiny_llama();
    kvs[0].1 = V::Str("mamba9".into());
    let p = write(&d, "arch.gguf", &build(&kvs, &ts));
    assert_clean_failure(&run_file(&p), "unsupported model architecture 'mamba9'");
}

#[test]
fn unsupported_tensor_type() {
    let d = scratch("ttype");
    let mut bytes = tiny_bytes();
    let at = tensor_info_field(&bytes, "blk.0.attn_q.weight", "type");
    bytes[at..at + 4].copy_from_slice(&16u32.to_le_bytes()); // IQ2_XXS
    assert_clean_failure(&run_file(&write(&d, "ttype.gguf", &bytes)), "tensor 'blk.0.attn_q.weight' has type IQ2_XXS");
}

// Catches the default model path failing obscurely offline: the message must say how to point
// at a local file.
#[test]
fn offline_default_model_explains_what_to_do() {
    let d = scratch("hf-home");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modu"))
        .args(["run", "hello"])
        .env("HF_HOME", &d)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_clean_failure(&out, "-m");
    assert!(String::from_utf8_lossy(&out.stderr).contains("LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF"));
}

// Catches a corrupt file that is not a model at all being reported as anything but that.
#[test]
fn not_a_gguf_file() {
    let d = scratch("text");
    let p = write(&d, "notes.gguf", b"just some text, not a model at all");
    assert_clean_failure(&run_file(&p), "bad magic");
}
