//! Acceptance 1-3 on the real Gemma 3 270M Q4_K_M file against llama.cpp's reference figures.

use candle_core::Device;
use modu_core::engine::{GenerateParams, SamplingParams, Session};
use modu_core::loader::{self, LoadedModel};
use modu_core::models::Logits;

use crate::{gemma_path, modu, reference, shared_dir};

fn load() -> LoadedModel {
    loader::load(&gemma_path(), &Device::Cpu).expect("load gemma")
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams { max_tokens, sampling: SamplingParams::greedy(), stop: vec![], stop_at_eog: true }
}

/// Largest logit gap at which llama.cpp's greedy pick may differ from ours. Both engines quantize
/// activations to 8 bits, and with Gemma's hidden states in the thousands the summation order of
/// a matmul alone moves logits: running Q5_0 weights through another kernel (re-encoded as Q8_0,
/// identical values) once moved Korean perplexity by 1.8% and flipped a greedy pick here. A wrong model moves
/// logits by whole units.
const NEAR_TIE: f32 = 0.25;

// Acceptance 1. Teacher-forced through the decode path (prefill the prompt, then one token at a
// time, as generation runs): at each of the first 16 steps llama.cpp's token must be our argmax,
// or a near-tie with it, at most twice per prompt. Where no near-tie occurs greedy generation
// must reproduce llama.cpp's tokens exactly. Catches any numerical or tokenizer divergence
// bigger than accumulation noise.
#[test]
fn greedy_first_16_tokens_match_llama_cpp() {
    let r = reference();
    let cases = r["greedy"]["cases"].as_array().unwrap();
    let mut m = load();
    let mut report = Vec::new();
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let continuation = case["continuation"].as_str().unwrap();
        let ids = m.tokenizer.encode(prompt, true, false).unwrap();
        // llama.cpp's tokens: given for some prompts, else its text re-tokenized (checked to
        // round-trip, and against the given ids where both exist).
        let reference_ids: Vec<u32> = m.tokenizer.encode(continuation, false, false).unwrap();
        assert_eq!(m.tokenizer.decode(&reference_ids), continuation);
        if let Some(given) = case["first_generated_ids"].as_array() {
            let given: Vec<u32> = given.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(&reference_ids[..given.len()], &given[..], "{prompt}: re-tokenized continuation");
        }
        let reference_ids = &reference_ids[..16];

        let mut ties = Vec::new();
        m.model.truncate(0);
        let mut logits = m.model.forward(&ids, 0, Logits::Last).unwrap().to_vec2::<f32>().unwrap().remove(0);
        for (step, &want) in reference_ids.iter().enumerate() {
            let top = modu_core::engine::sampler::argmax(&logits);
            let gap = logits[top as usize] - logits[want as usize];
            if top != want {
                assert!(
                    gap <= NEAR_TIE,
                    "{prompt}: step {step}: llama.cpp picked {want}, modu ranks {top} higher by {gap:.4} logits"
                );
                ties.push(format!("step {step}: {want} vs {top}, gap {gap:.4}"));
            }
            logits = m.model.forward(&[want], ids.len() + step, Logits::Last).unwrap().to_vec2::<f32>().unwrap().remove(0);
        }
        assert!(ties.len() <= 2, "{prompt}: too many near-ties: {ties:?}");

        let mut session = Session::new(m.model.as_mut());
        let gen = session.generate(&m.tokenizer, &ids, &greedy(16), &mut |_| true).unwrap();
        assert_eq!(gen.tokens.len(), 16, "{prompt}: stopped early ({:?})", gen.finish);
        if ties.is_empty() {
            assert_eq!(gen.tokens, reference_ids, "{prompt}: greedy generation");
        }
        report.push(format!("{prompt:?}: near-ties {ties:?}, modu greedy {:?}", m.tokenizer.decode(&gen.tokens)));
    }
    eprintln!("{}", report.join("\n"));
}

// Acceptance 2, through the CLI: catches tokenizer drift and a `modu tokenize` that prints
// anything but the ids.
#[test]
fn tokenize_cli_matches_llama_cpp() {
    let r = reference();
    let model = gemma_path();
    for case in r["tokenize"]["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let out = modu(&["tokenize", "-m", model.to_str().unwrap(), text]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ids: Vec<u64> = serde_json::from_slice(&out.stdout).expect("ids as JSON");
        let expected: Vec<u64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ids, expected, "{text:?}");
    }
}

// Acceptance 3: catches errors in attention, norms, RoPE or quantized matmuls that greedy
// decoding on two prompts could miss.
#[test]
fn perplexity_within_one_percent_of_llama_cpp() {
    let r = reference();
    let mut m = load();
    let bos = m.tokenizer.bos_id().unwrap();
    let mut report = Vec::new();
    for case in r["perplexity"]["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let ctx = case["ctx"].as_u64().unwrap() as usize;
        let expected = case["ppl"].as_f64().unwrap();
        let text = std::fs::read_to_string(shared_dir().join("reference").join(file)).unwrap();
        let tokens = m.tokenizer.encode(&text, true, false).unwrap();
        let got = modu_core::engine::perplexity::perplexity(m.model.as_mut(), &tokens, ctx, Some(bos), |_, _, _| {}).unwrap();
        let rel = (got.ppl - expected).abs() / expected;
        report.push(format!("{file} ctx {ctx}: modu {:.4} llama.cpp {expected:.4} ({:+.3}%)", got.ppl, 100.0 * (got.ppl - expected) / expected));
        assert!(rel < 0.01, "{}", report.join("\n"));
    }
    eprintln!("{}", report.join("\n"));
}

// Acceptance 1 of the speed work, "perplexity on the reference texts unchanged": the AVX2 tiles
// against the kernels' plain definitions (the scalar code that CPUs without AVX2 run, which the
// kernel unit tests hold to f64 products), on the same file, every reference text and context.
// Within 0.1% as asked, and to the last bit, as the tiles are built to agree: catches a tile that
// misreads a block, drops rows or sums in another order. On a CPU without AVX2 there are no tiles
// to compare, and the test says so.
#[test]
fn kernel_tiles_leave_perplexity_unchanged() {
    if !modu_core::kernels::simd_available() {
        eprintln!("no AVX2 tiles on this CPU (or MODU_NO_AVX2 is set): nothing to compare");
        return;
    }
    let mut tiles = load();
    let opts = modu_core::models::layers::LoadOptions { portable_kernels: true, ..Default::default() };
    let mut plain = loader::load_with(&gemma_path(), &Device::Cpu, opts).expect("load gemma");
    let bos = tiles.tokenizer.bos_id().unwrap();
    let mut report = Vec::new();
    let mut failed = false;
    for case in reference()["perplexity"]["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let ctx = case["ctx"].as_u64().unwrap() as usize;
        let text = std::fs::read_to_string(shared_dir().join("reference").join(file)).unwrap();
        let tokens = tiles.tokenizer.encode(&text, true, false).unwrap();
        let run = |m: &mut LoadedModel| modu_core::engine::perplexity::perplexity(m.model.as_mut(), &tokens, ctx, Some(bos), |_, _, _| {}).unwrap();
        let (fast, slow) = (run(&mut tiles), run(&mut plain));
        let rel = (fast.ppl - slow.ppl).abs() / slow.ppl;
        let same = fast.ppl.to_bits() == slow.ppl.to_bits();
        failed |= rel >= 1e-3 || !same;
        report.push(format!(
            "{file} ctx {ctx}: tiles {:.6}, definitions {:.6} ({:+.4}%){}",
            fast.ppl,
            slow.ppl,
            100.0 * (fast.ppl / slow.ppl - 1.0),
            if same { ", bitwise equal" } else { "  <- not bitwise equal" }
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert!(!failed, "{}", report.join("\n"));
}

// Catches a KV cache that diverges from a full prefill: decoding one token at a time must give
// the same logits as running the whole sequence at once (which the CPU runs in stretches of 128
// rows: the sequence is longer than that). Exact arithmetic (f32 weights and cache): with
// quantized activations Gemma's large hidden states turn float-order noise into visible logit
// changes, which would hide a real cache bug.
#[test]
fn incremental_decode_equals_full_prefill() {
    let mut m = loader::load_with(&gemma_path(), &Device::Cpu, modu_core::models::layers::LoadOptions::exact()).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. 안녕하세요. ".repeat(12);
    let ids = m.tokenizer.encode(&text, true, false).unwrap();
    assert!(ids.len() > 128, "{} tokens", ids.len());
    let full = m.model.forward(&ids, 0, Logits::All).unwrap();
    m.model.truncate(0);
    let k = 5;
    let mut rows = vec![m.model.forward(&ids[..k], 0, Logits::All).unwrap()];
    for (i, &id) in ids.iter().enumerate().skip(k) {
        rows.push(m.model.forward(&[id], i, Logits::Last).unwrap());
    }
    let inc = candle_core::Tensor::cat(&rows, 0).unwrap();
    let diff = (full - inc).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-3, "max |full - incremental| = {diff}");
}

pub fn modu_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_modu"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

// Catches a `modu logits` file with the wrong name, shape or content: its last row must pick
// the same greedy token as generation does.
#[test]
fn logits_cli_writes_every_position() {
    let dir = crate::scratch("logits");
    let out_path = dir.join("l.safetensors");
    let model = gemma_path();
    let out = modu(&["logits", "-m", model.to_str().unwrap(), "--text", "The capital of France is", "--out", out_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tensors = candle_core::safetensors::load(&out_path, &Device::Cpu).unwrap();
    let logits = &tensors["logits"];
    assert_eq!(logits.dims(), &[6, 262144]);
    assert_eq!(logits.dtype(), candle_core::DType::F32);
    let last: Vec<f32> = logits.get(5).unwrap().to_vec1().unwrap();
    assert_eq!(modu_core::engine::sampler::argmax(&last), 506, "' the' follows 'The capital of France is'");
    // --ids gives the same rows as --text with BOS.
    let out2 = dir.join("l2.safetensors");
    let out = modu(&["logits", "-m", model.to_str().unwrap(), "--ids", "2,818,5279,529,7001,563", "--out", out2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = &candle_core::safetensors::load(&out2, &Device::Cpu).unwrap()["logits"];
    let diff = (logits - again).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "{diff}");
}

// Catches sampling that ignores the seed or greedy decoding that is not greedy.
#[test]
fn run_cli_seeded_sampling_is_reproducible() {
    let model = gemma_path();
    let m = model.to_str().unwrap();
    let run = |seed: &str| {
        let out = modu(&["run", "-m", m, "-n", "12", "--temp", "1.0", "--top-k", "0", "--top-p", "1.0", "--min-p", "0", "--seed", seed, "Once upon a time"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let a = run("1");
    assert_eq!(a, run("1"));
    let others: Vec<String> = ["2", "3", "4"].iter().map(|s| run(s)).collect();
    assert!(others.iter().any(|o| *o != a), "three other seeds all gave {a:?}");
    let greedy = || String::from_utf8(modu(&["run", "-m", m, "-n", "16", "--temp", "0", "The capital of France is"]).stdout).unwrap();
    let text = greedy();
    assert_eq!(text, greedy());
    assert!(text.starts_with(" the capital of the country"), "{text:?}");
    // A stop string ends the text before it.
    let stopped = modu(&["run", "-m", m, "-n", "16", "--temp", "0", "--stop", "country", "The capital of France is"]);
    assert_eq!(String::from_utf8(stopped.stdout).unwrap(), " the capital of the \n");
}

// Catches a chat that ignores the template or loses history: each turn's prompt must be the
// previous prompt, the answer and the new user turn, rendered with Gemma's template. (The test
// model is Gemma 3 270M *base*, which answers a chat prompt as llama.cpp's run of it does, by
// echoing it; so the test checks the prompts, not the wisdom of the answers.)
#[test]
fn chat_cli_keeps_history_in_the_template() {
    let model = gemma_path();
    let out = modu_stdin(
        &["chat", "-vv", "-m", model.to_str().unwrap(), "--temp", "0", "-n", "8", "--system", "Be brief."],
        "What is the capital of France?\nAnd of Germany?\n/exit\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let prompts: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.split_once("prompt: ").map(|(_, p)| serde_json::from_str::<String>(p).expect("debug-quoted prompt")))
        .collect();
    assert_eq!(prompts.len(), 2, "{stderr}");
    assert_eq!(prompts[0], "<bos><start_of_turn>user\nBe brief.\n\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail = "<end_of_turn>\n<start_of_turn>user\nAnd of Germany?<end_of_turn>\n<start_of_turn>model\n";
    let answer = prompts[1]
        .strip_prefix(prompts[0].as_str())
        .and_then(|rest| rest.strip_suffix(tail))
        .unwrap_or_else(|| panic!("second prompt does not extend the first: {:?}", prompts[1]));
    assert!(!answer.is_empty() && stdout.contains(answer), "history holds {answer:?}, the screen showed {stdout:?}");
    assert!(!stdout.contains("<end_of_turn>") && !stdout.contains("<start_of_turn>"), "{stdout}");
}

// Catches a `modu bench --json` that breaks bench/vs-llama-cpp.sh's parser.
#[test]
fn bench_cli_json_shape() {
    let model = gemma_path();
    let out = modu(&["bench", "-m", model.to_str().unwrap(), "-p", "16", "-n", "4", "-r", "2", "-t", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["threads"], 1);
    assert_eq!(v["pp"]["n_tokens"], 16);
    assert_eq!(v["tg"]["n_tokens"], 4);
    assert_eq!(v["tg"]["samples_tps"].as_array().unwrap().len(), 2);
    assert!(v["pp"]["mean_tps"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 200 << 20, "the model alone is 241 MiB");
    // Only the 3 global layers of 18 grow; the sliding ones keep a 512-token window.
    assert_eq!(v["kv_bytes_per_token"], 3 * 2 * 256 * 2, "3 global layers x K,V x 256 x f16");
}

// Catches sequences of one batch leaking into each other, or batching changing a sequence's
// numbers: two prompts prefilled and decoded together (slots 1 and 2), and a prefill joining a
// decoding batch (slot 3), give bitwise the logits of the same sequence run alone on slot 0,
// step by step as a single-sequence generation runs it.
#[test]
fn batched_sequences_match_single_runs_on_gemma() {
    use modu_core::models::{BatchItem, CausalLm};
    let mut m = modu_core::loader::load(&gemma_path(), &candle_core::Device::Cpu).unwrap();
    let a = m.tokenizer.encode("Canary 1 says: the quick brown fox", true, false).unwrap();
    let b = m.tokenizer.encode("Zebra 2 writes a long letter about the sea and", true, false).unwrap();
    let model: &mut dyn CausalLm = m.model.as_mut();
    let diff = |x: &candle_core::Tensor, y: &candle_core::Tensor| {
        (x - y).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    };
    let argmax = |t: &candle_core::Tensor| t.argmax(0).unwrap().to_scalar::<u32>().unwrap();
    let last = |model: &mut dyn CausalLm, ids: &[u32], offset: usize| {
        model.forward(ids, offset, modu_core::models::Logits::Last).unwrap().squeeze(0).unwrap()
    };
    // Reference for b alone.
    model.truncate(0);
    let lb = last(model, &b, 0);
    // a alone on slot 0, advanced in lockstep with the batch.
    model.truncate(0);
    let la = last(model, &a, 0);
    let out = model
        .forward_batch(&[BatchItem { slot: 1, ids: &a, offset: 0 }, BatchItem { slot: 2, ids: &b, offset: 0 }])
        .unwrap();
    assert_eq!(diff(&out.get(0).unwrap(), &la), 0.0, "batched prefill of a");
    assert_eq!(diff(&out.get(1).unwrap(), &lb), 0.0, "batched prefill of b");
    let (mut ta, mut tb) = (argmax(&out.get(0).unwrap()), argmax(&out.get(1).unwrap()));
    for step in 0..12 {
        let o = model
            .forward_batch(&[
                BatchItem { slot: 1, ids: &[ta], offset: a.len() + step },
                BatchItem { slot: 2, ids: &[tb], offset: b.len() + step },
            ])
            .unwrap();
        let single = last(model, &[ta], a.len() + step);
        assert_eq!(diff(&o.get(0).unwrap(), &single), 0.0, "batched decode step {step} differs from decoding alone");
        ta = argmax(&o.get(0).unwrap());
        tb = argmax(&o.get(1).unwrap());
    }
    // A new sequence's prefill joins the batch while slot 1 decodes.
    let o = model
        .forward_batch(&[BatchItem { slot: 1, ids: &[ta], offset: a.len() + 12 }, BatchItem { slot: 3, ids: &a, offset: 0 }])
        .unwrap();
    let single = last(model, &[ta], a.len() + 12);
    assert_eq!(diff(&o.get(0).unwrap(), &single), 0.0, "a decode step sharing the batch with a prefill");
    assert_eq!(diff(&o.get(1).unwrap(), &la), 0.0, "a prefill joining a decoding batch");
}

// Catches the continuous-batching scheduler changing what a request generates: greedy requests
// submitted together (4 slots) give exactly the tokens each gives alone.
#[test]
fn scheduler_is_batch_invariant() {
    use modu_core::engine::scheduler::{run_blocking, Scheduler};
    let m = modu_core::loader::load(&gemma_path(), &candle_core::Device::Cpu).unwrap();
    let tok = std::sync::Arc::new(m.tokenizer);
    let prompts: Vec<Vec<u32>> = (1..=4)
        .map(|i| tok.encode(&format!("Canary {i} says: the quick brown fox"), true, false).unwrap())
        .collect();
    let sched = Scheduler::start(m.model, tok.clone(), 4, 16);
    let params = GenerateParams { max_tokens: 20, sampling: SamplingParams::greedy(), stop: vec![], stop_at_eog: true };
    let alone: Vec<Vec<u32>> = prompts.iter().map(|p| run_blocking(&sched, p.clone(), params.clone()).unwrap().1).collect();
    let together: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = prompts.iter().map(|p| s.spawn(|| run_blocking(&sched, p.clone(), params.clone()).unwrap().1)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(sched.metrics.steps.load(std::sync::atomic::Ordering::Relaxed) < 4 * 21 + 2 * 21, "the requests did not share steps");
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i}: batched tokens differ from the same request alone");
    }
}

// The CLI's KL-divergence round trip: a base file written by `modu perplexity
// --kl-divergence-base` and read back by `--kl-divergence` on the same arithmetic gives the same
// perplexity and the same top token everywhere, with a divergence at the 16-bit storage's
// resolution (wrong row order or alignment gives divergences of whole nats); the file has llama.cpp's size for its header and rows; a file that is not one is
// refused with a reason and a non-zero exit.
#[test]
fn kl_divergence_base_file_round_trips_through_the_cli() {
    let model = gemma_path();
    let m = model.to_str().unwrap();
    let dir = crate::scratch("kl-divergence-cli");
    let base = dir.join("base.kld");
    let text = dir.join("text.txt");
    std::fs::write(&text, "The quick brown fox jumps over the lazy dog. 오늘 날씨가 정말 좋네요. ".repeat(3)).unwrap();
    let write = modu(&["perplexity", "-m", m, "-f", text.to_str().unwrap(), "-c", "16", "--quiet", "--kl-divergence-base", base.to_str().unwrap()]);
    assert!(write.status.success(), "{}", String::from_utf8_lossy(&write.stderr));
    let written = String::from_utf8(write.stdout).unwrap();
    let ppl = |s: &str| s.split_whitespace().nth(2).unwrap().parse::<f64>().unwrap();
    // "PPL = x (N chunks of 16, ...)": N chunks of 16 token ids, 7 scored positions each, rows
    // of 2 * 131072 + 4 u16.
    let chunks: u64 = written.split(" chunks").next().unwrap().rsplit('(').next().unwrap().parse().unwrap();
    assert!(chunks >= 2, "{written}");
    let len = std::fs::metadata(&base).unwrap().len();
    assert_eq!(len, 20 + 4 * chunks * 16 + chunks * 7 * 2 * (262_144 + 4));

    let read = modu(&["perplexity", "-m", m, "--kl-divergence", base.to_str().unwrap(), "--quiet"]);
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let report = String::from_utf8(read.stdout).unwrap();
    assert_eq!(ppl(&written), ppl(&report), "{written}\n{report}");
    let field = |key: &str| -> f64 {
        let at = report.find(key).unwrap_or_else(|| panic!("no '{key}' in {report}")) + key.len();
        report[at..].split(|c: char| !(c.is_ascii_digit() || c == '.')).find(|t| !t.is_empty()).unwrap().parse().unwrap()
    };
    assert!(field("mean ") < 1e-5, "{report}");
    assert_eq!(field("same top token: "), 100.0, "{report}");
    // The base's perplexity comes from the stored rows, where a token more than 16 nats below
    // the most likely one is stored at that floor (as llama.cpp stores it): never above ours.
    assert!(field("PPL/base PPL = ") >= 1.0 - 1e-4, "{report}");

    std::fs::write(&base, b"_logits_ but nothing else").unwrap();
    let bad = modu(&["perplexity", "-m", m, "--kl-divergence", base.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a usable log-probability file"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// llama.cpp's mean KL divergence from the exact model on each reference case (text, ctx):
/// `bench/kl-vs-llama-cpp.sh`, llama.cpp 0c1e570 against the base file `modu perplexity --exact`
/// wrote, in llama.cpp's format.
const LLAMA_CPP_KLD: [(&str, usize, f64); 4] = [
    ("ppl_en.txt", 512, 0.004536),
    ("ppl_en.txt", 128, 0.006572),
    ("ppl_ko.txt", 128, 0.010145),
    ("ppl_ko.txt", 256, 0.011302),
];

// The quantized kernels against the exact model on the same weights (every weight dequantized to
// f32, f32 cache, no int8 activations), logit by logit on every scored position of the
// reference texts: the mean KL divergence from the exact model's distribution must stay within
// 15% of llama.cpp's (measured: modu 0.0045-0.0103, llama.cpp 0.0045-0.0113; the two differ by
// more than their standard errors only where modu is closer). A kernel that misreads a block or
// drops a tile's rows multiplies it; so does rounding activations more coarsely than ggml.
// Perplexity against the exact model cannot be held to 0.1%: on a few hundred tokens it moves by
// tenths of a percent with any change of rounding (llama.cpp's own standard error on the ratio
// to the exact model is 0.3-0.8% on these texts); `kernel_tiles_leave_perplexity_unchanged`
// holds the tiles to their own definitions instead.
#[test]
fn kernels_stay_as_close_to_the_exact_model_as_llama_cpp() {
    use modu_core::engine::kl_divergence::{base_row, KlStats};
    let mut exact = loader::load_with(&gemma_path(), &Device::Cpu, modu_core::models::layers::LoadOptions::exact()).unwrap();
    let mut quant = load();
    let bos = quant.tokenizer.bos_id().unwrap();
    let mut report = Vec::new();
    let mut failed = false;
    for (file, ctx, llama_kld) in LLAMA_CPP_KLD {
        let text = std::fs::read_to_string(shared_dir().join("reference").join(file)).unwrap();
        let tokens = quant.tokenizer.encode(&text, true, false).unwrap();
        let first = ctx / 2;
        let mut stats = KlStats::default();
        let mut row = Vec::new();
        for chunk in tokens.chunks_exact(ctx) {
            let mut chunk = chunk.to_vec();
            chunk[0] = bos;
            let rows = |m: &mut LoadedModel| {
                m.model.truncate(0);
                m.model.forward(&chunk, 0, Logits::From(first)).unwrap().to_vec2::<f32>().unwrap()
            };
            let (e, q) = (rows(&mut exact), rows(&mut quant));
            for r in 0..ctx - 1 - first {
                base_row(&e[r], &mut row);
                stats.add(&q[r], &row, chunk[first + r + 1]).unwrap();
            }
        }
        let s = stats.summary();
        let ok = s.mean_kld <= 1.15 * llama_kld && s.same_top > 0.85;
        failed |= !ok;
        report.push(format!(
            "{file} ctx {ctx}: KLD {:.6} ± {:.6} (llama.cpp {llama_kld:.6}), same top {:.1}%, PPL {:.4} vs exact {:.4} ({:+.3}%), {} positions{}",
            s.mean_kld,
            s.kld_err,
            100.0 * s.same_top,
            s.ppl,
            s.ppl_base,
            100.0 * (s.ppl / s.ppl_base - 1.0),
            s.count,
            if ok { "" } else { "  <- too far from the exact model" }
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert!(!failed, "{}", report.join("\n"));
}
