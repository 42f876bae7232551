//! Request bodies, validated field by field from raw JSON so every bad value gets a 400 that
//! names its field (`param`), before anything reaches the engine and without allocating in
//! proportion to any number in the request.

use serde_json::{Map, Value};

use crate::error::ApiError;

pub const MAX_STOP: usize = 4;
pub const MAX_TOP_LOGPROBS: usize = 20;
pub const MAX_LOGIT_BIAS: usize = 300;

type Obj = Map<String, Value>;

fn num(o: &Obj, key: &str) -> Result<Option<f64>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| ApiError::invalid(key, format!("'{key}' must be a finite number"))),
        Some(v) => Err(ApiError::invalid(key, format!("'{key}' must be a number, got {}", kind(v)))),
    }
}

fn ranged(o: &Obj, key: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match num(o, key)? {
        Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::invalid(key, format!("'{key}' must be between {lo} and {hi}, got {x}"))),
        x => Ok(x),
    }
}

/// An integer in lo..=hi (JSON integers only; 2.5 or 1e309 are refused).
fn int(o: &Obj, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::invalid(key, format!("'{key}' must be an integer between {lo} and {hi}, got {n}"))),
        },
        Some(v) => Err(ApiError::invalid(key, format!("'{key}' must be an integer, got {}", kind(v)))),
    }
}

fn boolean(o: &Obj, key: &str) -> Result<Option<bool>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::invalid(key, format!("'{key}' must be true or false, got {}", kind(v)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What both endpoints share.
#[derive(Debug, Clone)]
pub struct Common {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<usize>,
    pub n: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// Some(k): logprobs with k alternatives.
    pub logprobs: Option<usize>,
    pub logit_bias: Vec<(u32, f32)>,
}

/// Parses the body: JSON object, nesting bounded by serde_json's recursion limit.
pub fn parse_body(bytes: &[u8]) -> Result<Obj, ApiError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(&key_before_error(bytes, &e), format!("The body is not valid JSON: {e}")))?;
    match v {
        Value::Object(o) => Ok(o),
        other => Err(ApiError::invalid("", format!("The body must be a JSON object, got {}", kind(&other)))),
    }
}

/// The object key nearest before a JSON syntax error (e.g. `max_tokens` for `"max_tokens": 1e309`),
/// so the error can name the field; empty when there is none on that line.
fn key_before_error(bytes: &[u8], e: &serde_json::Error) -> String {
    let Some(line) = bytes.split(|&b| b == b'\n').nth(e.line().saturating_sub(1)) else { return String::new() };
    let upto = &line[..e.column().min(line.len())];
    let text = String::from_utf8_lossy(upto);
    let Some(colon) = text.rfind(':') else { return String::new() };
    let before = text[..colon].trim_end();
    let Some(end) = before.strip_suffix('"') else { return String::new() };
    match end.rfind('"') {
        Some(start) if end.len() - start < 64 => end[start + 1..].to_string(),
        _ => String::new(),
    }
}

pub fn common(o: &Obj, vocab: usize, max_n: usize, chat: bool) -> Result<Common, ApiError> {
    let model = match o.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(v) if !v.is_null() => return Err(ApiError::invalid("model", "'model' must be a string")),
        _ => return Err(ApiError::invalid("model", "'model' is required")),
    };
    for refused in ["chat_template"] {
        let nested = o.get("chat_template_kwargs").and_then(|k| k.get(refused)).is_some();
        if o.contains_key(refused) || nested {
            return Err(ApiError::invalid(
                "chat_template",
                "A chat template in the request is not accepted: the server renders the model's own template.",
            ));
        }
    }
    let max_a = int(o, "max_tokens", 1, i64::MAX)?;
    let max_b = int(o, "max_completion_tokens", 1, i64::MAX)?;
    let stop = match o.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= MAX_STOP => a
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| ApiError::invalid("stop", "'stop' entries must be strings")))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => return Err(ApiError::invalid("stop", format!("'stop' takes at most {MAX_STOP} strings"))),
        Some(v) => return Err(ApiError::invalid("stop", format!("'stop' must be a string or a list of strings, got {}", kind(v)))),
    };
    if stop.iter().any(|s| s.len() > 1024) {
        return Err(ApiError::invalid("stop", "a stop string is longer than 1024 bytes"));
    }
    let logprobs = if chat {
        let on = boolean(o, "logprobs")?.unwrap_or(false);
        let top = int(o, "top_logprobs", 0, MAX_TOP_LOGPROBS as i64)?;
        match (on, top) {
            (false, Some(_)) => return Err(ApiError::invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true")),
            (true, t) => Some(t.unwrap_or(0) as usize),
            (false, None) => None,
        }
    } else {
        int(o, "logprobs", 0, MAX_TOP_LOGPROBS as i64)?.map(|k| k as usize)
    };
    let logit_bias = match o.get("logit_bias") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => {
            if m.len() > MAX_LOGIT_BIAS {
                return Err(ApiError::invalid("logit_bias", format!("'logit_bias' takes at most {MAX_LOGIT_BIAS} entries")));
            }
            m.iter()
                .map(|(k, v)| {
                    let id: u32 = k
                        .parse()
                        .ok()
                        .filter(|&i: &u32| (i as usize) < vocab)
                        .ok_or_else(|| ApiError::invalid("logit_bias", format!("logit_bias key '{k}' is not a token id below {vocab}")))?;
                    let b = v
                        .as_f64()
                        .filter(|b| (-100.0..=100.0).contains(b))
                        .ok_or_else(|| ApiError::invalid("logit_bias", format!("logit_bias value for {k} must be a number in [-100, 100]")))?;
                    Ok((id, b as f32))
                })
                .collect::<Result<_, _>>()?
        }
        Some(v) => return Err(ApiError::invalid("logit_bias", format!("'logit_bias' must be an object, got {}", kind(v)))),
    };
    let stream_options = match o.get("stream_options") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(v) => return Err(ApiError::invalid("stream_options", format!("'stream_options' must be an object, got {}", kind(v)))),
    };
    let include_usage = match stream_options {
        Some(m) => boolean(m, "include_usage").map_err(|_| ApiError::invalid("stream_options", "'include_usage' must be true or false"))?.unwrap_or(false),
        None => false,
    };
    let seed = match o.get("seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| n.as_i64().map(|i| i as u64))
                .ok_or_else(|| ApiError::invalid("seed", format!("'seed' must be a 64-bit integer, got {n}")))?,
        ),
        Some(v) => return Err(ApiError::invalid("seed", format!("'seed' must be an integer, got {}", kind(v)))),
    };
    if let Some(v) = o.get("best_of").filter(|v| !v.is_null()) {
        if v.as_i64() != Some(1) {
            return Err(ApiError::invalid("best_of", "'best_of' other than 1 is not supported"));
        }
    }
    Ok(Common {
        model,
        stream: boolean(o, "stream")?.unwrap_or(false),
        include_usage,
        max_tokens: max_b.or(max_a).map(|x| x as usize),
        n: int(o, "n", 1, max_n as i64)?.unwrap_or(1) as usize,
        temperature: ranged(o, "temperature", 0.0, 2.0)?.unwrap_or(1.0) as f32,
        top_p: match ranged(o, "top_p", 0.0, 1.0)? {
            Some(p) if p <= 0.0 => return Err(ApiError::invalid("top_p", "'top_p' must be greater than 0")),
            p => p.unwrap_or(1.0) as f32,
        },
        top_k: int(o, "top_k", 0, vocab as i64)?.unwrap_or(0) as usize,
        min_p: ranged(o, "min_p", 0.0, 1.0)?.unwrap_or(0.0) as f32,
        repeat_penalty: match ranged(o, "repeat_penalty", 0.0, 10.0)? {
            Some(p) if p <= 0.0 => return Err(ApiError::invalid("repeat_penalty", "'repeat_penalty' must be greater than 0")),
            p => p.unwrap_or(1.0) as f32,
        },
        presence_penalty: ranged(o, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        frequency_penalty: ranged(o, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        seed,
        stop,
        logprobs,
        logit_bias,
    })
}

/// Chat messages checked for shape; returned as the JSON the template reads, with text parts
/// of list contents kept as they are (templates of vision models read them).
pub fn messages(o: &Obj) -> Result<Value, ApiError> {
    let list = match o.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(ApiError::invalid("messages", "'messages' must not be empty")),
        None | Some(Value::Null) => return Err(ApiError::invalid("messages", "'messages' is required")),
        Some(v) => return Err(ApiError::invalid("messages", format!("'messages' must be a list, got {}", kind(v)))),
    };
    for (i, m) in list.iter().enumerate() {
        let p = format!("messages[{i}]");
        let m = m.as_object().ok_or_else(|| ApiError::invalid(&p, format!("{p} must be an object")))?;
        let role = match m.get("role") {
            Some(Value::String(r)) => r.as_str(),
            _ => return Err(ApiError::invalid(&format!("{p}.role"), format!("{p}.role must be a string"))),
        };
        if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
            return Err(ApiError::invalid(&format!("{p}.role"), format!("{p}.role '{role}' is not one of system, user, assistant, tool")));
        }
        match m.get("content") {
            None | Some(Value::Null) if role == "assistant" => {}
            Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                for part in parts {
                    match part.get("type").and_then(|t| t.as_str()) {
                        Some("text") if part.get("text").is_some_and(|t| t.is_string()) => {}
                        Some("text") => return Err(ApiError::invalid(&format!("{p}.content"), format!("{p}.content: a text part needs a 'text' string"))),
                        Some(other) => {
                            return Err(ApiError::invalid(
                                &format!("{p}.content"),
                                format!("{p}.content: part type '{other}' is not supported (modu takes text parts; it has no image or audio input yet, and never reads local files)"),
                            ))
                        }
                        None => return Err(ApiError::invalid(&format!("{p}.content"), format!("{p}.content parts need a 'type'"))),
                    }
                }
            }
            Some(v) => return Err(ApiError::invalid(&format!("{p}.content"), format!("{p}.content must be a string or a list of parts, got {}", kind(v)))),
            None => return Err(ApiError::invalid(&format!("{p}.content"), format!("{p}.content is required"))),
        }
        if role == "tool" && !m.get("tool_call_id").is_some_and(|v| v.is_string()) {
            return Err(ApiError::invalid(&format!("{p}.tool_call_id"), format!("{p} has role 'tool' but no tool_call_id")));
        }
        if let Some(tc) = m.get("tool_calls").filter(|v| !v.is_null()) {
            let ok = tc.as_array().is_some_and(|a| a.iter().all(|c| c.get("function").and_then(|f| f.get("name")).is_some_and(|n| n.is_string())));
            if !ok {
                return Err(ApiError::invalid(&format!("{p}.tool_calls"), format!("{p}.tool_calls must be a list of {{function: {{name, arguments}}}}")));
            }
        }
    }
    // Tool-call arguments arrive as JSON strings; templates expect objects. Text parts are
    // joined into one string, which every template reads.
    let list: Vec<Value> = list
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(Value::Array(parts)) = m.get("content") {
                let text: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(|t| t.as_str())).collect();
                m["content"] = Value::String(text.join("\n"));
            }
            if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                for c in calls.iter_mut() {
                    if let Some(args) = c.get_mut("function").and_then(|f| f.get_mut("arguments")) {
                        if let Some(parsed) = args.as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
                            *args = parsed;
                        }
                    }
                }
            }
            m
        })
        .collect();
    Ok(Value::Array(list))
}

pub fn tools(o: &Obj) -> Result<Option<Value>, ApiError> {
    match o.get("tools") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            for (i, t) in a.iter().enumerate() {
                if !t.get("function").and_then(|f| f.get("name")).is_some_and(|n| n.is_string()) {
                    return Err(ApiError::invalid("tools", format!("tools[{i}] needs function.name")));
                }
            }
            let none = o.get("tool_choice").and_then(|c| c.as_str()) == Some("none");
            Ok((!a.is_empty() && !none).then(|| Value::Array(a.clone())))
        }
        Some(v) => Err(ApiError::invalid("tools", format!("'tools' must be a list, got {}", kind(v)))),
    }
}

/// What `response_format` asks the output to be.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema(Value),
}

pub fn response_format(o: &Obj) -> Result<ResponseFormat, ApiError> {
    let v = match o.get("response_format") {
        None | Some(Value::Null) => return Ok(ResponseFormat::Text),
        Some(Value::Object(v)) => v,
        Some(_) => return Err(ApiError::invalid("response_format", "'response_format' must be an object")),
    };
    match v.get("type").and_then(|t| t.as_str()) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let js = match v.get("json_schema") {
                Some(Value::Object(js)) => js,
                _ => return Err(ApiError::invalid("response_format.json_schema", "response_format.json_schema must be an object with 'name' and 'schema'")),
            };
            match js.get("name") {
                Some(Value::String(n))
                    if (1..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') => {}
                _ => {
                    return Err(ApiError::invalid(
                        "response_format.json_schema.name",
                        "response_format.json_schema.name must be 1 to 64 characters of a-z, A-Z, 0-9, '_' or '-'",
                    ))
                }
            }
            if let Some(strict) = js.get("strict") {
                if !strict.is_boolean() && !strict.is_null() {
                    return Err(ApiError::invalid("response_format.json_schema.strict", "response_format.json_schema.strict must be a boolean"));
                }
            }
            match js.get("schema") {
                Some(schema @ (Value::Object(_) | Value::Bool(_))) => Ok(ResponseFormat::JsonSchema(schema.clone())),
                None | Some(Value::Null) => Ok(ResponseFormat::JsonSchema(Value::Object(Default::default()))),
                Some(_) => Err(ApiError::invalid("response_format.json_schema.schema", "response_format.json_schema.schema must be a JSON Schema object")),
            }
        }
        _ => Err(ApiError::invalid("response_format", "response_format.type must be text, json_object or json_schema")),
    }
}

/// Completion prompts: a string, one string in a list, or token ids.
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

pub fn prompt(o: &Obj, vocab: usize) -> Result<Prompt, ApiError> {
    let ids = |a: &Vec<Value>| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .map(|v| {
                v.as_u64()
                    .filter(|&i| (i as usize) < vocab)
                    .map(|i| i as u32)
                    .ok_or_else(|| ApiError::invalid("prompt", format!("prompt token {v} is not a token id below {vocab}")))
            })
            .collect()
    };
    let p = match o.get("prompt") {
        Some(Value::String(s)) => Prompt::Text(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => Prompt::Text(a[0].as_str().unwrap_or_default().to_string()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_array() => Prompt::Ids(ids(a[0].as_array().expect("checked"))?),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(|v| v.is_number()) => Prompt::Ids(ids(a)?),
        Some(Value::Array(a)) if a.len() > 1 => return Err(ApiError::invalid("prompt", "batched prompts are not supported; send one prompt per request")),
        None | Some(Value::Null) => return Err(ApiError::invalid("prompt", "'prompt' is required")),
        Some(v) => return Err(ApiError::invalid("prompt", format!("'prompt' must be a string or token ids, got {}", kind(v)))),
    };
    match &p {
        Prompt::Text(t) if t.is_empty() => Err(ApiError::invalid("prompt", "'prompt' is empty")),
        Prompt::Ids(i) if i.is_empty() => Err(ApiError::invalid("prompt", "'prompt' is empty")),
        _ => Ok(p),
    }
}

pub fn unsupported_completion_fields(o: &Obj) -> Result<(), ApiError> {
    if boolean(o, "echo")?.unwrap_or(false) {
        return Err(ApiError::invalid("echo", "'echo' is not supported"));
    }
    if o.get("suffix").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid("suffix", "'suffix' is not supported"));
    }
    Ok(())
}
