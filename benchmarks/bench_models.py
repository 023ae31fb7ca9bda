"""Throughput of the embedded models (or any model folders) side by side, in interleaved rounds.

    FERPLUS_DIR=... python benchmarks/bench_models.py [default fast fast:int8 ...] [--faces 3545] [--rounds 5]
        [--arch width=16 --arch width=32,stem_stride=2,stage_convs=2-2-1:int8 ...]

This machine is shared and its speed drifts by up to 2x between runs, so two models timed
in separate runs cannot be compared; here each round runs every model once on the same
FERPlus test faces (``predict_proba`` with the model's own TTA and precision, compiled as in
``ferroute evaluate``), and the table gives the median and best round and each model's
median relative to the first. ``--arch`` adds untrained 5-member ``cnn`` ensembles with
those backbone options (speed does not depend on the weights), to size a model before
training it (``a-b-c`` gives a list, ``:int8`` runs it in int8 with scales fitted on validation
faces). ``NAME:PRECISION`` runs a model in another arithmetic (``fast:int8``: int8
scales fitted on FERPlus validation faces first, as ``ferroute evaluate --precision int8`` does).
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch


def rounds(variants: dict, n_faces: int, n_rounds: int) -> dict[str, list[float]]:
    """Faces/s of each variant, measured in interleaved rounds (so drift hits all alike)."""
    speed: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(n_rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            speed[name].append(n_faces / (time.perf_counter() - t0))
    return speed


from ferroute.train.backbones import create_backbone
from ferroute.evaluate.ferplus import load_split
from ferroute.train.ensemble import Ensemble, how_it_runs
from ferroute.router import resolve_model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=["default", "fast"], help="model folders or embedded model names")
    ap.add_argument("--faces", type=int, default=3545, help="FERPlus test faces per call (3545: one corrupted set)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--arch", action="append", default=[], help="untrained cnn options, e.g. width=32,stem_stride=2 or width=32,stage_convs=1-2-2:int8 (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    faces = load_split("test").images[: args.faces]
    calibration = functools.cache(lambda: load_split("valid").images)  # int8 scales, read once for all models
    models = {}
    for spec in args.models:
        name, _, precision = spec.partition(":")
        ens = models[spec] = Ensemble.load(resolve_model_dir(name))
        if precision == "int8":
            ens.quantize(calibration())
        elif precision:
            ens.configure(precision=precision)
    for arch in args.arch:
        options, _, precision = arch.partition(":")
        kwargs = {k: [int(n) for n in v.split("-")] if "-" in v else int(v) for k, v in (kv.split("=") for kv in options.split(","))}
        members = [create_backbone("cnn", **kwargs) for _ in range(5)]
        ens = models[f"cnn {arch}"] = Ensemble([m for m, _ in members], members[0][1], meta={"inference": {"tta": "hflip", "precision": "auto"}})
        if precision == "int8":
            ens.quantize(calibration())
    for ens in models.values():
        ens.configure(compile="on")
        ens.predict_proba(faces)  # compile and warm up outside the timing
    speed = rounds({name: (lambda e=ens: e.predict_proba(faces)) for name, ens in models.items()}, len(faces), args.rounds)
    names = list(models)
    first = float(np.median(speed[names[0]]))
    print(f"predict_proba, {len(faces)} FERPlus test faces per call, 2 threads, {args.rounds} interleaved rounds")
    print(f"{'model':30} {'members':>7} {'tta':>6} {'precision':>9} {'median':>9} {'best':>9} {'vs ' + names[0]:>11}")
    for name, ens in models.items():
        med = float(np.median(speed[name]))
        print(f"{name:30} {ens.num_members:>7} {ens.tta:>6} {how_it_runs(ens)['precision']:>9} {med:>9.0f} {max(speed[name]):>9.0f} {med / first:>10.2f}x")


if __name__ == "__main__":
    main()
