#!/usr/bin/env bash
# Adapters written by `modu tune` load in HF PEFT and give modu's logits (within 1e-4), on the
# tiny exaone4 and gemma3 fixtures. Needs the fixtures venv (tests/fixtures/README.md) and a
# release build.
set -euo pipefail
cd "$(dirname "$0")/.."
MODU=${MODU:-target/release/modu}
PY=${PY:-$HOME/.cache/modu/fixtures-venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ids=1,17,402,93,255,7,311,64,128,499,2,360,45,203,88,511,0,150,77,301,12,444,99,256
for i in 0 1 2 3 4 5 6 7; do
  printf '{"prompt": "item %d is", "completion": " number %d"}\n' "$i" $((i % 3))
done > "$work/train.jsonl"
for f in exaone4_hybrid gemma3; do
  "$MODU" tune -m "tests/fixtures/$f" --data "$work/train.jsonl" --out "$work/$f" --lr 1e-2 --epochs 3 --dropout 0 2>&1 | tail -1
  "$MODU" logits -m "tests/fixtures/$f" --adapter "$work/$f" --ids "$ids" --exact --out "$work/$f.logits.safetensors" >/dev/null
  "$PY" tests/fixtures/make_lora_reference.py --check-adapter "$work/$f" --base "tests/fixtures/$f" --logits "$work/$f.logits.safetensors"
done
echo "modu adapters load in PEFT with equal logits"
