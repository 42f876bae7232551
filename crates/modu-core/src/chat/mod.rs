//! Chat prompts: the model's own Jinja template (GGUF `tokenizer.chat_template`, HF
//! `chat_template.jinja` or `tokenizer_config.json`), or a built-in one chosen by architecture
//! when the model ships none, rendered with minijinja the way transformers renders it with jinja2.
//! [`parse`] splits what the model writes back into reasoning, content and tool calls.

pub mod parse;
mod pyjson;

use serde::Serialize;

use crate::error::{Error, Result};

/// One chat message in the OpenAI shape the templates read.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<serde_json::Value>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.to_string(), content: content.to_string(), reasoning_content: None, tool_calls: Vec::new() }
    }
}

/// Built-in templates for models whose files carry none (as llama.cpp's built-ins do).
pub mod builtin {
    pub const GEMMA: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";
    pub const CHATML: &str = "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}";
    pub const LLAMA3: &str = "{{ bos_token }}{%- for message in messages -%}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}";
    /// EXAONE 3.0 / 3.5, as LG publishes it.
    pub const EXAONE3: &str = include_str!("templates/exaone3.jinja");
    /// EXAONE Deep: reasoning in `<thought>` tags.
    pub const EXAONE_DEEP: &str = include_str!("templates/exaone-deep.jinja");
    /// EXAONE 4.0: reasoning switch, tools, tool results.
    pub const EXAONE4: &str = include_str!("templates/exaone4.jinja");
    /// K-EXAONE and EXAONE 4.5.
    pub const K_EXAONE: &str = include_str!("templates/k-exaone.jinja");

    /// The built-in template for a GGUF architecture, if modu has one. `has_token` tells
    /// EXAONE 4.5 (an `exaone4` text model with K-EXAONE's `<|endofturn|>` vocabulary) and EXAONE
    /// Deep (`<thought>`) apart from their siblings.
    pub fn for_model(arch: &str, has_token: impl Fn(&str) -> bool) -> Option<&'static str> {
        match arch {
            "gemma3" | "gemma2" | "gemma" => Some(GEMMA),
            "qwen3" | "qwen2" => Some(CHATML),
            "llama" => Some(LLAMA3),
            "exaone" if has_token("<thought>") => Some(EXAONE_DEEP),
            "exaone" => Some(EXAONE3),
            "exaone4" if has_token("<|endofturn|>") => Some(K_EXAONE),
            "exaone4" => Some(EXAONE4),
            "exaone-moe" => Some(K_EXAONE),
            _ => None,
        }
    }
}

/// Upper bound on a rendered prompt; a template that writes more is stopped.
const MAX_OUTPUT: usize = 16 << 20;
/// Template instructions per render: far above any real chat template, far below a runaway loop.
const FUEL: u64 = 5_000_000;

/// A compiled chat template plus the special-token strings it may reference. Rendering is
/// sandboxed: minijinja exposes no host objects, and fuel, recursion and output limits stop
/// runaway templates with an error.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

/// Options of one render, as `apply_chat_template` takes them.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub add_generation_prompt: bool,
    /// EXAONE 4.0 / K-EXAONE reasoning switch; None leaves it undefined (the template's default).
    pub enable_thinking: Option<bool>,
    /// Further template variables (`skip_think`, ...).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl RenderOptions {
    pub fn generation(enable_thinking: Option<bool>) -> Self {
        Self { add_generation_prompt: true, enable_thinking, extra: Default::default() }
    }
}

struct Limited(String);

impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            return Err(std::io::Error::other("the rendered prompt is too large"));
        }
        self.0.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_fuel(Some(FUEL));
        // transformers renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_recursion_limit(64);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", pyjson::tojson_filter);
        env.add_filter("indent", pyjson::indent_filter);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Template(format!("cannot parse the chat template: {e}")))?;
        Ok(Self { env, bos: bos.to_string(), eos: eos.to_string() })
    }

    /// Renders `messages` (OpenAI-style message objects) with optional `tools` (function
    /// schemas), as transformers' `apply_chat_template` does.
    pub fn render_json(&self, messages: &serde_json::Value, tools: Option<&serde_json::Value>, opts: &RenderOptions) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        let mut ctx = opts.extra.clone();
        ctx.insert("messages".into(), normalize_messages(messages));
        ctx.insert("tools".into(), tools.cloned().unwrap_or(serde_json::Value::Null));
        ctx.insert("add_generation_prompt".into(), opts.add_generation_prompt.into());
        if let Some(t) = opts.enable_thinking {
            ctx.insert("enable_thinking".into(), t.into());
        }
        ctx.insert("bos_token".into(), self.bos.clone().into());
        ctx.insert("eos_token".into(), self.eos.clone().into());
        let mut out = Limited(String::new());
        tmpl.render_captured_to(&ctx, &mut out)
            .map_err(|e| Error::Template(template_error(&e)))?;
        Ok(out.0)
    }

    pub fn render(&self, messages: &[Message], opts: &RenderOptions) -> Result<String> {
        let v = serde_json::to_value(messages).map_err(|e| Error::Template(e.to_string()))?;
        self.render_json(&v, None, opts)
    }
}

/// Messages as transformers hands them to a template: keys whose value is null are dropped (so
/// `content: null` is undefined), and a reasoning given as `reasoning_content`, `thinking` or
/// `reasoning` is visible under both `reasoning_content` and `thinking`.
fn normalize_messages(messages: &serde_json::Value) -> serde_json::Value {
    let Some(list) = messages.as_array() else { return messages.clone() };
    let out = list
        .iter()
        .map(|m| {
            let Some(obj) = m.as_object() else { return m.clone() };
            let mut o: serde_json::Map<String, serde_json::Value> =
                obj.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
            let reasoning = ["reasoning_content", "thinking", "reasoning"].iter().find_map(|k| o.get(*k).cloned());
            if let Some(r) = reasoning {
                o.entry("reasoning_content").or_insert_with(|| r.clone());
                o.entry("thinking").or_insert(r);
            }
            serde_json::Value::Object(o)
        })
        .collect();
    serde_json::Value::Array(out)
}

/// The template's own text for `raise_exception`, else minijinja's description.
fn template_error(e: &minijinja::Error) -> String {
    match (e.kind(), e.detail()) {
        (minijinja::ErrorKind::InvalidOperation, Some(d)) => d.to_string(),
        (minijinja::ErrorKind::OutOfFuel, _) => "rendering stopped: the template ran too long (out of fuel)".into(),
        _ => format!("rendering failed: {e}"),
    }
}

#[cfg(test)]
mod reference_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, msgs: &[Message]) -> String {
        ChatTemplate::new(src, "<bos>", "<eos>")
            .unwrap()
            .render(msgs, &RenderOptions::generation(Some(false)))
            .unwrap()
    }

    // Catches a Gemma prompt that drops the system text or the model turn.
    #[test]
    fn gemma_system_folds_into_first_user_turn() {
        let out = render(builtin::GEMMA, &[Message::new("system", "Be brief."), Message::new("user", "Hi")]);
        assert_eq!(out, "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
    }

    // Catches the EXAONE 4.0 example of spec §3.2 drifting.
    #[test]
    fn exaone4_matches_spec_example() {
        let out = render(builtin::EXAONE4, &[Message::new("system", "Stay concise."), Message::new("user", "Hi")]);
        assert_eq!(out, "[|system|]\nStay concise.[|endofturn|]\n[|user|]\nHi[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\n");
    }

    // Catches the EXAONE 3 empty system turn and the user-turn ending.
    #[test]
    fn exaone3_adds_empty_system_turn() {
        let out = render(builtin::EXAONE3, &[Message::new("user", "Hello!")]);
        assert_eq!(out, "[|system|][|endofturn|]\n[|user|]Hello!\n[|assistant|]");
    }

    // Catches raise_exception or role checks being silently ignored.
    #[test]
    fn template_errors_are_reported() {
        let t = ChatTemplate::new(builtin::GEMMA, "", "").unwrap();
        let err = t.render(&[Message::new("assistant", "x")], &RenderOptions::default()).unwrap_err();
        assert!(err.to_string().contains("alternate"), "{err}");
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
        let looping = ChatTemplate::new("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", "", "").unwrap();
        assert!(looping.render(&[], &RenderOptions::default()).is_err(), "fuel must stop runaway loops");
    }
}
