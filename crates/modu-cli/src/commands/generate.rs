//! `modu run` and `modu chat`.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use modu_core::chat::parse::{Delta, OutputFormat, StreamParser};
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
    /// Render a conversation with the model's chat template instead of a raw prompt: a JSON
    /// file holding a list of messages, or {"messages": [...], "tools": [...]}. Reasoning goes
    /// to stderr, the answer to stdout, tool calls to stdout as JSON lines.
    #[arg(long, conflicts_with = "prompt")]
    pub messages: Option<std::path::PathBuf>,
    /// With --messages: turn the model's reasoning on or off (default: the template's own).
    #[arg(long, value_parser = parse_on_off)]
    pub think: Option<bool>,
    /// Do not add the BOS token the model's metadata asks for.
    #[arg(long)]
    pub no_bos: bool,
    /// Match special tokens written in the prompt (e.g. <start_of_turn>).
    #[arg(long)]
    pub special: bool,
}

fn parse_on_off(s: &str) -> std::result::Result<bool, String> {
    match s {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("'{other}': use on or off")),
    }
}

/// Reads a --messages file: a list of messages, or an object with "messages" and "tools".
fn read_conversation(path: &std::path::Path) -> Result<(serde_json::Value, Option<serde_json::Value>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let (messages, tools) = match v {
        serde_json::Value::Array(_) => (v, None),
        serde_json::Value::Object(mut o) => {
            let m = o.remove("messages").ok_or_else(|| anyhow::anyhow!("{}: no \"messages\" list", path.display()))?;
            (m, o.remove("tools").filter(|t| !t.is_null()))
        }
        _ => anyhow::bail!("{}: expected a list of messages or an object with \"messages\"", path.display()),
    };
    let list = messages.as_array().ok_or_else(|| anyhow::anyhow!("{}: \"messages\" must be a list", path.display()))?;
    anyhow::ensure!(!list.is_empty(), "{}: the conversation is empty", path.display());
    for (i, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(|r| r.as_str());
        anyhow::ensure!(role.is_some(), "{}: message {i} has no \"role\" string", path.display());
    }
    Ok((messages, tools))
}

/// Prints parsed output: reasoning to stderr, content to stdout, tool calls as JSON lines.
fn print_deltas(deltas: Vec<Delta>, out: &mut impl Write) -> std::io::Result<()> {
    for d in deltas {
        match d {
            Delta::Reasoning(t) => {
                eprint!("{t}");
            }
            Delta::Content(t) => out.write_all(t.as_bytes())?,
            Delta::ToolCall(c) => {
                writeln!(out, "\n{}", serde_json::json!({"tool_call": {"name": c.name, "arguments": c.arguments}}))?;
            }
        }
    }
    out.flush()
}

fn run_messages(args: &RunArgs, path: &std::path::Path) -> Result<()> {
    let (messages, tools) = read_conversation(path)?;
    let mut loaded = args.model.load()?;
    let template = loaded
        .chat_template()?
        .ok_or_else(|| anyhow::anyhow!("{} has no chat template and modu has no built-in one for '{}'", loaded.path.display(), loaded.architecture))?;
    let prompt = template.render_json(&messages, tools.as_ref(), &RenderOptions::generation(args.think))?;
    tracing::debug!("prompt: {prompt:?}");
    let fmt = OutputFormat::from_prompt(loaded.chat_template_source.as_deref().unwrap_or(""), &prompt);
    let ids = loaded.tokenizer.encode(&prompt, false, true)?;
    let params = args.sampling.params();
    let mut session = Session::new(loaded.model.as_mut());
    let mut parser = StreamParser::new(fmt);
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    session.generate(&loaded.tokenizer, &ids, &params, &mut |text| {
        if let Err(e) = print_deltas(parser.push(text), &mut out) {
            write_err = Some(e);
            return false;
        }
        true
    })?;
    print_deltas(parser.finish(), &mut out).ok();
    for w in parser.warnings() {
        tracing::warn!("{w}");
    }
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("cannot write to stdout");
        }
    }
    writeln!(out).ok();
    Ok(())
}

pub fn run(args: RunArgs) -> Result<()> {
    if let Some(path) = &args.messages {
        return run_messages(&args, path);
    }
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
    /// Start with the model's reasoning on or off (default: the template's own; /think toggles).
    #[arg(long, value_parser = parse_on_off)]
    pub think: Option<bool>,
}

const CHAT_HELP: &str = "/think on|off   reasoning on or off\n/system TEXT    set the system prompt (empty: remove it)\n/history        show the conversation\n/clear          forget the conversation\n/exit           quit (also Ctrl-D)\n\"\"\"             start or end a multi-line message (a line ending in \\ also continues)\nCtrl-C stops an answer.";

/// One user message: a line, lines joined by a trailing backslash, or a """ block.
fn read_message(stdin: &std::io::Stdin) -> Result<Option<String>> {
    let mut first = String::new();
    eprint!("> ");
    std::io::stderr().flush().ok();
    if stdin.lock().read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let first = first.trim_end_matches(['\n', '\r']).to_string();
    if first.trim() == "\"\"\"" || first.trim_start().starts_with("\"\"\"") {
        let mut text = first.trim_start().trim_start_matches("\"\"\"").to_string();
        loop {
            eprint!(". ");
            std::io::stderr().flush().ok();
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                return Ok(Some(text));
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(before) = line.strip_suffix("\"\"\"") {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(before);
                return Ok(Some(text.trim_end_matches('\n').to_string()));
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line);
        }
    }
    let mut text = first;
    while text.ends_with('\\') {
        text.pop();
        text.push('\n');
        eprint!(". ");
        std::io::stderr().flush().ok();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        text.push_str(line.trim_end_matches(['\n', '\r']));
    }
    Ok(Some(text))
}

pub fn chat(args: ChatArgs) -> Result<()> {
    let mut loaded = args.model.load()?;
    let template = loaded
        .chat_template()?
        .ok_or_else(|| anyhow::anyhow!("{} has no chat template and modu has no built-in one for '{}'; use `modu run`", loaded.path.display(), loaded.architecture))?;
    let template_source = loaded.chat_template_source.clone().unwrap_or_default();
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
    let mut think = args.think;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("Chatting with {}. /help lists the commands.", loaded.path.display());
    loop {
        interrupted.store(false, Ordering::SeqCst);
        let Some(line) = read_message(&stdin)? else {
            eprintln!();
            return Ok(());
        };
        let cmd = line.trim();
        if cmd.is_empty() {
            continue;
        }
        if cmd.starts_with('/') && !cmd.contains('\n') {
            let (name, rest) = cmd.split_once(' ').map(|(a, b)| (a, b.trim())).unwrap_or((cmd, ""));
            match name {
                "/exit" | "/quit" | "/bye" => return Ok(()),
                "/help" | "/?" => eprintln!("{CHAT_HELP}"),
                "/clear" => {
                    history.retain(|m| m.role == "system");
                    session.reset();
                    eprintln!("(conversation cleared)");
                }
                "/think" => match rest {
                    "on" => think = Some(true),
                    "off" => think = Some(false),
                    "" => eprintln!("(reasoning: {})", match think { Some(true) => "on", Some(false) => "off", None => "template default" }),
                    _ => eprintln!("usage: /think on|off"),
                },
                "/system" => {
                    history.retain(|m| m.role != "system");
                    if !rest.is_empty() {
                        history.insert(0, Message::new("system", rest));
                    }
                    eprintln!("(system prompt {})", if rest.is_empty() { "removed" } else { "set" });
                }
                "/history" => {
                    for m in &history {
                        eprintln!("[{}] {}", m.role, m.content);
                    }
                }
                other => eprintln!("unknown command {other}; /help lists them"),
            }
            continue;
        }
        history.push(Message::new("user", &line));
        let prompt = template.render(&history, &RenderOptions::generation(think))?;
        tracing::debug!("prompt: {prompt:?}");
        // The template writes BOS itself when the model wants one.
        let ids = tokenizer.encode(&prompt, false, true)?;
        tracing::debug!("prompt ids: {ids:?}");
        let mut parser = StreamParser::new(OutputFormat::from_prompt(&template_source, &prompt));
        let mut in_reasoning = false;
        let mut show = |deltas: Vec<Delta>, in_reasoning: &mut bool| {
            for d in deltas {
                let text = match d {
                    Delta::Reasoning(t) => {
                        if !*in_reasoning {
                            *in_reasoning = true;
                            let _ = stdout.write_all(b"\x1b[2m");
                        }
                        t
                    }
                    Delta::Content(t) => {
                        if *in_reasoning {
                            *in_reasoning = false;
                            let _ = stdout.write_all(b"\x1b[0m\n");
                        }
                        t
                    }
                    Delta::ToolCall(c) => format!("\n[tool call] {} {}\n", c.name, c.arguments),
                };
                let _ = stdout.write_all(text.as_bytes());
            }
            let _ = stdout.flush();
        };
        interrupted.store(false, Ordering::SeqCst);
        let flag = interrupted.clone();
        let gen = session.generate(tokenizer, &ids, &params, &mut |text| {
            show(parser.push(text), &mut in_reasoning);
            !flag.load(Ordering::SeqCst)
        });
        show(parser.finish(), &mut in_reasoning);
        if in_reasoning {
            print!("\x1b[0m");
        }
        println!();
        match gen {
            Ok(g) => {
                let parsed = modu_core::chat::parse::parse(&g.text, OutputFormat::from_prompt(&template_source, &prompt));
                let mut m = Message::new("assistant", &parsed.content);
                m.reasoning_content = parsed.reasoning.filter(|r| !r.is_empty());
                m.tool_calls = parsed
                    .tool_calls
                    .iter()
                    .map(|c| serde_json::json!({"type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                    .collect();
                history.push(m);
            }
            Err(e) => {
                history.pop();
                eprintln!("error: {e}");
            }
        }
    }
}
