//! The chat templates and output parser against references made outside modu:
//! tests/fixtures/chat_templates.json holds prompts rendered by transformers' own
//! `apply_chat_template` (jinja2) from the same template files, and chat_outputs.json the
//! expected split of model outputs (make_template_refs.py checks those against its own parser).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::parse::{parse, Delta, OutputFormat, Parsed, StreamParser};
use super::{builtin, ChatTemplate, RenderOptions};

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn template_source(file: &str) -> &'static str {
    match file {
        "exaone3.jinja" => builtin::EXAONE3,
        "exaone-deep.jinja" => builtin::EXAONE_DEEP,
        "exaone4.jinja" => builtin::EXAONE4,
        "k-exaone.jinja" => builtin::K_EXAONE,
        other => panic!("unknown template {other}"),
    }
}

fn options(kwargs: &Value) -> RenderOptions {
    let mut extra = kwargs.as_object().cloned().unwrap_or_default();
    let add = extra.remove("add_generation_prompt").and_then(|v| v.as_bool()).unwrap_or(false);
    let think = extra.remove("enable_thinking").and_then(|v| v.as_bool());
    RenderOptions { add_generation_prompt: add, enable_thinking: think, extra }
}

#[test]
fn renders_equal_transformers_apply_chat_template() {
    let cases = fixture("chat_templates.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    let mut families = std::collections::BTreeSet::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let file = c["template"].as_str().unwrap();
        families.insert(file);
        let t = ChatTemplate::new(template_source(file), c["bos_token"].as_str().unwrap(), c["eos_token"].as_str().unwrap()).unwrap();
        let tools = (!c["tools"].is_null()).then_some(&c["tools"]);
        let got = t.render_json(&c["messages"], tools, &options(&c["kwargs"]));
        match c["error"].as_str() {
            Some(err) => {
                let e = got.expect_err(name).to_string();
                assert!(e.contains(err), "{name}: error {e:?} lacks {err:?}");
            }
            None => assert_eq!(got.unwrap_or_else(|e| panic!("{name}: {e}")), c["expected"].as_str().unwrap(), "{name}"),
        }
    }
    assert_eq!(families.len(), 4, "every family is covered: {families:?}");
}

fn format(case: &Value) -> OutputFormat {
    let tags = match case["family"].as_str().unwrap() {
        "exaone4" | "k-exaone" => Some(("<think>", "</think>")),
        "exaone-deep" => Some(("<thought>", "</thought>")),
        _ => None,
    };
    OutputFormat { reasoning_tags: tags, starts_in_reasoning: case["think_open_in_prompt"].as_bool().unwrap() }
}

fn as_json(p: &Parsed) -> Value {
    serde_json::json!({
        "reasoning": p.reasoning,
        "content": p.content,
        "tool_calls": p.tool_calls.iter().map(|c| serde_json::json!({"name": c.name, "arguments": c.arguments})).collect::<Vec<_>>(),
    })
}

/// Splits `text` into chunks of the given sizes (in chars), cycling.
fn chunks(text: &str, sizes: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut k) = (0, 0);
    while i < chars.len() {
        let n = sizes[k % sizes.len()].min(chars.len() - i);
        out.push(chars[i..i + n].iter().collect());
        i += n;
        k += 1;
    }
    out
}

#[test]
fn outputs_split_into_reasoning_content_and_tool_calls() {
    let cases = fixture("chat_outputs.json");
    for c in cases.as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let out = c["output"].as_str().unwrap();
        let fmt = format(c);
        let whole = parse(out, fmt);
        assert_eq!(as_json(&whole), c["expected"], "{name} (whole)");
        if c["expected"]["content"].as_str().unwrap_or("").contains("<tool_call>") {
            assert!(!whole.warnings.is_empty(), "{name}: a kept malformed call must warn");
        }
        for sizes in [&[1][..], &[2], &[3, 1, 5], &[7, 2], &[13]] {
            let mut sp = StreamParser::new(fmt);
            let mut deltas: Vec<Delta> = Vec::new();
            for ch in chunks(out, sizes) {
                deltas.extend(sp.push(&ch));
            }
            deltas.extend(sp.finish());
            let streamed = Parsed::collect(deltas, sp.had_reasoning(), Vec::new());
            assert_eq!(as_json(&streamed), c["expected"], "{name} (chunks {sizes:?})");
        }
    }
}

/// reliability.md cases 13, 14 and 16: template injection and resource abuse end in an error,
/// fast, without taking the process down.
#[test]
fn hostile_templates_fail_fast() {
    let payloads = [
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{{ 'x' * 10**10 }}",
        "{{ '' | indent(10**10) }}",
        "{{ messages | tojson(indent=10**10) }}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% for i in range(10**9) %}{{ i }}{% endfor %}",
    ];
    for p in payloads {
        let start = Instant::now();
        let t = ChatTemplate::new(p, "", "").expect(p);
        let r = t.render_json(&serde_json::json!([{"role": "user", "content": "hi"}]), None, &RenderOptions::generation(None));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1), "{p}: took {took:?}");
        match r {
            Err(_) => {}
            Ok(out) => assert!(!out.contains("uid=") && out.len() < 1 << 20, "{p}: rendered {} bytes", out.len()),
        }
    }
    for bad in ["{% for m in messages %}", "{{ unclosed", "{% if %}{% endif %}"] {
        let e = ChatTemplate::new(bad, "", "").err().expect(bad).to_string();
        assert!(e.contains("cannot parse the chat template"), "{bad}: {e}");
    }
    let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
    let e = t.render_json(&serde_json::json!([]), None, &RenderOptions::default()).unwrap_err().to_string();
    assert!(e.ends_with("roles must alternate"), "{e}");
}
