#!/usr/bin/env bash
# Builds tools/llama_logits (llama.cpp's logits for token ids, as exact as llama.cpp runs) against an
# existing llama.cpp build, outside calq's own build:
#   scripts/build-llama-logits.sh LLAMA_SRC LLAMA_BUILD [OUT]
# LLAMA_SRC: the llama.cpp source tree (include/llama.h, ggml/include); LLAMA_BUILD: its CMake build
# folder (bin/libllama.so and the ggml libraries, or lib/). OUT defaults to LLAMA_BUILD/bin/llama_logits.
# The binary finds the libraries through its rpath. Prints the path of the binary.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 LLAMA_SRC LLAMA_BUILD [OUT]" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${3:-$build/bin/llama_logits}
libdir=""
for d in "$build/bin" "$build/lib" "$build/src"; do
  if [[ -e "$d/libllama.so" ]]; then libdir=$d; break; fi
done
if [[ -z $libdir ]]; then
  echo "$0: no libllama.so under $build/bin, $build/lib or $build/src" >&2
  exit 2
fi
for h in "$src/include/llama.h" "$src/ggml/include/ggml.h"; do
  [[ -f $h ]] || { echo "$0: $h not found (is $src a llama.cpp source tree?)" >&2; exit 2; }
done
"${CXX:-c++}" -std=c++17 -O2 -Wall -Wextra \
  -I"$src/include" -I"$src/ggml/include" \
  "$here/tools/llama_logits/llama_logits.cpp" \
  -L"$libdir" -Wl,-rpath,"$libdir" -lllama -lggml -lggml-base \
  -o "$out"
echo "$out"
