//! `modu run` and `modu chat`.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use modu_core::chat::{Message, RenderOptions};
use modu_core::engine::Session;

use crate::options::{ModelArgs, SamplingArgs};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The prompt; "-" or nothing reads it from stdin.
    pub prompt: Option<String>,
    /// Do not add the BOS token the model's metadata asks for.
    #[arg(long)]
    pub no_bos: bool,
    /// Match special tokens written in the prompt (e.g. <start_of_turn>).
    #[arg(long)]
    pub special: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    let prompt = match args.prompt.as_deref() {
        Some("-") | None => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("cannot read the prompt from stdin")?;
            s
        }
        Some(p) => p.to_string(),
    };
    anyhow::ensure!(!prompt.is_empty(), "the prompt is empty");
    let mut loaded = args.model.load()?;
    let ids = loaded.tokenizer.encode(&prompt, !args.no_bos, args.special)?;
    let params = args.sampling.params();
    let mut session = Session::new(loaded.model.as_mut());
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    let gen = session.generate(&loaded.tokenizer, &ids, &params, &mut |text| {
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            write_err = Some(e);
            return false;
        }
        true
    })?;
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("cannot write to stdout");
        }
    }
    writeln!(out).ok();
    tracing::info!(
        "prompt {} tokens in {:.2}s ({:.1} t/s), generated {} tokens in {:.2}s ({:.1} t/s), finish {:?}",
        gen.prompt_tokens,
        gen.prefill_secs,
        gen.prefilled_tokens as f64 / gen.prefill_secs.max(1e-9),
        gen.tokens.len(),
        gen.decode_secs,
        gen.tokens.len() as f64 / gen.decode_secs.max(1e-9),
        gen.finish
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A system prompt for the whole conversation.
    #[arg(long)]
    pub system: Option<String>,
}

pub fn chat(args: ChatArgs) -> Result<()> {
    let mut loaded = args.model.load()?;
    let template = loaded
        .chat_template()?
        .ok_or_else(|| anyhow::anyhow!("{} has no chat template and modu has no built-in one for '{}'; use `modu run`", loaded.path.display(), loaded.architecture))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || {
            // A second Ctrl-C while nothing is generating ends the program.
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let params = args.sampling.params();
    let tokenizer = &loaded.tokenizer;
    let mut session = Session::new(loaded.model.as_mut());
    let mut history: Vec<Message> = args.system.iter().map(|s| Message::new("system", s)).collect();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("Chatting with {}. /clear forgets the conversation, /exit quits, Ctrl-C stops an answer.", loaded.path.display());
    loop {
        interrupted.store(false, Ordering::SeqCst);
        eprint!("> ");
        std::io::stderr().flush().ok();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/clear" => {
                history.retain(|m| m.role == "system");
                session.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", line));
        let prompt = template.render(&history, &RenderOptions::generation(None))?;
        tracing::debug!("prompt: {prompt:?}");
        // The template writes BOS itself when the model wants one.
        let ids = tokenizer.encode(&prompt, false, true)?;
        tracing::debug!("prompt ids: {ids:?}");
        interrupted.store(false, Ordering::SeqCst);
        let flag = interrupted.clone();
        let gen = session.generate(tokenizer, &ids, &params, &mut |text| {
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
            !flag.load(Ordering::SeqCst)
        });
        println!();
        match gen {
            Ok(g) => history.push(Message::new("assistant", g.text.trim())),
            Err(e) => {
                history.pop();
                eprintln!("error: {e}");
            }
        }
    }
}
