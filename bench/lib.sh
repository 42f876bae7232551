# Shared by the bench scripts: sourced, not run. The sourcing script sets `name` first.
#   usage             prints the script's header comment (its lines up to `set -euo`)
#   die MSG / log MSG messages on stderr prefixed with the script's name (die exits 1)
#   modu_binary       prints the modu binary: $MODU_BIN, or target/release/modu after a build
#   llama_tool TOOL VAR
#                     prints llama.cpp's TOOL: the path in the environment variable VAR, or
#                     bench/build-llama-cpp.sh's build

bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$bench_dir/.." && pwd)"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "$name: error: $*" >&2; exit 1; }
log() { echo "$name: $*" >&2; }

modu_binary() {
  local modu
  if [ -n "${MODU_BIN:-}" ]; then
    modu="$MODU_BIN"
  else
    log "building modu (cargo build --release)"
    (cd "$repo_root" && cargo build --release --bin modu) >&2 || die "cargo build --release failed"
    modu="$repo_root/target/release/modu"
  fi
  [ -x "$modu" ] || die "modu binary not found or not executable: $modu"
  echo "$modu"
}

llama_tool() {
  local tool="$1" var="$2" path
  if [ -n "${!var:-}" ]; then
    path="${!var}"
  else
    path="$("$bench_dir/build-llama-cpp.sh" | tail -n1)/$tool"
  fi
  [ -x "$path" ] || die "$tool not found or not executable: $path"
  echo "$path"
}
