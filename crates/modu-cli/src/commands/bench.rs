//! `modu bench`: prompt processing (pp) and generation (tg) speed with llama-bench's method:
//! pp runs P tokens as one prefill from an empty cache; tg decodes N tokens one at a time from an
//! empty cache; each after one warm-up, repeated R times, reported as mean ± sd of tokens/s.
//! With `--batch B`, tg decodes B sequences in lockstep, one forward pass per step for all of
//! them (as the server's continuous batching does), and reports their aggregate tokens/s.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use modu_core::models::{CausalLm, Logits};

use crate::options::ModelArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens for the pp test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens for the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Sequences decoded together in the tg test (aggregate tokens/s of all of them).
    #[arg(short = 'b', long = "batch", default_value_t = 1)]
    pub batch: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also measure this machine's memory read bandwidth with the same threads, and report
    /// decode speed as bytes read per second against it.
    #[arg(long)]
    pub bandwidth: bool,
}

/// Read bandwidth in bytes/s: `threads` threads each sum their share of a 512 MiB buffer (far
/// larger than any cache), best of five passes.
fn read_bandwidth(threads: usize) -> Result<f64> {
    const LEN: usize = 512 << 20;
    let mut map = memmap2::MmapOptions::new().len(LEN).map_anon()?;
    // The weights ask for huge pages too; measure under the same conditions.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    for (i, b) in map.iter_mut().enumerate().step_by(4096) {
        *b = i as u8;
    }
    let words: &[u64] = {
        // SAFETY: the map is page-aligned and LEN is a multiple of 8; u64 is plain data.
        unsafe { std::slice::from_raw_parts(map.as_ptr() as *const u64, LEN / 8) }
    };
    let per = words.len().div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = words
                .chunks(per)
                .map(|c| s.spawn(move || c.chunks_exact(8).fold([0u64; 8], |mut a, w| {
                    for l in 0..8 {
                        a[l] = a[l].wrapping_add(w[l]);
                    }
                    a
                })))
                .collect();
            handles.into_iter().map(|h| h.join().map(|a| a.iter().fold(0u64, |x, y| x.wrapping_add(*y))).unwrap_or(0)).fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max(LEN as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

struct Stats {
    samples: Vec<f64>,
}

impl Stats {
    fn mean(&self) -> f64 {
        self.samples.iter().sum::<f64>() / self.samples.len().max(1) as f64
    }
    fn sd(&self) -> f64 {
        let n = self.samples.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.samples.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
    fn json(&self, n_tokens: usize) -> serde_json::Value {
        serde_json::json!({"n_tokens": n_tokens, "mean_tps": self.mean(), "sd_tps": self.sd(), "samples_tps": self.samples})
    }
}

/// Deterministic pseudo-random token ids, so every run measures the same work.
fn bench_tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut x: u64 = 0x9E3779B97F4A7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as u32
        })
        .collect()
}

fn time_pp(model: &mut dyn CausalLm, ids: &[u32]) -> Result<f64> {
    model.truncate(0);
    let t = Instant::now();
    let out = model.forward(ids, 0, Logits::Last)?;
    let _ = out.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(ids.len() as f64 / t.elapsed().as_secs_f64())
}

fn time_tg(model: &mut dyn CausalLm, ids: &[u32]) -> Result<f64> {
    model.truncate(0);
    let t = Instant::now();
    for (pos, &id) in ids.iter().enumerate() {
        let out = model.forward(&[id], pos, Logits::Last)?;
        let _ = out.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    }
    Ok(ids.len() as f64 / t.elapsed().as_secs_f64())
}

/// B sequences decoding together: each step runs one token of every sequence in one pass.
fn time_tg_batch(model: &mut dyn CausalLm, ids: &[u32], batch: usize) -> Result<f64> {
    use modu_core::models::BatchItem;
    for slot in 0..batch {
        model.truncate_slot(slot, 0);
    }
    let t = Instant::now();
    for (pos, id) in ids.iter().enumerate() {
        // Different tokens per sequence, as real requests have.
        let toks: Vec<u32> = (0..batch).map(|s| (*id as usize + s * 7919) as u32 % model.info().vocab_size as u32).collect();
        let items: Vec<BatchItem> =
            (0..batch).map(|s| BatchItem { slot: s, ids: std::slice::from_ref(&toks[s]), offset: pos }).collect();
        let out = model.forward_batch(&items)?;
        let _ = out.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    }
    let secs = t.elapsed().as_secs_f64();
    for slot in 0..batch {
        model.free_slot(slot);
    }
    Ok((ids.len() * batch) as f64 / secs)
}

/// Peak resident memory of this process (VmHWM), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(args: BenchArgs) -> Result<()> {
    anyhow::ensure!(args.reps >= 1, "--repetitions must be at least 1");
    anyhow::ensure!((1..=256).contains(&args.batch), "--batch must be between 1 and 256");
    let mut loaded = args.model.load()?;
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let info = loaded.model.info().clone();
    anyhow::ensure!(
        args.n_prompt <= info.context_length && args.n_gen <= info.context_length,
        "test sizes exceed the context length {}",
        info.context_length
    );
    let (params, file_type) = (loaded.params, loaded.file_type);
    let model = loaded.model.as_mut();

    let mut pp = None;
    if args.n_prompt > 0 {
        let ids = bench_tokens(args.n_prompt, info.vocab_size);
        time_pp(model, &ids)?; // warm-up
        let samples = (0..args.reps).map(|_| time_pp(model, &ids)).collect::<Result<Vec<_>>>()?;
        pp = Some(Stats { samples });
    }
    let mut tg = None;
    if args.n_gen > 0 {
        let ids = bench_tokens(args.n_gen, info.vocab_size);
        let samples = if args.batch == 1 {
            time_tg(model, &ids[..1])?; // warm-up
            (0..args.reps).map(|_| time_tg(model, &ids)).collect::<Result<Vec<_>>>()?
        } else {
            time_tg_batch(model, &ids[..1], args.batch)?; // warm-up
            (0..args.reps).map(|_| time_tg_batch(model, &ids, args.batch)).collect::<Result<Vec<_>>>()?
        };
        tg = Some(Stats { samples });
    }
    model.truncate(0);
    let rss = peak_rss_bytes();
    let decode_bytes = match loaded.path.extension().and_then(|e| e.to_str()) {
        Some("gguf") => Some(modu_core::formats::gguf::GgufFile::open(&loaded.path)?.decode_read_bytes()),
        _ => None,
    };
    let bandwidth = if args.bandwidth { Some(read_bandwidth(threads)?) } else { None };
    let kv_bytes = info.kv_bytes(args.n_prompt.max(args.n_gen));
    let rss_budget = (loaded.file_bytes + kv_bytes) as f64 * 1.1;
    let name = loaded.path.file_name().and_then(|n| n.to_str()).unwrap_or("model").to_string();

    if args.json {
        let v = serde_json::json!({
            "model": name,
            "architecture": info.architecture,
            "file_bytes": loaded.file_bytes,
            "params": params,
            "threads": threads,
            "batch": args.batch,
            "pp": pp.as_ref().map(|s| s.json(args.n_prompt)),
            "tg": tg.as_ref().map(|s| s.json(args.n_gen)),
            "peak_rss_bytes": rss,
            "kv_bytes_per_token": info.kv_bytes_per_token,
            "rss_budget_bytes": rss_budget,
            "decode_read_bytes_per_token": decode_bytes,
            "read_bandwidth_bytes_per_s": bandwidth,
        });
        println!("{v}");
        return Ok(());
    }
    let size = format!("{:.2} MiB", loaded.file_bytes as f64 / (1u64 << 20) as f64);
    let params_s = format!("{:.2} M", params as f64 / 1e6);
    let label = format!("{} ftype {}", info.architecture, file_type.map(|t| t.to_string()).unwrap_or_else(|| "?".into()));
    println!("| model | size | params | backend | threads | test | t/s |");
    println!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
    let tg_name = if args.batch == 1 { format!("tg{}", args.n_gen) } else { format!("tg{} x{}", args.n_gen, args.batch) };
    for (test, s) in [(format!("pp{}", args.n_prompt), &pp), (tg_name, &tg)] {
        if let Some(s) = s {
            println!(
                "| {label} | {size} | {params_s} | {} | {threads} | {test} | {:.2} ± {:.2} |",
                args.model.device.to_uppercase(),
                s.mean(),
                s.sd()
            );
        }
    }
    println!();
    let mib = |b: f64| b / (1u64 << 20) as f64;
    if let Some(rss) = rss {
        println!(
            "peak RSS: {:.1} MiB (file {:.1} MiB; file + KV cache of {} tokens + 10% = {:.1} MiB)",
            mib(rss as f64),
            mib(loaded.file_bytes as f64),
            args.n_prompt.max(args.n_gen),
            mib(rss_budget)
        );
    }
    if let (Some(bytes), Some(tg)) = (decode_bytes, &tg) {
        let rate = bytes as f64 * tg.mean();
        print!("decode: {:.1} MB of weights per token, {:.2} GB/s", bytes as f64 / 1e6, rate / 1e9);
        match bandwidth {
            Some(bw) => println!(" = {:.0}% of the measured read bandwidth ({:.2} GB/s on {threads} thread{})", 100.0 * rate / bw, bw / 1e9, if threads == 1 { "" } else { "s" }),
            None => println!(" (--bandwidth compares it with this machine's read bandwidth)"),
        }
    }
    println!(
        "KV cache: {} bytes per token ({} layers; sliding-window layers hold at most their window)",
        info.kv_bytes_per_token, info.n_layers
    );
    Ok(())
}
