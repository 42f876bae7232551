#!/usr/bin/env bash
# An EXAONE-4.0-1.2B-shaped model end to end: random weights in the published shape (made by
# tests/fixtures/make_reference.py --full-size, 2.4 GiB of bf16 safetensors plus a 102,400-token
# tokenizer), converted by `modu convert --type q4_k` (llama.cpp's Q4_K_M mix; EXAONE_TYPE picks
# another of convert's types), then benchmarked against llama.cpp on that same file with
# bench/vs-llama-cpp.sh. No weights are downloaded and
# nothing lands in git: everything goes to the work directory.
#
# Usage: bench/exaone4-1.2b.sh [WORK_DIR] [vs-llama-cpp.sh options...]
#   WORK_DIR defaults to ${MODU_CACHE:-~/.cache/modu}/exaone4-1.2b-shaped
#   Remaining options go to vs-llama-cpp.sh (default: -r 1, with its own defaults of threads
#   1 and 2, pp512, tg128 and 5 alternations: about 20 minutes on two cores).
#
# Environment:
#   FIXTURES_PYTHON  python with torch + transformers (tests/fixtures/requirements.txt);
#                    default ~/.cache/modu/fixtures-venv/bin/python
#   MODU_BIN         modu binary (default: cargo build --release, then target/release/modu)
#   EXAONE_TYPE      q4_k (default), q5_k, q4_0 or q8_0: the type `modu convert` writes
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${MODU_CACHE:-$HOME/.cache/modu}"
work="${1:-$cache/exaone4-1.2b-shaped}"
shift || true
py="${FIXTURES_PYTHON:-$cache/fixtures-venv/bin/python}"
log() { echo "exaone4-1.2b: $*" >&2; }

[ -x "$py" ] || { log "no python at $py: create a venv from tests/fixtures/requirements.txt or set FIXTURES_PYTHON"; exit 1; }
if [ -z "${MODU_BIN:-}" ]; then
  (cd "$root" && cargo build --release -q)
  MODU_BIN="$root/target/release/modu"
fi

hf="$work/hf"
type="${EXAONE_TYPE:-q4_k}"
case "$type" in
  q4_k) gguf="$work/exaone4-1.2b-q4_k_m.gguf" ;;
  q5_k) gguf="$work/exaone4-1.2b-q5_k_m.gguf" ;;
  q8_0 | q4_0) gguf="$work/exaone4-1.2b-$type.gguf" ;;
  *) log "EXAONE_TYPE must be q4_k, q5_k, q4_0 or q8_0, got '$type'"; exit 1 ;;
esac
if [ ! -f "$hf/model.safetensors.index.json" ]; then
  log "making the random 1.2B-shaped checkpoint in $hf"
  rm -rf "$hf"
  "$py" "$root/tests/fixtures/make_reference.py" --full-size "$hf"
fi
if [ ! -f "$gguf" ]; then
  log "converting to $(basename "$gguf")"
  "$MODU_BIN" convert "$hf" --out "$gguf" --type "$type"
fi
ls -l "$gguf" >&2

if [ $# -eq 0 ]; then set -- -r 1; fi
MODU_BIN="$MODU_BIN" "$here/vs-llama-cpp.sh" -m "$gguf" "$@"
