#!/usr/bin/env bash
# The main job on the reference model (fresh Debian 12, ../shared beside the project): set up and
# build, then
#   1. calibrate: statistics of the full-precision model on the calibration text (E[x^2] and the
#      Hessian, layer by layer);
#   2. quantize with calq's recipe for about 4.5 bits per weight: a sensitivity map measured on the
#      calibration text picks q3_k ... q8_0 per tensor to meet the budget, and every tensor is
#      quantized with GPTQ into its GGUF k-quant;
#   3. check the GGUF against llama.cpp's loader rules (`calq check`);
#   4. evaluate it against the full-precision model on held-out text, beside llama.cpp's own
#      Q4_K_M-imatrix file of the same model, in one run on identical tokens;
# and prints one screen comparing the two files.
# Knobs (environment): CALQ_QS_BPW (4.5), CALQ_QS_SAMPLES (calibration windows of 512 tokens, 32),
# CALQ_QS_WINDOWS (evaluation windows of 512 tokens, 24; 0 = the whole text, 494 windows).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${CALQ_SHARED_DIR:-$root/../shared}"
bpw="${CALQ_QS_BPW:-4.5}"
samples="${CALQ_QS_SAMPLES:-32}"
windows="${CALQ_QS_WINDOWS:-24}"
"$root/scripts/install-deps.sh"
build="${CALQ_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCALQ_SHARED_DIR="$shared" >/dev/null
cmake --build "$build" --parallel "$(nproc)" --target calq calq_python
"$root/scripts/install-python.sh" "$build"  # `import calq` (README, "As a library")
calq="$build/src/cli/calq"
ref="$shared/models/calq-ref-llama"
peer="$shared/peer-tests/llama.cpp-quants/calq-ref-llama-Q4_K_M-imatrix.gguf"
for f in "$ref/config.json" "$shared/data/calib.txt" "$shared/data/heldout.txt" "$peer"; do
  if [[ ! -f "$f" ]]; then echo "quickstart: $f not found (set CALQ_SHARED_DIR)" >&2; exit 1; fi
done
out="$root/out"
mkdir -p "$out"
q="$out/calq-ref-llama-${bpw}bpw.gguf"
start=$SECONDS

echo "== 1/4 calibrate: $samples windows x 512 tokens of calib.txt"
"$calq" calibrate --model "$ref" --calib "$shared/data/calib.txt" --out "$out/quickstart-stats.gguf" \
  --samples "$samples" --seq-len 512 --stats mean_sq,hessian --force --quiet

echo "== 2/4 quantize: --target-bpw $bpw, GPTQ into q3_k..q8_0, map measured on calib.txt"
"$calq" quantize --model "$ref" --out "$q" --force --quiet \
  --target-bpw "$bpw" --candidates q3_k,q4_k,q5_k,q6_k,q8_0 \
  --sensitivity-text "$shared/data/calib.txt" --sensitivity-windows 1 --sensitivity-ctx 256 \
  --stats "$out/quickstart-stats.gguf" --method gptq

echo "== 3/4 check: llama.cpp's loader rules"
"$calq" check "$q"

echo "== 4/4 evaluate against full precision on heldout.txt, beside llama.cpp's Q4_K_M-imatrix"
# --exact: the weights' own error, as docs/RESULTS.md measures it (the default fast kernels would
# also quantize both models' activations to 8 bits, as llama.cpp's runtime does).
"$calq" eval --quiet --exact --ref "$ref" --model "$q" --model "$peer" --text "$shared/data/heldout.txt" \
  --ctx 512 --max-windows "$windows" --json "$out/quickstart-eval.json" >/dev/null

python3 - "$out/quickstart-eval.json" "$q" "$peer" "$((SECONDS - start))" <<'PY'
import json, os, sys
report = json.load(open(sys.argv[1]))
names = {sys.argv[2]: f"calq --target-bpw ({os.path.basename(sys.argv[2])})",
         sys.argv[3]: "llama.cpp Q4_K_M-imatrix"}
rows = [c for c in report["candidates"] if c["model"] in names]
print()
print(f"calq-ref-llama on heldout.txt: {report['n_windows']} windows x {report['ctx']} tokens "
      f"({report['n_predicted']} predicted), full-precision PPL {report['ppl_ref']:.3f}; 95% CIs over windows")
w = max(len(n) for n in names.values())
print(f"{'model':<{w}} {'size':>9} {'bits/w':>7} {'ΔPPL [95% CI]':>26} {'KLD [95% CI]':>28} {'top-1':>8}")
for c in rows:
    lo, hi = c["delta_ppl_ci95"]
    klo, khi = c["kld_mean_ci95"]
    size = os.path.getsize(c["model"]) / 2**20
    print(f"{names[c['model']]:<{w}} {size:>5.1f} MiB {c['bits_per_weight']:>7.3f} "
          f"{c['delta_ppl']:>+8.3f} [{lo:+.3f}, {hi:+.3f}] {c['kld_mean']:>9.5f} [{klo:.5f}, {khi:.5f}] "
          f"{100 * c['top1_agreement']:>7.2f}%")
if len(rows) == 2:
    a, b = rows
    print(f"calq: {100 * (1 - a['kld_mean'] / b['kld_mean']):.0f}% lower KLD than llama.cpp's file with "
          f"{b['bits_per_weight'] - a['bits_per_weight']:.2f} fewer bits per weight")
print(f"(size: the file; bits/w: quantized tensors' bits per weight; KLD: mean KL(FP || Q) per token; "
      f"top-1: agreement with FP)")
print(f"quickstart: {sys.argv[4]} s after the build")
PY
