#!/usr/bin/env bash
# One prepared run for a lent GPU machine (the device tool), to be sent with
#   carry: [".venv"?, "gpu_pack"]   after   ferroute pack-data gpu_pack   here.
# It trains a wider ensemble and the LDL baseline on CUDA, calibrates and evaluates them,
# and runs the inference benchmark (CPU rows + CUDA rows incl. dinov2_s14 x5 at 224 bf16).
# Everything it makes lands under $OUT. Not run in CI.
set -euo pipefail
OUT="${OUT:-out}"
WIDTH="${WIDTH:-48}"
EPOCHS="${EPOCHS:-30}"
pip install -q -e ".[onnx]" 2>&1 | tail -2
export FERPLUS_DIR=gpu_pack FERROUTE_CACHE="$OUT/cache"
ferroute train --device cuda --out "$OUT/wide" --backbone cnn --backbone-arg width="$WIDTH" --members 5 --epochs "$EPOCHS" --batch-size 256
ferroute train --device cuda --ldl --out "$OUT/ldl" --backbone cnn --backbone-arg width="$WIDTH" --epochs "$EPOCHS" --batch-size 256 --seed 100
ferroute calibrate --model "$OUT/wide"
ferroute evaluate --model "$OUT/wide" --ldl "$OUT/ldl" --out "$OUT/report" --workers 16
python benchmarks/bench_inference.py --model "$OUT/wide" --json "$OUT/bench.json" | tee "$OUT/bench.txt"
rm -rf "$OUT/cache"
