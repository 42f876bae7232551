#!/usr/bin/env bash
# Builds llama.cpp's command-line tools (llama-bench, llama-perplexity, llama-simple,
# llama-tokenize) from the llama.cpp tree vendored in the llama-cpp-python sdist on PyPI.
# llama-cpp-python 0.3.36 vendors llama.cpp commit 0c1e57098, the build the reference
# figures in shared/reference/ were measured with.
#
# CPU only, Release, -DGGML_NATIVE=ON (tuned for this machine), static libraries.
# Output: ${MODU_CACHE:-$HOME/.cache/modu}/llama.cpp/<version>/bin/
# With LLAMA_CPP_CPU=avx2: AVX2, FMA and F16C only (no AVX-512, no VNNI), the instruction set
# modu's kernels use, for a like-for-like comparison on CPUs that have more; output in
# llama.cpp/<version>-avx2/bin/.
# Idempotent: does nothing when all four binaries are already there.
# The last line printed on stdout is the bin directory.
#
# Environment:
#   LLAMA_CPP_PYTHON_VERSION  sdist version (default 0.3.36)
#   MODU_CACHE                cache root (default ~/.cache/modu)
#   BUILD_JOBS                parallel build jobs (default 2)
#   PYTHON                    python interpreter used for pip (default python3)
#   LLAMA_CPP_CPU             native (default) or avx2
set -euo pipefail

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${MODU_CACHE:-$HOME/.cache/modu}"
cpu="${LLAMA_CPP_CPU:-native}"
case "$cpu" in
  native) prefix="$cache/llama.cpp/$version"; cpu_flags=(-DGGML_NATIVE=ON) ;;
  avx2)
    prefix="$cache/llama.cpp/$version-avx2"
    cpu_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
      -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF)
    ;;
  *) echo "build-llama-cpp: LLAMA_CPP_CPU must be native or avx2, got '$cpu'" >&2; exit 1 ;;
esac
bindir="$prefix/bin"
jobs="${BUILD_JOBS:-2}"
py="${PYTHON:-python3}"
tools=(llama-bench llama-perplexity llama-simple llama-tokenize)

have_all() {
  local t
  for t in "${tools[@]}"; do [ -x "$bindir/$t" ] || return 1; done
}

if have_all; then
  echo "llama.cpp tools already built: $bindir" >&2
  echo "$bindir"
  exit 0
fi

log() { echo "build-llama-cpp: $*" >&2; }

# cmake: use the system one, else install it from PyPI into the cache
# (alternatively: apt-get install cmake).
cmake_bin="$(command -v cmake || true)"
if [ -z "$cmake_bin" ]; then
  tooldir="$cache/llama.cpp/cmake-pip"
  find_cmake() { ls "$tooldir"/cmake/data/bin/cmake 2>/dev/null | head -n1 || true; }
  cmake_bin="$(find_cmake)"
  if [ -z "$cmake_bin" ]; then
    log "cmake not found; installing it from PyPI into $tooldir"
    rm -rf "$tooldir"
    "$py" -m pip install --quiet --disable-pip-version-check --no-input --target "$tooldir" cmake >&2 \
      || { log "error: could not install cmake from PyPI (or: apt-get install cmake)"; exit 1; }
    cmake_bin="$(find_cmake)"
  fi
  [ -n "$cmake_bin" ] && "$cmake_bin" --version >/dev/null \
    || { log "error: no working cmake under $tooldir (or: apt-get install cmake)"; exit 1; }
fi
log "using $("$cmake_bin" --version | head -n1) ($cmake_bin)"

work="$(mktemp -d "${TMPDIR:-/tmp}/modu-llama-cpp.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "downloading llama-cpp-python==$version sdist"
# --no-binary names only this package: with :all: pip would also build the sdist's
# build requirements (cmake, ninja, ...) from source just to read its metadata.
"$py" -m pip download --quiet --disable-pip-version-check --no-input \
  --no-deps --no-binary llama-cpp-python -d "$work/dl" "llama-cpp-python==$version" >&2
sdist="$(ls "$work"/dl/llama_cpp_python-*.tar.gz "$work"/dl/llama-cpp-python-*.tar.gz 2>/dev/null | head -n1 || true)"
[ -n "$sdist" ] || { log "error: no sdist downloaded in $work/dl"; exit 1; }

mkdir -p "$work/src"
tar -xzf "$sdist" -C "$work/src"
src="$(ls -d "$work"/src/*/vendor/llama.cpp 2>/dev/null | head -n1 || true)"
[ -n "$src" ] && [ -f "$src/CMakeLists.txt" ] || { log "error: vendor/llama.cpp not found in $sdist"; exit 1; }
log "llama.cpp source: $src"

log "configuring (CPU only, Release, ${cpu_flags[*]}, static)"
"$cmake_bin" -S "$src" -B "$work/build" \
  -DCMAKE_BUILD_TYPE=Release \
  "${cpu_flags[@]}" \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENCL=OFF \
  -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DGGML_CCACHE=OFF \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_EXAMPLES=ON \
  -DLLAMA_BUILD_TOOLS=ON >&2

log "building ${tools[*]} with $jobs jobs (this takes a while)"
"$cmake_bin" --build "$work/build" --config Release -j "$jobs" --target "${tools[@]}" >&2

# Install into a staging dir first so a failed copy never leaves a half-filled bindir.
stage="$prefix.tmp.$$"
rm -rf "$stage"
mkdir -p "$stage/bin"
for t in "${tools[@]}"; do
  f="$work/build/bin/$t"
  [ -x "$f" ] || { log "error: $f was not built"; rm -rf "$stage"; exit 1; }
  cp "$f" "$stage/bin/"
done
{
  echo "llama-cpp-python sdist: $version"
  echo "sdist: $(basename "$sdist")"
  echo "llama.cpp commit: $(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "cmake: $("$cmake_bin" --version | head -n1)"
  echo "compiler: $(${CXX:-c++} --version 2>/dev/null | head -n1 || echo unknown)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  echo "flags: Release ${cpu_flags[*]} BUILD_SHARED_LIBS=OFF LLAMA_CURL=OFF LLAMA_OPENSSL=OFF, CPU only"
} > "$stage/BUILD-INFO"
mkdir -p "$prefix"
rm -rf "$bindir"
mv "$stage/bin" "$bindir"
mv "$stage/BUILD-INFO" "$prefix/BUILD-INFO"
rm -rf "$stage"

log "done"
echo "$bindir"
