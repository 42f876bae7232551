#!/usr/bin/env python3
"""Load benchmark of `modu serve`: streamed chat completions from a bounded asyncio client.

For each phase (default 1, 8 and 32 concurrent streams) it runs max(streams x rounds,
min_requests) requests, at most `streams` at once, each `max_tokens` long, and prints per phase: requests, failures,
generated tokens, wall time, aggregate tokens/s, aggregate decode tokens/s, TTFT p50/p99 and
inter-token p50/p99. Then the ratio of aggregate decode throughput at 8 streams to 1 stream.
With --repeat N the phases run N times, in flipped order each time, and the ratio is the median
of the N ratios of phases measured next to each other (shared machines drift by tens of percent
within minutes).

Only the standard library: the HTTP/1.1 client and the SSE parser are here (asyncio streams),
so that every SSE event is stamped the moment its bytes arrive.

Without --base-url it starts `modu serve` itself (MODU_BIN or target/release/modu, the Gemma 3
270M test model, --port 0, --parallel = the largest phase) and stops it at the end.

Definitions:
  TTFT         request sent -> first SSE event with non-empty content
  inter-token  gaps between consecutive content events of one stream (an event may carry more
               than one token when the server merges them; tokens are counted from `usage`)
  tokens/s     generated tokens of the phase / phase wall time (first send -> last byte)
  decode tok/s sum over requests of (tokens - 1) / the length of the union of their
               [first content, last content] intervals: decode throughput with prefill and
               idle gaps left out, comparable between 1 and N streams
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["a lighthouse keeper", "the first train to the coast", "a chess match in winter",
          "a bakery at dawn", "a lost satellite", "a village by the river", "an old clock",
          "a storm at sea", "a quiet library", "the last bus home", "a garden on a roof",
          "a broken violin", "a map with no names", "a city under snow", "a fox in the field",
          "a letter never sent"]


@dataclass
class Result:
    ok: bool = False
    error: str = ""
    t_send: float = 0.0
    t_end: float = 0.0
    content_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0

    @property
    def ttft(self) -> float | None:
        return self.content_times[0] - self.t_send if self.content_times else None


# ------------------------------------------------------------------------------------ HTTP + SSE


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readline()
            if not line:
                return
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


async def stream_chat(host: str, port: int, host_header: str, path: str, body: dict,
                      api_key: str | None, timeout: float) -> Result:
    res = Result()
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n")
    if api_key:
        head += f"Authorization: Bearer {api_key}\r\n"
    writer = None

    async def exchange() -> None:
        nonlocal writer
        reader, writer = await asyncio.open_connection(host, port)
        res.t_send = time.perf_counter()
        writer.write(head.encode() + b"\r\n" + payload)
        await writer.drain()
        status_line = await reader.readline()
        m = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
        if not m:
            raise RuntimeError(f"bad status line {status_line[:80]!r}")
        status = int(m.group(1))
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if status != 200:
            body_bytes = b"".join([c async for c in _body_chunks(reader, headers)])
            raise RuntimeError(f"HTTP {status}: {body_bytes[:200].decode('utf-8', 'replace')}")
        buf = b""
        n_events = 0
        async for chunk in _body_chunks(reader, headers):
            now = time.perf_counter()
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.rstrip(b"\r")
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments (": ping"), event: lines
                data = line[5:].strip()
                if data == b"[DONE]":
                    if not res.completion_tokens:  # no usage chunk: count content events
                        res.completion_tokens = n_events
                    res.ok = True
                    return
                obj = json.loads(data)
                if obj.get("error"):
                    raise RuntimeError(f"stream error: {obj['error']}")
                for ch in obj.get("choices") or []:
                    if (ch.get("delta") or {}).get("content"):
                        res.content_times.append(now)
                        n_events += 1
                if obj.get("usage"):
                    res.completion_tokens = int(obj["usage"]["completion_tokens"])
        raise RuntimeError("stream ended without [DONE]")

    try:
        await asyncio.wait_for(exchange(), timeout)
    except Exception as e:  # noqa: BLE001 - every failure is counted, with its reason
        res.ok = False
        res.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    finally:
        res.t_end = time.perf_counter()
        if writer is not None:
            writer.close()
    return res


# ---------------------------------------------------------------------------------------- stats


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    start = None
    for a, b in sorted(intervals):
        if end is None or a > end:
            if end is not None:
                total += end - start
            start, end = a, b
        else:
            end = max(end, b)
    if end is not None:
        total += end - start
    return total


def phase_stats(streams: int, results: list[Result], wall: float) -> dict:
    ok = [r for r in results if r.ok]
    tokens = sum(r.completion_tokens for r in ok)
    ttft = [r.ttft * 1000 for r in ok if r.ttft is not None]
    itl = [(b - a) * 1000 for r in ok for a, b in zip(r.content_times, r.content_times[1:])]
    spans = [(r.content_times[0], r.content_times[-1]) for r in ok if len(r.content_times) >= 2]
    decode_tokens = sum(max(r.completion_tokens - 1, 0) for r in ok if len(r.content_times) >= 2)
    decode_time = union_length(spans)
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            key = r.error[:160]
            errors[key] = errors.get(key, 0) + 1
    return {
        "streams": streams, "requests": len(results), "ok": len(ok), "failed": len(results) - len(ok),
        "tokens": tokens, "wall_s": wall, "tok_per_s": tokens / wall if wall > 0 else 0.0,
        "decode_tok_per_s": decode_tokens / decode_time if decode_time > 0 else 0.0,
        "ttft_p50_ms": pct(ttft, 50), "ttft_p99_ms": pct(ttft, 99),
        "itl_p50_ms": pct(itl, 50), "itl_p99_ms": pct(itl, 99),
        "mean_tokens_per_request": statistics.mean([r.completion_tokens for r in ok]) if ok else 0.0,
        "errors": errors,
    }


# ---------------------------------------------------------------------------------------- phases


async def run_phase(args, target, model_id: str, streams: int, tag: str) -> dict:
    host, port, host_header, api_key = target
    n_requests = max(streams * args.rounds, args.min_requests)
    sem = asyncio.Semaphore(streams)
    results: list[Result] = []

    async def one(i: int) -> None:
        body = {"model": model_id, "max_tokens": args.tokens, "temperature": args.temperature,
                "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content":
                              f"[{tag}-{i}] Write a long story about {TOPICS[i % len(TOPICS)]}."}]}
        if args.temperature > 0:
            body["seed"] = i
        async with sem:
            results.append(await stream_chat(host, port, host_header, "/v1/chat/completions", body,
                                             api_key, args.timeout))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n_requests)))
    return phase_stats(streams, results, time.perf_counter() - t0)


def print_table(rows: list[dict]) -> None:
    cols = [("streams", "streams", 7, "d"), ("requests", "requests", 8, "d"),
            ("failed", "failed", 6, "d"), ("tokens", "tokens", 7, "d"), ("wall_s", "wall s", 7, ".2f"),
            ("tok_per_s", "tok/s", 8, ".1f"), ("decode_tok_per_s", "decode tok/s", 12, ".1f"),
            ("ttft_p50_ms", "TTFT p50 ms", 11, ".1f"), ("ttft_p99_ms", "TTFT p99 ms", 11, ".1f"),
            ("itl_p50_ms", "ITL p50 ms", 10, ".1f"), ("itl_p99_ms", "ITL p99 ms", 10, ".1f")]
    print("  ".join(f"{head:>{w}}" for _, head, w, _ in cols))
    for r in rows:
        print("  ".join(f"{r[k]:>{w}{fmt}}" for k, _, w, fmt in cols))
    for r in rows:
        for msg, n in r["errors"].items():
            print(f"  {r['streams']} streams: {n} x {msg}")


# ---------------------------------------------------------------------------------------- server


class Server:
    def __init__(self, args):
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="modu-serve-load-", suffix=".log", delete=False)

    def start(self, parallel: int) -> str:
        binary = self.args.bin or os.environ.get("MODU_BIN") or str(ROOT / "target/release/modu")
        if not os.access(binary, os.X_OK):
            sys.exit(f"serve-load: error: modu binary not found: {binary} (set MODU_BIN or --bin)")
        model = self.args.model
        if not Path(model).is_file():
            sys.exit(f"serve-load: error: model not found: {model} (run scripts/fetch-test-models.sh)")
        argv = [binary, "serve", "-m", model, "--port", "0", "--parallel", str(parallel),
                "--ctx", str(self.args.ctx), "--max-queue", str(max(64, parallel * 4)),
                *self.args.server_arg]
        print(f"serve-load: starting {' '.join(argv)}", file=sys.stderr)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = Path(self.log.name).read_text("utf-8", "replace")
            m = re.search(r"listening on (https?://\S+)", text)
            if m:
                url = m.group(1).rstrip("/.")
                self._wait_health(url, deadline)
                return url
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        sys.exit("serve-load: error: the server did not start; its log:\n" + self.tail())

    def _wait_health(self, url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        sys.exit("serve-load: error: /health never answered 200; server log:\n" + self.tail())

    def tail(self, n: int = 4000) -> str:
        return Path(self.log.name).read_text("utf-8", "replace")[-n:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


def first_model_id(base_url: str, api_key: str | None) -> str:
    rq = urllib.request.Request(base_url + "/v1/models",
                                headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    with urllib.request.urlopen(rq, timeout=30) as r:
        return json.loads(r.read())["data"][0]["id"]


async def main_async(args, base_url: str) -> list[dict]:
    u = urllib.parse.urlsplit(base_url)
    host = u.hostname or "127.0.0.1"
    connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    target = (connect, u.port or 80, u.netloc, args.api_key)
    model_id = args.model_id or first_model_id(base_url, args.api_key)
    print(f"serve-load: {base_url} model {model_id}, {args.tokens} tokens per request, "
          f"temperature {args.temperature}, {args.rounds} round(s) per phase", file=sys.stderr)
    warm = await stream_chat(*target[:3], "/v1/chat/completions",
                             {"model": model_id, "max_tokens": 4, "stream": True,
                              "messages": [{"role": "user", "content": "Hello."}]},
                             args.api_key, args.timeout)
    if not warm.ok:
        sys.exit(f"serve-load: error: the warm-up request failed: {warm.error}")
    rows = []
    for rep in range(args.repeat):
        # Flip the order each repetition, so that drift in machine speed reaches every phase.
        order = args.phases if rep % 2 == 0 else list(reversed(args.phases))
        for streams in order:
            print(f"serve-load: repetition {rep + 1}/{args.repeat}, phase {streams} stream(s)...", file=sys.stderr)
            row = await run_phase(args, target, model_id, streams, f"r{rep}p{streams}")
            row["repeat"] = rep
            rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--base-url", help="a running server (http://HOST:PORT); default: start one")
    ap.add_argument("--api-key", default=os.environ.get("MODU_API_KEY"))
    ap.add_argument("--model-id", help="model id to request (default: the first of /v1/models)")
    ap.add_argument("-m", "--model", default=str(Path(os.environ.get("MODU_TEST_MODELS") or
                                                     Path.home() / ".cache/modu/test-models")
                                                / "gemma-3-270m-q4_k_m.gguf"),
                    help="GGUF for the server this script starts (default: the Gemma 3 270M test model)")
    ap.add_argument("--bin", help="modu binary (default: MODU_BIN, else target/release/modu)")
    ap.add_argument("--streams", type=int, default=32, help="concurrency of the main phase (default 32)")
    ap.add_argument("--phases", help="comma-separated concurrencies (default: 1,8,STREAMS)")
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens per request (default 64)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="requests per stream in each phase: a phase runs STREAMS x ROUNDS (default 1)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the phases this many times, in flipped order each time; the 8/1 ratio "
                         "is then the median of the per-repetition ratios (default 1)")
    ap.add_argument("--min-requests", type=int, default=8,
                    help="at least this many requests per phase, so that the 1-stream phase "
                         "is not a single sample (default 8)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=600.0, help="per request, seconds")
    ap.add_argument("--ctx", type=int, default=4096, help="--ctx of the started server")
    ap.add_argument("--parallel", type=int, help="--parallel of the started server (default: largest phase)")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra argument for `modu serve` (repeatable)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    args.phases = [int(x) for x in (args.phases or f"1,8,{args.streams}").split(",") if x.strip()]
    if any(p < 1 for p in args.phases) or args.tokens < 1 or args.rounds < 1 or args.repeat < 1:
        ap.error("phases, --tokens, --rounds and --repeat must be positive")

    server = None
    base_url = args.base_url.rstrip("/") if args.base_url else None
    if base_url and base_url.endswith("/v1"):
        base_url = base_url[:-3]
    try:
        if base_url is None:
            server = Server(args)
            base_url = server.start(args.parallel or max(args.phases))
        rows = asyncio.run(main_async(args, base_url))
    finally:
        if server is not None:
            server.stop()

    rows.sort(key=lambda r: (r["repeat"], r["streams"]))
    print_table(rows)
    ratios = []
    for rep in range(args.repeat):
        by = {r["streams"]: r for r in rows if r["repeat"] == rep}
        if 1 in by and 8 in by and by[1]["decode_tok_per_s"] > 0:
            ratios.append((by[8]["decode_tok_per_s"] / by[1]["decode_tok_per_s"],
                           by[8]["decode_tok_per_s"], by[1]["decode_tok_per_s"]))
    ratio = None
    if ratios:
        ratio = statistics.median(r[0] for r in ratios)
        if len(ratios) == 1:
            print(f"decode throughput 8 streams / 1 stream: {ratio:.2f}x "
                  f"({ratios[0][1]:.1f} vs {ratios[0][2]:.1f} tok/s)")
        else:
            each = ", ".join(f"{r[0]:.2f}" for r in ratios)
            print(f"decode throughput 8 streams / 1 stream: median {ratio:.2f}x over {len(ratios)} "
                  f"repetitions ({each})")
    failed = sum(r["failed"] for r in rows)
    print(f"failures: {failed}")
    if args.json:
        Path(args.json).write_text(json.dumps({"phases": rows, "decode_ratio_8_to_1": ratio,
                                               "ratios_8_to_1": [r[0] for r in ratios],
                                               "tokens": args.tokens, "rounds": args.rounds,
                                               "repeat": args.repeat,
                                               "temperature": args.temperature}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
