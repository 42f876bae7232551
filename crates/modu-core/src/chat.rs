//! Chat prompts: the model's own Jinja template (GGUF `tokenizer.chat_template`), or a built-in
//! one chosen by architecture when the file ships none, rendered with minijinja.

use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.to_string(), content: content.to_string() }
    }
}

/// Built-in templates for models whose files carry none (as llama.cpp's built-ins do).
pub mod builtin {
    pub const GEMMA: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";
    pub const CHATML: &str = "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}";
    pub const LLAMA3: &str = "{{ bos_token }}{%- for message in messages -%}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}";
    /// EXAONE 3.0 / 3.5 (spec §3.2).
    pub const EXAONE3: &str = "{%- if messages[0]['role'] != 'system' -%}{{ '[|system|][|endofturn|]\n' }}{%- endif -%}{%- for message in messages -%}{{ '[|' + message['role'] + '|]' + message['content'] }}{%- if message['role'] == 'user' -%}{{ '\n' }}{%- else -%}{{ '[|endofturn|]\n' }}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{ '[|assistant|]' }}{%- endif -%}";
    /// EXAONE 4.0 without tools (spec §3.2); non-reasoning by default.
    pub const EXAONE4: &str = "{%- for message in messages -%}{%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] -%}{{ raise_exception('Unknown role: ' + message['role']) }}{%- endif -%}{%- if message['role'] == 'assistant' -%}{%- set content = message['content'].split('</think>')[-1] | trim -%}{{ '[|assistant|]\n<think>\n\n</think>\n\n' + content + '[|endofturn|]\n' }}{%- else -%}{{ '[|' + message['role'] + '|]\n' + message['content'] + '[|endofturn|]\n' }}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{ '[|assistant|]\n' }}{%- if enable_thinking -%}{{ '<think>\n' }}{%- else -%}{{ '<think>\n\n</think>\n\n' }}{%- endif -%}{%- endif -%}";

    /// The built-in template for a GGUF architecture, if modu has one.
    pub fn for_architecture(arch: &str) -> Option<&'static str> {
        match arch {
            "gemma3" | "gemma2" | "gemma" => Some(GEMMA),
            "qwen3" | "qwen2" => Some(CHATML),
            "llama" => Some(LLAMA3),
            "exaone" => Some(EXAONE3),
            "exaone4" => Some(EXAONE4),
            _ => None,
        }
    }
}

/// A compiled chat template plus the special-token strings it may reference.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub add_generation_prompt: bool,
    pub enable_thinking: bool,
}

impl ChatTemplate {
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_fuel(Some(2_000_000));
        env.set_recursion_limit(64);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Template(format!("cannot parse the chat template: {e}")))?;
        Ok(Self { env, bos: bos.to_string(), eos: eos.to_string() })
    }

    pub fn render(&self, messages: &[Message], opts: &RenderOptions) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => opts.add_generation_prompt,
            enable_thinking => opts.enable_thinking,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| Error::Template(format!("rendering failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, msgs: &[Message]) -> String {
        ChatTemplate::new(src, "<bos>", "<eos>")
            .unwrap()
            .render(msgs, &RenderOptions { add_generation_prompt: true, enable_thinking: false })
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
