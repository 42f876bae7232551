//! The endpoints: chat completions, completions, models, health, metrics.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use modu_core::chat::parse::{self as outparse, Delta, OutputFormat, StreamParser};
use modu_core::chat::RenderOptions;
use modu_core::engine::constraint::Constraint;
use modu_core::engine::scheduler::{Event, Rejected, Request as EngineRequest, TokenLogprob, LATENCY_BUCKETS};
use modu_core::engine::{FinishReason, GenerateParams, SamplingParams};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::error::ApiError;
use crate::request::{self, Common, Prompt};
use crate::{security, AppState, ModelEntry};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(|| async { ApiError::invalid("", "No such endpoint.").status(StatusCode::NOT_FOUND).code("not_found") })
        .layer(middleware::from_fn_with_state(state.clone(), security::guard))
        .with_state(state)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{prefix}-{:016x}{:04x}", t, N.fetch_add(1, Ordering::Relaxed) & 0xffff)
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.models.values().all(|m| m.scheduler.is_alive()) {
        Json(json!({"status": "ok"})).into_response()
    } else {
        ApiError::engine_down().into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    use std::fmt::Write;
    let mut out = String::new();
    let counters = [
        ("modu_requests_total", "counter", "Requests accepted into the queue."),
        ("modu_requests_rejected_total", "counter", "Requests refused because the queue was full."),
        ("modu_prompt_tokens_total", "counter", "Prompt tokens admitted."),
        ("modu_generated_tokens_total", "counter", "Tokens generated."),
        ("modu_queue_depth", "gauge", "Requests waiting for a slot."),
        ("modu_running_sequences", "gauge", "Sequences in the running batch."),
        ("modu_engine_steps_total", "counter", "Batched forward passes."),
    ];
    for (name, kind, help) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (id, m) in &s.models {
            let mt = &m.scheduler.metrics;
            let v = match name {
                "modu_requests_total" => mt.requests.load(Ordering::Relaxed),
                "modu_requests_rejected_total" => mt.rejected.load(Ordering::Relaxed),
                "modu_prompt_tokens_total" => mt.prompt_tokens.load(Ordering::Relaxed),
                "modu_generated_tokens_total" => mt.generated_tokens.load(Ordering::Relaxed),
                "modu_queue_depth" => m.scheduler.waiting(),
                "modu_running_sequences" => mt.running.load(Ordering::Relaxed),
                _ => mt.steps.load(Ordering::Relaxed),
            };
            let _ = writeln!(out, "{name}{{model=\"{id}\"}} {v}");
        }
    }
    for (name, help) in [("modu_ttft_seconds", "Time to first token."), ("modu_inter_token_seconds", "Time between tokens of a sequence.")] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (id, m) in &s.models {
            let h = if name == "modu_ttft_seconds" { &m.scheduler.metrics.ttft } else { &m.scheduler.metrics.inter_token };
            let (buckets, count, sum) = h.snapshot();
            for (b, c) in LATENCY_BUCKETS.iter().zip(buckets) {
                let _ = writeln!(out, "{name}_bucket{{model=\"{id}\",le=\"{b}\"}} {c}");
            }
            let _ = writeln!(out, "{name}_bucket{{model=\"{id}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{model=\"{id}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{model=\"{id}\"}} {count}");
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn model_json(m: &ModelEntry) -> Value {
    json!({"id": m.id, "object": "model", "created": m.created, "owned_by": "modu"})
}

async fn list_models(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": s.models.values().map(|m| model_json(m)).collect::<Vec<_>>()}))
}

async fn get_model(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match s.models.get(&id) {
        Some(m) => Json(model_json(m)).into_response(),
        None => ApiError::model_not_found(&id).into_response(),
    }
}

/// Reads a JSON body within the limit; the wrong content type or an encoded body is refused.
async fn read_body(s: &AppState, headers: &HeaderMap, body: Body) -> Result<serde_json::Map<String, Value>, ApiError> {
    let limit = s.config.max_body_bytes;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(ApiError::invalid("", format!("Content-Type must be application/json, got '{ct}'")).status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    if let Some(enc) = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(ApiError::invalid("", format!("Content-Encoding '{enc}' is not accepted; send the body uncompressed")).status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
    }
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()) {
        if len > limit {
            return Err(ApiError::too_large(limit));
        }
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::too_large(limit))?;
    request::parse_body(&bytes)
}

fn find_model<'a>(s: &'a AppState, o: &serde_json::Map<String, Value>) -> Result<&'a Arc<ModelEntry>, ApiError> {
    let name = match o.get("model") {
        Some(Value::String(n)) => n,
        Some(v) if !v.is_null() => return Err(ApiError::invalid("model", "'model' must be a string")),
        _ => return Err(ApiError::invalid("model", "'model' is required")),
    };
    s.models.get(name).ok_or_else(|| ApiError::model_not_found(name))
}

fn engine_params(c: &Common, max_tokens: usize, choice: usize) -> GenerateParams {
    let seed = c.seed.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
    GenerateParams {
        max_tokens,
        sampling: SamplingParams {
            temperature: c.temperature,
            top_k: c.top_k,
            top_p: c.top_p,
            min_p: c.min_p,
            repeat_penalty: c.repeat_penalty,
            repeat_last_n: 64,
            presence_penalty: c.presence_penalty,
            frequency_penalty: c.frequency_penalty,
            seed: seed.wrapping_add(choice as u64),
        },
        stop: c.stop.clone(),
        stop_at_eog: true,
    }
}

/// Checks the context, submits `n` sequences and returns one merged event stream.
/// One grammar per choice for `response_format`, compiled before anything is queued so that a
/// bad schema is a 400 (none for plain text).
fn constraints(m: &ModelEntry, format: &request::ResponseFormat, n: usize) -> Result<Vec<Constraint>, ApiError> {
    use request::ResponseFormat;
    if *format == ResponseFormat::Text {
        return Ok(Vec::new());
    }
    let compiler = m.constraints.as_ref().ok_or_else(|| {
        ApiError::invalid("response_format", format!("The model `{}` cannot use response_format: its vocabulary has no end-of-generation token.", m.id))
    })?;
    (0..n)
        .map(|_| match format {
            ResponseFormat::JsonSchema(schema) => {
                compiler.json_schema(schema).map_err(|e| ApiError::invalid("response_format.json_schema.schema", e))
            }
            _ => compiler.json_object().map_err(|e| ApiError::invalid("response_format", e)),
        })
        .collect()
}

fn submit(
    m: &ModelEntry,
    c: &Common,
    prompt: Vec<u32>,
    param: &str,
    mut constraints: Vec<Constraint>,
) -> Result<UnboundedReceiver<(usize, Event)>, ApiError> {
    let ctx = m.scheduler.context_length;
    let room = ctx.saturating_sub(prompt.len());
    let max_tokens = c.max_tokens.unwrap_or(room);
    if prompt.len() >= ctx || prompt.len() + max_tokens > ctx {
        return Err(ApiError::invalid(
            param,
            format!(
                "This model's maximum context length is {ctx} tokens. However, you requested {} tokens ({} in the {param}, {max_tokens} for the completion). Please reduce the length of the {param} or the completion.",
                prompt.len() + max_tokens,
                prompt.len()
            ),
        )
        .code("context_length_exceeded"));
    }
    let (tx, rx) = unbounded_channel();
    for i in 0..c.n {
        let (etx, mut erx) = unbounded_channel();
        let constraint = if constraints.is_empty() { None } else { Some(constraints.remove(0)) };
        let req = EngineRequest {
            prompt: prompt.clone(),
            params: engine_params(c, max_tokens, i),
            logprobs: c.logprobs,
            logit_bias: c.logit_bias.clone(),
            constraint,
            events: etx,
        };
        match m.scheduler.submit(req) {
            Ok(()) => {}
            Err(Rejected::QueueFull) => return Err(ApiError::overloaded()),
            Err(Rejected::EngineDown) => return Err(ApiError::engine_down()),
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = erx.recv().await {
                if tx.send((i, ev)).is_err() {
                    break; // the client is gone: dropping erx cancels the sequence
                }
            }
        });
    }
    Ok(rx)
}

fn token_str(m: &ModelEntry, id: u32) -> (String, Vec<u8>) {
    let b = m.scheduler.tokenizer.token_bytes(id).to_vec();
    (String::from_utf8_lossy(&b).into_owned(), b)
}

fn chat_logprob(m: &ModelEntry, lp: &TokenLogprob) -> Value {
    let entry = |id: u32, l: f32| {
        let (t, b) = token_str(m, id);
        json!({"token": t, "logprob": l, "bytes": b})
    };
    let mut e = entry(lp.id, lp.logprob);
    e["top_logprobs"] = Value::Array(lp.top.iter().map(|&(id, l)| entry(id, l)).collect());
    e
}

fn finish_str(f: FinishReason, tool_calls: bool) -> &'static str {
    match f {
        _ if tool_calls => "tool_calls",
        FinishReason::Length => "length",
        _ => "stop",
    }
}

fn tool_call_json(c: &outparse::ToolCall, k: usize) -> Value {
    json!({"id": format!("call_{}", new_id("").trim_start_matches('-')), "type": "function", "index": k,
           "function": {"name": c.name, "arguments": c.arguments.to_string()}})
}

#[derive(Default)]
struct ChoiceOut {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<FinishReason>,
    completion_tokens: usize,
}

async fn collect(mut rx: UnboundedReceiver<(usize, Event)>, n: usize) -> Result<(Vec<ChoiceOut>, usize), ApiError> {
    let mut outs: Vec<ChoiceOut> = (0..n).map(|_| ChoiceOut::default()).collect();
    let mut prompt_tokens = 0;
    let mut done = 0;
    while let Some((i, ev)) = rx.recv().await {
        match ev {
            Event::Token { text, logprob, .. } => {
                outs[i].text.push_str(&text);
                if let Some(l) = logprob {
                    outs[i].logprobs.push(l);
                }
            }
            Event::Done { text, finish, prompt_tokens: p, completion_tokens } => {
                outs[i].text.push_str(&text);
                outs[i].finish = Some(finish);
                outs[i].completion_tokens = completion_tokens;
                prompt_tokens = p;
                done += 1;
                if done == n {
                    break;
                }
            }
            Event::Error(e) => return Err(ApiError::internal(e)),
        }
    }
    if done < n {
        return Err(ApiError::internal("the engine stopped before the request finished"));
    }
    Ok((outs, prompt_tokens))
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match chat_inner(s, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(s: Arc<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let o = read_body(&s, &headers, body).await?;
    let m = find_model(&s, &o)?.clone();
    let c = request::common(&o, m.vocab_size, s.config.max_n, true)?;
    let messages = request::messages(&o)?;
    let tools = request::tools(&o)?;
    let format = request::response_format(&o)?;
    let mut opts = RenderOptions { add_generation_prompt: true, ..Default::default() };
    match o.get("chat_template_kwargs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(k)) => {
            for (key, v) in k {
                if key == "enable_thinking" {
                    opts.enable_thinking = v.as_bool();
                } else {
                    opts.extra.insert(key.clone(), v.clone());
                }
            }
        }
        Some(_) => return Err(ApiError::invalid("chat_template_kwargs", "'chat_template_kwargs' must be an object")),
    }
    let template = m
        .template
        .as_ref()
        .ok_or_else(|| ApiError::invalid("model", format!("The model `{}` has no chat template; use /v1/completions.", m.id)))?;
    let prompt_text = template.render_json(&messages, tools.as_ref(), &opts).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let prompt = m.scheduler.tokenizer.encode(&prompt_text, false, true).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let fmt = OutputFormat::from_prompt(m.template_source.as_deref().unwrap_or(""), &prompt_text);
    let grammars = constraints(&m, &format, c.n)?;
    let rx = submit(&m, &c, prompt, "messages", grammars)?;
    let id = new_id("chatcmpl");
    let created = now();
    if !c.stream {
        let (outs, prompt_tokens) = collect(rx, c.n).await?;
        let total: usize = outs.iter().map(|o| o.completion_tokens).sum();
        let choices: Vec<Value> = outs
            .iter()
            .enumerate()
            .map(|(i, out)| {
                let p = outparse::parse(&out.text, fmt);
                let mut msg = json!({"role": "assistant", "content": p.content});
                if let Some(r) = &p.reasoning {
                    msg["reasoning_content"] = json!(r);
                }
                if !p.tool_calls.is_empty() {
                    msg["tool_calls"] = Value::Array(p.tool_calls.iter().enumerate().map(|(k, c)| {
                        let mut v = tool_call_json(c, k);
                        v.as_object_mut().map(|o| o.remove("index"));
                        v
                    }).collect());
                }
                let logprobs = c.logprobs.map(|_| json!({"content": out.logprobs.iter().map(|l| chat_logprob(&m, l)).collect::<Vec<_>>(), "refusal": null}));
                json!({"index": i, "message": msg, "logprobs": logprobs,
                       "finish_reason": finish_str(out.finish.unwrap_or(FinishReason::Stop), !p.tool_calls.is_empty())})
            })
            .collect();
        return Ok(Json(json!({"id": id, "object": "chat.completion", "created": created, "model": m.id,
                              "choices": choices, "usage": usage(prompt_tokens, total), "system_fingerprint": null}))
        .into_response());
    }

    // Streaming.
    let n = c.n;
    let include_usage = c.include_usage;
    let want_logprobs = c.logprobs.is_some();
    let model_id = m.id.clone();
    let base = move |choices: Value| -> Value {
        let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model_id,
                           "system_fingerprint": null, "choices": choices});
        if include_usage {
            v["usage"] = Value::Null;
        }
        v
    };
    let mut pending: VecDeque<Value> = (0..n).map(|i| base(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]))).collect();
    let mut parsers: Vec<StreamParser> = (0..n).map(|_| StreamParser::new(fmt)).collect();
    let mut calls: Vec<usize> = vec![0; n];
    let mut done = 0;
    let mut totals = (0usize, 0usize);
    let mut rx = rx;
    // A plain channel of ready SSE lines, filled by one task that owns the state.
    let (out_tx, out_rx) = unbounded_channel::<SseEvent>();
    tokio::spawn(async move {
        let send = |v: Value| out_tx.send(SseEvent::default().data(v.to_string())).is_ok();
        while let Some(v) = pending.pop_front() {
            if !send(v) {
                return;
            }
        }
        while let Some((i, ev)) = rx.recv().await {
            let (deltas, logprob, finish) = match ev {
                Event::Token { text, logprob, .. } => (parsers[i].push(&text), logprob, None),
                Event::Done { text, finish, prompt_tokens, completion_tokens } => {
                    let mut d = parsers[i].push(&text);
                    d.extend(parsers[i].finish());
                    totals.0 = prompt_tokens;
                    totals.1 += completion_tokens;
                    (d, None, Some(finish))
                }
                Event::Error(e) => {
                    let _ = out_tx.send(error_event(e));
                    return;
                }
            };
            let mut delta = serde_json::Map::new();
            for d in deltas {
                match d {
                    Delta::Content(t) => {
                        let e = delta.entry("content").or_insert(json!(""));
                        *e = json!(format!("{}{}", e.as_str().unwrap_or(""), t));
                    }
                    Delta::Reasoning(t) => {
                        let e = delta.entry("reasoning_content").or_insert(json!(""));
                        *e = json!(format!("{}{}", e.as_str().unwrap_or(""), t));
                    }
                    Delta::ToolCall(c) => {
                        let list = delta.entry("tool_calls").or_insert(json!([]));
                        if let Some(a) = list.as_array_mut() {
                            a.push(tool_call_json(&c, calls[i]));
                        }
                        calls[i] += 1;
                    }
                }
            }
            let lp = match &logprob {
                Some(l) if want_logprobs => json!({"content": [chat_logprob(&m, l)], "refusal": null}),
                _ => Value::Null,
            };
            if !delta.is_empty() || !lp.is_null() {
                if !send(base(json!([{"index": i, "delta": Value::Object(delta), "logprobs": lp, "finish_reason": null}]))) {
                    return;
                }
            }
            if let Some(f) = finish {
                if !send(base(json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": finish_str(f, calls[i] > 0)}]))) {
                    return;
                }
                done += 1;
                if done == n {
                    break;
                }
            }
        }
        if done < n {
            let _ = out_tx.send(error_event("the engine stopped before the request finished"));
            return;
        }
        if include_usage {
            let mut v = base(json!([]));
            v["usage"] = usage(totals.0, totals.1);
            send(v);
        }
        let _ = out_tx.send(SseEvent::default().data("[DONE]"));
    });
    Ok(sse(out_rx))
}

/// A mid-stream failure as the SDK expects it: a data line holding an OpenAI error object.
fn error_event(message: impl Into<String>) -> SseEvent {
    SseEvent::default().data(ApiError::internal(message).body().to_string())
}

fn sse(rx: UnboundedReceiver<SseEvent>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, std::convert::Infallible>(e), rx)) });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match completions_inner(s, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn completion_logprobs(m: &ModelEntry, lps: &[TokenLogprob], start_offset: usize) -> Value {
    let mut offset = start_offset;
    let mut tokens = Vec::new();
    let mut token_lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for l in lps {
        let (t, _) = token_str(m, l.id);
        offsets.push(offset);
        offset += t.len();
        tokens.push(t);
        token_lps.push(l.logprob);
        let mut top = serde_json::Map::new();
        for &(id, lp) in &l.top {
            top.insert(token_str(m, id).0, json!(lp));
        }
        tops.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets})
}

async fn completions_inner(s: Arc<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let o = read_body(&s, &headers, body).await?;
    let m = find_model(&s, &o)?.clone();
    let c = request::common(&o, m.vocab_size, s.config.max_n, false)?;
    request::unsupported_completion_fields(&o)?;
    // Not in OpenAI's legacy API, but vLLM accepts it here too.
    let format = request::response_format(&o)?;
    let tok = &m.scheduler.tokenizer;
    let prompt = match request::prompt(&o, m.vocab_size)? {
        Prompt::Text(t) => tok.encode(&t, true, false).map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
        Prompt::Ids(ids) => ids,
    };
    let grammars = constraints(&m, &format, c.n)?;
    let rx = submit(&m, &c, prompt, "prompt", grammars)?;
    let id = new_id("cmpl");
    let created = now();
    if !c.stream {
        let (outs, prompt_tokens) = collect(rx, c.n).await?;
        let total: usize = outs.iter().map(|o| o.completion_tokens).sum();
        let choices: Vec<Value> = outs
            .iter()
            .enumerate()
            .map(|(i, out)| {
                let lp = c.logprobs.map(|_| completion_logprobs(&m, &out.logprobs, 0));
                json!({"index": i, "text": out.text, "logprobs": lp, "finish_reason": finish_str(out.finish.unwrap_or(FinishReason::Stop), false)})
            })
            .collect();
        return Ok(Json(json!({"id": id, "object": "text_completion", "created": created, "model": m.id,
                              "choices": choices, "usage": usage(prompt_tokens, total), "system_fingerprint": null}))
        .into_response());
    }
    let n = c.n;
    let include_usage = c.include_usage;
    let want_logprobs = c.logprobs.is_some();
    let (out_tx, out_rx) = unbounded_channel::<SseEvent>();
    let mut rx = rx;
    tokio::spawn(async move {
        let base = |choices: Value| {
            let mut v = json!({"id": id, "object": "text_completion", "created": created, "model": m.id, "system_fingerprint": null, "choices": choices});
            if include_usage {
                v["usage"] = Value::Null;
            }
            v
        };
        let send = |v: Value| out_tx.send(SseEvent::default().data(v.to_string())).is_ok();
        let mut done = 0;
        let mut totals = (0usize, 0usize);
        let mut offsets = vec![0usize; n];
        while let Some((i, ev)) = rx.recv().await {
            match ev {
                Event::Token { text, logprob, .. } => {
                    let lp = match &logprob {
                        Some(l) if want_logprobs => completion_logprobs(&m, std::slice::from_ref(l), offsets[i]),
                        _ => Value::Null,
                    };
                    offsets[i] += text.len();
                    if (!text.is_empty() || !lp.is_null()) && !send(base(json!([{"index": i, "text": text, "logprobs": lp, "finish_reason": null}]))) {
                        return;
                    }
                }
                Event::Done { text, finish, prompt_tokens, completion_tokens } => {
                    totals.0 = prompt_tokens;
                    totals.1 += completion_tokens;
                    if !send(base(json!([{"index": i, "text": text, "logprobs": null, "finish_reason": finish_str(finish, false)}]))) {
                        return;
                    }
                    done += 1;
                    if done == n {
                        break;
                    }
                }
                Event::Error(e) => {
                    let _ = out_tx.send(error_event(e));
                    return;
                }
            }
        }
        if done < n {
            let _ = out_tx.send(error_event("the engine stopped before the request finished"));
            return;
        }
        if include_usage {
            let mut v = base(json!([]));
            v["usage"] = usage(totals.0, totals.1);
            send(v);
        }
        let _ = out_tx.send(SseEvent::default().data("[DONE]"));
    });
    Ok(sse(out_rx))
}
