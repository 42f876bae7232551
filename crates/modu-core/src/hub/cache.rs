//! One repository's folder in the huggingface_hub cache.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::{is_commit_hash, is_model_gguf, is_safe_relative_path};
use crate::{Error, Result};

// Snapshot trees are shallow; the bound keeps a hostile cache from sending the walk anywhere.
const MAX_SNAPSHOT_DEPTH: usize = 4;

pub(super) struct RepoCache {
    root: PathBuf,
    dir: PathBuf,
    folder: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo: &str) -> RepoCache {
        let folder = format!("models--{}", repo.replace('/', "--"));
        RepoCache { root: cache_dir.to_path_buf(), dir: cache_dir.join(&folder), folder }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub fn snapshot_file(&self, commit: &str, filename: &str) -> PathBuf {
        let mut p = self.dir.join("snapshots").join(commit);
        p.extend(filename.split('/'));
        p
    }

    /// The commit `revision` points at: itself when it is a commit already in the cache, else
    /// what `refs/{revision}` says.
    pub fn commit_for(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision)
            && revision.len() == 40
            && self.dir.join("snapshots").join(revision).is_dir()
        {
            return Some(revision.to_string());
        }
        let mut ref_path = self.dir.join("refs");
        ref_path.extend(revision.split('/'));
        let commit = fs::read_to_string(ref_path).ok()?.trim().to_string();
        is_commit_hash(&commit).then_some(commit)
    }

    /// The .gguf model files of a snapshot whose blobs are present, as sorted `/`-separated names.
    pub fn cached_ggufs(&self, commit: &str) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.dir.join("snapshots").join(commit), "", 0, &mut out);
        out.sort();
        out
    }

    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let mut path = self.dir.join("refs");
        path.extend(revision.split('/'));
        if fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::write(&path, commit).map_err(io_err(&path))
    }

    /// Holds `.locks/{folder}/{etag}.lock` (the lock huggingface_hub takes too) so that two
    /// processes never write one blob at the same time.
    pub fn lock(&self, etag: &str) -> Result<Option<File>> {
        let dir = self.root.join(".locks").join(&self.folder);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!("{etag}.lock"));
        let file = File::create(&path).map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!("waiting for another download of the same file ({})", path.display());
                file.lock().map_err(io_err(&path))?;
                Ok(Some(file))
            }
            // Some filesystems have no locks; downloading without one beats not downloading.
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::debug!("no lock on {}: {e}", path.display());
                Ok(None)
            }
        }
    }

    /// Points `snapshots/{commit}/{filename}` at the blob: a relative symlink as huggingface_hub
    /// makes, else a hard link, else a copy.
    pub fn link_snapshot(&self, commit: &str, filename: &str, etag: &str) -> Result<PathBuf> {
        let path = self.snapshot_file(commit, filename);
        let blob = self.blob(etag);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        if fs::symlink_metadata(&path).is_ok() {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        let mut target = PathBuf::new();
        for _ in 0..filename.split('/').count() + 1 {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if let Err(e) = symlink(&target, &path) {
            tracing::debug!("cannot symlink {} ({e}); linking or copying instead", path.display());
            if fs::hard_link(&blob, &path).is_err() {
                fs::copy(&blob, &path).map_err(io_err(&path))?;
            }
        }
        Ok(path)
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(not(any(unix, windows)))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        if !is_safe_relative_path(&rel) {
            continue;
        }
        // metadata() follows the symlink: a dangling link (blob deleted) does not count.
        match fs::metadata(entry.path()) {
            Ok(m) if m.is_file() && is_model_gguf(&rel) => out.push(rel),
            Ok(m) if m.is_dir() && depth < MAX_SNAPSHOT_DEPTH => walk(&entry.path(), &rel, depth + 1, out),
            _ => {}
        }
    }
}
