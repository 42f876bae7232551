#!/usr/bin/env bash
# Speed of modu against llama.cpp on the same model file and the same machine.
#
# For each thread count both engines run A times in alternation (the order flips
# every alternation: llama.cpp, modu, modu, llama.cpp, ...) so that drift in machine
# load hits both about equally. Each run is `llama-bench ... -o json` or
# `modu bench ... --json` with R repetitions; the table shows medians over the
# alternations.
#
# Usage: bench/vs-llama-cpp.sh [-m MODEL.gguf] [-t "1 2"] [-r REPS] [-a ALTERNATIONS]
#                              [-p N_PROMPT] [-n N_GEN] [-o OUT_DIR]
#   -m  GGUF model (default $MODU_TEST_MODELS/gemma-3-270m-q4_k_m.gguf,
#       MODU_TEST_MODELS defaults to ~/.cache/modu/test-models)
#   -t  thread counts, space or comma separated (default "1 2")
#   -r  repetitions inside each run (default 3)
#   -a  alternations per thread count (default 5)
#   -p  prompt tokens of the pp test (default 512; 0 skips it)
#   -n  generated tokens of the tg test (default 128; 0 skips it)
#   -o  keep every run's raw JSON and log in this directory (default: discarded)
#
# Environment:
#   MODU_BIN     use this modu binary instead of building target/release/modu
#   LLAMA_BENCH  use this llama-bench binary instead of bench/build-llama-cpp.sh's
set -euo pipefail

name=vs-llama-cpp
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root="$repo_root"
py="${PYTHON:-python3}"

model="${MODU_TEST_MODELS:-$HOME/.cache/modu/test-models}/gemma-3-270m-q4_k_m.gguf"
threads="1 2"
reps=3
alts=5
n_prompt=512
n_gen=128
keep_dir=""

while getopts ":m:t:r:a:p:n:o:h" opt; do
  case "$opt" in
    m) model="$OPTARG" ;;
    t) threads="$OPTARG" ;;
    r) reps="$OPTARG" ;;
    a) alts="$OPTARG" ;;
    p) n_prompt="$OPTARG" ;;
    n) n_gen="$OPTARG" ;;
    o) keep_dir="$OPTARG" ;;
    h) usage; exit 0 ;;
    :) die "option -$OPTARG needs a value (see -h)" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument: $1 (see -h)"

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
threads="${threads//,/ }"
read -r -a thread_list <<< "$threads"
[ "${#thread_list[@]}" -gt 0 ] || die "-t needs at least one thread count"
for t in "${thread_list[@]}"; do
  is_uint "$t" && [ "$t" -ge 1 ] || die "bad thread count '$t' in -t"
done
for v in "reps:$reps" "alternations:$alts"; do
  is_uint "${v#*:}" && [ "${v#*:}" -ge 1 ] || die "${v%%:*} must be a positive integer, got '${v#*:}'"
done
is_uint "$n_prompt" || die "-p must be a non-negative integer, got '$n_prompt'"
is_uint "$n_gen" || die "-n must be a non-negative integer, got '$n_gen'"
[ "$n_prompt" -gt 0 ] || [ "$n_gen" -gt 0 ] || die "-p and -n are both 0: nothing to measure"

if [ ! -f "$model" ]; then
  die "model file not found: $model
  fetch the test models with: scripts/fetch-test-models.sh
  (or pass another GGUF file with -m)"
fi
command -v "$py" >/dev/null || die "$py not found (python3 is needed to read the results)"

if [ -n "${MODU_BIN:-}" ] && [ ! -x "$MODU_BIN" ]; then
  die "MODU_BIN is not an executable file: $MODU_BIN"
fi
llama_bench="$(llama_tool llama-bench LLAMA_BENCH)"
modu="$(modu_binary)"

if [ -n "$keep_dir" ]; then
  mkdir -p "$keep_dir"
  out="$(cd "$keep_dir" && pwd)"
else
  out="$(mktemp -d "${TMPDIR:-/tmp}/modu-vs-llama-cpp.XXXXXX")"
  trap 'rm -rf "$out"' EXIT
fi

modu_rev="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$modu_rev" != unknown ] && [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  modu_rev="$modu_rev+dirty"
fi
[ -n "${MODU_BIN:-}" ] && modu_rev="$modu (MODU_BIN; source tree $modu_rev)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
# llama.cpp's threads busy-wait on each other: when another process holds a core, a run
# whose -t equals the core count can be several times slower. Warn, do not refuse.
if awk -v l="${load_before%% *}" 'BEGIN { exit !(l + 0 > 0.5) }' 2>/dev/null; then
  log "warning: load average is $load_before; other work on this machine will skew the figures"
fi

# Runs a command as a child and writes its peak resident memory in bytes (the kernel's
# accounting of the child, as modu reads its own VmHWM) to the file named first.
peak_rss_py='import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(rc)'

# One run of one engine; raw JSON to $out/<engine>-t<T>-a<A>.json, stderr to .log, and for
# llama.cpp its peak RSS to .rss.
run_one() {
  local engine="$1" t="$2" a="$3"
  local base="$out/$engine-t$t-a$a"
  local -a cmd
  if [ "$engine" = llama ]; then
    cmd=("$py" -c "$peak_rss_py" "$base.rss"
         "$llama_bench" -m "$model" -p "$n_prompt" -n "$n_gen" -t "$t" -r "$reps" -o json)
  else
    cmd=("$modu" bench -m "$model" -p "$n_prompt" -n "$n_gen" -t "$t" -r "$reps" --json --bandwidth)
  fi
  log "threads $t, alternation $a/$alts: $engine"
  if ! "${cmd[@]}" > "$base.json" 2> "$base.log"; then
    echo "vs-llama-cpp: error: this run failed: ${cmd[*]}" >&2
    echo "--- last lines of its stderr ($base.log):" >&2
    tail -n 20 "$base.log" >&2
    exit 1
  fi
}

for t in "${thread_list[@]}"; do
  for ((a = 1; a <= alts; a++)); do
    if ((a % 2 == 1)); then
      run_one llama "$t" "$a"; run_one modu "$t" "$a"
    else
      run_one modu "$t" "$a"; run_one llama "$t" "$a"
    fi
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

"$py" - "$out" "$model" "$alts" "$reps" "$n_prompt" "$n_gen" "$modu_rev" "$load_before" "$load_after" "${thread_list[@]}" <<'PY'
import json, os, statistics, sys

out, model, alts, reps, n_prompt, n_gen, modu_rev, load_before, load_after = sys.argv[1:10]
alts, reps, n_prompt, n_gen = int(alts), int(reps), int(n_prompt), int(n_gen)
threads = [int(t) for t in sys.argv[10:]]

def fail(msg):
    sys.exit("vs-llama-cpp: error: " + msg)

def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e}")
    try:
        return json.loads(text)
    except ValueError as e:
        # Tolerate log lines before the JSON: try the last line that looks like JSON.
        for ln in reversed(text.splitlines()):
            if ln.lstrip().startswith(("{", "[")):
                try:
                    return json.loads(ln)
                except ValueError:
                    break
        fail(f"{path} is not JSON ({e}); it starts with: {text[:200]!r}")

def llama_run(path):
    """llama-bench -o json: a list with one object per test (pp: n_gen 0, tg: n_prompt 0)."""
    data = load(path)
    if not isinstance(data, list):
        fail(f"{path}: expected a JSON list from llama-bench")
    res = {"info": data[0] if data else {}}
    for e in data:
        np_, ng = int(e.get("n_prompt", 0)), int(e.get("n_gen", 0))
        key = "pp" if np_ > 0 and ng == 0 else "tg" if ng > 0 and np_ == 0 else None
        if key is None:
            continue
        res[key] = {"n_tokens": np_ or ng, "mean": float(e["avg_ts"]),
                    "sd": float(e.get("stddev_ts", 0.0)),
                    "samples": [float(x) for x in e.get("samples_ts", [])]}
    return res

def modu_run(path):
    """modu bench --json: one object with pp/tg {n_tokens, mean_tps, sd_tps, samples_tps}."""
    data = load(path)
    if not isinstance(data, dict):
        fail(f"{path}: expected a JSON object from modu bench --json")
    res = {"info": data}
    for key in ("pp", "tg"):
        e = data.get(key)
        if e:
            res[key] = {"n_tokens": int(e["n_tokens"]), "mean": float(e["mean_tps"]),
                        "sd": float(e.get("sd_tps", 0.0)),
                        "samples": [float(x) for x in e.get("samples_tps", [])]}
    return res

runs = {}  # (engine, threads) -> list over alternations
for t in threads:
    for a in range(1, alts + 1):
        runs.setdefault(("llama", t), []).append(llama_run(os.path.join(out, f"llama-t{t}-a{a}.json")))
        runs.setdefault(("modu", t), []).append(modu_run(os.path.join(out, f"modu-t{t}-a{a}.json")))

def fmt_tps(x):
    return f"{x:.1f}" if x < 1000 else f"{x:.0f}"

def cell(per_alt):
    means = [r["mean"] for r in per_alt]
    sds = [r["sd"] for r in per_alt]
    s = f"{fmt_tps(statistics.median(means))} ± {fmt_tps(statistics.median(sds))}"
    if len(means) > 1:
        s += f" [{fmt_tps(min(means))}..{fmt_tps(max(means))}]"
    return s

tests = [("pp", f"pp{n_prompt}")] if n_prompt > 0 else []
tests += [("tg", f"tg{n_gen}")] if n_gen > 0 else []

rows = []
for t in threads:
    for key, name in tests:
        l = [r[key] for r in runs[("llama", t)] if key in r]
        m = [r[key] for r in runs[("modu", t)] if key in r]
        if len(l) != alts or len(m) != alts:
            fail(f"threads {t}: {name} missing from some runs (llama.cpp {len(l)}/{alts}, modu {len(m)}/{alts})")
        # Ratio per alternation (the two runs sat next to each other), then the median.
        ratios = [mm["mean"] / ll["mean"] for ll, mm in zip(l, m) if ll["mean"] > 0]
        rs = f"{statistics.median(ratios):.2f}" if ratios else "-"
        if len(ratios) > 1:
            rs += f" [{min(ratios):.2f}..{max(ratios):.2f}]"
        rows.append((str(t), name, cell(l), cell(m), rs))

linfo = runs[("llama", threads[0])][0]["info"]
header = ("threads", "test", "llama.cpp t/s", "modu t/s", "modu/llama.cpp")
widths = [max(len(r[i]) for r in rows + [header]) + 3 for i in range(len(header) - 1)]
def line(r):
    return "".join(c.ljust(w) for c, w in zip(r, widths)) + r[-1]

print(f"model: {os.path.basename(model)}  (runs alternated {alts}x, reps {reps} each)")
print(f"llama.cpp: build {linfo.get('build_commit', '?')} ({linfo.get('build_number', '?')}), "
      f"{linfo.get('backends', '?')}, cpu: {linfo.get('cpu_info', '?')}")
print(f"modu: {modu_rev}")
print(f"load average before: {load_before}, after: {load_after}")
print()
print(line(header))
for r in rows:
    print(line(r))
print()
rss = []
for t in threads:
    vals = [r["info"].get("peak_rss_bytes") for r in runs[("modu", t)]]
    vals = [v for v in vals if isinstance(v, (int, float))]
    if vals:
        rss.append(f"{t} thread{'s' if t != 1 else ''} {max(vals) / 2**20:.1f} MiB")
    mt = {r["info"].get("threads") for r in runs[("modu", t)]}
    if mt != {t}:
        print(f"warning: modu reported threads {sorted(mt, key=str)} for -t {t}")
    lt = {int(r["info"].get("n_threads", t)) for r in runs[("llama", t)]}
    if lt != {t}:
        print(f"warning: llama-bench reported n_threads {sorted(lt)} for -t {t}")
print("modu peak RSS (max over runs): " + (", ".join(rss) if rss else "not reported"))
budget = [r["info"].get("rss_budget_bytes") for t in threads for r in runs[("modu", t)]]
budget = [b for b in budget if isinstance(b, (int, float))]
if budget:
    print(f"  target: file + KV cache + 10% = {max(budget) / 2**20:.1f} MiB")
lrss = []
for t in threads:
    vals = []
    for a in range(1, alts + 1):
        try:
            with open(os.path.join(out, f"llama-t{t}-a{a}.rss")) as f:
                vals.append(int(f.read().strip()))
        except (OSError, ValueError):
            pass
    if vals:
        lrss.append(f"{t} thread{'s' if t != 1 else ''} {max(vals) / 2**20:.1f} MiB")
print("llama.cpp peak RSS (max over runs): " + (", ".join(lrss) if lrss else "not measured"))
# Decode bandwidth: weights read per token (from the file: every matrix a token multiplies,
# the same bytes for both engines) times tokens/s, over the read bandwidth modu measured with
# the same thread count in each of its runs (median).
if n_gen > 0:
    for t in threads:
        per_tok = {r["info"].get("decode_read_bytes_per_token") for r in runs[("modu", t)]}
        bws = [r["info"].get("read_bandwidth_bytes_per_s") for r in runs[("modu", t)]]
        bws = [b for b in bws if isinstance(b, (int, float)) and b > 0]
        if len(per_tok) != 1 or None in per_tok or not bws:
            print(f"decode bandwidth, {t} thread{'s' if t != 1 else ''}: not reported")
            continue
        b, bw = per_tok.pop(), statistics.median(bws)
        frac = lambda eng: statistics.median(r["tg"]["mean"] for r in runs[(eng, t)]) * b / bw
        print(f"decode bandwidth, {t} thread{'s' if t != 1 else ''}: {b / 1e6:.1f} MB of weights per token; "
              f"measured read bandwidth {bw / 1e9:.2f} GB/s; llama.cpp reaches {100 * frac('llama'):.0f}%, "
              f"modu {100 * frac('modu'):.0f}%")
print("t/s: median over alternations of each run's mean ± median of each run's sd "
      "[min..max of the run means]; ratio: median of the per-alternation ratios [min..max]")
PY
if [ -n "$keep_dir" ]; then
  log "raw results kept in $out"
fi
