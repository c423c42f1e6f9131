#!/bin/sh
# Builds jaxgru/_native/libjaxgru_onednn.so, the oneDNN GRU kernel (jaxgru.onednn), and
# puts the oneDNN library it loads beside it. Usage: build.sh PYTHON, the python of an
# environment with jax and PyPI's onednn-cpu-gomp and onednn-devel-cpu-gomp installed
# (oneDNN 3.2 built for the CPU with GNU OpenMP: its library and its headers).
set -eu
PYTHON=$1
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "build.sh: PyPI's oneDNN wheels are for x86_64 Linux only; not built here" \
        "($(uname -s)-$(uname -m)), so every GRU runs on the XLA path"
    exit 0
fi
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=$("$PYTHON" -c "import sys; print(sys.prefix)")
JAX_INCLUDE=$("$PYTHON" -c "import jax; print(jax.ffi.include_dir())")
for f in "$PREFIX/include/oneapi/dnnl/dnnl.hpp" "$PREFIX/lib/libdnnl.so.3"; do
    test -f "$f" || { echo "build.sh: $f is missing; pip install onednn-cpu-gomp onednn-devel-cpu-gomp" >&2; exit 1; }
done
OUT="$HERE/libjaxgru_onednn.so"
${CXX:-g++} -O2 -std=c++17 -shared -fPIC -fopenmp -Wall \
    -isystem "$JAX_INCLUDE" -isystem "$PREFIX/include" "$HERE/gru_onednn.cc" \
    -L"$PREFIX/lib" -l:libdnnl.so.3 -Wl,-rpath,'$ORIGIN' -o "$OUT.tmp"
cp -L "$PREFIX/lib/libdnnl.so.3" "$HERE/libdnnl.so.3.tmp"
mv "$HERE/libdnnl.so.3.tmp" "$HERE/libdnnl.so.3"
mv "$OUT.tmp" "$OUT"
echo "built $OUT"
