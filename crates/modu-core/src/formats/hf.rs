//! A Hugging Face model directory (config.json + safetensors, single or sharded) seen as a
//! [`Checkpoint`] under GGUF names, so the models have one loading path and `modu convert` writes
//! what it reads. Tensor names map as llama.cpp's converter maps them (spec §4).
//!
//! Only safetensors are read: a directory holding just `pytorch_model.bin` is refused, since
//! unpickling runs code from the file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Tensor};

use super::checkpoint::Checkpoint;
use super::hf_config::{parse_json, HfConfig};
use crate::error::{Error, Result};

/// Where a GGUF-named tensor comes from.
enum Source {
    /// One HF tensor.
    Tensor(String),
    /// HF tensors stacked along a new first dimension (per-expert weights).
    Stack(Vec<String>),
    /// Computed from config.json (`rope_freqs`).
    Values(Vec<f32>),
}

struct Entry {
    dims: Vec<usize>,
    source: Source,
}

pub struct HfCheckpoint {
    pub dir: PathBuf,
    pub config: HfConfig,
    files: Vec<PathBuf>,
    st: MmapedSafetensors,
    metadata: HashMap<String, Value>,
    tensors: BTreeMap<String, Entry>,
}

fn bad_dir(dir: &Path, reason: impl Into<String>) -> Error {
    Error::BadPath { path: dir.to_path_buf(), reason: reason.into() }
}

/// True when `dir` looks like an HF model directory (it has a config.json).
pub fn is_hf_dir(dir: &Path) -> bool {
    dir.is_dir() && dir.join("config.json").is_file()
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })
}

/// The safetensors files of a directory: the shards an index names, or model.safetensors.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let json = parse_json(&read_text(&index)?).map_err(|e| bad_dir(&index, e.to_string().replace("config.json", "index")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad_dir(&index, "no 'weight_map' object"))?;
        let mut files: Vec<String> = Vec::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| bad_dir(&index, format!("weight_map['{tensor}'] is not a file name")))?;
            // A shard must be a plain file name inside the directory: no '..', no absolute
            // path, no subdirectory, so an index cannot make modu read files elsewhere.
            let mut comps = Path::new(file).components();
            let plain = matches!((comps.next(), comps.next()), (Some(Component::Normal(_)), None));
            if !plain || file.contains('\\') {
                return Err(bad_dir(
                    &index,
                    format!("weight_map['{tensor}'] = '{file}' points outside the model directory"),
                ));
            }
            if !files.iter().any(|f| f == file) {
                files.push(file.to_string());
            }
        }
        if files.is_empty() {
            return Err(bad_dir(&index, "weight_map is empty"));
        }
        files.sort();
        return files
            .into_iter()
            .map(|f| {
                let p = dir.join(&f);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(Error::NotFound { path: p })
                }
            })
            .collect();
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let pickles = ["pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth"];
    if pickles.iter().any(|p| dir.join(p).exists()) {
        return Err(bad_dir(
            dir,
            "holds PyTorch pickle weights (pytorch_model.bin) only; modu reads safetensors and never \
             unpickles files, since that runs code. Convert them with safetensors first",
        ));
    }
    Err(bad_dir(dir, "has config.json but no model.safetensors or model.safetensors.index.json"))
}

fn ggml_dtype(dtype: safetensors::Dtype, name: &str) -> Result<GgmlDType> {
    Ok(match dtype {
        safetensors::Dtype::F32 => GgmlDType::F32,
        safetensors::Dtype::F16 => GgmlDType::F16,
        safetensors::Dtype::BF16 => GgmlDType::BF16,
        other => {
            return Err(Error::UnsupportedTensorType { tensor: name.to_string(), dtype: format!("{other:?} (safetensors)") })
        }
    })
}

/// Per-layer HF suffix -> GGUF suffix. EXAONE 3.x original names come first.
const PER_LAYER: &[(&str, &str)] = &[
    ("attn.attention.q_proj.weight", "attn_q.weight"),
    ("attn.attention.k_proj.weight", "attn_k.weight"),
    ("attn.attention.v_proj.weight", "attn_v.weight"),
    ("attn.attention.out_proj.weight", "attn_output.weight"),
    ("ln_1.weight", "attn_norm.weight"),
    ("ln_2.weight", "ffn_norm.weight"),
    ("mlp.c_fc_0.weight", "ffn_gate.weight"),
    ("mlp.c_fc_1.weight", "ffn_up.weight"),
    ("mlp.c_proj.weight", "ffn_down.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("mlp.gate.weight", "ffn_gate_inp.weight"),
    ("mlp.e_score_correction_bias", "exp_probs_b.bias"),
    ("mlp.gate.e_score_correction_bias", "exp_probs_b.bias"),
    ("mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"),
    ("mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"),
    ("mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"),
];

/// Suffixes only EXAONE 3.x's original checkpoints use.
fn is_original_exaone(suffix: &str) -> bool {
    suffix.starts_with("attn.attention.") || suffix.starts_with("ln_") || suffix.starts_with("mlp.c_")
}

/// HF name -> GGUF name for one architecture, or None for tensors that do not run (vision
/// tower, MTP head) or that the HF format carries but GGUF does not.
fn gguf_name(arch: &str, hf: &str) -> Option<String> {
    let hf = hf.strip_prefix("model.language_model.").map(|r| format!("model.{r}")).unwrap_or_else(|| hf.to_string());
    let hf = hf.strip_prefix("transformer.").map(|r| format!("model.{r}")).unwrap_or(hf);
    let top = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.wte.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("model.ln_f.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = top.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.").or_else(|| hf.strip_prefix("model.h."))?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    // Trap (spec §4): post_attention_layernorm is a post-norm in exaone4, the pre-MLP norm elsewhere.
    let post_attn = if arch == "exaone4" || arch == "gemma3" { "post_attention_norm.weight" } else { "ffn_norm.weight" };
    let g = if suffix == "post_attention_layernorm.weight" {
        post_attn
    } else {
        PER_LAYER.iter().find(|(h, _)| *h == suffix).map(|(_, g)| *g)?
    };
    Some(format!("blk.{layer}.{g}"))
}

/// `model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight` -> (stacked GGUF name, E).
fn expert_name(hf: &str) -> Option<(String, usize)> {
    let hf = hf.strip_prefix("model.language_model.").map(|r| format!("model.{r}")).unwrap_or_else(|| hf.to_string());
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let rest = rest.strip_prefix("mlp.experts.")?;
    let (e, proj) = rest.split_once('.')?;
    let e: usize = e.parse().ok()?;
    let g = match proj {
        "gate_proj.weight" => "ffn_gate_exps",
        "up_proj.weight" => "ffn_up_exps",
        "down_proj.weight" => "ffn_down_exps",
        _ => return None,
    };
    Some((format!("blk.{layer}.{g}.weight"), e))
}

impl HfCheckpoint {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.exists() {
            return Err(Error::NotFound { path: dir.to_path_buf() });
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(bad_dir(dir, "is not a Hugging Face model directory (no config.json)"));
        }
        let in_config = |e: Error| match e {
            Error::Metadata(m) => bad_dir(&config_path, m.trim_start_matches("config.json: ").to_string()),
            other => other,
        };
        let json = parse_json(&read_text(&config_path)?).map_err(in_config)?;
        let config = HfConfig::from_json(&json).map_err(in_config)?;
        let files = weight_files(dir)?;
        // SAFETY: read-only maps; a file changed underneath a running process is outside what
        // any mmap-based loader can defend against.
        let st = unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| {
            bad_dir(dir, format!("invalid safetensors file: {e}"))
        })?;

        let mut tensors: BTreeMap<String, Entry> = BTreeMap::new();
        let mut stacks: BTreeMap<String, BTreeMap<usize, (String, Vec<usize>)>> = BTreeMap::new();
        for (hf, view) in st.tensors() {
            ggml_dtype(view.dtype(), &hf)?;
            let dims = view.shape().to_vec();
            if let Some((g, e)) = expert_name(&hf) {
                stacks.entry(g).or_default().insert(e, (hf, dims));
            } else if let Some(g) = gguf_name(config.arch, &hf) {
                if let Some(prev) = tensors.insert(g.clone(), Entry { dims, source: Source::Tensor(hf.clone()) }) {
                    if let Source::Tensor(p) = prev.source {
                        return Err(bad_dir(dir, format!("tensors '{p}' and '{hf}' both map to '{g}'")));
                    }
                }
            }
        }
        for (g, parts) in stacks {
            let n = parts.len();
            if n != config.n_experts || parts.keys().copied().ne(0..n) {
                return Err(bad_dir(
                    dir,
                    format!("'{g}': found experts {:?}, expected 0..{}", parts.keys().collect::<Vec<_>>(), config.n_experts),
                ));
            }
            let first = parts[&0].1.clone();
            if let Some((name, (_, d))) = parts.iter().find(|(_, (_, d))| *d != first) {
                return Err(Error::TensorShape { name: format!("{g} (expert {name})"), got: d.clone(), expected: first });
            }
            let mut dims = vec![n];
            dims.extend(first);
            tensors.insert(g, Entry { dims, source: Source::Stack(parts.into_values().map(|(h, _)| h).collect()) });
        }
        if let Some(f) = &config.rope_freqs {
            tensors.insert("rope_freqs.weight".into(), Entry { dims: vec![f.len()], source: Source::Values(f.clone()) });
        }

        let mut metadata = config.metadata.clone();
        if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
            metadata.insert("general.name".into(), Value::String(name.to_string()));
        }
        super::hf_tokenizer::add_tokenizer(dir, &config, &mut metadata)?;
        Ok(Self { dir: dir.to_path_buf(), config, files, st, metadata, tensors })
    }

    /// Bytes of weight data on disk.
    pub fn file_bytes(&self) -> u64 {
        self.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
    }

    fn load(&self, hf: &str) -> Result<(Tensor, GgmlDType)> {
        let view = self.st.get(hf)?;
        let dt = ggml_dtype(view.dtype(), hf)?;
        Ok((view.load(&Device::Cpu)?, dt))
    }

    fn quantize(t: &Tensor, dt: GgmlDType, device: &Device) -> Result<QTensor> {
        // F32, F16 and BF16 all round-trip exactly through f32.
        let t = if t.dtype() == DType::F32 { t.clone() } else { t.to_dtype(DType::F32)? };
        Ok(QTensor::quantize_onto(&t, dt, device)?)
    }
}

impl Checkpoint for HfCheckpoint {
    fn metadata(&self) -> &HashMap<String, Value> {
        &self.metadata
    }

    fn tensor_names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn tensor_dims(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|e| e.dims.as_slice())
    }

    /// The HF name of a GGUF-named tensor; for a missing one, the name it would have here.
    fn source_name(&self, name: &str) -> String {
        if let Some(Entry { source: Source::Tensor(hf), .. }) = self.tensors.get(name) {
            return hf.clone();
        }
        let names: Vec<String> = self.st.tensors().into_iter().map(|(n, _)| n).collect();
        let prefix = if names.iter().any(|n| n.starts_with("transformer.")) {
            "transformer.h."
        } else if names.iter().any(|n| n.starts_with("model.language_model.")) {
            "model.language_model.layers."
        } else {
            "model.layers."
        };
        let guess = name.strip_prefix("blk.").and_then(|rest| {
            let (layer, _) = rest.split_once('.')?;
            PER_LAYER
                .iter()
                .map(|(h, _)| *h)
                .filter(|h| prefix == "transformer.h." || !is_original_exaone(h))
                .chain(["post_attention_layernorm.weight"])
                .map(|h| format!("{prefix}{layer}.{h}"))
                .find(|cand| gguf_name(self.config.arch, cand).as_deref() == Some(name))
        });
        match guess {
            Some(g) => g,
            None => name.to_string(),
        }
    }

    fn tensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let entry = self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        match &entry.source {
            Source::Tensor(hf) => {
                let (t, dt) = self.load(hf)?;
                if self.config.arch == "gemma3" && name.ends_with("norm.weight") {
                    // Gemma's RMSNorm scales by 1 + w; GGUF stores 1 + w, as llama.cpp's converter.
                    return Self::quantize(&(t.to_dtype(DType::F32)? + 1.0)?, GgmlDType::F32, device);
                }
                Self::quantize(&t, dt, device)
            }
            Source::Stack(parts) => {
                let mut loaded = Vec::with_capacity(parts.len());
                let mut dt0 = None;
                for p in parts {
                    let (t, dt) = self.load(p)?;
                    if dt0.is_some_and(|d| d != dt) {
                        return Err(Error::Metadata(format!("'{name}': experts stored in different dtypes")));
                    }
                    dt0 = Some(dt);
                    loaded.push(t);
                }
                let t = Tensor::stack(&loaded, 0)?;
                Self::quantize(&t, dt0.unwrap_or(GgmlDType::F32), device)
            }
            Source::Values(v) => {
                let t = Tensor::from_slice(v, v.len(), &Device::Cpu)?;
                Self::quantize(&t, GgmlDType::F32, device)
            }
        }
    }

    fn tensor_split(&self, name: &str, device: &Device) -> Result<Vec<QTensor>> {
        let entry = self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        match &entry.source {
            Source::Stack(parts) => parts
                .iter()
                .map(|p| {
                    let (t, dt) = self.load(p)?;
                    Self::quantize(&t, dt, device)
                })
                .collect(),
            _ => {
                let (t, dt) = match &entry.source {
                    Source::Tensor(hf) => self.load(hf)?,
                    _ => return Err(Error::Metadata(format!("'{name}' is not a stacked tensor"))),
                };
                (0..t.dim(0)?).map(|i| Self::quantize(&t.get(i)?, dt, device)).collect()
            }
        }
    }
}
