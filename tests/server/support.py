"""Helpers shared by the `modu serve` black-box tests: starting a server, raw HTTP, SSE,
OpenAI error-schema checks, Prometheus parsing and a small GGUF metadata reader.

Only the standard library and the `openai` SDK are used. Nothing here runs at import time
beyond constants, so collecting the tests never starts a server.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import secrets
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[2]
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
MODEL_ID = "gemma-3-270m-q4_k_m"  # the file stem: the id `modu serve -m PATH` gives it
DEFAULT_MAX_BODY = 4 * 1024 * 1024
LISTEN_RE = re.compile(r"listening on (https?://\S+)")
CORS_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:5173")  # the secure server's list
NO_KEY = "sk-no-key-configured"  # the SDK always sends a Bearer; a keyless server accepts any


def modu_bin() -> Path:
    return Path(os.environ.get("MODU_BIN") or ROOT / "target" / "release" / "modu")


def test_models_dir() -> Path:
    return Path(os.environ.get("MODU_TEST_MODELS") or Path.home() / ".cache" / "modu" / "test-models")


def test_model_path() -> Path:
    return test_models_dir() / MODEL_FILE


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    return float(v) if v else default


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v else default


# --------------------------------------------------------------------------------------------
# Server processes


def _die_with_parent() -> None:  # preexec_fn: SIGTERM the server if pytest dies (Linux)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ServerStartError(RuntimeError):
    pass


class ModuServer:
    """One `modu serve` process. `argv` is everything after the binary."""

    def __init__(self, argv: list[str], log_dir: Path, name: str, model_id: str,
                 api_key: str | None = None):
        self.argv = [str(a) for a in argv]
        self.name = name
        self.model_id = model_id
        self.api_key = api_key
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""  # http://host:port as printed in the listening line
        self.host = ""
        self.port = 0

    # -- lifecycle
    def spawn(self) -> None:
        binary = modu_bin()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise ServerStartError(
                f"modu binary not found or not executable: {binary} "
                "(build it with `cargo build --release`, or set MODU_BIN)")
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        env = dict(os.environ)
        env.pop("MODU_API_KEY", None)  # `--api-key` falls back to it: keys come from argv only
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen([str(binary), *self.argv], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=err, env=env,
                                     preexec_fn=_die_with_parent)
        out.close()
        err.close()

    def wait_listening(self, timeout: float) -> None:
        """Waits for `listening on http://HOST:PORT` on stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.stderr_text())
            if m:
                u = urllib.parse.urlsplit(m.group(1).rstrip("/."))
                self.url = f"{u.scheme}://{u.netloc}"
                self.host = u.hostname or ""
                self.port = u.port or 80
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name}: modu exited with {self.proc.returncode} before listening\n"
                    f"argv: {self.argv}\n--- stderr tail:\n{self.stderr_text()[-4000:]}")
            time.sleep(0.05)
        raise ServerStartError(f"{self.name}: no 'listening on' line within {timeout}s\n"
                               f"--- stderr tail:\n{self.stderr_text()[-4000:]}")

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                r = req(self, "GET", "/health", timeout=5)
                if r.status == 200:
                    return
                last = f"status {r.status}: {r.body[:200]!r}"
            except OSError as e:
                last = repr(e)
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise ServerStartError(f"{self.name}: /health not 200 within {timeout}s ({last})\n"
                               f"--- stderr tail:\n{self.stderr_text()[-4000:]}")

    def start(self, timeout: float = 180.0) -> "ModuServer":
        self.spawn()
        try:
            self.wait_listening(timeout)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 10.0) -> int | None:
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        return p.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- introspection
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def api_base(self) -> str:
        return self.url + "/v1"

    @property
    def connect_host(self) -> str:
        # A server that listens on all interfaces is reached through loopback.
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        try:
            out = self.stdout_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            out = ""
        return out + self.stderr_text()

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, api_key: str | None = None, strict: bool = True, **kw: Any):
        """OpenAI SDK client, max_retries=0 and strict response validation by default.
        strict=False is only for streamed legacy completions: the SDK's `Completion` type
        requires a non-null `finish_reason`, which every chunk but the last has as null (OpenAI's
        own API does the same), so strict validation rejects any conforming stream."""
        from openai import OpenAI
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 120.0)
        return OpenAI(base_url=self.api_base, api_key=api_key or self.api_key or NO_KEY,
                      _strict_response_validation=strict, **kw)


def server_argv(model_args: Iterable[str], *extra: str, global_args: Iterable[str] = ()) -> list[str]:
    argv = [*global_args, "serve"]
    for m in model_args:
        argv += ["-m", m]
    return argv + list(extra)


def random_key() -> str:
    return "sk-modu-test-" + secrets.token_hex(16)


# --------------------------------------------------------------------------------------------
# Raw HTTP


@dataclass
class Resp:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float = 0.0
    chunks: list[tuple[float, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Resp {self.status} {self.body[:300]!r}>"


def _target(server: ModuServer | tuple[str, int]) -> tuple[str, int]:
    if isinstance(server, tuple):
        return server
    return server.connect_host, server.port


def req(server: ModuServer | tuple[str, int], method: str, path: str,
         body: bytes | str | dict | list | None = None, headers: dict[str, str] | None = None,
         timeout: float = 60.0, auth: bool = True) -> Resp:
    """One request on a fresh connection (http.client). dict/list bodies are sent as JSON."""
    host, port = _target(server)
    hdrs: dict[str, str] = {}
    if auth and isinstance(server, ModuServer):
        hdrs.update(server.auth_headers())
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    elif isinstance(body, str):
        body = body.encode()
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
    hdrs.update(headers or {})
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.getheaders(), data, time.monotonic() - t0)
    finally:
        conn.close()


def post_json(server: ModuServer, path: str, body: Any, **kw: Any) -> Resp:
    return req(server, "POST", path, body, **kw)


def stream_post(server: ModuServer, path: str, body: dict, headers: dict[str, str] | None = None,
                timeout: float = 120.0, max_events: int | None = None) -> Resp:
    """POST and read the response line by line, stamping each line's arrival time.
    `chunks` holds (seconds since send, raw line bytes) for every line of the body."""
    host, port = _target(server)
    hdrs = {"Content-Type": "application/json", "Accept": "text/event-stream",
            **server.auth_headers(), **(headers or {})}
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=hdrs)
        r = conn.getresponse()
        lines: list[tuple[float, bytes]] = []
        raw = bytearray()
        n_events = 0
        while True:
            line = r.readline()
            if not line:
                break
            raw += line
            lines.append((time.monotonic() - t0, line))
            if line.startswith(b"data:"):
                n_events += 1
                if max_events is not None and n_events >= max_events:
                    break
        return Resp(r.status, r.reason, r.getheaders(), bytes(raw), time.monotonic() - t0, lines)
    finally:
        conn.close()


def sse_data(resp: Resp) -> list[str]:
    """The payloads of the `data:` lines, decoded as strict UTF-8 (raises on invalid bytes)."""
    out = []
    for _, line in resp.chunks:
        if line.startswith(b"data:"):
            payload = line[5:]
            if payload.startswith(b" "):
                payload = payload[1:]
            out.append(payload.rstrip(b"\r\n").decode("utf-8"))  # strict
    return out


def read_raw_response(sock: socket.socket, timeout: float) -> Resp | None:
    """Reads one HTTP/1.x response from a socket until the body is complete or EOF.
    Returns None when the peer closed without sending a status line."""
    sock.settimeout(timeout)
    buf = bytearray()
    t0 = time.monotonic()
    try:
        while b"\r\n\r\n" not in buf:
            b = sock.recv(65536)
            if not b:
                break
            buf += b
    except (ConnectionResetError, socket.timeout):
        pass
    if b"\r\n\r\n" not in buf:
        return None if not buf.startswith(b"HTTP/") else _parse_raw(bytes(buf), t0)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    hdrs = _parse_headers(head)
    body = bytearray(rest)
    cl = next((int(v) for k, v in hdrs if k.lower() == "content-length"), None)
    chunked = any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in hdrs)
    try:
        while True:
            if cl is not None and len(body) >= cl:
                break
            if chunked and body.endswith(b"0\r\n\r\n"):
                break
            b = sock.recv(65536)
            if not b:
                break
            body += b
    except (ConnectionResetError, socket.timeout):
        pass
    if cl is not None:
        del body[cl:]
    return _parse_raw(head + b"\r\n\r\n" + bytes(body), t0)


def _parse_headers(head: bytes) -> list[tuple[str, str]]:
    out = []
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, _, v = line.partition(b":")
            out.append((k.decode("latin-1").strip(), v.decode("latin-1").strip()))
    return out


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    i = 0
    while True:
        j = body.find(b"\r\n", i)
        if j < 0:
            break
        try:
            size = int(body[i:j].split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += body[j + 2:j + 2 + size]
        i = j + 2 + size + 2
    return bytes(out)


def _parse_raw(data: bytes, t0: float) -> Resp:
    head, _, body = data.partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = first.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    hdrs = _parse_headers(head)
    if any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in hdrs):
        body = _dechunk(body)
    return Resp(status, parts[2] if len(parts) > 2 else "", hdrs, body, time.monotonic() - t0)


def raw_http(server: ModuServer | tuple[str, int], request: bytes, timeout: float = 30.0) -> Resp | None:
    """Sends raw bytes on a fresh TCP connection and reads one response."""
    host, port = _target(server)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        return read_raw_response(s, timeout)


def send_body(server: ModuServer, path: str, headers: dict[str, str], total: int | None = None,
              chunk: bytes = b"", body: bytes | None = None, chunked: bool = False,
              timeout: float = 60.0) -> Resp | None:
    """Streams `body` (or `total` bytes made of repeats of `chunk`) while watching for an early
    response. Stops sending as soon as the server answers (a 413 may come before the body
    ends), and returns that response; None if the connection closed without one."""
    if body is not None:
        total = len(body)
    assert total is not None
    host, port = _target(server)
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        for k, v in {**server.auth_headers(), **headers}.items():
            head += f"{k}: {v}\r\n"
        if chunked:
            head += "Transfer-Encoding: chunked\r\n"
        else:
            head += f"Content-Length: {total}\r\n"
        s.sendall((head + "\r\n").encode())
        s.setblocking(False)
        sent = 0
        pending = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pending:
                if sent >= total:
                    if not chunked:
                        break
                    pending, chunked = b"0\r\n\r\n", False  # the last chunk, once
                else:
                    piece = body[sent:sent + 65536] if body is not None else chunk[: total - sent]
                    sent += len(piece)
                    pending = (b"%x\r\n" % len(piece) + piece + b"\r\n") if chunked else piece
            readable, writable, _ = select.select([s], [s], [], 1.0)
            if readable:
                break  # the server answered (or closed): stop sending
            if writable:
                try:
                    n = s.send(pending)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                pending = pending[n:]
        s.setblocking(True)
        return read_raw_response(s, timeout)
    finally:
        s.close()


# --------------------------------------------------------------------------------------------
# Assertions


def error_body(resp: Resp) -> dict:
    ctype = resp.header("content-type") or ""
    assert "application/json" in ctype, (
        f"error responses must be JSON, got content-type {ctype!r}: {resp!r}")
    try:
        body = resp.json()
    except ValueError as e:
        raise AssertionError(f"error body is not JSON: {resp!r}") from e
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (
        f"expected {{'error': {{...}}}}, got {body!r}")
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], f"error.message: {err!r}"
    assert isinstance(err.get("type"), str) and err["type"], f"error.type: {err!r}"
    for k in ("param", "code"):
        assert k in err, f"error.{k} must be present (str or null): {err!r}"
        assert err[k] is None or isinstance(err[k], str), f"error.{k} must be str|null: {err!r}"
    return err


_ANY = object()


def assert_openai_error(resp: Resp, status: int | tuple[int, ...], *, param: Any = _ANY,
                        code: Any = _ANY, type_: Any = _ANY) -> dict:
    ok = status if isinstance(status, tuple) else (status,)
    assert resp.status in ok, f"expected HTTP {ok}, got {resp!r}"
    err = error_body(resp)
    if param is not _ANY:
        params = param if isinstance(param, tuple) else (param,)
        assert err["param"] in params, f"error.param {err['param']!r} not in {params}: {err!r}"
    if code is not _ANY:
        codes = code if isinstance(code, tuple) else (code,)
        assert err["code"] in codes, f"error.code {err['code']!r} not in {codes}: {err!r}"
    if type_ is not _ANY:
        types = type_ if isinstance(type_, tuple) else (type_,)
        assert err["type"] in types, f"error.type {err['type']!r} not in {types}: {err!r}"
    return err


def assert_alive(server: ModuServer) -> None:
    """Every reliability case ends here: /health is 200 and a small valid chat succeeds."""
    assert server.alive(), f"{server.name} exited with {server.proc.returncode}\n" \
                           f"{server.stderr_text()[-3000:]}"
    r = req(server, "GET", "/health", timeout=10)
    assert r.status == 200, r
    c = server.client().chat.completions.create(
        model=server.model_id, messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=2, temperature=0)
    assert len(c.choices) == 1 and c.choices[0].message.role == "assistant"
    assert c.usage is not None and 1 <= c.usage.completion_tokens <= 2


def chat_body(model: str, content: str = "Say hello.", **kw: Any) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **kw}


# --------------------------------------------------------------------------------------------
# Concurrency helpers (parallel correctness, batch invariance)

_TOPICS = ["the old lighthouse", "a recipe for bread", "the history of trains", "a quiet forest",
           "the planet Mars", "a chess tournament", "a small fishing village", "the first computer"]


def canary_prompts(n: int, mixed_lengths: bool = False, tag: str = "") -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        canary = f"CANARY{tag}{i:02d}{os.urandom(3).hex().upper()}"
        filler = "This is background text that pads the prompt. " * ((i * 7) % 23 if mixed_lengths else 0)
        out.append((canary, f"Record {canary}. {filler}Here is a story about {_TOPICS[i % len(_TOPICS)]}:"))
    return out


class RunningSampler:
    """Samples /metrics in the background; keeps the largest running / queued counts."""

    def __init__(self, server, interval: float = 0.02):
        self.server, self.interval = server, interval
        self.max_running = 0.0
        self.max_queued = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                m = metrics(self.server)
                self.max_running = max(self.max_running, m.total("modu_running_sequences"))
                self.max_queued = max(self.max_queued, m.total("modu_queue_depth"))
            except Exception:
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


def complete_all(server, prompts: list[str], max_tokens: int, concurrent: bool) -> list[str]:
    def one(p: str) -> str:
        c = server.client()
        try:
            r = c.completions.create(model=server.model_id, prompt=p, max_tokens=max_tokens,
                                     temperature=0)
            return r.choices[0].text
        finally:
            c.close()

    if not concurrent:
        return [one(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as ex:
        return list(ex.map(one, prompts))


def assert_no_leak(canaries: list[str], outputs: list[str]) -> None:
    for i, out in enumerate(outputs):
        for j, c in enumerate(canaries):
            if i != j:
                assert c not in out, f"canary of request {j} leaked into the output of request {i}"


# --------------------------------------------------------------------------------------------
# Prometheus text


@dataclass
class Metrics:
    samples: list[tuple[str, dict[str, str], float]]
    types: dict[str, str]

    def total(self, name: str) -> float:
        """Sum over every label set of one sample name (0 if absent)."""
        return sum(v for n, _, v in self.samples if n == name)

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.samples)


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> Metrics:
    samples, types = [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError(f"unparsable metrics line: {line!r}")
        labels = dict(_LABEL_RE.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return Metrics(samples, types)


def metrics(server: ModuServer) -> Metrics:
    r = req(server, "GET", "/metrics", timeout=10)
    assert r.status == 200, r
    return parse_metrics(r.text())


def wait_idle(server: ModuServer, timeout: float) -> Metrics:
    """Polls /metrics until no sequence runs and nothing is queued; returns the last sample."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(server)
        if m.total("modu_running_sequences") == 0 and m.total("modu_queue_depth") == 0:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not idle within {timeout}s: running={m.total('modu_running_sequences')} "
                f"queued={m.total('modu_queue_depth')}")
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# GGUF metadata (just enough to read the vocabulary of the test model)

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}


def gguf_metadata(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with open(path, "rb") as f:
        rd = f.read
        if rd(4) != b"GGUF":
            raise ValueError(f"{path} is not GGUF")
        _version, = struct.unpack("<I", rd(4))
        _n_tensors, n_kv = struct.unpack("<QQ", rd(16))

        def string() -> str:
            n, = struct.unpack("<Q", rd(8))
            return rd(n).decode("utf-8", "replace")

        def value(t: int) -> Any:
            if t == 8:
                return string()
            if t == 9:
                et, = struct.unpack("<I", rd(4))
                n, = struct.unpack("<Q", rd(8))
                return [value(et) for _ in range(n)]
            fmt = _SCALARS[t]
            return struct.unpack(fmt, rd(struct.calcsize(fmt)))[0]

        for _ in range(n_kv):
            key = string()
            t, = struct.unpack("<I", rd(4))
            out[key] = value(t)
    return out


# --------------------------------------------------------------------------------------------
# Misc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def urlopen_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())
