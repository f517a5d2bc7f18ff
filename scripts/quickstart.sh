#!/usr/bin/env bash
# The main job on the reference model: set up, build, then evaluate the full-precision model on
# the held-out text (protocol gptq-windows, ctx 512) and compare with transformers' reference.
# Quantization (`calq quantize`) arrives with the calibration issue; until then this is the
# full-precision baseline every quantized model will be measured against.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${CALQ_SHARED_DIR:-$root/../shared}"
"$root/scripts/install-deps.sh"
build="${CALQ_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCALQ_SHARED_DIR="$shared" >/dev/null
cmake --build "$build" --parallel "$(nproc)" --target calq
mkdir -p "$root/out"
"$build/src/cli/calq" eval --model "$shared/models/calq-ref-llama" --text "$shared/data/heldout.txt" \
  --ctx 512 --json "$root/out/heldout-f32.json"
python3 - "$root/out/heldout-f32.json" "$shared/refs/calq-ref-llama/heldout/ppl_ctx512.json" <<'PY'
import json, sys
ours, ref = (json.load(open(p)) for p in sys.argv[1:3])
rel = ours["ppl"] / ref["ppl"] - 1
print(f"calq PPL {ours['ppl']:.4f} vs transformers {ref['ppl']:.4f}: {rel:+.5%} "
      f"(token sha256 {'equal' if ours['token_ids_sha256'] == ref['token_ids_sha256'] else 'DIFFERENT'})")
sys.exit(0 if abs(rel) <= 5e-4 and ours["token_ids_sha256"] == ref["token_ids_sha256"] else 1)
PY
