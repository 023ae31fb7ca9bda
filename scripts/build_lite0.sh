#!/usr/bin/env bash
# Rebuild the efficientnet_lite0 candidate ensemble from scratch, anywhere:
#
#   FERPLUS_DIR=../shared/data/ferplus bash scripts/build_lite0.sh [OUT]     (default OUT: runs/lite0_da)
#
# Five ImageNet-initialised efficientnet_lite0 members at 80 px with deployment augmentation,
# trained one member per `ferroute train` run (nice'd, resumable: a member on disk is kept, an
# interrupted one continues from its last finished epoch), then calibrated (router, emotion-mix adapter, ONNX graph).
# One member takes 36-48 min on 2 idle cores (Intel Xeon with AMX, fp32; measured 2026-12-06/07).
# Running this again continues where it stopped. Needs `pip install ".[train]"`.
set -euo pipefail
OUT="${1:-runs/lite0_da}"
for _ in 1 2 3 4 5; do
    nice -n 19 ferroute train --out "$OUT" --backbone efficientnet_lite0 --backbone-arg input_size=80 \
        --members 5 --max-new 1 --epochs 10 --batch-size 64 --lr 0.001 --target soft --seed 0 \
        --precision fp32 --threads 2 --deploy-augment
done
ferroute calibrate --model "$OUT"
