//! An HF `tokenizer.json` (byte-level BPE, as every EXAONE ships) restated as the
//! `tokenizer.ggml.*` metadata llama.cpp's converter writes, so one tokenizer implementation serves
//! GGUF files and HF directories, and `modu convert` carries the vocabulary into the GGUF.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;

use super::hf_config::HfConfig;
use crate::error::{Error, Result};

// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::BadPath { path: path.to_path_buf(), reason: format!("tokenizer: {}", msg.into()) }
}

/// llama.cpp's pre-tokenizer name, read from the shape of the HF pre-tokenizer: EXAONE 3.x
/// splits digits before the GPT-2 regex; 4.0 uses the GPT-2 regex alone; K-EXAONE and 4.5 use the
/// SuperBPE regex (with `\p{M}`).
fn pre_name(pre: &Json, cfg: &HfConfig) -> &'static str {
    let text = pre.to_string();
    if text.contains(r"\\p{M}") {
        "exaone-moe"
    } else if text.contains("Digits") || (text.contains(r"\\p{N}") && text.contains("Split")) {
        "exaone"
    } else if text.contains("ByteLevel") {
        "exaone4"
    } else {
        match cfg.model_type.as_str() {
            "exaone" => "exaone",
            "exaone4" => "exaone4",
            _ => "exaone-moe",
        }
    }
}

/// The `tokenizer.ggml.*` metadata of the tokenizer files in `dir` alone (tokenizer.json,
/// tokenizer_config.json), for a model of HF `model_type`.
pub fn metadata_of_dir(dir: &Path, model_type: &str) -> Result<HashMap<String, Value>> {
    let cfg = HfConfig {
        model_type: model_type.to_string(),
        arch: "exaone4",
        n_layers: 0,
        head_dim: 0,
        n_experts: 0,
        rope_freqs: None,
        tie_word_embeddings: false,
        bos_token_id: None,
        eos_token_id: None,
        pad_token_id: None,
        metadata: HashMap::new(),
    };
    let mut md = HashMap::new();
    add_tokenizer(dir, &cfg, &mut md)?;
    if !md.contains_key("tokenizer.ggml.model") {
        return Err(Error::NotFound { path: dir.join("tokenizer.json") });
    }
    Ok(md)
}

/// Adds `tokenizer.ggml.*` (and the chat template) to `md` when `dir` has a tokenizer.json.
pub fn add_tokenizer(dir: &Path, cfg: &HfConfig, md: &mut HashMap<String, Value>) -> Result<()> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io { path: path.clone(), source: e })?;
    let json: Json = serde_json::from_str(&text).map_err(|e| bad(&path, format!("not valid JSON: {e}")))?;
    let model = json.get("model").ok_or_else(|| bad(&path, "no 'model'"))?;
    let kind = model.get("type").and_then(|t| t.as_str()).unwrap_or("BPE");
    if kind != "BPE" {
        return Err(bad(&path, format!("model type '{kind}' is not supported (EXAONE tokenizers are byte-level BPE)")));
    }
    let vocab = model.get("vocab").and_then(|v| v.as_object()).ok_or_else(|| bad(&path, "no 'model.vocab' object"))?;

    let mut entries: Vec<(u32, String, i32)> = vocab
        .iter()
        .map(|(t, id)| {
            let id = id.as_u64().filter(|&i| i < (1 << 24)).ok_or_else(|| bad(&path, format!("token '{t}' has a bad id {id}")))?;
            Ok((id as u32, t.clone(), NORMAL))
        })
        .collect::<Result<_>>()?;
    for a in json.get("added_tokens").and_then(|a| a.as_array()).into_iter().flatten() {
        let id = a.get("id").and_then(|i| i.as_u64()).filter(|&i| i < (1 << 24));
        let content = a.get("content").and_then(|c| c.as_str());
        let (Some(id), Some(content)) = (id, content) else {
            return Err(bad(&path, format!("added token {a} lacks an id or content")));
        };
        let special = a.get("special").and_then(|s| s.as_bool()).unwrap_or(false);
        let ty = if special { CONTROL } else { USER_DEFINED };
        match entries.iter_mut().find(|e| e.0 == id as u32) {
            Some(e) => {
                e.1 = content.to_string();
                e.2 = ty;
            }
            None => entries.push((id as u32, content.to_string(), ty)),
        }
    }
    entries.sort_by_key(|e| e.0);
    entries.dedup_by_key(|e| e.0);
    // The embedding may have more rows than the tokenizer has tokens: pad as llama.cpp does.
    let n = md
        .get(&format!("{}.vocab_size", cfg.arch))
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
        .unwrap_or(0)
        .max(entries.last().map(|e| e.0 as usize + 1).unwrap_or(0));
    let mut tokens = vec![None; n];
    for (id, t, ty) in entries {
        tokens[id as usize] = Some((t, ty));
    }
    let (texts, types): (Vec<Value>, Vec<Value>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| match t {
            Some((t, ty)) => (Value::String(t), Value::I32(ty)),
            None => (Value::String(format!("[PAD{i}]")), Value::I32(UNUSED)),
        })
        .unzip();

    let merges: Vec<Value> = model
        .get("merges")
        .and_then(|m| m.as_array())
        .ok_or_else(|| bad(&path, "no 'model.merges' list"))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Array(p) if p.len() == 2 && p.iter().all(|x| x.is_string()) => {
                Ok(Value::String(format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or(""))))
            }
            other => Err(bad(&path, format!("merge {other} is neither \"a b\" nor [a, b]"))),
        })
        .collect::<Result<_>>()?;

    md.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    md.insert("tokenizer.ggml.pre".into(), Value::String(pre_name(json.get("pre_tokenizer").unwrap_or(&Json::Null), cfg).into()));
    md.insert("tokenizer.ggml.tokens".into(), Value::Array(texts));
    md.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
    md.insert("tokenizer.ggml.merges".into(), Value::Array(merges));

    let tc_path = dir.join("tokenizer_config.json");
    let tc: Json = match std::fs::read_to_string(&tc_path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| bad(&tc_path, format!("not valid JSON: {e}")))?,
        Err(_) => Json::Null,
    };
    // Special ids: config.json's, else the tokenizer_config's token strings looked up.
    let lookup = |key: &str| -> Option<u32> {
        let tok = tc.get(key)?;
        let s = tok.as_str().or_else(|| tok.get("content").and_then(|c| c.as_str()))?;
        vocab.get(s).and_then(|v| v.as_u64()).map(|v| v as u32).or_else(|| {
            json.get("added_tokens")?.as_array()?.iter().find(|a| a.get("content").and_then(|c| c.as_str()) == Some(s))?.get("id")?.as_u64().map(|v| v as u32)
        })
    };
    for (key, from_cfg, tc_key) in [
        ("bos_token_id", cfg.bos_token_id, "bos_token"),
        ("eos_token_id", cfg.eos_token_id, "eos_token"),
        ("padding_token_id", cfg.pad_token_id, "pad_token"),
        ("unknown_token_id", None, "unk_token"),
    ] {
        if let Some(id) = from_cfg.or_else(|| lookup(tc_key)) {
            md.insert(format!("tokenizer.ggml.{key}"), Value::U32(id));
        }
    }
    let add_bos = tc.get("add_bos_token").and_then(|b| b.as_bool()).unwrap_or(false);
    md.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos));
    md.insert("tokenizer.ggml.add_eos_token".into(), Value::Bool(false));

    let jinja = dir.join("chat_template.jinja");
    let template = if jinja.is_file() {
        Some(std::fs::read_to_string(&jinja).map_err(|e| Error::Io { path: jinja.clone(), source: e })?)
    } else {
        tc.get("chat_template").and_then(|t| t.as_str()).map(str::to_string)
    };
    if let Some(t) = template {
        md.insert("tokenizer.chat_template".into(), Value::String(t));
    }
    Ok(())
}
