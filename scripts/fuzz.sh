#!/usr/bin/env bash
# Builds calq's libFuzzer targets (fuzz/) with clang into build-fuzz, makes seed corpora from
# ../shared (fuzz/make_seeds.py), and runs each target for the given seconds. Fails on any crash,
# sanitizer report, leak, timeout (10 s on one input) or out-of-memory; the input that did it is
# left in build-fuzz/artifacts/ (turn it into a regression test, e.g. in gguf_hostile_test.cpp).
# Usage: scripts/fuzz.sh [seconds] [target...]   targets: gguf safetensors tokenizer pretokenize (default all)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${CALQ_SHARED_DIR:-$root/../shared}"
seconds="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(gguf safetensors tokenizer pretokenize); fi
build="${CALQ_FUZZ_BUILD_DIR:-$root/build-fuzz}"

"$root/scripts/install-deps.sh" --fuzz
if [[ ! -f "$shared/README.md" ]]; then
  echo "fuzz.sh: shared reference data not found at $shared (set CALQ_SHARED_DIR)" >&2
  exit 1
fi

# -O1 keeps the fuzzer fast while asserts stay on (no NDEBUG); cmake/Fuzz.cmake adds the
# sanitizers and coverage instrumentation.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DCALQ_FUZZ=ON \
  -DCALQ_BUILD_TESTS=OFF -DCALQ_BUILD_BENCH=OFF -DCALQ_SHARED_DIR="$shared" >/dev/null
cmake --build "$build" --parallel "$(nproc)" --target "${targets[@]/#/fuzz_}"

rm -rf "$build/seeds"
python3 "$root/fuzz/make_seeds.py" --shared "$shared" --out "$build/seeds"
mkdir -p "$build/artifacts"

# A fixed seed keeps CI reproducible (a failure can be replayed with the same command); set
# CALQ_FUZZ_SEED=0 for a fresh random seed when fuzzing by hand.
seed="${CALQ_FUZZ_SEED:-1}"

# Longest input per target: a little above the largest seed, so mutations can grow them.
declare -A max_len=([gguf]=16384 [safetensors]=4096 [tokenizer]=32768 [pretokenize]=4096)
# One target: its corpus, dictionary and regression inputs; status 1 on any failure.
run_one() {
  local t="$1" corpus="$build/corpus/$1" dict=() regressions=()
  mkdir -p "$corpus"
  if [[ -f "$root/fuzz/$t.dict" ]]; then dict=("-dict=$root/fuzz/$t.dict"); fi
  # Inputs that once crashed a target stay in its corpus for good.
  if [[ -d "$root/fuzz/regressions/$t" ]]; then regressions=("$root/fuzz/regressions/$t"); fi
  echo "== fuzz_$t: ${seconds}s, seed $seed, seeds $build/seeds/$t ${regressions[*]}"
  if ! ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
       "$build/fuzz/fuzz_$t" "$corpus" "$build/seeds/$t" "${regressions[@]}" "${dict[@]}" -seed="$seed" \
         -max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout=10 -rss_limit_mb=2048 \
         -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" 2>"$build/fuzz_$t.log"; then
    echo "fuzz_$t: FAILED (log: $build/fuzz_$t.log, input: $build/artifacts/)" >&2
    tail -n 60 "$build/fuzz_$t.log" >&2
    return 1
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE)" "$build/fuzz_$t.log" || true
}

# Targets run side by side, one per core (libFuzzer uses one thread): each still gets its full
# time, and CI waits for max(time) per round instead of the sum.
jobs_max="$(nproc)"
status=0
for t in "${targets[@]}"; do
  while (( $(jobs -rp | wc -l) >= jobs_max )); do wait -n || true; done
  rm -f "$build/fuzz_$t.rc"
  ( rc=0; run_one "$t" || rc=1; echo "$rc" > "$build/fuzz_$t.rc" ) > "$build/fuzz_$t.out" 2>&1 &
done
wait
for t in "${targets[@]}"; do
  cat "$build/fuzz_$t.out"
  if [[ "$(cat "$build/fuzz_$t.rc" 2>/dev/null)" != 0 ]]; then status=1; fi
done
exit "$status"
