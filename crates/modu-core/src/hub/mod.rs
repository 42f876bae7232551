//! Hugging Face hub access: model references, the standard cache layout, resumable downloads.
//!
//! `owner/name[:QUANT]` names one .gguf file of a hub repository. Files are stored the way
//! huggingface_hub stores them, so both tools share one cache:
//! `{cache}/models--{owner}--{name}/` with `blobs/{etag}`, `snapshots/{commit}/{file}` (a symlink
//! to the blob) and `refs/{revision}` (the commit the revision pointed at).

mod cache;
mod download;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::{Error, Result};
use cache::RepoCache;
use download::{Client, NetError};

/// The model `modu run` uses when none is given.
pub const DEFAULT_MODEL: &str = "LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF:Q4_K_M";
/// The quantization picked when a reference names none.
pub const DEFAULT_QUANT: &str = "Q4_K_M";
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_REVISION: &str = "main";

/// What `-m` names: a local file, or a GGUF repository on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Path(PathBuf),
    Hub { repo: String, quant: Option<String>, revision: String },
}

impl ModelRef {
    /// `owner/name` or `owner/name:QUANT` (also with an `hf.co/` or `https://huggingface.co/`
    /// prefix) is a hub reference unless a file or directory of that name exists. Anything that
    /// starts with `./`, `../`, `/` or `~`, contains a backslash or ends in `.gguf` is a path.
    pub fn parse(s: &str) -> ModelRef {
        let path = || ModelRef::Path(PathBuf::from(s));
        let looks_like_path = s.starts_with("./")
            || s.starts_with("../")
            || s.starts_with('/')
            || s.starts_with('~')
            || s.contains('\\')
            || s.to_ascii_lowercase().ends_with(".gguf");
        if looks_like_path || Path::new(s).exists() {
            return path();
        }
        let mut rest = s;
        for prefix in ["https://huggingface.co/", "https://hf.co/", "huggingface.co/", "hf.co/"] {
            if let Some(r) = rest.strip_prefix(prefix) {
                rest = r;
                break;
            }
        }
        let (repo, quant) = match rest.rsplit_once(':') {
            Some((repo, quant)) if is_valid_quant(quant) => (repo, Some(quant)),
            Some((repo, "")) => (repo, None),
            Some(_) => return path(),
            None => (rest, None),
        };
        if !is_valid_repo_id(repo) {
            return path();
        }
        ModelRef::Hub {
            repo: repo.to_string(),
            quant: quant.map(str::to_string),
            revision: DEFAULT_REVISION.to_string(),
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Path(p) => write!(f, "{}", p.display()),
            ModelRef::Hub { repo, quant, revision } => {
                write!(f, "{repo}")?;
                if let Some(q) = quant {
                    write!(f, ":{q}")?;
                }
                if revision != DEFAULT_REVISION {
                    write!(f, " (revision {revision})")?;
                }
                Ok(())
            }
        }
    }
}

/// Where and how to reach the hub; read from the same variables huggingface_hub reads.
#[derive(Clone)]
pub struct HubConfig {
    pub endpoint: String,
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    pub offline: bool,
    pub progress: bool,
}

// Hand-written so that the token never reaches a log line.
impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .finish()
    }
}

impl HubConfig {
    /// HF_ENDPOINT, HF_HUB_CACHE / HF_HOME, HF_TOKEN (else the token file `huggingface-cli login`
    /// writes) and HF_HUB_OFFLINE; a progress bar when stderr is a terminal.
    pub fn from_env() -> HubConfig {
        let mut cfg = Self::from_vars(|k| std::env::var(k).ok());
        cfg.progress = std::io::stderr().is_terminal();
        cfg
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> HubConfig {
        let get = |k: &str| var(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let home = get("HOME").or_else(|| get("USERPROFILE")).map(PathBuf::from);
        let expand = |v: String| match (v.strip_prefix("~/"), &home) {
            (Some(rest), Some(h)) => h.join(rest),
            _ => PathBuf::from(v),
        };
        let hf_home = get("HF_HOME").map(expand).unwrap_or_else(|| {
            let cache = get("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".cache")))
                .unwrap_or_else(std::env::temp_dir);
            cache.join("huggingface")
        });
        let cache_dir = get("HF_HUB_CACHE")
            .or_else(|| get("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = get("HF_TOKEN").or_else(|| get("HUGGING_FACE_HUB_TOKEN")).or_else(|| {
            let file = get("HF_TOKEN_PATH").map(expand).unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(file).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        let offline = get("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubConfig { endpoint, cache_dir, token, offline, progress: false }
    }
}

/// Resolves a model reference to a local .gguf file, downloading into the standard HF cache
/// layout if needed.
pub fn resolve_gguf(r: &ModelRef, cfg: &HubConfig) -> Result<PathBuf> {
    match r {
        ModelRef::Path(p) => {
            if p.exists() {
                Ok(p.clone())
            } else {
                Err(Error::NotFound { path: p.clone() })
            }
        }
        ModelRef::Hub { repo, quant, revision } => resolve_hub(cfg, repo, quant.as_deref(), revision),
    }
}

fn resolve_hub(cfg: &HubConfig, repo: &str, quant: Option<&str>, revision: &str) -> Result<PathBuf> {
    if !is_valid_repo_id(repo) {
        return Err(Error::Invalid(format!(
            "'{repo}' is not a hub repository id (expected owner/name, e.g. {DEFAULT_MODEL})"
        )));
    }
    if !is_safe_relative_path(revision) {
        return Err(Error::Invalid(format!("'{revision}' is not a valid revision")));
    }
    let cache = RepoCache::new(&cfg.cache_dir, repo);
    let label = || match quant {
        Some(q) => format!("{repo}:{q}"),
        None => repo.to_string(),
    };

    // A plain `owner/name` means the default quant: only that counts as a cache hit while online.
    if let Some(p) = find_cached(&cache, revision, Some(quant.unwrap_or(DEFAULT_QUANT))) {
        tracing::debug!("{} found in the cache: {}", label(), p.display());
        return Ok(p);
    }
    let not_cached = |why: String| {
        Error::Download(format!(
            "{why} and {} is not in the cache at {}; download it or pass a local file: \
             modu run -m /path/to/model.gguf",
            label(),
            cache.dir().display()
        ))
    };
    if cfg.offline {
        return find_cached(&cache, revision, quant)
            .ok_or_else(|| not_cached("offline (HF_HUB_OFFLINE is set)".into()));
    }

    let client = Client::new(cfg);
    let fall_back = |e: NetError| match e {
        NetError::Unreachable(msg) => match find_cached(&cache, revision, quant) {
            Some(p) => {
                tracing::warn!("cannot reach {} ({msg}); using the cached {}", cfg.endpoint, p.display());
                Ok(p)
            }
            None => Err(not_cached(format!("cannot reach {} ({msg})", cfg.endpoint))),
        },
        NetError::Failed(e) => Err(e),
    };

    let info = match client.repo_info(repo, revision) {
        Ok(info) => info,
        Err(e) => return fall_back(e),
    };
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let filename = select_gguf(repo, &names, quant)?.to_string();
    if !is_safe_relative_path(&filename) {
        return Err(Error::Download(format!(
            "{repo}: the hub listed an unsafe file name '{}'; refusing to write it",
            filename.escape_debug()
        )));
    }
    let api_commit = match info.sha {
        Some(sha) if is_commit_hash(&sha) => Some(sha),
        Some(sha) => {
            return Err(Error::Download(format!(
                "{repo}: the hub sent an invalid commit '{}'",
                sha.escape_debug()
            )))
        }
        None => None,
    };

    // Another revision may already have brought this very file.
    if let Some(commit) = &api_commit {
        let snap = cache.snapshot_file(commit, &filename);
        if snap.is_file() {
            cache.write_ref(revision, commit)?;
            return Ok(snap);
        }
    }

    let at = api_commit.as_deref().unwrap_or(revision);
    let meta = match client.file_metadata(repo, at, &filename) {
        Ok(m) => m,
        Err(e) => return fall_back(e),
    };
    let commit = match (meta.commit, api_commit) {
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => {
            return Err(Error::Download(format!(
                "{repo}/{filename}: the hub sent no commit hash (X-Repo-Commit)"
            )))
        }
    };
    if !is_commit_hash(&commit) {
        return Err(Error::Download(format!(
            "{repo}: the hub sent an invalid commit '{}'",
            commit.escape_debug()
        )));
    }

    let _lock = cache.lock(&meta.etag)?;
    let blob = cache.blob(&meta.etag);
    if !blob.is_file() {
        tracing::info!("downloading {repo}/{filename} into {}", cache.dir().display());
        let url = client.resolve_url(repo, &commit, &filename);
        let part = cache.incomplete(&meta.etag);
        if let Some(dir) = part.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        }
        client.download(&url, &part, meta.size, &meta.etag, &filename)?;
        std::fs::rename(&part, &blob).map_err(|e| Error::Io { path: blob.clone(), source: e })?;
    }
    let snap = cache.link_snapshot(&commit, &filename, &meta.etag)?;
    cache.write_ref(revision, &commit)?;
    Ok(snap)
}

/// The cached file `revision` resolves to for `quant`; with no quant, whatever .gguf the rules
/// pick among the cached ones.
fn find_cached(cache: &RepoCache, revision: &str, quant: Option<&str>) -> Option<PathBuf> {
    let commit = cache.commit_for(revision)?;
    let files = cache.cached_ggufs(&commit);
    let name = select_gguf("", &files, quant).ok()?;
    Some(cache.snapshot_file(&commit, name))
}

/// Picks the model file for `quant` from a repository listing: the first .gguf whose name
/// contains it (case-insensitively, a whole tag preferred), never a vision projector. With no
/// quant, Q4_K_M if present, else the first .gguf.
fn select_gguf<'a>(repo: &str, files: &'a [String], quant: Option<&str>) -> Result<&'a str> {
    let ggufs: Vec<&str> = files.iter().map(String::as_str).filter(|f| is_model_gguf(f)).collect();
    if ggufs.is_empty() {
        return Err(Error::Invalid(format!(
            "{repo} has no .gguf model file; modu runs GGUF models (their repositories usually end in -GGUF)"
        )));
    }
    let wanted = quant.unwrap_or(DEFAULT_QUANT).to_ascii_lowercase();
    let matches: Vec<(&str, bool)> = ggufs
        .iter()
        .filter_map(|f| {
            let lower = f.to_ascii_lowercase();
            let whole = lower.match_indices(&wanted).any(|(i, m)| {
                let before = lower[..i].chars().next_back();
                let after = lower[i + m.len()..].chars().next();
                !before.is_some_and(|c| c.is_ascii_alphanumeric())
                    && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            lower.contains(&wanted).then_some((*f, whole))
        })
        .collect();
    if let Some((f, _)) = matches.iter().find(|(_, whole)| *whole).or(matches.first()) {
        return Ok(f);
    }
    match quant {
        None => Ok(ggufs[0]),
        Some(q) => Err(Error::Invalid(format!(
            "{repo} has no .gguf file matching '{q}'; available: {}. Pick one with -m {repo}:QUANT",
            ggufs.join(", ")
        ))),
    }
}

fn is_model_gguf(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let base = lower.rsplit('/').next().unwrap_or(&lower);
    base.ends_with(".gguf") && !base.contains("mmproj")
}

/// `owner/name` with the hub's naming rules. "--" is refused because the cache folder joins
/// owner and name with it.
fn is_valid_repo_id(repo: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.contains("--")
            && !p.contains("..")
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
    };
    match repo.split_once('/') {
        Some((owner, name)) => part_ok(owner) && part_ok(name),
        None => false,
    }
}

fn is_valid_quant(q: &str) -> bool {
    !q.is_empty()
        && q.len() <= 64
        && q.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A relative path that stays inside the folder it is joined to, on every platform.
fn is_safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.starts_with('/')
        && !p.chars().any(|c| c == '\\' || c == ':' || c.is_control())
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn is_commit_hash(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric())
}
