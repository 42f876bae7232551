//! Training and evaluation examples from JSONL: one object per line, either OpenAI chat form
//! `{"messages": [...]}` (loss on every assistant turn, rendered with the model's chat template)
//! or `{"prompt": ..., "completion": ...}` (raw text; loss on the completion and end of text).

use std::path::Path;

use serde_json::Value as Json;

use crate::chat::{ChatTemplate, RenderOptions};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// One line of a data file.
#[derive(Debug, Clone)]
pub enum Record {
    Chat { messages: Vec<Json> },
    Completion { prompt: String, completion: String },
}

/// A tokenized example: the loss is taken where `targets` says, (position, next token).
#[derive(Debug, Clone)]
pub struct Example {
    pub ids: Vec<u32>,
    pub targets: Vec<(usize, u32)>,
    /// Line of the data file (1-based), for messages.
    pub line: usize,
}

/// Reads a JSONL data file. Blank lines are skipped; any other line must be a valid record, and
/// an error names its line.
pub fn read_jsonl(path: &Path) -> Result<Vec<(usize, Record)>> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { path: path.to_path_buf() },
        std::io::ErrorKind::InvalidData => Error::BadPath { path: path.to_path_buf(), reason: "is not UTF-8 text".into() },
        _ => Error::Io { path: path.to_path_buf(), source: e },
    })?;
    let at = |line: usize, m: String| Error::BadPath { path: path.to_path_buf(), reason: format!("line {line}: {m}") };
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let v: Json = serde_json::from_str(raw).map_err(|e| at(line, format!("not valid JSON ({e})")))?;
        out.push((line, record(&v).map_err(|m| at(line, m))?));
    }
    if out.is_empty() {
        return Err(Error::BadPath { path: path.to_path_buf(), reason: "holds no examples".into() });
    }
    Ok(out)
}

fn record(v: &Json) -> std::result::Result<Record, String> {
    let shape = "expected {\"messages\": [...]} or {\"prompt\": \"...\", \"completion\": \"...\"}";
    let o = v.as_object().ok_or_else(|| format!("{shape}, found {}", kind(v)))?;
    if let Some(m) = o.get("messages") {
        let list = m.as_array().ok_or("'messages' must be a list")?;
        let mut assistant = 0;
        for (i, msg) in list.iter().enumerate() {
            let role = msg.get("role").and_then(|r| r.as_str()).ok_or(format!("messages[{i}] has no string 'role'"))?;
            if !matches!(role, "system" | "user" | "assistant" | "tool" | "developer") {
                return Err(format!("messages[{i}] has unknown role '{role}'"));
            }
            match msg.get("content") {
                Some(Json::String(_)) => {}
                Some(Json::Null) | None if role == "assistant" && msg.get("tool_calls").is_some() => {}
                _ => return Err(format!("messages[{i}] needs a string 'content'")),
            }
            if role == "assistant" {
                assistant += 1;
            }
        }
        if assistant == 0 {
            return Err("the conversation has no assistant message to learn".into());
        }
        return Ok(Record::Chat { messages: list.clone() });
    }
    match (o.get("prompt"), o.get("completion")) {
        (Some(Json::String(p)), Some(Json::String(c))) => {
            if c.is_empty() {
                return Err("'completion' is empty".into());
            }
            Ok(Record::Completion { prompt: p.clone(), completion: c.clone() })
        }
        (Some(_), Some(_)) => Err("'prompt' and 'completion' must be strings".into()),
        _ => Err(shape.to_string()),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// Turns records into token ids with the model's tokenizer and chat template.
pub struct Encoder<'a> {
    pub tokenizer: &'a Tokenizer,
    pub template: Option<&'a ChatTemplate>,
    /// Chat records as plain text (see [`Encoder::raw_prompt`]) instead of the chat template.
    pub raw: bool,
}

/// A conversation's text before its last assistant turn, and that turn's content.
fn question(messages: &[Json]) -> Result<(String, String)> {
    let last = messages
        .iter()
        .rposition(|m| m.get("role").and_then(|r| r.as_str()) == Some("assistant"))
        .ok_or_else(|| Error::Invalid("no assistant message".into()))?;
    let q: Vec<&str> = messages[..last].iter().filter_map(|m| m.get("content").and_then(|c| c.as_str())).collect();
    let a = messages[last].get("content").and_then(|c| c.as_str()).unwrap_or("");
    Ok((q.join("\n"), a.to_string()))
}

impl Encoder<'_> {
    fn render(&self, messages: &[Json], generation: bool) -> Result<String> {
        let t = self.template.ok_or_else(|| Error::Invalid("the model has no chat template; use {\"prompt\", \"completion\"} records".into()))?;
        let opts = RenderOptions { add_generation_prompt: generation, ..Default::default() };
        t.render_json(&Json::Array(messages.to_vec()), None, &opts)
    }

    /// Text pieces in order, each marked trainable or not.
    fn pieces(&self, r: &Record) -> Result<Vec<(String, bool)>> {
        match r {
            Record::Completion { prompt, completion } => Ok(vec![(prompt.clone(), false), (completion.clone(), true)]),
            Record::Chat { messages } if self.raw => {
                // The last answer only, as raw_prompt asks for it.
                let (q, a) = question(messages)?;
                Ok(vec![(format!("{q}\nAnswer:"), false), (format!(" {a}"), true)])
            }
            Record::Chat { messages } => {
                let mut pieces = Vec::new();
                let mut done = String::new();
                for (i, m) in messages.iter().enumerate() {
                    if m.get("role").and_then(|r| r.as_str()) != Some("assistant") {
                        continue;
                    }
                    let before = self.render(&messages[..i], true)?;
                    let after = self.render(&messages[..=i], false)?;
                    let (Some(ctx), Some(answer)) = (before.strip_prefix(done.as_str()), after.strip_prefix(before.as_str())) else {
                        return Err(Error::Template(
                            "the chat template does not render a conversation as an extension of its beginning, so assistant turns cannot be located".into(),
                        ));
                    };
                    pieces.push((ctx.to_string(), false));
                    pieces.push((answer.to_string(), true));
                    done = after;
                }
                Ok(pieces)
            }
        }
    }

    /// Tokenizes one record; the loss falls on the assistant turns (or the completion and end of
    /// text). Longer than `max_len` tokens: cut to `max_len`, with a warning on stderr.
    pub fn encode(&self, line: usize, r: &Record, max_len: usize) -> Result<Example> {
        let mut ids: Vec<u32> = Vec::new();
        let mut trainable: Vec<bool> = Vec::new();
        let chat = matches!(r, Record::Chat { .. }) && !self.raw;
        for (k, (text, train)) in self.pieces(r)?.into_iter().enumerate() {
            // Chat templates write BOS and special tokens themselves; raw prompts get BOS here.
            let piece = if chat { self.tokenizer.encode(&text, false, true)? } else { self.tokenizer.encode(&text, k == 0, false)? };
            trainable.extend(std::iter::repeat_n(train, piece.len()));
            ids.extend(piece);
        }
        if !chat {
            if let Some(eos) = self.tokenizer.eos_id() {
                ids.push(eos);
                trainable.push(true);
            }
        }
        if ids.len() > max_len {
            eprintln!("warning: example on line {line} has {} tokens; cut to --max-len {max_len}", ids.len());
            ids.truncate(max_len);
            trainable.truncate(max_len);
        }
        let targets: Vec<(usize, u32)> = (1..ids.len()).filter(|&j| trainable[j]).map(|j| (j - 1, ids[j])).collect();
        Ok(Example { ids, targets, line })
    }

    /// The prompt of a record for generation (the conversation up to its last assistant turn,
    /// or the raw prompt) preceded by `shots` solved examples, and the expected answer.
    pub fn prompt(&self, r: &Record, shots: &[Record]) -> Result<(Vec<u32>, String)> {
        if self.raw {
            return self.raw_prompt(r, shots);
        }
        match r {
            Record::Chat { messages } => {
                let last = messages
                    .iter()
                    .rposition(|m| m.get("role").and_then(|r| r.as_str()) == Some("assistant"))
                    .ok_or_else(|| Error::Invalid("no assistant message".into()))?;
                let answer = messages[last].get("content").and_then(|c| c.as_str()).unwrap_or("").to_string();
                let mut conv: Vec<Json> = Vec::new();
                for s in shots {
                    match s {
                        Record::Chat { messages } => conv.extend(messages.iter().filter(|m| m.get("role").and_then(|r| r.as_str()) != Some("system")).cloned()),
                        Record::Completion { .. } => return Err(Error::Invalid("few-shot examples must have the data's form (messages)".into())),
                    }
                }
                // A system message stays first.
                let (system, rest): (Vec<&Json>, Vec<&Json>) =
                    messages[..last].iter().partition(|m| m.get("role").and_then(|r| r.as_str()) == Some("system"));
                let mut full: Vec<Json> = system.into_iter().cloned().collect();
                full.extend(conv);
                full.extend(rest.into_iter().cloned());
                let text = self.render(&full, true)?;
                Ok((self.tokenizer.encode(&text, false, true)?, answer))
            }
            Record::Completion { .. } => self.raw_prompt(r, shots),
        }
    }

    /// The plain-text form in which a base (not instruction-tuned) model reads few-shot prompts
    /// best, without chat turns: each solved example as `<question>\nAnswer: <answer>\n\n`, then
    /// `<question>\nAnswer:`, where the question is the text of the messages before the last
    /// assistant turn. Prompt/completion records are concatenated as they are. Generation should
    /// stop at a newline.
    pub fn raw_prompt(&self, r: &Record, shots: &[Record]) -> Result<(Vec<u32>, String)> {
        match r {
            Record::Chat { messages } => {
                let mut text = String::new();
                for s in shots {
                    let Record::Chat { messages } = s else {
                        return Err(Error::Invalid("few-shot examples must have the data's form (messages)".into()));
                    };
                    let (q, a) = question(messages)?;
                    text.push_str(&format!("{q}\nAnswer: {a}\n\n"));
                }
                let (q, a) = question(messages)?;
                text.push_str(&format!("{q}\nAnswer:"));
                Ok((self.tokenizer.encode(&text, true, false)?, a))
            }
            Record::Completion { prompt, completion } => {
                let mut text = String::new();
                for s in shots {
                    match s {
                        Record::Completion { prompt, completion } => {
                            text.push_str(prompt);
                            text.push_str(completion);
                            text.push_str("\n\n");
                        }
                        Record::Chat { .. } => return Err(Error::Invalid("few-shot examples must have the data's form (prompt/completion)".into())),
                    }
                }
                text.push_str(prompt);
                Ok((self.tokenizer.encode(&text, true, false)?, completion.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("modu-data-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_files_name_the_line() {
        let e = read_jsonl(&write("empty", "\n  \n")).unwrap_err().to_string();
        assert!(e.contains("holds no examples"), "{e}");
        let ok = r#"{"prompt": "a", "completion": "b"}"#;
        let e = read_jsonl(&write("malformed", &format!("{ok}\n{ok}\n{{\"prompt\": \"x\",\n"))).unwrap_err().to_string();
        assert!(e.contains("line 3: not valid JSON"), "{e}");
        let e = read_jsonl(&write("shape", &format!("{ok}\n[1, 2]\n"))).unwrap_err().to_string();
        assert!(e.contains("line 2: expected"), "{e}");
        let e = read_jsonl(&write("noassistant", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n")).unwrap_err().to_string();
        assert!(e.contains("line 1: the conversation has no assistant message"), "{e}");
        let e = read_jsonl(&write("role", "{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}\n")).unwrap_err().to_string();
        assert!(e.contains("unknown role 'wizard'"), "{e}");
        assert!(read_jsonl(Path::new("/nonexistent/d.jsonl")).unwrap_err().to_string().contains("no such file"));
        assert_eq!(read_jsonl(&write("good", &format!("{ok}\n\n{ok}\n"))).unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3]);
    }
}
