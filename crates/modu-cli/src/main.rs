//! `modu`: run, chat with, inspect and benchmark language models on your own machine.

mod commands;
mod options;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "modu", version, about = "Run EXAONE and other open models on your own machine", long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Complete a prompt and stream the text to stdout.
    #[command(after_help = "Examples:\n  modu run -m gemma-3-270m-q4_k_m.gguf \"The capital of France is\"\n  modu run -m LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF:Q4_K_M --temp 0 -n 64 \"대한민국의 수도는\"")]
    Run(commands::generate::RunArgs),
    /// Chat interactively, using the model's own chat template.
    #[command(after_help = "Examples:\n  modu chat -m model.gguf --system \"Answer in one sentence.\"\n\nIn the chat: /clear forgets the conversation, /exit (or Ctrl-D) quits, Ctrl-C stops an answer.")]
    Chat(commands::generate::ChatArgs),
    /// Print the token ids of a text.
    #[command(after_help = "Example:\n  modu tokenize -m model.gguf \"안녕하세요\"")]
    Tokenize(commands::inspect::TokenizeArgs),
    /// Write the logits of every position of a full prefill to a safetensors file.
    #[command(after_help = "Examples:\n  modu logits -m model.gguf --text \"Hello\" --out logits.safetensors\n  modu logits -m model.gguf --ids 2,818,3823 --out logits.safetensors")]
    Logits(commands::inspect::LogitsArgs),
    /// Perplexity of a text file, with llama.cpp's method.
    #[command(after_help = "Examples:\n  modu perplexity -m model.gguf -f wiki.txt --ctx 512\n  modu perplexity -m model.gguf -f wiki.txt --ctx 512 --exact --kl-divergence-base exact.kld\n  modu perplexity -m model.gguf --kl-divergence exact.kld")]
    Perplexity(commands::perplexity::PerplexityArgs),
    /// Serve models over an OpenAI-compatible HTTP API with continuous batching.
    #[command(after_help = "Examples:\n  modu serve -m gemma-3-270m-q4_k_m.gguf --port 8080\n  modu serve -m exaone=./EXAONE-4.0-1.2B -m gemma=gemma.gguf --parallel 8 --api-key $KEY")]
    Serve(commands::serve::ServeArgs),
    /// Write a model (HF directory or GGUF) as GGUF, optionally quantized.
    #[command(after_help = "Examples:\n  modu convert ./EXAONE-4.0-1.2B --out exaone4-1.2b-f16.gguf\n  modu convert ./EXAONE-4.0-1.2B --out exaone4-1.2b-q4_k_m.gguf --type q4_k")]
    Convert(commands::convert::ConvertArgs),
    /// Prompt-processing and generation speed, shaped like llama-bench.
    #[command(after_help = "Example:\n  modu bench -m model.gguf -p 512 -n 128 -t 2 -r 3")]
    Bench(commands::bench::BenchArgs),
    /// Train a LoRA adapter (PEFT layout) from a few examples, on the CPU.
    #[command(after_help = "Example:\n  modu tune -m gemma-3-270m-q4_k_m.gguf --data train.jsonl --eval dev.jsonl --out my-adapter --epochs 3 --lr 1e-3\n\nData: one JSON object per line, {\"messages\": [...]} (loss on the assistant turns) or {\"prompt\": ..., \"completion\": ...}.\nCtrl-C saves a checkpoint; --resume continues from it.")]
    Tune(commands::tune::TuneArgs),
    /// Exact-match accuracy and answer loss on held-out examples (zero-shot, few-shot or with an adapter).
    #[command(after_help = "Examples:\n  modu eval -m model.gguf --data test.jsonl\n  modu eval -m model.gguf --data test.jsonl --few-shot 8 --shots train.jsonl\n  modu eval -m model.gguf --adapter my-adapter --data test.jsonl")]
    Eval(commands::tune::EvalArgs),
    /// Fold a LoRA adapter into the base weights and write GGUF.
    #[command(after_help = "Example:\n  modu merge -m gemma-3-270m-q4_k_m.gguf --adapter my-adapter --out merged.gguf --type q8_0")]
    Merge(commands::tune::MergeArgs),
}

/// Every decode step allocates its activations and logits afresh (megabytes for a batch over a
/// large vocabulary). glibc serves such sizes with fresh mmaps by default, so each step paid
/// thousands of page faults and zeroed pages; keep them in the heap for reuse instead.
fn keep_large_allocations_in_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

fn main() -> ExitCode {
    keep_large_allocations_in_heap();
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MODU_LOG").unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(a) => commands::generate::run(a),
        Command::Chat(a) => commands::generate::chat(a),
        Command::Tokenize(a) => commands::inspect::tokenize(a),
        Command::Logits(a) => commands::inspect::logits(a),
        Command::Perplexity(a) => commands::perplexity::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Tune(a) => commands::tune::tune(a),
        Command::Eval(a) => commands::tune::eval(a),
        Command::Merge(a) => commands::tune::merge(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
