//! The hub's HTTP API: repository listings, file metadata and resumable, verified downloads.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::HubConfig;
use crate::Error;

// Consecutive attempts that bring no new byte before a download gives up.
const MAX_FAILED_ATTEMPTS: u32 = 5;
const MAX_RELATIVE_REDIRECTS: usize = 5;
const CHUNK: usize = 1 << 20;

/// Why a request failed: the hub could not be reached (the cache may stand in), or it answered
/// with something no cache can fix.
pub(super) enum NetError {
    Unreachable(String),
    Failed(Error),
}

#[derive(Deserialize)]
pub(super) struct RepoInfo {
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
pub(super) struct Sibling {
    pub rfilename: String,
}

pub(super) struct FileMetadata {
    pub commit: Option<String>,
    pub etag: String,
    pub size: Option<u64>,
}

pub(super) struct Client<'a> {
    cfg: &'a HubConfig,
    /// Follows redirects, sending the token only to the hub's own host (not to the CDN).
    agent: ureq::Agent,
    /// Follows none: the metadata sits on the hub's answer, before its redirect to the CDN.
    head_agent: ureq::Agent,
}

impl<'a> Client<'a> {
    pub fn new(cfg: &'a HubConfig) -> Client<'a> {
        let builder = || {
            ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(30))
                .timeout_read(Duration::from_secs(60))
                .user_agent(concat!("modu/", env!("CARGO_PKG_VERSION")))
                // ureq ignores NO_PROXY, so a proxy is never used for a local mirror.
                .try_proxy_from_env(!is_loopback(&cfg.endpoint))
        };
        Client {
            cfg,
            agent: builder().redirects(5).redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost).build(),
            head_agent: builder().redirects(0).build(),
        }
    }

    pub fn resolve_url(&self, repo: &str, revision: &str, filename: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.cfg.endpoint,
            percent_encode(revision, false),
            percent_encode(filename, true)
        )
    }

    fn request(&self, agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
        let req = agent.request(method, url).set("Accept-Encoding", "identity");
        match &self.cfg.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo, NetError> {
        let url =
            format!("{}/api/models/{repo}/revision/{}", self.cfg.endpoint, percent_encode(revision, false));
        let resp =
            self.request(&self.agent, "GET", &url).call().map_err(|e| self.net_error(e, repo, None))?;
        let body = resp.into_string().map_err(|e| NetError::Unreachable(e.to_string()))?;
        serde_json::from_str(&body).map_err(|e| {
            NetError::Failed(Error::Download(format!("{repo}: unexpected answer from {url}: {e}")))
        })
    }

    /// HEAD on the resolve URL, following only the hub's own relative redirects (renamed
    /// repositories) up to the answer that carries the file's commit, ETag and size.
    pub fn file_metadata(
        &self,
        repo: &str,
        revision: &str,
        filename: &str,
    ) -> Result<FileMetadata, NetError> {
        let mut url = self.resolve_url(repo, revision, filename);
        for _ in 0..=MAX_RELATIVE_REDIRECTS {
            let resp = self
                .request(&self.head_agent, "HEAD", &url)
                .call()
                .map_err(|e| self.net_error(e, repo, Some(filename)))?;
            let header = |name: &str| resp.header(name).map(str::trim).filter(|v| !v.is_empty());
            let has_metadata = header("x-repo-commit").is_some() || header("x-linked-etag").is_some();
            if (300..400).contains(&resp.status()) && !has_metadata {
                if let Some(loc) = header("location").filter(|l| l.starts_with('/') && !l.starts_with("//")) {
                    url = format!("{}{loc}", origin(&self.cfg.endpoint));
                    continue;
                }
            }
            let raw_etag = header("x-linked-etag").or(header("etag")).ok_or_else(|| {
                NetError::Failed(Error::Download(format!("{repo}/{filename}: the hub sent no ETag")))
            })?;
            let etag = normalize_etag(raw_etag);
            if !is_safe_etag(&etag) {
                return Err(NetError::Failed(Error::Download(format!(
                    "{repo}/{filename}: the hub sent an unusable ETag '{}'",
                    raw_etag.escape_debug()
                ))));
            }
            let size = header("x-linked-size")
                .or(header("content-length").filter(|_| resp.status() == 200))
                .and_then(|s| s.parse().ok());
            return Ok(FileMetadata { commit: header("x-repo-commit").map(str::to_string), etag, size });
        }
        Err(NetError::Failed(Error::Download(format!("{repo}/{filename}: too many redirects"))))
    }

    /// Downloads `url` into `part`, resuming what is already there, and checks the size and, for
    /// LFS files (whose ETag is their sha256), the checksum. A file that fails the check is
    /// deleted; one cut short is kept for the next run to resume.
    pub fn download(
        &self,
        url: &str,
        part: &Path,
        size: Option<u64>,
        etag: &str,
        label: &str,
    ) -> crate::Result<()> {
        let bar = progress_bar(self.cfg.progress, label, size);
        let mut hash = is_sha256(etag).then(HashState::default);
        let mut failed = 0;
        loop {
            match self.attempt(url, part, size, &mut hash, &bar, label) {
                Ok(()) => break,
                Err(Attempt::Fatal(e)) => {
                    bar.abandon();
                    return Err(e);
                }
                Err(Attempt::Retry { why, progressed }) => {
                    failed = if progressed { 1 } else { failed + 1 };
                    if failed >= MAX_FAILED_ATTEMPTS {
                        bar.abandon();
                        return Err(Error::Download(format!(
                            "{label}: {why}; the partial download is kept at {} and the next run resumes it",
                            part.display()
                        )));
                    }
                    tracing::warn!("{label}: {why}; retrying");
                    std::thread::sleep(Duration::from_millis(200 * u64::from(failed)));
                }
            }
        }
        bar.finish_and_clear();

        let len = fs::metadata(part).map_err(|e| Error::Io { path: part.to_path_buf(), source: e })?.len();
        if let Some(want) = size.filter(|&s| s != len) {
            let _ = fs::remove_file(part);
            return Err(Error::Download(format!(
                "{label}: got {len} bytes, the hub announced {want}; deleted it"
            )));
        }
        if let Some(state) = &mut hash {
            state.sync(part)?;
            let got = format!("{:x}", state.hasher.clone().finalize());
            if !got.eq_ignore_ascii_case(etag) {
                let _ = fs::remove_file(part);
                return Err(Error::Download(format!(
                    "{label}: checksum did not match (expected sha256 {etag}, got {got}); the download was deleted"
                )));
            }
        }
        Ok(())
    }

    fn attempt(
        &self,
        url: &str,
        part: &Path,
        size: Option<u64>,
        hash: &mut Option<HashState>,
        bar: &ProgressBar,
        label: &str,
    ) -> Result<(), Attempt> {
        let io_fatal = |e: std::io::Error| Attempt::Fatal(Error::Io { path: part.to_path_buf(), source: e });
        let mut offset = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = size {
            if offset == size {
                return Ok(());
            }
            if offset > size {
                fs::remove_file(part).map_err(io_fatal)?;
                offset = 0;
            }
        }
        let mut req = self.request(&self.agent, "GET", url);
        if offset > 0 {
            req = req.set("Range", &format!("bytes={offset}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, _)) if offset > 0 => {
                fs::remove_file(part).map_err(io_fatal)?;
                return Err(Attempt::Retry {
                    why: "the partial download cannot be resumed".into(),
                    progressed: false,
                });
            }
            Err(ureq::Error::Status(code, _)) if code >= 500 => {
                return Err(Attempt::Retry {
                    why: format!("the server answered HTTP {code}"),
                    progressed: false,
                })
            }
            Err(ureq::Error::Status(code, r)) => {
                return Err(Attempt::Fatal(status_error(
                    code,
                    &r,
                    label.to_string(),
                    self.cfg.token.is_some(),
                )))
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(Attempt::Retry { why: t.to_string(), progressed: false })
            }
        };

        let mut file = match resp.status() {
            206 if offset > 0 => {
                let start = resp.header("content-range").and_then(content_range_start);
                if start != Some(offset) {
                    fs::remove_file(part).map_err(io_fatal)?;
                    return Err(Attempt::Retry {
                        why: "the server resumed at the wrong offset".into(),
                        progressed: false,
                    });
                }
                OpenOptions::new().append(true).open(part).map_err(io_fatal)?
            }
            // A server that ignores Range sends the whole file: start over.
            200 => {
                offset = 0;
                File::create(part).map_err(io_fatal)?
            }
            code => {
                return Err(Attempt::Fatal(Error::Download(format!(
                    "{label}: unexpected HTTP {code} for a download"
                ))))
            }
        };
        let announced = resp.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(want), Some(n)) = (size, announced) {
            if offset + n != want {
                let _ = fs::remove_file(part);
                return Err(Attempt::Fatal(Error::Download(format!(
                    "{label}: the server sends {} bytes, the hub announced {want}",
                    offset + n
                ))));
            }
        }
        if size.is_none() {
            if let Some(n) = announced {
                bar.set_length(offset + n);
            }
        }
        if let Some(state) = hash.as_mut() {
            if offset == 0 {
                *state = HashState::default();
            } else {
                state.sync(part).map_err(Attempt::Fatal)?;
            }
        }
        bar.set_position(offset);

        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; CHUNK];
        let mut len = offset;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Attempt::Retry { why: e.to_string(), progressed: len > offset });
                }
            };
            if size.is_some_and(|s| len + n as u64 > s) {
                drop(file);
                let _ = fs::remove_file(part);
                return Err(Attempt::Fatal(Error::Download(format!(
                    "{label}: the server sent more bytes than the hub announced"
                ))));
            }
            file.write_all(&buf[..n]).map_err(io_fatal)?;
            if let Some(state) = hash.as_mut() {
                state.hasher.update(&buf[..n]);
                state.len += n as u64;
            }
            len += n as u64;
            bar.set_position(len);
        }
        file.sync_all().map_err(io_fatal)?;
        if size.is_some_and(|s| len < s) {
            return Err(Attempt::Retry {
                why: "the connection closed early".into(),
                progressed: len > offset,
            });
        }
        Ok(())
    }

    fn net_error(&self, e: ureq::Error, repo: &str, filename: Option<&str>) -> NetError {
        let what = match filename {
            Some(f) => format!("{repo}/{f}"),
            None => repo.to_string(),
        };
        match e {
            ureq::Error::Status(code, _) if code >= 500 => {
                NetError::Unreachable(format!("{} answered HTTP {code}", self.cfg.endpoint))
            }
            ureq::Error::Status(code, r) => {
                NetError::Failed(status_error(code, &r, what, self.cfg.token.is_some()))
            }
            ureq::Error::Transport(t) => NetError::Unreachable(t.to_string()),
        }
    }
}

enum Attempt {
    Retry { why: String, progressed: bool },
    Fatal(Error),
}

/// A running sha256 of the partial file's first `len` bytes.
#[derive(Default)]
struct HashState {
    hasher: Sha256,
    len: u64,
}

impl HashState {
    /// Rehashes the file when it no longer matches what was hashed (a run that resumes, or a
    /// write that failed halfway).
    fn sync(&mut self, path: &Path) -> crate::Result<()> {
        let io = |e| Error::Io { path: path.to_path_buf(), source: e };
        let len = fs::metadata(path).map_err(io)?.len();
        if len == self.len {
            return Ok(());
        }
        *self = HashState::default();
        let mut file = File::open(path).map_err(io)?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[..n]);
            self.len += n as u64;
        }
        Ok(())
    }
}

/// The error for a 4xx answer, saying what to do about it.
fn status_error(code: u16, resp: &ureq::Response, what: String, has_token: bool) -> Error {
    let error_code = resp.header("x-error-code").unwrap_or("");
    let server_says = resp
        .header("x-error-message")
        .map(|m| format!(" ({})", m.chars().take(200).collect::<String>()))
        .unwrap_or_default();
    let msg = match (code, error_code) {
        (_, "GatedRepo") => format!(
            "{what} is gated{server_says}: accept its terms on the model's hub page, then set HF_TOKEN to a token of that account"
        ),
        (_, "RepoNotFound") | (404, _) => format!(
            "repository or file not found: {what}{server_says}; check the name (a private repository needs HF_TOKEN)"
        ),
        (401 | 403, _) if has_token => format!(
            "HF_TOKEN was refused for {what} (HTTP {code}){server_says}: check that the token is valid and has access"
        ),
        (401 | 403, _) => format!(
            "access to {what} was refused (HTTP {code}){server_says}: it may be private or gated; set HF_TOKEN to a token with access"
        ),
        _ => format!("{what}: HTTP {code}{server_says}"),
    };
    Error::Download(msg)
}

fn progress_bar(show: bool, label: &str, size: Option<u64>) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = match size {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_string());
    bar
}

/// `W/"abc"` -> `abc`.
fn normalize_etag(raw: &str) -> String {
    let e = raw.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"').to_string()
}

/// Safe as a file name in `blobs/`.
fn is_safe_etag(e: &str) -> bool {
    !e.is_empty()
        && e.len() <= 128
        && !e.starts_with('.')
        && e.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_sha256(e: &str) -> bool {
    e.len() == 64 && e.chars().all(|c| c.is_ascii_hexdigit())
}

/// `bytes 100-199/200` -> 100.
fn content_range_start(v: &str) -> Option<u64> {
    v.trim().strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// `https://host:port/prefix` -> `https://host:port`.
fn origin(endpoint: &str) -> &str {
    let after_scheme = endpoint.find("://").map_or(0, |i| i + 3);
    match endpoint[after_scheme..].find('/') {
        Some(i) => &endpoint[..after_scheme + i],
        None => endpoint,
    }
}

fn is_loopback(endpoint: &str) -> bool {
    let authority = origin(endpoint).rsplit("://").next().unwrap_or("");
    let host = if authority.starts_with('[') {
        authority.split(']').next().map_or("", |h| &h[1..])
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
