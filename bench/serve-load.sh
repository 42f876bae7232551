#!/usr/bin/env bash
# Load test of `modu serve` on loopback: streamed chat completions (max_tokens 64, temperature 0)
# from a bounded asyncio client (bench/serve_load.py, standard library only).
#
# Phases of 1, 8 and 32 concurrent streams; for each it prints aggregate tokens/s, aggregate
# decode tokens/s, TTFT and inter-token p50/p99 and the failures; then the ratio of aggregate
# decode throughput at 8 streams to 1 stream. Exits non-zero if any request failed.
#
# Usage: bench/serve-load.sh [--base-url http://127.0.0.1:PORT] [--streams 32] [--tokens 64]
#                            [--rounds 1] [--phases 1,8,32] [--repeat N] [--json out.json] [...]
#   without --base-url it starts `modu serve` itself (--port 0, --parallel = largest phase) on
#   the Gemma 3 270M test model (-m to change), and stops it at the end. -h lists every option.
#
# Environment:
#   MODU_BIN          use this modu binary instead of building target/release/modu
#   MODU_TEST_MODELS  test model directory (default ~/.cache/modu/test-models)
#   PYTHON            python 3.9+ to run the client (default python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
py="${PYTHON:-python3}"
die() { echo "serve-load: error: $*" >&2; exit 1; }
command -v "$py" >/dev/null || die "$py not found"

start_server=1
for a in "$@"; do
  case "$a" in
    --base-url|--base-url=*) start_server=0 ;;
    -h|--help) exec "$py" "$here/serve_load.py" --help ;;
  esac
done

if [ "$start_server" = 1 ]; then
  if [ -n "${MODU_BIN:-}" ]; then
    [ -x "$MODU_BIN" ] || die "MODU_BIN is not an executable file: $MODU_BIN"
  else
    echo "serve-load: building modu (cargo build --release)" >&2
    (cd "$root" && cargo build --release --bin modu) >&2 || die "cargo build --release failed"
    export MODU_BIN="$root/target/release/modu"
  fi
  load="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
  echo "serve-load: load average before: $load" >&2
fi

exec "$py" "$here/serve_load.py" "$@"
