#!/usr/bin/env bash
# Few-shot adaptation measured with the Gemma 3 270M test model on the held-out sets of
# data/tasks (provenance and the fixed metric: data/tasks/README.md). Baselines: zero-shot and
# in-context learning with K solved training examples in the prompt, each asked both through the
# chat template and in plain text (`<question>\nAnswer:`, the form a base model reads best).
# Then `modu tune` on the training set and the adapter asked zero-shot. Prints one table;
# predictions, losses and adapters go to $OUT.
#
#   bench/tune-tasks.sh [-t THREADS] [--baselines "0:chat 0:raw 8:chat 8:raw 32:raw 64:raw"]
#                       [--format raw] [--epochs N] [--lr LR] [--tasks "..."] [--reuse]
#
# A baseline K:FORM puts K training examples in the prompt (0: none), asked in FORM. Many-shot
# prompts in chat form are left out by default: through the chat template a base model answers
# none even with 8 examples, and their prompts are the longest. --reuse keeps results already
# in $OUT (from the same binary and model).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
modu=${MODU_BIN:-$root/target/release/modu}
model=${MODEL:-$HOME/.cache/modu/test-models/gemma-3-270m-q4_k_m.gguf}
out=${OUT:-$root/target/tune-tasks}
threads=2 baselines="0:chat 0:raw 8:chat 8:raw 32:raw 64:raw" reuse=0 epochs=4 lr=1e-3 batch=4 rank=8 alpha=16 seed=0 format=raw
tasks="debian-section ko-ui-strings"
while [ $# -gt 0 ]; do
  case $1 in
    -t) threads=$2; shift 2 ;;
    --baselines) baselines=$2; shift 2 ;;
    --reuse) reuse=1; shift ;;
    --format) format=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$modu" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$model" ] || { echo "missing $model: run scripts/fetch-test-models.sh" >&2; exit 1; }
mkdir -p "$out"
max_tokens=24
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % d[sys.argv[2]] if sys.argv[2]=="accuracy" else "%.3f" % d[sys.argv[2]])' "$1" "$2"; }
ev() { # name, extra eval args...
  local name=$1; shift
  if [ $reuse = 1 ] && [ -s "$out/$task.$name.json" ]; then return; fi
  "$modu" eval -m "$model" -t "$threads" --data "$d/test.jsonl" --max-tokens $max_tokens \
    --predictions "$out/$task.$name.jsonl" --json "$@" > "$out/$task.$name.json"
}
header="| task |"
sep="|---|"
for b in $baselines; do header+=" ${b%%:*}-shot ${b#*:} |"; sep+="---|"; done
header+=" LoRA ($format) | LoRA - best few-shot (K <= 8) | LoRA - best of all | training time |"; sep+="---|---|---|---|"
rows=()
for task in $tasks; do
  d=$root/data/tasks/$task
  echo "== $task" >&2
  row="| $task |"
  best=0 best_few=0
  names=()
  for b in $baselines; do
    k=${b%%:*} f=${b#*:}
    if [ "$k" = 0 ]; then ev "0.$f" --format "$f"; else ev "$k.$f" --format "$f" --few-shot "$k" --shots "$d/train.jsonl"; fi
    names+=("$k.$f")
  done
  for n in "${names[@]}"; do
    a=$(field "$out/$task.$n.json" accuracy)
    row+=" $a |"
    best=$(python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$best" "$a")
    if [ "${n%%.*}" -le 8 ]; then
      best_few=$(python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$best_few" "$a")
    fi
  done
  start=$(date +%s)
  "$modu" tune -m "$model" -t "$threads" --data "$d/train.jsonl" --out "$out/$task.adapter" --force \
    --format "$format" --epochs "$epochs" --lr "$lr" --batch "$batch" -r "$rank" --alpha "$alpha" \
    --seed "$seed" --report "$out/$task.train.json" 2>&1 | grep -v '^checkpoint saved' >&2
  secs=$(( $(date +%s) - start ))
  reuse=0 ev lora --format "$format" --adapter "$out/$task.adapter"
  l=$(field "$out/$task.lora.json" accuracy)
  gain=$(python3 -c "import sys; print('%+.1f' % (float(sys.argv[1]) - float(sys.argv[2])))" "$l" "$best")
  gain_few=$(python3 -c "import sys; print('%+.1f' % (float(sys.argv[1]) - float(sys.argv[2])))" "$l" "$best_few")
  rows+=("$row $l | $gain_few | $gain | ${secs} s |")
done
echo
echo "Gemma 3 270M Q4_K_M, $threads threads: exact-match % on 96 held-out examples per task."
echo "LoRA r=$rank alpha=$alpha on all projections, $format form, $epochs epochs of 64 examples, batch $batch, lr $lr, seed $seed."
echo
echo "$header"
echo "$sep"
printf '%s\n' "${rows[@]}"
