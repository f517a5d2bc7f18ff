#!/bin/bash
# The expert-calibration experiment of docs/RESULTS.md (issue 21): an upcycled Mixtral made by
# bench/moe_upcycle.py, quantized to int3-g128-asym with GPTQ under each expert policy and with RTN,
# then evaluated against the float model. Usage (from the repository root, after the build):
#   bench/moe_policies.sh [CALQ] [WORKDIR]     (defaults: build/src/cli/calq, /tmp/moe-policies)
set -euo pipefail
CALQ=${1:-build/src/cli/calq}
W=${2:-/tmp/moe-policies}
SHARED=${CALQ_SHARED_DIR:-../shared}
mkdir -p "$W"
lscpu | grep "Model name"
/usr/bin/python3 bench/moe_upcycle.py --ref "$SHARED/models/calq-ref-llama" --out "$W/moe8" --skew 8 --spread 0.3 --seed 1
for pol in natural all rtn-fallback; do
  /usr/bin/time -f "%e s, %M KB" "$CALQ" quantize --model "$W/moe8" --format int3-g128-asym --method gptq \
    --calib "$SHARED/data/calib.txt" --samples 100 --threads 2 --expert-policy $pol --out "$W/gptq-$pol.gguf" --force -q
done
/usr/bin/time -f "%e s, %M KB" "$CALQ" quantize --model "$W/moe8" --format int3-g128-asym --method rtn \
  --calib "$SHARED/data/calib.txt" --samples 100 --threads 2 --out "$W/rtn.gguf" --force -q
"$CALQ" eval --ref "$W/moe8" --model "$W/rtn.gguf" --model "$W/gptq-natural.gguf" --model "$W/gptq-all.gguf" \
  --model "$W/gptq-rtn-fallback.gguf" --text "$SHARED/data/heldout.txt" --ctx 512 --max-windows 40 --threads 2 --exact
