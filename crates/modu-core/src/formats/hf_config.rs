//! A Hugging Face `config.json` of an EXAONE model, read in both published spellings, and
//! restated as the GGUF metadata llama.cpp's converter would write (spec §2, §4).
//!
//! Spellings accepted: the hub's original one (`num_layers`, `layer_norm_epsilon`, `rope_theta` +
//! `rope_scaling`) and the transformers-5 one (`num_hidden_layers`, `rms_norm_eps`,
//! `rope_parameters`). EXAONE 4.5 nests the text model under `text_config`.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::models::limits;

/// The architectures an HF directory may hold, by `model_type`.
pub const HF_MODEL_TYPES: &[&str] = &["exaone", "exaone4", "exaone4_5", "exaone4_5_text", "exaone_moe", "gemma3_text", "gemma3"];

/// What the rest of the loader needs from config.json.
#[derive(Debug, Clone)]
pub struct HfConfig {
    /// HF `model_type` of the checkpoint (top level).
    pub model_type: String,
    /// GGUF `general.architecture`.
    pub arch: &'static str,
    pub n_layers: usize,
    pub head_dim: usize,
    pub n_experts: usize,
    /// llama.cpp's `rope_freqs` (per-frequency divisors) when llama3 scaling is configured.
    pub rope_freqs: Option<Vec<f32>>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    pub metadata: HashMap<String, Value>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Metadata(format!("config.json: {}", msg.into()))
}

/// Looks a field up under any of its spellings.
struct Fields<'a> {
    obj: &'a serde_json::Map<String, Json>,
    /// Fallback object (EXAONE 4.5: the top level under `text_config`).
    outer: Option<&'a serde_json::Map<String, Json>>,
}

impl<'a> Fields<'a> {
    fn find(&self, keys: &[&str]) -> Option<(&'a str, &'a Json)> {
        for src in std::iter::once(self.obj).chain(self.outer) {
            for k in keys {
                if let Some((name, v)) = src.get_key_value(*k) {
                    if !v.is_null() {
                        return Some((name.as_str(), v));
                    }
                }
            }
        }
        None
    }

    fn usize_opt(&self, keys: &[&str], max: usize) -> Result<Option<usize>> {
        let Some((k, v)) = self.find(keys) else { return Ok(None) };
        let n = v.as_u64().ok_or_else(|| bad(format!("'{k}' must be a non-negative integer, found {v}")))? as usize;
        if n == 0 || n > max {
            return Err(bad(format!("'{k}' = {n} is out of range (1..={max})")));
        }
        Ok(Some(n))
    }

    fn usize(&self, keys: &[&str], max: usize) -> Result<usize> {
        self.usize_opt(keys, max)?.ok_or_else(|| bad(format!("missing '{}'", keys[0])))
    }

    fn f64_opt(&self, keys: &[&str]) -> Result<Option<f64>> {
        let Some((k, v)) = self.find(keys) else { return Ok(None) };
        let x = v.as_f64().ok_or_else(|| bad(format!("'{k}' must be a number, found {v}")))?;
        if !x.is_finite() || x <= 0.0 {
            return Err(bad(format!("'{k}' = {x} must be a positive finite number")));
        }
        Ok(Some(x))
    }

    fn bool_or(&self, keys: &[&str], default: bool) -> Result<bool> {
        match self.find(keys) {
            None => Ok(default),
            Some((k, v)) => v.as_bool().ok_or_else(|| bad(format!("'{k}' must be true or false, found {v}"))),
        }
    }

    fn token_id(&self, key: &str) -> Result<Option<u32>> {
        match self.find(&[key]) {
            None => Ok(None),
            // A list (several EOS ids): the first is the one GGUF keeps.
            Some((_, Json::Array(a))) => Ok(a.first().and_then(|v| v.as_u64()).map(|v| v as u32)),
            Some((k, v)) => v
                .as_u64()
                .filter(|&n| n <= u32::MAX as u64)
                .map(|n| Some(n as u32))
                .ok_or_else(|| bad(format!("'{k}' must be a token id, found {v}"))),
        }
    }
}

/// Parses config.json text. Python writes NaN and Infinity as bare words, which are not JSON.
pub fn parse_json(text: &str) -> Result<Json> {
    serde_json::from_str(text).map_err(|e| {
        let hint = if ["NaN", "Infinity"].iter().any(|w| text.contains(w)) {
            " (it holds NaN or Infinity, which no field may be)"
        } else {
            ""
        };
        bad(format!("not valid JSON: {e}{hint}"))
    })
}

impl HfConfig {
    pub fn from_json(root: &Json) -> Result<Self> {
        let top = root.as_object().ok_or_else(|| bad("the top level must be an object"))?;
        let model_type = top
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("missing 'model_type'"))?
            .to_string();
        let (arch, f) = match model_type.as_str() {
            "exaone" => ("exaone", Fields { obj: top, outer: None }),
            // EXAONE 4.5's text model saved on its own keeps its text model_type.
            "exaone4" | "exaone4_5_text" => ("exaone4", Fields { obj: top, outer: None }),
            "exaone_moe" => ("exaone-moe", Fields { obj: top, outer: None }),
            "exaone4_5" => {
                let text = top
                    .get("text_config")
                    .and_then(|v| v.as_object())
                    .ok_or_else(|| bad("exaone4_5 without a 'text_config' object"))?;
                ("exaone4", Fields { obj: text, outer: Some(top) })
            }
            "gemma3_text" => ("gemma3", Fields { obj: top, outer: None }),
            "gemma3" => {
                let text = top
                    .get("text_config")
                    .and_then(|v| v.as_object())
                    .ok_or_else(|| bad("gemma3 without a 'text_config' object"))?;
                ("gemma3", Fields { obj: text, outer: None })
            }
            other => {
                return Err(bad(format!(
                    "model_type '{other}' is not supported (modu reads HF directories of {})",
                    HF_MODEL_TYPES.join(", ")
                )))
            }
        };

        let hidden = f.usize(&["hidden_size"], limits::HIDDEN)?;
        let n_layers = f.usize(&["num_hidden_layers", "num_layers"], limits::LAYERS)?;
        let n_heads = f.usize(&["num_attention_heads"], limits::HEADS)?;
        let n_kv = f.usize_opt(&["num_key_value_heads"], n_heads)?.unwrap_or(n_heads);
        if n_heads % n_kv != 0 {
            return Err(bad(format!("{n_heads} attention heads are not a multiple of {n_kv} KV heads")));
        }
        let head_dim = f.usize_opt(&["head_dim"], limits::HEAD_DIM)?.unwrap_or(hidden / n_heads);
        if head_dim % 2 != 0 {
            return Err(bad(format!("head_dim {head_dim} is odd")));
        }
        let ffn = f.usize(&["intermediate_size"], limits::FFN)?;
        let vocab = f.usize(&["vocab_size"], 1 << 24)?;
        let context = f.usize_opt(&["max_position_embeddings"], limits::CONTEXT)?.unwrap_or(4096);
        let eps = f.f64_opt(&["rms_norm_eps", "layer_norm_epsilon"])?.unwrap_or(1e-5);
        let act = f.find(&["hidden_activation", "hidden_act", "activation_function"]).map(|(_, v)| v.as_str().unwrap_or("?")).unwrap_or("silu");
        let want = if arch == "gemma3" { "gelu_pytorch_tanh" } else { "silu" };
        if act != want {
            return Err(bad(format!("activation '{act}' is not supported ({arch} uses {want})")));
        }

        let (theta, rope_freqs) = if arch == "gemma3" {
            gemma3_rope(&f, head_dim)?
        } else {
            rope(&f, head_dim, if arch == "exaone" { 500_000.0 } else { 10_000.0 })?
        };

        let mut md: HashMap<String, Value> = HashMap::new();
        let key = |k: &str| format!("{arch}.{k}");
        md.insert("general.architecture".into(), Value::String(arch.into()));
        md.insert(key("context_length"), Value::U32(context as u32));
        md.insert(key("embedding_length"), Value::U32(hidden as u32));
        md.insert(key("block_count"), Value::U32(n_layers as u32));
        md.insert(key("feed_forward_length"), Value::U32(ffn as u32));
        md.insert(key("attention.head_count"), Value::U32(n_heads as u32));
        md.insert(key("attention.head_count_kv"), Value::U32(n_kv as u32));
        md.insert(key("attention.key_length"), Value::U32(head_dim as u32));
        md.insert(key("attention.value_length"), Value::U32(head_dim as u32));
        md.insert(key("attention.layer_norm_rms_epsilon"), Value::F32(eps as f32));
        md.insert(key("rope.freq_base"), Value::F32(theta as f32));
        md.insert(key("rope.dimension_count"), Value::U32(head_dim as u32));
        md.insert(key("vocab_size"), Value::U32(vocab as u32));

        if arch == "gemma3" {
            gemma3_checks(&f, n_layers, head_dim)?;
            let window = f.usize(&["sliding_window"], limits::CONTEXT)?;
            md.insert(key("attention.sliding_window"), Value::U32(window as u32));
        } else if arch != "exaone" {
            if let Some(sliding) = sliding_layers(&f, n_layers)? {
                let window = f.usize(&["sliding_window"], limits::CONTEXT)?;
                md.insert(key("attention.sliding_window"), Value::U32(window as u32));
                md.insert(
                    key("attention.sliding_window_pattern"),
                    Value::Array(sliding.into_iter().map(Value::Bool).collect()),
                );
            }
        }

        let mut n_experts = 0;
        if arch == "exaone-moe" {
            n_experts = f.usize(&["num_experts", "n_routed_experts"], 1 << 16)?;
            let used = f.usize(&["num_experts_per_tok"], n_experts)?;
            let expert_ffn = f.usize(&["moe_intermediate_size"], limits::FFN)?;
            let shared = f.usize_opt(&["num_shared_experts", "n_shared_experts"], 64)?.unwrap_or(0);
            let n_group = f.usize_opt(&["n_group"], n_experts)?.unwrap_or(1);
            let topk_group = f.usize_opt(&["topk_group"], n_group)?.unwrap_or(1);
            if n_experts % n_group != 0 {
                return Err(bad(format!("num_experts {n_experts} is not a multiple of n_group {n_group}")));
            }
            let scale = f.f64_opt(&["routed_scaling_factor"])?.unwrap_or(1.0);
            let norm = f.bool_or(&["norm_topk_prob"], true)?;
            if let Some((k, v)) = f.find(&["scoring_func"]) {
                if v.as_str() != Some("sigmoid") {
                    return Err(bad(format!("'{k}' = {v}: only the sigmoid router is supported")));
                }
            }
            let dense = leading_dense_layers(&f, n_layers)?;
            md.insert(key("expert_count"), Value::U32(n_experts as u32));
            md.insert(key("expert_used_count"), Value::U32(used as u32));
            md.insert(key("expert_feed_forward_length"), Value::U32(expert_ffn as u32));
            md.insert(key("expert_shared_count"), Value::U32(shared as u32));
            md.insert(key("expert_shared_feed_forward_length"), Value::U32((expert_ffn * shared) as u32));
            md.insert(key("expert_weights_scale"), Value::F32(scale as f32));
            md.insert(key("expert_weights_norm"), Value::Bool(norm));
            md.insert(key("expert_gating_func"), Value::U32(2));
            md.insert(key("expert_group_count"), Value::U32(n_group as u32));
            md.insert(key("expert_group_used_count"), Value::U32(topk_group as u32));
            md.insert(key("leading_dense_block_count"), Value::U32(dense as u32));
            md.insert(key("nextn_predict_layers"), Value::U32(0));
        }

        Ok(Self {
            model_type,
            arch,
            n_layers,
            head_dim,
            n_experts,
            rope_freqs,
            tie_word_embeddings: f.bool_or(&["tie_word_embeddings"], arch == "exaone" || arch == "gemma3")?,
            bos_token_id: f.token_id("bos_token_id")?,
            eos_token_id: f.token_id("eos_token_id")?,
            pad_token_id: f.token_id("pad_token_id")?,
            metadata: md,
        })
    }
}

/// RoPE base and, for llama3 scaling, llama.cpp's per-frequency divisors. Both spellings:
/// `rope_parameters` {rope_type, rope_theta, ...} or `rope_theta` + `rope_scaling`.
fn rope(f: &Fields, head_dim: usize, default_theta: f64) -> Result<(f64, Option<Vec<f32>>)> {
    let params = f.find(&["rope_parameters", "rope_scaling"]).map(|(k, v)| (k, v));
    let params = match params {
        None => None,
        Some((k, Json::Object(m))) => Some((k, m)),
        Some((k, v)) => return Err(bad(format!("'{k}' must be an object or null, found {v}"))),
    };
    let inner = params.map(|(_, m)| Fields { obj: m, outer: None });
    let theta = match inner.as_ref().map(|i| i.f64_opt(&["rope_theta"])).transpose()?.flatten() {
        Some(t) => t,
        None => f.f64_opt(&["rope_theta"])?.unwrap_or(default_theta),
    };
    let Some((pk, m)) = params else { return Ok((theta, None)) };
    let kind = m.get("rope_type").or_else(|| m.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
    match kind {
        "default" => Ok((theta, None)),
        "llama3" => {
            let i = inner.as_ref().expect("params present");
            let need = |k: &str| -> Result<f64> {
                i.f64_opt(&[k])?.ok_or_else(|| bad(format!("'{pk}' (llama3) lacks '{k}'")))
            };
            let factor = need("factor")?;
            let lo = need("low_freq_factor")?;
            let hi = need("high_freq_factor")?;
            let orig = need("original_max_position_embeddings")?;
            if hi <= lo {
                return Err(bad(format!("'{pk}': high_freq_factor {hi} must exceed low_freq_factor {lo}")));
            }
            Ok((theta, Some(llama3_divisors(theta, head_dim, factor, lo, hi, orig))))
        }
        other => Err(bad(format!("'{pk}': RoPE type '{other}' is not supported (default and llama3 are)"))),
    }
}

/// Gemma 3's RoPE: the global layers' base (`rope_parameters.full_attention.rope_theta`, or
/// `rope_theta`); the sliding layers' base must be the 10 000 modu's gemma3 model uses.
fn gemma3_rope(f: &Fields, _head_dim: usize) -> Result<(f64, Option<Vec<f32>>)> {
    let (global, local) = match f.find(&["rope_parameters"]) {
        Some((k, Json::Object(m))) if m.contains_key("full_attention") || m.contains_key("sliding_attention") => {
            let theta = |lt: &str| -> Result<Option<f64>> {
                let Some(p) = m.get(lt) else { return Ok(None) };
                let p = p.as_object().ok_or_else(|| bad(format!("'{k}.{lt}' must be an object")))?;
                let kind = p.get("rope_type").and_then(|v| v.as_str()).unwrap_or("default");
                if kind != "default" {
                    return Err(bad(format!("'{k}.{lt}': RoPE type '{kind}' is not supported for gemma3 (default is)")));
                }
                Fields { obj: p, outer: None }.f64_opt(&["rope_theta"])
            };
            (theta("full_attention")?, theta("sliding_attention")?)
        }
        _ => {
            if let Some((k, v)) = f.find(&["rope_scaling"]) {
                return Err(bad(format!("'{k}' = {v}: RoPE scaling is not supported for gemma3")));
            }
            (f.f64_opt(&["rope_theta"])?, f.f64_opt(&["rope_local_base_freq"])?)
        }
    };
    let local = local.unwrap_or(10_000.0);
    if local != crate::models::gemma3::LOCAL_ROPE_THETA as f64 {
        return Err(bad(format!("sliding layers with RoPE base {local} are not supported (gemma3 uses 10000)")));
    }
    Ok((global.unwrap_or(1_000_000.0), None))
}

/// What modu's gemma3 model assumes: five sliding layers to one global, attention scaled by
/// 1/sqrt(head_dim), no soft-capping.
fn gemma3_checks(f: &Fields, n_layers: usize, head_dim: usize) -> Result<()> {
    if let Some(sliding) = sliding_layers(f, n_layers)? {
        let expected: Vec<bool> = (0..n_layers).map(|i| i % 6 < 5).collect();
        if sliding != expected {
            return Err(bad("gemma3 layer_types other than five sliding layers to one global are not supported"));
        }
    }
    if let Some(s) = f.f64_opt(&["query_pre_attn_scalar"])? {
        if s != head_dim as f64 {
            return Err(bad(format!("query_pre_attn_scalar {s} differs from head_dim {head_dim}, which modu's gemma3 model assumes")));
        }
    }
    for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if let Some((k, v)) = f.find(&[k]) {
            return Err(bad(format!("'{k}' = {v}: soft-capping is not supported")));
        }
    }
    Ok(())
}

/// llama.cpp's `rope_freqs` for llama3 scaling: the divisor of each inverse frequency (spec §2.0).
pub fn llama3_divisors(theta: f64, head_dim: usize, factor: f64, lo: f64, hi: f64, orig: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let wavelen = 2.0 * std::f64::consts::PI * theta.powf(2.0 * i as f64 / head_dim as f64);
            let div = if wavelen < orig / hi {
                1.0
            } else if wavelen > orig / lo {
                factor
            } else {
                let s = (orig / wavelen - lo) / (hi - lo);
                1.0 / ((1.0 - s) / factor + s)
            };
            div as f32
        })
        .collect()
}

/// One flag per layer (true = sliding window), or None when no window is configured
/// (then every layer is global and every layer gets RoPE; spec §0 trap 1).
fn sliding_layers(f: &Fields, n_layers: usize) -> Result<Option<Vec<bool>>> {
    if f.find(&["sliding_window"]).is_none() {
        return Ok(None);
    }
    if let Some((k, v)) = f.find(&["layer_types"]) {
        let list = v.as_array().ok_or_else(|| bad(format!("'{k}' must be a list")))?;
        if list.len() != n_layers {
            return Err(bad(format!("'{k}' has {} entries for {n_layers} layers", list.len())));
        }
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(bad(format!("'{k}' entry {t} is neither sliding_attention nor full_attention"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some);
    }
    match f.find(&["sliding_window_pattern"]) {
        Some((k, Json::String(p))) => {
            let chars: Vec<char> = p.chars().collect();
            if chars.is_empty() || chars.iter().any(|c| !matches!(c, 'L' | 'G')) {
                return Err(bad(format!("'{k}' = \"{p}\" must be a non-empty string of L and G")));
            }
            Ok(Some((0..n_layers).map(|i| chars[i % chars.len()] == 'L').collect()))
        }
        Some((k, v)) => {
            let n = v.as_u64().filter(|n| *n > 0).ok_or_else(|| bad(format!("'{k}' must be a string like \"LLLG\" or a positive integer, found {v}")))? as usize;
            Ok(Some((0..n_layers).map(|i| (i + 1) % n != 0).collect()))
        }
        // A window with neither: transformers makes every layer sliding.
        None => Ok(Some(vec![true; n_layers])),
    }
}

/// How many leading layers of a MoE model are dense. GGUF can only say "the first k", so any
/// other layout is refused rather than run wrongly.
fn leading_dense_layers(f: &Fields, n_layers: usize) -> Result<usize> {
    let dense: Vec<bool> = if let Some((k, v)) = f.find(&["mlp_layer_types"]) {
        let list = v.as_array().ok_or_else(|| bad(format!("'{k}' must be a list")))?;
        if list.len() != n_layers {
            return Err(bad(format!("'{k}' has {} entries for {n_layers} layers", list.len())));
        }
        list.iter()
            .map(|t| match t.as_str() {
                Some("dense") => Ok(true),
                Some("sparse") => Ok(false),
                _ => Err(bad(format!("'{k}' entry {t} is neither dense nor sparse"))),
            })
            .collect::<Result<_>>()?
    } else if let Some((k, v)) = f.find(&["is_moe_layer"]) {
        let list = v.as_array().ok_or_else(|| bad(format!("'{k}' must be a list")))?;
        list.iter().map(|b| b.as_bool().map(|m| !m).ok_or_else(|| bad(format!("'{k}' must hold booleans")))).collect::<Result<_>>()?
    } else {
        let k = f.usize_opt(&["first_k_dense_replace", "first_last_k_dense_replace"], n_layers)?.unwrap_or(1);
        (0..n_layers).map(|i| i < k).collect()
    };
    let k = dense.iter().take_while(|d| **d).count();
    if dense[k..].iter().any(|d| *d) {
        return Err(bad("dense MLP layers after the first sparse one are not supported (GGUF has only leading dense blocks)"));
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(d: &[f32], factor: f32) -> (usize, usize, usize, f64) {
        let kept = d.iter().filter(|&&x| x == 1.0).count();
        let scaled = d.iter().filter(|&&x| x == factor).count();
        let theta: f64 = 1e6;
        let hd = d.len() * 2;
        let sum: f64 = d
            .iter()
            .enumerate()
            .map(|(i, &div)| 1.0 / theta.powf(2.0 * i as f64 / hd as f64) / div as f64)
            .sum();
        (kept, scaled, d.len() - kept - scaled, sum)
    }

    /// Spec §7.4(c): inverse-frequency checksums for theta 1e6, original context 8192, low 1, high 4.
    #[test]
    fn llama3_inverse_frequency_checksums() {
        for (hd, factor, want) in [
            (64, 16.0, (14, 15, 3, 2.847893)),
            (128, 16.0, (27, 30, 7, 5.142122)),
            (128, 8.0, (27, 30, 7, 5.142677)),
            (80, 8.0, (17, 19, 4, 3.419143)),
        ] {
            let d = llama3_divisors(1e6, hd, factor, 1.0, 4.0, 8192.0);
            let (kept, scaled, mid, sum) = count(&d, factor as f32);
            assert_eq!((kept, scaled, mid), (want.0, want.1, want.2), "head_dim {hd} factor {factor}");
            assert!((sum - want.3).abs() < 5e-7, "head_dim {hd} factor {factor}: sum {sum} vs {}", want.3);
        }
    }

    fn cfg(extra: serde_json::Value) -> Result<HfConfig> {
        let mut base = serde_json::json!({
            "model_type": "exaone4", "hidden_size": 64, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "intermediate_size": 128, "vocab_size": 512
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        HfConfig::from_json(&base)
    }

    fn pattern(c: &HfConfig) -> Option<Vec<bool>> {
        match c.metadata.get("exaone4.attention.sliding_window_pattern") {
            Some(Value::Array(a)) => Some(a.iter().map(|v| matches!(v, Value::Bool(true))).collect()),
            _ => None,
        }
    }

    #[test]
    fn layer_types_from_every_spelling() {
        let lllg = Some(vec![true, true, true, false]);
        assert_eq!(pattern(&cfg(serde_json::json!({"sliding_window": 8, "sliding_window_pattern": "LLLG"})).unwrap()), lllg);
        assert_eq!(pattern(&cfg(serde_json::json!({"sliding_window": 8, "sliding_window_pattern": 4})).unwrap()), lllg);
        assert_eq!(
            pattern(&cfg(serde_json::json!({"sliding_window": 8, "layer_types":
                ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]})).unwrap()),
            Some(vec![true, false, true, false])
        );
        // No window: no pattern at all (every layer global, with RoPE).
        assert_eq!(pattern(&cfg(serde_json::json!({"sliding_window": null, "sliding_window_pattern": "LLLG"})).unwrap()), None);
        assert!(cfg(serde_json::json!({"sliding_window": 8, "sliding_window_pattern": "LXG"})).is_err());
        assert!(cfg(serde_json::json!({"sliding_window": 8, "layer_types": ["full_attention"]})).is_err());
    }

    #[test]
    fn bad_rope_factors_are_refused() {
        let llama3 = |factor: serde_json::Value| {
            cfg(serde_json::json!({"rope_theta": 1e6, "rope_scaling": {"rope_type": "llama3", "factor": factor,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}))
        };
        assert!(llama3(serde_json::json!(8.0)).is_ok());
        let e = llama3(serde_json::json!(0.0)).unwrap_err().to_string();
        assert!(e.contains("factor") && e.contains("positive"), "{e}");
        let e = parse_json(r#"{"rope_scaling": {"factor": NaN}}"#).unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
        let e = cfg(serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})).unwrap_err().to_string();
        assert!(e.contains("yarn"), "{e}");
    }

    #[test]
    fn unknown_model_type_is_named() {
        let e = HfConfig::from_json(&serde_json::json!({"model_type": "mamba"})).unwrap_err().to_string();
        assert!(e.contains("mamba") && e.contains("exaone4"), "{e}");
    }
}
