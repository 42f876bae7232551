//! LoRA adapters in Hugging Face PEFT's layout: `adapter_config.json` plus
//! `adapter_model.safetensors` holding `base_model.model.<module>.lora_A.weight` [r, in] and
//! `.lora_B.weight` [out, r] for each adapted projection. Inside modu a projection is known by its
//! GGUF tensor name (`blk.3.attn_q.weight`); the HF module path is only the file's spelling.
//!
//! An adapted projection computes `W x + scale * B (A x)`, scale = alpha / r (alpha / sqrt(r) with
//! rsLoRA), as PEFT does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use serde_json::{json, Value as Json};

use crate::error::{Error, Result};
use crate::formats::checkpoint::Checkpoint;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// safetensors metadata key naming the base architecture (PEFT ignores it).
const ARCH_KEY: &str = "modu.architecture";

/// The projections LoRA can adapt, by the short module name PEFT's `target_modules` uses, with
/// their GGUF suffix. EXAONE 3.x spells the same projections differently in HF files.
const PROJECTIONS: &[(&str, &str, &str)] = &[
    // (HF module, EXAONE 3.x HF module, GGUF tensor suffix)
    ("self_attn.q_proj", "attn.attention.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn.attention.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn.attention.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn.attention.out_proj", "attn_output"),
    ("mlp.gate_proj", "mlp.c_fc_0", "ffn_gate"),
    ("mlp.up_proj", "mlp.c_fc_1", "ffn_up"),
    ("mlp.down_proj", "mlp.c_proj", "ffn_down"),
];

/// The architectures whose projections modu can adapt.
pub const TRAINABLE_ARCHITECTURES: &[&str] = &["gemma3", "exaone", "exaone4", "qwen3"];

/// Short module names of all seven projections, in `target_modules` spelling.
pub fn all_targets(arch: &str) -> Vec<String> {
    PROJECTIONS
        .iter()
        .map(|(hf, ex3, _)| {
            let m = if arch == "exaone" { ex3 } else { hf };
            m.rsplit('.').next().unwrap_or(m).to_string()
        })
        .collect()
}

/// The HF module path of a GGUF projection (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj`).
pub fn hf_module(arch: &str, gguf: &str) -> Option<String> {
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let suffix = suffix.strip_suffix(".weight")?;
    let (hf, ex3, _) = PROJECTIONS.iter().find(|(_, _, g)| *g == suffix)?;
    Some(if arch == "exaone" { format!("transformer.h.{layer}.{ex3}") } else { format!("model.layers.{layer}.{hf}") })
}

/// The GGUF projection an HF module path names, in either spelling, with or without PEFT's
/// `base_model.model.` prefix and a multimodal model's `language_model.`.
pub fn gguf_projection(module: &str) -> Option<String> {
    let m = module.strip_prefix("base_model.model.").unwrap_or(module);
    let m = m.strip_prefix("model.language_model.").map(|r| format!("model.{r}")).unwrap_or_else(|| m.to_string());
    let rest = m.strip_prefix("model.layers.").or_else(|| m.strip_prefix("transformer.h."))?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, _, g) = PROJECTIONS.iter().find(|(hf, ex3, _)| *hf == suffix || *ex3 == suffix)?;
    Some(format!("blk.{layer}.{g}.weight"))
}

/// The short name (`q_proj`) of a GGUF projection, as `target_modules` lists it.
fn short_name(arch: &str, gguf: &str) -> Option<String> {
    hf_module(arch, gguf).and_then(|m| m.rsplit('.').next().map(str::to_string))
}

/// Hyper-parameters of an adapter (PEFT's `LoraConfig`, the fields modu uses).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub use_rslora: bool,
    /// Short module names (`q_proj`, ...).
    pub targets: Vec<String>,
}

impl LoraConfig {
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 || self.r > 4096 {
            return Err(Error::Invalid(format!("LoRA rank must be between 1 and 4096, got {}", self.r)));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::Invalid(format!("LoRA alpha must be a positive finite number, got {}", self.alpha)));
        }
        if !self.dropout.is_finite() || !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Invalid(format!("LoRA dropout must be in [0, 1), got {}", self.dropout)));
        }
        if self.targets.is_empty() {
            return Err(Error::Invalid("no LoRA target modules".into()));
        }
        Ok(())
    }

    pub fn scale_for(&self, r: usize) -> f64 {
        if self.use_rslora {
            self.alpha / (r as f64).sqrt()
        } else {
            self.alpha / r as f64
        }
    }

    /// PEFT's adapter_config.json for these settings.
    pub fn to_peft_json(&self, base_model: &str) -> Json {
        json!({
            "alpha_pattern": {},
            "auto_mapping": null,
            "base_model_name_or_path": base_model,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layers_pattern": null,
            "layers_to_transform": null,
            // PEFT writes an integral alpha as an integer.
            "lora_alpha": if self.alpha.fract() == 0.0 && self.alpha < 1e15 { json!(self.alpha as i64) } else { json!(self.alpha) },
            "lora_dropout": self.dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": self.r,
            "rank_pattern": {},
            "revision": null,
            "target_modules": self.targets,
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": self.use_rslora,
        })
    }

    /// Reads PEFT's adapter_config.json, refusing what modu would otherwise apply wrongly.
    pub fn from_peft_json(v: &Json, path: &Path) -> Result<Self> {
        let bad = |m: String| Error::BadPath { path: path.to_path_buf(), reason: m };
        let o = v.as_object().ok_or_else(|| bad("must be a JSON object".into()))?;
        let peft_type = o.get("peft_type").and_then(|v| v.as_str()).unwrap_or("LORA");
        if peft_type != "LORA" {
            return Err(bad(format!("peft_type '{peft_type}' is not supported (only LORA)")));
        }
        let r = o.get("r").and_then(|v| v.as_u64()).ok_or_else(|| bad("'r' must be a positive integer".into()))? as usize;
        let alpha = match o.get("lora_alpha") {
            Some(v) => v.as_f64().ok_or_else(|| bad(format!("'lora_alpha' must be a number, found {v}")))?,
            None => 8.0,
        };
        let dropout = o.get("lora_dropout").and_then(|v| v.as_f64()).unwrap_or(0.0);
        let flag = |k: &str| o.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        for k in ["use_dora", "fan_in_fan_out"] {
            if flag(k) {
                return Err(bad(format!("'{k}: true' is not supported")));
            }
        }
        if let Some(b) = o.get("bias").and_then(|v| v.as_str()) {
            if b != "none" {
                return Err(bad(format!("bias '{b}' is not supported (only 'none')")));
            }
        }
        if o.get("modules_to_save").is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(bad("'modules_to_save' (fully trained extra modules) is not supported".into()));
        }
        if o.get("alpha_pattern").and_then(|v| v.as_object()).is_some_and(|m| !m.is_empty()) {
            return Err(bad("a per-module 'alpha_pattern' is not supported".into()));
        }
        let targets = match o.get("target_modules") {
            Some(Json::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Some(Json::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let cfg = Self { r, alpha, dropout, use_rslora: flag("use_rslora"), targets };
        if cfg.r == 0 || !cfg.alpha.is_finite() || cfg.alpha <= 0.0 {
            return Err(bad(format!("r = {} and lora_alpha = {} must both be positive", cfg.r, cfg.alpha)));
        }
        Ok(cfg)
    }
}

/// The trainable pair of one projection: A [r, in] and B [out, r].
pub struct LoraPair {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

impl LoraPair {
    /// `scale * B (A x)` for x [rows, in].
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let h = x.matmul(&self.a.as_tensor().t()?)?;
        Ok((h.matmul(&self.b.as_tensor().t()?)? * self.scale)?)
    }

    /// `scale * B A` [out, in], the change to the weight.
    pub fn weight_delta(&self) -> Result<Tensor> {
        Ok((self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale)?)
    }
}

/// An adapter: settings plus one pair per adapted projection, keyed by GGUF tensor name.
pub struct Adapter {
    pub config: LoraConfig,
    pub architecture: String,
    pub pairs: BTreeMap<String, LoraPair>,
}

/// Which GGUF projections of `base` the short names in `targets` select.
pub fn target_projections(base: &dyn Checkpoint, arch: &str, targets: &[String]) -> Result<Vec<String>> {
    let known = all_targets(arch);
    for t in targets {
        if !known.contains(t) {
            return Err(Error::Invalid(format!("unknown LoRA target '{t}' for {arch} (known: {})", known.join(", "))));
        }
    }
    let names: Vec<String> = base
        .tensor_names()
        .into_iter()
        .filter(|n| short_name(arch, n).is_some_and(|s| targets.contains(&s)))
        .collect();
    if names.is_empty() {
        return Err(Error::Invalid(format!("the base model has none of the LoRA targets {}", targets.join(", "))));
    }
    Ok(names)
}

/// Dims [out, in] of a projection of the base, checked to be a matrix.
fn base_dims(base: &dyn Checkpoint, gguf: &str) -> Result<(usize, usize)> {
    match base.tensor_dims(gguf) {
        Some(&[out, inp]) => Ok((out, inp)),
        Some(d) => Err(Error::Invalid(format!("'{gguf}' is not a matrix ({d:?})"))),
        None => Err(Error::Invalid(format!("the base model has no '{}'", base.source_name(gguf)))),
    }
}

impl Adapter {
    /// A fresh adapter as PEFT initialises one: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform
    /// with a = sqrt(5)), B = 0, so the adapted model starts equal to the base.
    pub fn new(base: &dyn Checkpoint, config: LoraConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let arch = base.architecture()?;
        if !TRAINABLE_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(Error::Invalid(format!(
                "LoRA training supports {}; this model is '{arch}'",
                TRAINABLE_ARCHITECTURES.join(", ")
            )));
        }
        let mut rng = SplitMix(seed);
        let mut pairs = BTreeMap::new();
        for name in target_projections(base, &arch, &config.targets)? {
            let (out, inp) = base_dims(base, &name)?;
            let bound = 1.0 / (inp as f64).sqrt();
            let a: Vec<f32> = (0..config.r * inp).map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32).collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (config.r, inp), device)?)?;
            let b = Var::from_tensor(&Tensor::zeros((out, config.r), DType::F32, device)?)?;
            pairs.insert(name, LoraPair { a, b, scale: config.scale_for(config.r) });
        }
        Ok(Self { config, architecture: arch, pairs })
    }

    pub fn vars(&self) -> Vec<(String, Var)> {
        self.pairs
            .iter()
            .flat_map(|(n, p)| [(format!("{n}.lora_a"), p.a.clone()), (format!("{n}.lora_b"), p.b.clone())])
            .collect()
    }

    pub fn n_params(&self) -> usize {
        self.pairs.values().map(|p| p.a.elem_count() + p.b.elem_count()).sum()
    }

    /// The PEFT tensor name of one half of a pair.
    pub fn peft_name(&self, gguf: &str, half: char) -> String {
        let module = hf_module(&self.architecture, gguf).unwrap_or_else(|| gguf.to_string());
        format!("base_model.model.{module}.lora_{half}.weight")
    }

    /// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors`, each through a
    /// temporary file renamed into place, so an interrupted save leaves the old files whole.
    pub fn save(&self, dir: &Path, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, p) in &self.pairs {
            tensors.insert(self.peft_name(name, 'A'), p.a.as_tensor().contiguous()?);
            tensors.insert(self.peft_name(name, 'B'), p.b.as_tensor().contiguous()?);
        }
        let meta: HashMap<String, String> =
            [("format".to_string(), "pt".to_string()), (ARCH_KEY.to_string(), self.architecture.clone())].into();
        let data: Vec<(String, Tensor)> = tensors.into_iter().collect();
        let bytes = safetensors::serialize(data.iter().map(|(n, t)| (n.as_str(), StView(t))), Some(meta))
            .map_err(|e| Error::Invalid(format!("cannot serialize the adapter: {e}")))?;
        write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
        let cfg = serde_json::to_string_pretty(&self.config.to_peft_json(base_model)).expect("json");
        write_atomic(&dir.join(CONFIG_FILE), cfg.as_bytes())
    }

    /// Loads a PEFT LoRA adapter for `base`, checking every tensor's name and shape against it.
    pub fn load(dir: &Path, base: &dyn Checkpoint, device: &Device) -> Result<Self> {
        let bad = |p: &Path, m: String| Error::BadPath { path: p.to_path_buf(), reason: m };
        if !dir.is_dir() {
            return Err(if dir.exists() { bad(dir, "an adapter is a directory (adapter_config.json + adapter_model.safetensors)".into()) } else { Error::NotFound { path: dir.to_path_buf() } });
        }
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad(dir, format!("has no {CONFIG_FILE}; is it a PEFT LoRA adapter?")),
            _ => Error::Io { path: cfg_path.clone(), source: e },
        })?;
        let v: Json = serde_json::from_str(&text).map_err(|e| bad(&cfg_path, format!("not valid JSON: {e}")))?;
        let config = LoraConfig::from_peft_json(&v, &cfg_path)?;
        let w_path = dir.join(WEIGHTS_FILE);
        if !w_path.is_file() {
            let reason = if dir.join("adapter_model.bin").exists() {
                format!("holds adapter_model.bin (a pickle) only; modu reads {WEIGHTS_FILE}")
            } else {
                format!("has no {WEIGHTS_FILE}")
            };
            return Err(bad(dir, reason));
        }
        let bytes = std::fs::read(&w_path).map_err(|e| Error::Io { path: w_path.clone(), source: e })?;
        let (_, st_meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(&w_path, format!("invalid safetensors file: {e}")))?;
        let arch = base.architecture()?;
        if let Some(a) = st_meta.metadata().as_ref().and_then(|m| m.get(ARCH_KEY)) {
            if *a != arch {
                return Err(bad(dir, format!("was trained on a '{a}' model; the base model is '{arch}'")));
            }
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| bad(&w_path, format!("invalid safetensors file: {e}")))?;
        let mut halves: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        for (name, t) in tensors {
            let (module, half) = if let Some(m) = name.strip_suffix(".lora_A.weight") {
                (m, 0)
            } else if let Some(m) = name.strip_suffix(".lora_B.weight") {
                (m, 1)
            } else {
                return Err(bad(&w_path, format!("tensor '{name}' is not a LoRA A or B matrix")));
            };
            let module = module.strip_suffix(".default").unwrap_or(module);
            let gguf = gguf_projection(module)
                .ok_or_else(|| bad(&w_path, format!("'{name}' names a module this model does not have")))?;
            let t = lora_matrix(t, &name, &w_path)?.to_device(device)?;
            let e = halves.entry(gguf).or_default();
            if half == 0 {
                e.0 = Some(t)
            } else {
                e.1 = Some(t)
            }
        }
        if halves.is_empty() {
            return Err(bad(&w_path, "holds no LoRA tensors".into()));
        }
        let mut pairs = BTreeMap::new();
        for (gguf, (a, b)) in halves {
            let src = base.source_name(&gguf);
            let (Some(a), Some(b)) = (a, b) else {
                return Err(bad(&w_path, format!("'{src}' has only one of lora_A and lora_B")));
            };
            let (out, inp) = base_dims(base, &gguf).map_err(|_| bad(dir, format!("adapts '{src}', which the base model does not have")))?;
            let (ar, ain) = a.dims2()?;
            let (bout, br) = b.dims2()?;
            if ain != inp || bout != out || ar != br || ar == 0 {
                return Err(bad(
                    dir,
                    format!(
                        "'{src}': lora_A is {:?} and lora_B {:?}, but the base weight is [{out}, {inp}] (A must be [r, {inp}], B [{out}, r]); was the adapter made for another model?",
                        a.dims(),
                        b.dims()
                    ),
                ));
            }
            let scale = config.scale_for(ar);
            pairs.insert(gguf, LoraPair { a: Var::from_tensor(&a)?, b: Var::from_tensor(&b)?, scale });
        }
        Ok(Self { config, architecture: arch, pairs })
    }
}

/// A LoRA matrix of the file in f32: stored as f32, f16 or bf16, two-dimensional, finite.
fn lora_matrix(t: Tensor, name: &str, path: &Path) -> Result<Tensor> {
    let bad = |reason: String| Error::BadPath { path: path.to_path_buf(), reason };
    if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return Err(bad(format!("tensor '{name}' has dtype {:?}; LoRA tensors must be f32, f16 or bf16", t.dtype())));
    }
    if t.rank() != 2 {
        return Err(bad(format!("tensor '{name}' has shape {:?}; LoRA tensors are matrices", t.dims())));
    }
    let t = t.to_dtype(DType::F32)?;
    if t.flatten_all()?.to_vec1::<f32>()?.iter().any(|x| !x.is_finite()) {
        return Err(bad(format!("tensor '{name}' holds NaN or infinite values")));
    }
    Ok(t)
}

/// An f32 tensor as safetensors writes it.
struct StView<'a>(&'a Tensor);

impl safetensors::View for StView<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.0.dims()
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let v = self.0.flatten_all().and_then(|t| t.to_vec1::<f32>()).unwrap_or_default();
        std::borrow::Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.elem_count() * 4
    }
}

/// Writes `bytes` to `path` through `path.partial`, renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.partial", path.display()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })
}

/// A small seeded generator (SplitMix64) for initialisation and dropout masks, so a seed fixes a
/// run on every machine.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A checkpoint whose adapted projections read as `W + scale * B A` in f32: what `modu run
/// --adapter` runs and `modu merge` writes. Everything else passes through.
pub struct Merged<'a> {
    pub base: &'a dyn Checkpoint,
    deltas: HashMap<String, Tensor>,
}

impl<'a> Merged<'a> {
    pub fn new(base: &'a dyn Checkpoint, adapter: &Adapter) -> Result<Self> {
        let mut deltas = HashMap::new();
        for (name, p) in &adapter.pairs {
            deltas.insert(name.clone(), p.weight_delta()?.to_device(&Device::Cpu)?);
        }
        Ok(Self { base, deltas })
    }

    fn merged(&self, name: &str, device: &Device) -> Result<Option<candle_core::quantized::QTensor>> {
        let Some(d) = self.deltas.get(name) else { return Ok(None) };
        let w = self.base.tensor(name, &Device::Cpu)?.dequantize(&Device::Cpu)?;
        let m = (w + d)?;
        Ok(Some(candle_core::quantized::QTensor::quantize_onto(&m, candle_core::quantized::GgmlDType::F32, device)?))
    }
}

impl Checkpoint for Merged<'_> {
    fn metadata(&self) -> &HashMap<String, candle_core::quantized::gguf_file::Value> {
        self.base.metadata()
    }
    fn token_count(&self) -> Option<usize> {
        self.base.token_count()
    }
    fn tensor_names(&self) -> Vec<String> {
        self.base.tensor_names()
    }
    fn tensor_dims(&self, name: &str) -> Option<&[usize]> {
        self.base.tensor_dims(name)
    }
    fn tensor(&self, name: &str, device: &Device) -> Result<candle_core::quantized::QTensor> {
        match self.merged(name, device)? {
            Some(t) => Ok(t),
            None => self.base.tensor(name, device),
        }
    }
    fn tensor_for_matmul(&self, name: &str, device: &Device) -> Result<candle_core::quantized::QTensor> {
        match self.merged(name, device)? {
            Some(t) => Ok(t),
            None => self.base.tensor_for_matmul(name, device),
        }
    }
    fn tensor_split(&self, name: &str, device: &Device) -> Result<Vec<candle_core::quantized::QTensor>> {
        self.base.tensor_split(name, device)
    }
    fn source_name(&self, name: &str) -> String {
        self.base.source_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_names_round_trip() {
        for arch in ["gemma3", "exaone4", "exaone"] {
            for (_, _, g) in PROJECTIONS {
                let gguf = format!("blk.7.{g}.weight");
                let hf = hf_module(arch, &gguf).unwrap();
                assert_eq!(gguf_projection(&format!("base_model.model.{hf}")).as_deref(), Some(gguf.as_str()), "{arch} {hf}");
            }
        }
        assert_eq!(hf_module("gemma3", "blk.0.attn_q.weight").unwrap(), "model.layers.0.self_attn.q_proj");
        assert_eq!(hf_module("exaone", "blk.2.ffn_down.weight").unwrap(), "transformer.h.2.mlp.c_proj");
        assert_eq!(gguf_projection("model.language_model.layers.1.mlp.up_proj").unwrap(), "blk.1.ffn_up.weight");
        assert!(gguf_projection("model.layers.1.mlp.router").is_none());
        assert_eq!(all_targets("exaone"), ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc_0", "c_fc_1", "c_proj"]);
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = LoraConfig { r: 8, alpha: 16.0, dropout: 0.05, use_rslora: false, targets: vec!["q_proj".into()] };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.scale_for(8), 2.0);
        for (bad, what) in [
            (LoraConfig { r: 0, ..ok.clone() }, "rank"),
            (LoraConfig { alpha: f64::NAN, ..ok.clone() }, "alpha"),
            (LoraConfig { alpha: -1.0, ..ok.clone() }, "alpha"),
            (LoraConfig { dropout: 1.0, ..ok.clone() }, "dropout"),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
        let p = Path::new("adapter_config.json");
        let cfg = LoraConfig::from_peft_json(&ok.to_peft_json("base"), p).unwrap();
        assert_eq!(cfg, ok);
        let mut dora = ok.to_peft_json("base");
        dora["use_dora"] = true.into();
        assert!(LoraConfig::from_peft_json(&dora, p).unwrap_err().to_string().contains("use_dora"));
        let mut zero = ok.to_peft_json("base");
        zero["r"] = 0.into();
        assert!(LoraConfig::from_peft_json(&zero, p).is_err());
    }
}
