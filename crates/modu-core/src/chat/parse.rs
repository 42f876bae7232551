//! What an EXAONE model writes back, split into reasoning, content and tool calls: EXAONE 4.0
//! and K-EXAONE reason inside `<think>...</think>`, EXAONE Deep inside `<thought>...</thought>`,
//! and tools are called with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
//!
//! One state machine serves both uses: [`StreamParser`] takes text in arbitrary chunks (a server
//! stream) and [`parse`] feeds it a whole output, so both always agree. Rules:
//! - reasoning is the text before the close tag, trimmed; a block that never closes makes the
//!   whole output reasoning, and tool calls inside it are not parsed;
//! - a tool call counts only if its inner text is a JSON object with a string `name`; anything
//!   else stays in the content verbatim, with a warning;
//! - content is what remains, trimmed.

use serde_json::Value;

const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Reasoning(String),
    Content(String),
    ToolCall(ToolCall),
}

/// How a model marks its reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputFormat {
    /// Open and close tags of the reasoning block, if the model reasons.
    pub reasoning_tags: Option<(&'static str, &'static str)>,
    /// The prompt already opened the reasoning block (EXAONE 4.0 with thinking on, K-EXAONE).
    pub starts_in_reasoning: bool,
}

impl OutputFormat {
    pub const PLAIN: Self = Self { reasoning_tags: None, starts_in_reasoning: false };

    /// The format a chat template implies, given the rendered prompt: reasoning tags when the
    /// template knows them, and "already reasoning" when the prompt ends inside an open block.
    pub fn from_prompt(template: &str, prompt: &str) -> Self {
        let tags = if template.contains("<thought>") {
            Some(("<thought>", "</thought>"))
        } else if template.contains("<think>") {
            Some(("<think>", "</think>"))
        } else {
            None
        };
        let starts_in_reasoning = tags.is_some_and(|(open, close)| {
            let tail = prompt.trim_end();
            tail.ends_with(open) || prompt.rfind(open).is_some_and(|o| prompt.rfind(close).is_none_or(|c| c < o))
        });
        Self { reasoning_tags: tags, starts_in_reasoning }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not yet known whether the output opens a reasoning block.
    Start,
    Reasoning,
    Content,
    ToolCall,
}

/// Trims a stream segment as `str.strip()` would trim the whole: leading whitespace dropped,
/// trailing whitespace held back until more text follows.
#[derive(Debug, Default)]
struct Trimmer {
    started: bool,
    held: String,
}

impl Trimmer {
    fn push(&mut self, text: &str) -> Option<String> {
        let text = if self.started { text } else { text.trim_start() };
        if text.is_empty() {
            return None;
        }
        self.started = true;
        let mut all = std::mem::take(&mut self.held);
        all.push_str(text);
        let body = all.trim_end().len();
        self.held = all[body..].to_string();
        all.truncate(body);
        (!all.is_empty()).then_some(all)
    }
}

#[derive(Debug)]
pub struct StreamParser {
    fmt: OutputFormat,
    state: State,
    pending: String,
    reasoning: Trimmer,
    content: Trimmer,
    reasoning_block: bool,
    warnings: Vec<String>,
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag` (text that may
/// become the tag once more arrives).
fn partial_tag(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

fn parse_call(inner: &str) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(inner.trim()).ok()?;
    let obj = v.as_object()?;
    let name = obj.get("name")?.as_str()?.to_string();
    let arguments = obj.get("arguments").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    Some(ToolCall { name, arguments })
}

impl StreamParser {
    pub fn new(fmt: OutputFormat) -> Self {
        let state = match fmt.reasoning_tags {
            None => State::Content,
            Some(_) if fmt.starts_in_reasoning => State::Reasoning,
            Some(_) => State::Start,
        };
        Self {
            fmt,
            state,
            pending: String::new(),
            reasoning: Trimmer::default(),
            content: Trimmer::default(),
            reasoning_block: state == State::Reasoning,
            warnings: Vec::new(),
        }
    }

    /// True once a reasoning block was opened (even if it stays empty).
    pub fn had_reasoning(&self) -> bool {
        self.reasoning_block
    }

    /// Problems seen so far (malformed or unclosed tool calls).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn emit_reasoning(&mut self, text: &str, out: &mut Vec<Delta>) {
        if let Some(t) = self.reasoning.push(text) {
            out.push(Delta::Reasoning(t));
        }
    }

    fn emit_content(&mut self, text: &str, out: &mut Vec<Delta>) {
        if let Some(t) = self.content.push(text) {
            out.push(Delta::Content(t));
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<Delta> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let (open, _) = self.fmt.reasoning_tags.expect("Start only with tags");
                    let t = self.pending.trim_start();
                    if let Some(rest) = t.strip_prefix(open) {
                        self.pending = rest.to_string();
                        self.state = State::Reasoning;
                        self.reasoning_block = true;
                    } else if open.starts_with(t) {
                        return out;
                    } else {
                        self.state = State::Content;
                    }
                }
                State::Reasoning => {
                    let (_, close) = self.fmt.reasoning_tags.expect("Reasoning only with tags");
                    if let Some(i) = self.pending.find(close) {
                        let text = self.pending[..i].to_string();
                        self.pending.drain(..i + close.len());
                        self.emit_reasoning(&text, &mut out);
                        self.state = State::Content;
                    } else {
                        let keep = partial_tag(&self.pending, close);
                        let text: String = self.pending.drain(..self.pending.len() - keep).collect();
                        self.emit_reasoning(&text, &mut out);
                        return out;
                    }
                }
                State::Content => {
                    if let Some(i) = self.pending.find(CALL_OPEN) {
                        let text = self.pending[..i].to_string();
                        self.pending.drain(..i + CALL_OPEN.len());
                        self.emit_content(&text, &mut out);
                        self.state = State::ToolCall;
                    } else {
                        let keep = partial_tag(&self.pending, CALL_OPEN);
                        let text: String = self.pending.drain(..self.pending.len() - keep).collect();
                        self.emit_content(&text, &mut out);
                        return out;
                    }
                }
                State::ToolCall => {
                    let Some(i) = self.pending.find(CALL_CLOSE) else { return out };
                    let inner = self.pending[..i].to_string();
                    self.pending.drain(..i + CALL_CLOSE.len());
                    match parse_call(&inner) {
                        Some(call) => out.push(Delta::ToolCall(call)),
                        None => {
                            self.warnings.push(format!("kept a tool call that is not a JSON object with a name: {inner}"));
                            let raw = format!("{CALL_OPEN}{inner}{CALL_CLOSE}");
                            self.emit_content(&raw, &mut out);
                        }
                    }
                    self.state = State::Content;
                }
            }
        }
    }

    /// Ends the stream: flushes what was held back.
    pub fn finish(&mut self) -> Vec<Delta> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        match self.state {
            State::Start | State::Content => self.emit_content(&rest, &mut out),
            State::Reasoning => self.emit_reasoning(&rest, &mut out),
            State::ToolCall => {
                self.warnings.push("a <tool_call> was never closed; kept as content".into());
                let raw = format!("{CALL_OPEN}{rest}");
                self.emit_content(&raw, &mut out);
            }
        }
        self.state = State::Content;
        out
    }
}

/// A whole output, split.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// None when the output has no reasoning block; "" when the block is empty.
    pub reasoning: Option<String>,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub warnings: Vec<String>,
}

impl Parsed {
    /// Gathers stream deltas (plus whether a reasoning block was seen).
    pub fn collect(deltas: impl IntoIterator<Item = Delta>, had_reasoning: bool, warnings: Vec<String>) -> Self {
        let mut p = Parsed { reasoning: had_reasoning.then(String::new), warnings, ..Default::default() };
        for d in deltas {
            match d {
                Delta::Reasoning(t) => p.reasoning.get_or_insert_with(String::new).push_str(&t),
                Delta::Content(t) => p.content.push_str(&t),
                Delta::ToolCall(c) => p.tool_calls.push(c),
            }
        }
        p
    }
}

pub fn parse(output: &str, fmt: OutputFormat) -> Parsed {
    let mut sp = StreamParser::new(fmt);
    let mut deltas = sp.push(output);
    deltas.extend(sp.finish());
    Parsed::collect(deltas, sp.had_reasoning(), sp.warnings().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const THINK: OutputFormat = OutputFormat { reasoning_tags: Some(("<think>", "</think>")), starts_in_reasoning: false };

    #[test]
    fn partial_tags_are_held_back() {
        assert_eq!(partial_tag("abc<tool_c", CALL_OPEN), 7);
        assert_eq!(partial_tag("abc", CALL_OPEN), 0);
        assert_eq!(partial_tag("안녕<", CALL_OPEN), 1);
        let mut sp = StreamParser::new(OutputFormat::PLAIN);
        assert_eq!(sp.push("hi <tool_"), vec![Delta::Content("hi".into())]);
        assert_eq!(sp.push("x"), vec![Delta::Content(" <tool_x".into())]);
    }

    #[test]
    fn output_that_opens_its_own_think_block() {
        let p = parse("  <think>plan</think>\n\nanswer", THINK);
        assert_eq!(p.reasoning.as_deref(), Some("plan"));
        assert_eq!(p.content, "answer");
        let p = parse("no think here </think> x", THINK);
        assert_eq!(p.reasoning, None);
        assert_eq!(p.content, "no think here </think> x");
    }

    #[test]
    fn unclosed_tool_call_is_content_with_a_warning() {
        let p = parse("a <tool_call>{\"name\": \"f\"", OutputFormat::PLAIN);
        assert_eq!(p.content, "a <tool_call>{\"name\": \"f\"");
        assert!(p.tool_calls.is_empty());
        assert_eq!(p.warnings.len(), 1);
    }
}
