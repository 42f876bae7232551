//! Each test runs against a small HTTP/1.1 server on 127.0.0.1 that answers the way the hub
//! does: the listing API, a resolve URL whose HEAD carries X-Repo-Commit / X-Linked-Etag /
//! X-Linked-Size and redirects to a CDN path, and a CDN path that honours Range.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "owner/model-GGUF";

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

struct Served {
    name: String,
    data: Vec<u8>,
    etag: String,
}

impl Served {
    fn new(name: &str, data: Vec<u8>) -> Served {
        Served { name: name.into(), etag: sha256_hex(&data), data }
    }
}

#[derive(Default)]
struct Behaviour {
    /// The first CDN download sends half the body, then closes the connection.
    cut_first_download: bool,
    ignore_range: bool,
    /// Answers the listing API with this status instead.
    api_status: Option<u16>,
    /// Redirects to the CDN on this host (absolute URL) instead of a relative path.
    cdn_host: Option<&'static str>,
    /// Listed besides the served files.
    extra_listing: Vec<String>,
}

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct TestHub {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestHub {
    fn start(files: Vec<Served>, behaviour: Behaviour) -> TestHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let cdn_gets = AtomicUsize::new(0);
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = serve(stream, addr, &files, &behaviour, &log2, &cdn_gets);
            }
        });
        TestHub { addr, log, stop, thread: Some(thread) }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("log lock").clone()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    files: &[Served],
    b: &Behaviour,
    log: &Mutex<Vec<Request>>,
    cdn_gets: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else { return Ok(()) };
    let mut headers = Vec::new();
    for _ in 0..100 {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let req = Request { method: method.into(), path: target.split('?').next().unwrap_or("").into(), headers };
    log.lock().expect("log lock").push(req.clone());

    let mut out = stream;
    let head = req.method == "HEAD";
    let respond = |out: &mut TcpStream, status: &str, extra: &[(String, String)], body: &[u8]| {
        let mut r = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in extra {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        out.write_all(r.as_bytes())?;
        if !head {
            out.write_all(body)?;
        }
        out.flush()
    };
    let find = |name: &str| files.iter().find(|f| f.name == name);

    if req.path.starts_with(&format!("/api/models/{REPO}/revision/")) {
        if let Some(code) = b.api_status {
            return respond(&mut out, &format!("{code} Error"), &[], b"error");
        }
        let mut names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        names.extend(b.extra_listing.iter().cloned());
        let siblings: Vec<_> = names.iter().map(|n| serde_json::json!({ "rfilename": n })).collect();
        let body = serde_json::json!({ "sha": COMMIT, "siblings": siblings }).to_string();
        return respond(
            &mut out,
            "200 OK",
            &[("Content-Type".into(), "application/json".into())],
            body.as_bytes(),
        );
    }
    if let Some(rest) = req.path.strip_prefix(&format!("/{REPO}/resolve/")) {
        let name = rest.split_once('/').map_or("", |(_, n)| n);
        let Some(f) = find(name) else {
            return respond(
                &mut out,
                "404 Not Found",
                &[("X-Error-Code".into(), "EntryNotFound".into())],
                b"",
            );
        };
        let cdn = match b.cdn_host {
            Some(host) => format!("http://{host}:{}/cdn/{name}", addr.port()),
            None => format!("/cdn/{name}"),
        };
        let extra = [
            ("Location".to_string(), cdn),
            ("X-Repo-Commit".into(), COMMIT.into()),
            ("X-Linked-Etag".into(), format!("\"{}\"", f.etag)),
            ("X-Linked-Size".into(), f.data.len().to_string()),
            // The git pointer's id: never the blob name.
            ("ETag".into(), "W/\"pointer-oid\"".into()),
        ];
        return respond(&mut out, "302 Found", &extra, b"");
    }
    if let Some(name) = req.path.strip_prefix("/cdn/") {
        let Some(f) = find(name) else { return respond(&mut out, "404 Not Found", &[], b"") };
        if head {
            return respond(&mut out, "200 OK", &[], &f.data);
        }
        let range_start = req
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|_| !b.ignore_range);
        if let Some(start) = range_start {
            if start >= f.data.len() {
                return respond(&mut out, "416 Range Not Satisfiable", &[], b"");
            }
            let cr = format!("bytes {start}-{}/{}", f.data.len() - 1, f.data.len());
            return respond(
                &mut out,
                "206 Partial Content",
                &[("Content-Range".into(), cr)],
                &f.data[start..],
            );
        }
        if b.cut_first_download && cdn_gets.fetch_add(1, Ordering::SeqCst) == 0 {
            let r =
                format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", f.data.len());
            out.write_all(r.as_bytes())?;
            out.write_all(&f.data[..f.data.len() / 2])?;
            out.flush()?;
            return out.shutdown(std::net::Shutdown::Both);
        }
        return respond(&mut out, "200 OK", &[], &f.data);
    }
    respond(&mut out, "404 Not Found", &[], b"")
}

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "modu-hub-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: endpoint.into(),
        cache_dir: cache.into(),
        token: None,
        offline: false,
        progress: false,
    }
}

fn hub_ref(quant: Option<&str>) -> ModelRef {
    ModelRef::Hub { repo: REPO.into(), quant: quant.map(str::to_string), revision: "main".into() }
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("models--owner--model-GGUF")
}

fn two_quants() -> (Served, Served) {
    (Served::new("model-Q4_K_M.gguf", content(300_000, 1)), Served::new("model-Q8_0.gguf", content(5_000, 2)))
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// Catches a wrong cache layout (blob name, snapshot symlink, ref) and a second run that touches
// the network although the file is cached.
#[test]
fn fresh_download_lands_in_the_cache_layout_and_is_reused_offline_free() {
    let tmp = TempDir::new("fresh");
    let (q4, q8) = two_quants();
    let (data, etag) = (q4.data.clone(), q4.etag.clone());
    let hub = TestHub::start(vec![q4, q8], Behaviour::default());
    let cfg = config(&hub.endpoint(), &tmp.0);

    let path = resolve_gguf(&hub_ref(None), &cfg).expect("download");
    let repo = repo_dir(&tmp.0);
    assert_eq!(path, repo.join("snapshots").join(COMMIT).join("model-Q4_K_M.gguf"));
    assert_eq!(std::fs::read(&path).expect("read snapshot"), data);
    assert_eq!(std::fs::read(repo.join("blobs").join(&etag)).expect("read blob"), data);
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).expect("read ref"), COMMIT);
    assert!(!repo.join("blobs").join(format!("{etag}.incomplete")).exists());
    #[cfg(unix)]
    assert_eq!(
        std::fs::read_link(&path).expect("snapshot is a symlink"),
        PathBuf::from(format!("../../blobs/{etag}"))
    );
    let reqs = hub.requests();
    let methods: Vec<_> = reqs.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(
        methods,
        [
            format!("GET /api/models/{REPO}/revision/main"),
            format!("HEAD /{REPO}/resolve/{COMMIT}/model-Q4_K_M.gguf"),
            format!("GET /{REPO}/resolve/{COMMIT}/model-Q4_K_M.gguf"),
            "GET /cdn/model-Q4_K_M.gguf".to_string(),
        ]
    );

    let again = resolve_gguf(&hub_ref(Some("q4_k_m")), &cfg).expect("cached");
    assert_eq!(again, path);
    assert_eq!(hub.requests().len(), reqs.len(), "a cached file must need no request");
}

// Catches a token leaked to the CDN (another host) or not sent to the hub.
#[test]
fn token_goes_to_the_hub_but_not_to_another_host() {
    let tmp = TempDir::new("token");
    let (q4, _) = two_quants();
    let data = q4.data.clone();
    let hub = TestHub::start(vec![q4], Behaviour { cdn_host: Some("localhost"), ..Default::default() });
    let cfg = HubConfig { token: Some("secret".into()), ..config(&hub.endpoint(), &tmp.0) };

    let path = resolve_gguf(&hub_ref(None), &cfg).expect("download");
    assert_eq!(std::fs::read(path).expect("read"), data);
    for r in hub.requests() {
        let auth = r.header("authorization");
        if r.path.starts_with("/cdn/") {
            assert_eq!(auth, None, "token sent to the CDN: {r:?}");
        } else {
            assert_eq!(auth, Some("Bearer secret"), "token missing: {r:?}");
        }
    }
    assert!(hub.requests().iter().any(|r| r.path.starts_with("/cdn/")));
}

// Catches a download that restarts from zero (or gives up) after a dropped connection, and a
// resumed file whose checksum is computed over the wrong bytes.
#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let tmp = TempDir::new("resume");
    let (q4, _) = two_quants();
    let (data, etag) = (q4.data.clone(), q4.etag.clone());
    let hub = TestHub::start(vec![q4], Behaviour { cut_first_download: true, ..Default::default() });
    let cfg = config(&hub.endpoint(), &tmp.0);

    let path = resolve_gguf(&hub_ref(Some("Q4_K_M")), &cfg).expect("download after a retry");
    let got = std::fs::read(&path).expect("read");
    assert_eq!(sha256_hex(&got), etag);
    assert_eq!(got, data);
    let cdn: Vec<_> = hub.requests().into_iter().filter(|r| r.path.starts_with("/cdn/")).collect();
    assert_eq!(cdn.len(), 2, "{cdn:?}");
    assert_eq!(cdn[0].header("range"), None);
    assert_eq!(cdn[1].header("range"), Some(format!("bytes={}-", data.len() / 2).as_str()));
}

// Catches a partial file left by an earlier run being ignored or appended to blindly.
#[test]
fn partial_file_from_an_earlier_run_is_resumed_or_restarted() {
    for ignore_range in [false, true] {
        let tmp = TempDir::new("earlier");
        let (q4, _) = two_quants();
        let (data, etag) = (q4.data.clone(), q4.etag.clone());
        let hub = TestHub::start(vec![q4], Behaviour { ignore_range, ..Default::default() });
        let blobs = repo_dir(&tmp.0).join("blobs");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        let third = data.len() / 3;
        // Garbage where the server ignores Range: appending to it would fail the checksum.
        let partial = if ignore_range { vec![0xAA; third] } else { data[..third].to_vec() };
        std::fs::write(blobs.join(format!("{etag}.incomplete")), partial).expect("write partial");

        let path = resolve_gguf(&hub_ref(None), &config(&hub.endpoint(), &tmp.0)).expect("download");
        assert_eq!(std::fs::read(path).expect("read"), data, "ignore_range={ignore_range}");
        let cdn: Vec<_> = hub.requests().into_iter().filter(|r| r.path.starts_with("/cdn/")).collect();
        assert_eq!(cdn.len(), 1);
        assert_eq!(cdn[0].header("range"), Some(format!("bytes={third}-").as_str()));
    }
}

// Catches a corrupted or substituted file being accepted into the cache.
#[test]
fn checksum_mismatch_is_refused_and_leaves_nothing_behind() {
    let tmp = TempDir::new("checksum");
    let mut bad = Served::new("model-Q4_K_M.gguf", content(10_000, 3));
    bad.etag = sha256_hex(b"something else");
    let etag = bad.etag.clone();
    let hub = TestHub::start(vec![bad], Behaviour::default());

    let err = resolve_gguf(&hub_ref(None), &config(&hub.endpoint(), &tmp.0)).expect_err("must refuse");
    assert!(err.to_string().contains("checksum did not match"), "{err}");
    let repo = repo_dir(&tmp.0);
    assert!(!repo.join("snapshots").join(COMMIT).join("model-Q4_K_M.gguf").exists());
    assert!(!repo.join("blobs").join(&etag).exists());
    assert!(!repo.join("blobs").join(format!("{etag}.incomplete")).exists());
    assert!(!repo.join("refs/main").exists());
}

// Catches an offline run that tries the network, or fails without saying what to do.
#[test]
fn offline_with_an_empty_cache_says_what_to_do() {
    let tmp = TempDir::new("offline-empty");
    let hub = TestHub::start(vec![], Behaviour::default());
    let cfg = HubConfig { offline: true, ..config(&hub.endpoint(), &tmp.0) };
    let err = resolve_gguf(&hub_ref(None), &cfg).expect_err("nothing cached");
    let msg = err.to_string();
    assert!(msg.contains("offline") && msg.contains("not in the cache"), "{msg}");
    assert!(msg.contains("modu run -m /path/to/model.gguf"), "{msg}");
    assert!(hub.requests().is_empty());
}

// Catches offline mode or an unreachable hub refusing a file the cache already has.
#[test]
fn cached_file_works_offline_and_when_the_hub_is_unreachable() {
    let tmp = TempDir::new("offline-cached");
    let (q4, q8) = two_quants();
    let q8_data = q8.data.clone();
    let hub = TestHub::start(vec![q4, q8], Behaviour::default());
    let path = resolve_gguf(&hub_ref(Some("Q8_0")), &config(&hub.endpoint(), &tmp.0)).expect("download");
    let before = hub.requests().len();

    let offline = HubConfig { offline: true, ..config(&hub.endpoint(), &tmp.0) };
    assert_eq!(resolve_gguf(&hub_ref(Some("Q8_0")), &offline).expect("offline"), path);
    // No quant: offline takes whatever .gguf is cached.
    assert_eq!(resolve_gguf(&hub_ref(None), &offline).expect("offline, no quant"), path);
    assert_eq!(hub.requests().len(), before);

    let dead = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let unreachable = config(&format!("http://{dead}"), &tmp.0);
    let got = resolve_gguf(&hub_ref(None), &unreachable).expect("falls back to the cache");
    assert_eq!(std::fs::read(got).expect("read"), q8_data);

    let err = resolve_gguf(&hub_ref(Some("Q2_K")), &unreachable).expect_err("not cached");
    assert!(
        err.to_string().contains("cannot reach") && err.to_string().contains("not in the cache"),
        "{err}"
    );
}

// Catches the wrong file being picked for a quant, a vision projector picked as the model, and
// an unhelpful error when nothing matches.
#[test]
fn quant_selection_rules() {
    let files = names(&[
        "README.md",
        "mmproj-model-Q4_K_M.gguf",
        "model-IQ4_XS.gguf",
        "model-Q4_K_M.gguf",
        "model-Q4_K_S.gguf",
        "model-Q8_0.gguf",
    ]);
    assert_eq!(select_gguf(REPO, &files, None).expect("default"), "model-Q4_K_M.gguf");
    assert_eq!(select_gguf(REPO, &files, Some("q8_0")).expect("case"), "model-Q8_0.gguf");
    assert_eq!(select_gguf(REPO, &files, Some("Q4_K_S")).expect("exact"), "model-Q4_K_S.gguf");
    assert_eq!(select_gguf(REPO, &files, Some("IQ4_XS")).expect("iq"), "model-IQ4_XS.gguf");
    // A whole tag beats a longer one that merely contains it.
    let tags = names(&["m-Q4_K_M.gguf", "m-Q4_K.gguf"]);
    assert_eq!(select_gguf(REPO, &tags, Some("Q4_K")).expect("whole tag"), "m-Q4_K.gguf");
    // No Q4_K_M: the first model file.
    let others = names(&["mmproj-f16.gguf", "b-Q8_0.gguf", "c-F16.gguf"]);
    assert_eq!(select_gguf(REPO, &others, None).expect("first"), "b-Q8_0.gguf");

    let err = select_gguf(REPO, &files, Some("Q2_K")).expect_err("no match").to_string();
    assert!(
        err.contains("Q2_K") && err.contains("model-Q8_0.gguf") && err.contains("model-Q4_K_M.gguf"),
        "{err}"
    );
    assert!(!err.contains("mmproj") && !err.contains("README"), "{err}");
    assert!(select_gguf(REPO, &names(&["config.json"]), None).is_err());
}

// Catches a quant error that only shows up after a download, or lists nothing useful.
#[test]
fn unknown_quant_fails_before_downloading() {
    let tmp = TempDir::new("quant");
    let (q4, q8) = two_quants();
    let hub = TestHub::start(vec![q4, q8], Behaviour::default());
    let err = resolve_gguf(&hub_ref(Some("Q3_K_L")), &config(&hub.endpoint(), &tmp.0)).expect_err("no match");
    let msg = err.to_string();
    assert!(msg.contains("model-Q4_K_M.gguf, model-Q8_0.gguf"), "{msg}");
    assert_eq!(hub.requests().len(), 1, "only the listing");
}

// Catches a hostile listing writing outside the cache.
#[test]
fn path_traversal_in_a_listed_file_name_is_refused() {
    let tmp = TempDir::new("traversal");
    let cache = tmp.0.join("cache");
    for evil in [
        "../../evil-Q4_K_M.gguf",
        "/abs/evil-Q4_K_M.gguf",
        "sub\\..\\evil-Q4_K_M.gguf",
        "a/../evil-Q4_K_M.gguf",
    ] {
        let hub =
            TestHub::start(vec![], Behaviour { extra_listing: vec![evil.into()], ..Default::default() });
        let err = resolve_gguf(&hub_ref(None), &config(&hub.endpoint(), &cache)).expect_err(evil);
        assert!(err.to_string().contains("unsafe file name"), "{evil}: {err}");
        assert_eq!(hub.requests().len(), 1, "{evil}: nothing fetched");
    }
    assert!(!tmp.0.join("evil-Q4_K_M.gguf").exists());
    for name in ["a.gguf", "dir/a.gguf"] {
        assert!(is_safe_relative_path(name), "{name}");
    }
    for name in ["", "..", "a/", "a//b", "./a", "a\0b", "C:a.gguf"] {
        assert!(!is_safe_relative_path(name), "{name:?}");
    }
}

// Catches rejected credentials or a missing repository reported as a vague failure.
#[test]
fn auth_and_not_found_errors_say_what_to_do() {
    let tmp = TempDir::new("status");
    for (code, needle) in [(401, "HF_TOKEN"), (403, "HF_TOKEN"), (404, "repository or file not found")] {
        let hub = TestHub::start(vec![], Behaviour { api_status: Some(code), ..Default::default() });
        let err = resolve_gguf(&hub_ref(None), &config(&hub.endpoint(), &tmp.0)).expect_err("status");
        assert!(err.to_string().contains(needle), "{code}: {err}");
    }
}

// Catches hub references mistaken for paths and the other way round.
#[test]
fn model_ref_parse() {
    let hub = |repo: &str, quant: Option<&str>| ModelRef::Hub {
        repo: repo.into(),
        quant: quant.map(str::to_string),
        revision: "main".into(),
    };
    assert_eq!(ModelRef::parse(DEFAULT_MODEL), hub("LGAI-EXAONE/EXAONE-4.0-1.2B-GGUF", Some("Q4_K_M")));
    assert_eq!(ModelRef::parse("owner/name"), hub("owner/name", None));
    assert_eq!(ModelRef::parse("owner/name:"), hub("owner/name", None));
    assert_eq!(ModelRef::parse("hf.co/owner/name:Q8_0"), hub("owner/name", Some("Q8_0")));
    assert_eq!(ModelRef::parse("https://huggingface.co/owner/name"), hub("owner/name", None));
    for p in [
        "./owner/name",
        "/owner/name",
        "owner/name.gguf",
        "model.gguf",
        "a/b/c",
        "name",
        "../o/n",
        "C:\\m",
        "o/n:Q4/x",
        "o/../n",
    ] {
        assert_eq!(ModelRef::parse(p), ModelRef::Path(p.into()), "{p}");
    }
    // An existing path wins over the hub (tests run in the crate folder).
    assert_eq!(ModelRef::parse("src/hub"), ModelRef::Path("src/hub".into()));
    assert!(!is_valid_repo_id("a--b/c"), "would collide in the cache folder name");
    assert_eq!(ModelRef::parse(DEFAULT_MODEL).to_string(), DEFAULT_MODEL);
}

// Catches the wrong variable winning, or a cache folder that differs from huggingface_hub's.
#[test]
fn config_from_environment_variables() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let cfg = HubConfig::from_vars(vars(&[("HOME", "/home/u")]));
    assert_eq!(cfg.endpoint, "https://huggingface.co");
    assert_eq!(cfg.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
    assert!(!cfg.offline);

    let cfg = HubConfig::from_vars(vars(&[
        ("HOME", "/home/u"),
        ("HF_HOME", "~/hf"),
        ("HF_ENDPOINT", "http://mirror.local/"),
        ("HF_TOKEN", "tok"),
        ("HF_HUB_OFFLINE", "TRUE"),
    ]));
    assert_eq!(cfg.cache_dir, PathBuf::from("/home/u/hf/hub"));
    assert_eq!(cfg.endpoint, "http://mirror.local");
    assert_eq!(cfg.token.as_deref(), Some("tok"));
    assert!(cfg.offline);
    assert!(!format!("{cfg:?}").contains("tok\""), "the token must not be printed");

    let cfg =
        HubConfig::from_vars(vars(&[("HF_HOME", "/x"), ("HF_HUB_CACHE", "/y"), ("HF_HUB_OFFLINE", "0")]));
    assert_eq!(cfg.cache_dir, PathBuf::from("/y"));
    assert!(!cfg.offline);
}
