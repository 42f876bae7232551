//! `modu chat` and `modu run --messages` on a tiny EXAONE 4.0 checkpoint whose directory ships
//! LG's EXAONE 4.0 template: what reaches the model is checked through the `-vv` prompt log.

use std::path::PathBuf;

use crate::gemma::modu_stdin;
use crate::{modu, scratch};

/// The dense fixture with LG's template and a context long enough for tool prompts (the
/// 512-token toy vocabulary spends a token per byte of Korean).
fn exaone4_dir(tag: &str) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/exaone4_dense");
    let dir = scratch(&format!("chat-exaone4-{tag}"));
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "config.json" {
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["max_position_embeddings"] = 4096.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let template = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../modu-core/src/chat/templates/exaone4.jinja");
    std::fs::copy(template, dir.join("chat_template.jinja")).unwrap();
    dir
}

fn prompts(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split_once("prompt: ").map(|(_, p)| serde_json::from_str::<String>(p).expect("debug-quoted prompt")))
        .collect()
}

#[test]
fn chat_commands_reach_the_template() {
    let dir = exaone4_dir("chat");
    let input = "/system 간결하게 답하세요.\n\"\"\"\n첫 줄\n둘째 줄\n\"\"\"\n/think on\nline one \\\nline two\n/history\n/exit\n";
    let out = modu_stdin(&["chat", "-vv", "-m", dir.to_str().unwrap(), "--temp", "0", "-n", "4"], input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let p = prompts(&stderr);
    assert_eq!(p.len(), 2, "{stderr}");
    assert!(p[0].starts_with("[|system|]\n간결하게 답하세요.[|endofturn|]\n[|user|]\n첫 줄\n둘째 줄[|endofturn|]\n[|assistant|]\n"), "{:?}", p[0]);
    assert!(p[0].ends_with("<think>\n\n</think>\n\n"), "reasoning is off by default: {:?}", p[0]);
    assert!(p[1].contains("[|user|]\nline one \nline two[|endofturn|]\n"), "{:?}", p[1]);
    assert!(p[1].ends_with("[|assistant|]\n<think>\n"), "/think on opens the reasoning block: {:?}", p[1]);
    assert!(stderr.contains("[user] 첫 줄\n둘째 줄"), "/history shows the conversation: {stderr}");
}

#[test]
fn run_messages_renders_the_conversation_with_tools() {
    let dir = exaone4_dir("run");
    let conv = serde_json::json!({
        "messages": [
            {"role": "user", "content": "서울 날씨?"},
            {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "서울"}}}]},
            {"role": "tool", "content": "맑음"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "날씨 조회", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    });
    let f = scratch("run-messages").join("conv.json");
    std::fs::write(&f, conv.to_string()).unwrap();
    let out = modu(&["run", "-vv", "-m", dir.to_str().unwrap(), "--messages", f.to_str().unwrap(), "--think", "off", "--temp", "0", "-n", "4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let p = prompts(&stderr);
    assert_eq!(p.len(), 1, "{stderr}");
    assert!(p[0].starts_with("[|system|]\n# Available Tools\n"), "{:?}", p[0]);
    assert!(p[0].contains("<tool>{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"날씨 조회\""), "{:?}", p[0]);
    assert!(p[0].contains("<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"서울\"}}</tool_call>"), "{:?}", p[0]);
    assert!(p[0].contains("[|tool|]\n<tool_result>{\"result\": \"맑음\"}</tool_result>[|endofturn|]\n"), "{:?}", p[0]);
    assert!(p[0].ends_with("[|assistant|]\n<think>\n\n</think>\n\n"), "{:?}", p[0]);

    // Bad conversations are refused with one clear line.
    std::fs::write(&f, r#"{"messages": [{"content": "no role"}]}"#).unwrap();
    let out = modu(&["run", "-m", dir.to_str().unwrap(), "--messages", f.to_str().unwrap()]);
    crate::bad_input::assert_clean_failure(&out, "has no \"role\"");
    std::fs::write(&f, r#"[{"role": "critic", "content": "x"}]"#).unwrap();
    let out = modu(&["run", "-m", dir.to_str().unwrap(), "--messages", f.to_str().unwrap()]);
    crate::bad_input::assert_clean_failure(&out, "Unknown role: critic");
}

/// reliability.md cases 13, 14 and 16 end to end: a model directory whose own template is
/// hostile or broken. Each run gets 1 GiB of address space (any runaway allocation would abort
/// it) and must end within a second of loading with one clear error line.
#[test]
fn hostile_model_templates_end_in_a_clear_error() {
    let cases = [
        ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "rendering failed"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", "out of fuel"),
        ("{{ 'x' * 10**10 }}", "chat template"),
        ("{{ '' | indent(10**10) }}", "indent width is too large"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion"),
        ("{% for m in messages %}", "cannot parse the chat template"),
        ("{{ raise_exception('Conversation roles must alternate') }}", "Conversation roles must alternate"),
    ];
    let f = scratch("hostile-conv").join("conv.json");
    std::fs::write(&f, r#"[{"role": "user", "content": "hi"}]"#).unwrap();
    for (i, (template, expect)) in cases.iter().enumerate() {
        let dir = exaone4_dir(&format!("hostile-{i}"));
        std::fs::remove_file(dir.join("chat_template.jinja")).unwrap();
        std::fs::write(dir.join("chat_template.jinja"), template).unwrap();
        let start = std::time::Instant::now();
        let out = crate::modu_limited(&["run", "-m", dir.to_str().unwrap(), "--messages", f.to_str().unwrap(), "-n", "2"], 1 << 20);
        let took = start.elapsed();
        crate::bad_input::assert_clean_failure(&out, expect);
        assert!(took < std::time::Duration::from_secs(3), "{template}: {took:?} (load included)");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("uid="), "{template}");
    }
}
