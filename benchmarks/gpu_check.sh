#!/usr/bin/env bash
# Functional check of ferroute's CUDA paths on a lent GPU (the device tool), about 2 minutes:
# train a tiny dinov2_s14 ensemble (random init, bf16) on CUDA, calibrate and evaluate it
# there, evaluate the embedded default model there, and route test faces through the API.
# FERPlus travels packed (../shared does not): valid and test, and a 3000-face train subset:
#   python -c "from ferroute.data import pack_splits; pack_splits('gpu_pack', splits=('valid', 'test'))"
#   (+ gpu_pack/train.npz, the same fields for train[:3000]); then run with carry ["gpu_pack"].
# Everything it writes lands under $OUT. Not run in CI.
set -euo pipefail
OUT="${OUT:-out}"
export FERPLUS_DIR="${FERPLUS_DIR:-gpu_pack}" FERROUTE_CACHE="$OUT/cache" PYTHONPATH="${PYTHONPATH:-src}" PYTHONUNBUFFERED=1
F="python3 -m ferroute"
$F train --device cuda --out "$OUT/vit" --backbone dinov2_s14 --backbone-arg input_size=112 --members 2 --epochs 1 --limit 2000 --batch-size 128
$F calibrate --model "$OUT/vit" --device cuda
$F evaluate --model "$OUT/vit" --device cuda --limit 500 --corruptions gaussian_noise,defocus_blur --bootstrap 100 --out "$OUT/vit-report"
$F evaluate --device cuda --limit 1000 --corruptions gaussian_noise,defocus_blur --bootstrap 100 --out "$OUT/default-report"
python3 - <<'PY'
import numpy as np
from ferroute.data import load_split
from ferroute.ensemble import Ensemble, how_it_runs
from ferroute.pipeline import FERRouter, load_router, resolve_model_dir

d = resolve_model_dir(None)
faces = load_split("test").images[:512]
# no face detector here: this machine's OpenCV build lacks it, and route_faces takes crops
gpu = FERRouter(Ensemble.load(d).to("cuda"), load_router(d), detector=object())
cpu = FERRouter(Ensemble.load(d), load_router(d), detector=object())
a, b = gpu.route_faces(faces), cpu.route_faces(faces)
same = np.mean([x["decision"] == y["decision"] for x, y in zip(a, b)])
print("API on", how_it_runs(gpu.ensemble), "| decisions equal to the CPU's on", f"{same:.3f}", "of 512 test faces")
PY
rm -rf "$OUT/cache"
