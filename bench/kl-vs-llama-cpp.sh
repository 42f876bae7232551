#!/usr/bin/env bash
# How close modu and llama.cpp come to the exact model, logit by logit, on the reference texts.
#
# For each case (text, context) modu writes the exact model's log-probabilities (f32 weights
# dequantized from the file, f32 KV cache, no int8 activations) as a KL-divergence base file in
# llama.cpp's format; then llama-perplexity --kl-divergence and modu perplexity --kl-divergence
# each run the quantized arithmetic on the same tokens and compare with that base. One table:
# perplexity, perplexity ratio to the exact model (llama.cpp's ± is its own standard error),
# mean KL divergence and top-token agreement, for both engines.
#
# llama.cpp runs once with its defaults and once more for each extra option set (-l), so that
# the table also shows how far llama.cpp's own kernel choices (weight repacking, flash
# attention) move these figures: perplexity on a few hundred tokens moves by tenths of a percent
# with any change of rounding in either engine; the KL divergence from the exact model is the
# figure that ranks them.
#
# Usage: bench/kl-vs-llama-cpp.sh [-m MODEL.gguf] [-t THREADS] [-c "FILE:CTX ..."] [-l "OPTS;OPTS"]
#   -m  GGUF model (default $MODU_TEST_MODELS/gemma-3-270m-q4_k_m.gguf,
#       MODU_TEST_MODELS defaults to ~/.cache/modu/test-models)
#   -t  threads for both engines (default 2)
#   -c  cases as FILE:CTX, FILE relative to ../shared/reference or absolute
#       (default "ppl_en.txt:512 ppl_en.txt:128 ppl_ko.txt:128 ppl_ko.txt:256")
#   -l  extra llama-perplexity option sets, separated by ';' (default "--no-repack;-fa off";
#       "" runs llama.cpp with its defaults only)
#
# Environment:
#   MODU_BIN          use this modu binary instead of building target/release/modu
#   LLAMA_PERPLEXITY  use this llama-perplexity instead of bench/build-llama-cpp.sh's
set -euo pipefail

name=kl-vs-llama-cpp
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root="$repo_root"
refdir="$(cd "$root/.." && pwd)/shared/reference"

model="${MODU_TEST_MODELS:-$HOME/.cache/modu/test-models}/gemma-3-270m-q4_k_m.gguf"
threads=2
cases="ppl_en.txt:512 ppl_en.txt:128 ppl_ko.txt:128 ppl_ko.txt:256"
variants="--no-repack;-fa off"
while getopts ":m:t:c:l:h" opt; do
  case "$opt" in
    m) model="$OPTARG" ;;
    t) threads="$OPTARG" ;;
    c) cases="$OPTARG" ;;
    l) variants="$OPTARG" ;;
    h) usage; exit 0 ;;
    :) die "option -$OPTARG needs a value (see -h)" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument: $1 (see -h)"
[[ "$threads" =~ ^[0-9]+$ ]] && [ "$threads" -ge 1 ] || die "-t must be a positive integer, got '$threads'"
[ -f "$model" ] || die "model file not found: $model (fetch it with scripts/fetch-test-models.sh, or pass -m)"

llama="$(llama_tool llama-perplexity LLAMA_PERPLEXITY)"
modu="$(modu_binary)"

out="$(mktemp -d "${TMPDIR:-/tmp}/modu-kl.XXXXXX")"
trap 'rm -rf "$out"' EXIT

# llama.cpp's defaults first, then each extra option set.
IFS=';' read -r -a extra <<< "$variants"
llama_runs=("")
for v in "${extra[@]}"; do
  [ -n "${v// /}" ] && llama_runs+=("$v")
done

printf '| text | ctx | tokens | exact PPL | engine | PPL | PPL/exact | KLD | same top |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for c in $cases; do
  file="${c%:*}" ctx="${c##*:}"
  [[ "$ctx" =~ ^[0-9]+$ ]] || die "bad case '$c' (FILE:CTX)"
  case "$file" in /*) path="$file" ;; *) path="$refdir/$file" ;; esac
  [ -f "$path" ] || die "text not found: $path"
  base="$out/base.kld"
  log "$file, ctx $ctx: exact model (modu --exact)"
  "$modu" perplexity -m "$model" -t "$threads" --exact -f "$path" -c "$ctx" --quiet \
    --kl-divergence-base "$base" > "$out/exact.txt" || die "modu --exact failed (see above)"
  exact="$(sed -n 's/^PPL = \([0-9.]*\) .*/\1/p' "$out/exact.txt")"
  scored="$(sed -n 's/.*, \([0-9]*\) tokens scored.*/\1/p' "$out/exact.txt")"
  [ -n "$exact" ] && [ -n "$scored" ] || die "could not read modu --exact's output (in $out)"
  row() {
    for v in ppl ratio kld top; do
      [ -n "${!v}" ] || die "could not read $v of $1 for $file ctx $ctx (outputs in $out)"
    done
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$file" "$ctx" "$scored" "$exact" "$1" "$ppl" "$ratio" "$kld" "$top"
  }
  for opts in "${llama_runs[@]}"; do
    log "$file, ctx $ctx: llama.cpp ${opts:-(defaults)}"
    # shellcheck disable=SC2086  # the option set splits into words on purpose
    "$llama" -m "$model" -t "$threads" -c "$ctx" $opts --kl-divergence-base "$base" --kl-divergence \
      > "$out/llama.txt" 2>&1 || { tail -n 20 "$out/llama.txt" >&2; die "llama-perplexity $opts failed"; }
    ppl="$(sed -n 's/^Mean PPL(Q) *: *\([0-9.]*\).*/\1/p' "$out/llama.txt")"
    ratio="$(sed -n 's/^Mean PPL(Q)\/PPL(base) *: *\([0-9.]*\) *± *\([0-9.]*\).*/\1 ± \2/p' "$out/llama.txt")"
    kld="$(sed -n 's/^Mean *KLD: *\([0-9.]*\) *± *\([0-9.]*\).*/\1 ± \2/p' "$out/llama.txt")"
    top="$(sed -n 's/^Same top p: *\([0-9.]*\) *± *\([0-9.]*\) *%.*/\1%/p' "$out/llama.txt")"
    row "llama.cpp${opts:+ $opts}"
  done
  log "$file, ctx $ctx: modu"
  "$modu" perplexity -m "$model" -t "$threads" --kl-divergence "$base" --quiet > "$out/modu.txt" \
    || die "modu --kl-divergence failed (see above)"
  ppl="$(sed -n 's/^PPL = \([0-9.]*\) .*/\1/p' "$out/modu.txt")"
  ratio="$(sed -n 's/.*PPL\/base PPL = \([0-9.]*\).*/\1/p' "$out/modu.txt")"
  kld="$(sed -n 's/.*mean \([0-9.]*\) ± \([0-9.]*\),.*/\1 ± \2/p' "$out/modu.txt")"
  top="$(sed -n 's/^same top token: \([0-9.]*\)%.*/\1%/p' "$out/modu.txt")"
  row modu
done
printf '\nmodel %s; llama.cpp %s; modu %s; %s threads\n' "$(basename "$model")" "$llama" \
  "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" "$threads"
