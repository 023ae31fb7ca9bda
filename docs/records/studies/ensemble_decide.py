"""Study: the rule of ``docs/records/studies/mobilefacenet_rule.md``, measured: candidate ensembles against the default.

    FERPLUS_DIR=... python docs/records/studies/ensemble_decide.py [RUN_DIR] [--held-faces 1200] [--out NAME]

``RUN_DIR`` (default ``runs/mfn64_f6``) is a ``ferroute train`` folder; the members on disk are
used even before all exist (``config.json`` is written only then), and such a run is a record.
Two candidates are measured against the default's five CNN members, on FERPlus **validation**
only, each with a router calibrated here the same way (reject score ``face``, split-conformal
at 5 %, vote calibration and the 0.6 ambiguity level fitted on the votes):

* the run's members alone;
* ``mixed``: the default's members and the run's together, each member weighed alike.

Figures: accuracy on majority-labelled faces; Spearman of aleatoric with the annotators' vote
entropy; accuracy under the held-out shift family (:data:`ferroute.evaluate.corruptions.HELD_OUT`,
14 shifts) at severities 3 and 5 on the first ``--held-faces`` labelled faces; the AUROC of
epistemic, clean against held-out at severity 5 on those faces; the share of each of the six
kinds of validation non-face rejected (photo corners of photos_dev 0-149, tiled validation
faces, and :func:`ferroute.evaluate.synthetic.validation_nonfaces` seed 11); the accepted
share and its accuracy; CK+ accuracy as a record (never decides). Writes
``docs/records/studies/<NAME>.txt`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[2] / "scripts"))

from lite0_decide import mixed  # noqa: E402  (beside this file)
from select_shift_score import background_crops  # noqa: E402

from ferroute.decide.agreement import agreement  # noqa: E402
from ferroute.decide.routing import UncertaintyRouter  # noqa: E402
from ferroute.decide.shift import FaceLikeness  # noqa: E402
from ferroute.decide.uncertainty import decompose  # noqa: E402
from ferroute.evaluate.corrupted_sets import corrupted_set  # noqa: E402
from ferroute.evaluate.corruptions import HELD_OUT  # noqa: E402
from ferroute.evaluate.ferplus import load_ckplus, load_split, resolve_data_dir  # noqa: E402
from ferroute.evaluate.metrics import auroc  # noqa: E402
from ferroute.evaluate.nonface import tiled_faces  # noqa: E402
from ferroute.evaluate.synthetic import validation_nonfaces  # noqa: E402
from ferroute.router import default_model_dir  # noqa: E402
from ferroute.train.ensemble import Ensemble  # noqa: E402


def outputs(ens: Ensemble, sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every member's probabilities ``(N, M, C)`` on each named set of faces, computed once."""
    return {k: ens.predict_proba(v) for k, v in sets.items()}


def measure(out: dict[str, np.ndarray], va, lab_held: np.ndarray, face: dict[str, np.ndarray], kinds: list[str],
            ck_labels: np.ndarray) -> dict:
    """The rule's figures from :func:`outputs` (``face``: face-likeness of each set)."""
    lab = va.labels >= 0
    p = out["valid"]
    d = {**decompose(p), "face": face["valid"]}
    router = UncertaintyRouter(shift="face").fit(d, va.disagreement).fit_agreement(p, va.distributions)

    def decide(name: str) -> np.ndarray:
        q = out[name]
        return router.decide({**decompose(q), "face": face[name]}, agree=agreement(router.calibrated(q)))

    dec = decide("valid")
    top = p.mean(1).argmax(-1)
    ok = lab & (dec == "accept")
    clean_ep = decompose(out["held_clean"])["epistemic"]
    held = {s: [out[f"{h}@{s}"] for h in HELD_OUT] for s in (3, 5)}
    return {
        "members": int(p.shape[1]),
        "accuracy": float(np.mean(top[lab] == va.labels[lab])),
        "n_labelled": int(lab.sum()),
        "spearman": float(spearmanr(d["aleatoric"], va.disagreement).statistic),
        **{f"held_out_sev{s}": float(np.mean([np.mean(q.mean(1).argmax(-1) == lab_held) for q in held[s]])) for s in (3, 5)},
        "epistemic_auroc_sev5": float(np.mean([auroc(clean_ep, decompose(q)["epistemic"]) for q in held[5]])),
        "nonface_rejected": {k: float(np.mean(decide(k) == "reject")) for k in kinds},
        "accepted_share": float(np.mean(dec == "accept")),
        "accepted_accuracy": float(np.mean(top[ok] == va.labels[ok])),
        "clean_rejected": float(np.mean(dec == "reject")),
        "ckplus_accuracy": float(np.mean(out["ckplus"].mean(1).argmax(-1) == ck_labels)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", default="runs/mfn64_f6", type=Path)
    ap.add_argument("--held-faces", type=int, default=1200, help="labelled validation faces under the held-out shifts")
    ap.add_argument("--photos", type=Path, default=None)
    ap.add_argument("--out", default="mobilefacenet_decide", help="record name in docs/records/studies/")
    ap.add_argument("--machine", default=platform.processor() or platform.machine())
    args = ap.parse_args()
    t0 = time.time()
    va = load_split("valid")
    root = resolve_data_dir(None)
    ck = load_ckplus(root.parent / "ckplus48")
    lab_idx = np.flatnonzero(va.labels >= 0)[: args.held_faces]
    held = corrupted_set(va.images[lab_idx], list(HELD_OUT), (3, 5), seed=1)
    nonfaces = {"corners": background_crops(args.photos or root.parent / "photos_dev"),
                "tiled": tiled_faces(va.images[-600:], seed=3), **validation_nonfaces(150, seed=11)}
    sets = {"valid": va.images, "held_clean": va.images[lab_idx], "ckplus": ck.images, **nonfaces,
            **{f"{h}@{s}": np.asarray(held[(h, s)]) for h in HELD_OUT for s in (3, 5)}}
    fl = FaceLikeness()
    face = {k: fl.score(sets[k]) for k in ("valid", *nonfaces)}
    runs = {"default": Ensemble.load(default_model_dir()), str(args.run): Ensemble.load(args.run, partial=True)}
    outs, rows = {}, {}
    for name, ens in runs.items():
        t = time.time()
        outs[name] = outputs(ens, sets)
        rows[name] = {**measure(outs[name], va, va.labels[lab_idx], face, list(nonfaces), ck.labels), "seconds": round(time.time() - t)}
        print(name, rows[name], flush=True)
    rows["mixed"] = {**measure(mixed(*outs.values()), va, va.labels[lab_idx], face, list(nonfaces), ck.labels), "seconds": None}
    base = rows["default"]
    se = float(np.sqrt(base["accuracy"] * (1 - base["accuracy"]) / base["n_labelled"]))

    def checks(c: dict) -> dict[str, bool]:
        return {
            "1 accuracy higher by >= 1 SE": c["accuracy"] >= base["accuracy"] + se,
            "2 Spearman not lower by > 0.005": c["spearman"] >= base["spearman"] - 0.005,
            "3 held-out sev 3 and 5 not lower": c["held_out_sev3"] >= base["held_out_sev3"] and c["held_out_sev5"] >= base["held_out_sev5"],
            "4 epistemic AUROC not lower by > 0.01": c["epistemic_auroc_sev5"] >= base["epistemic_auroc_sev5"] - 0.01,
            "5 every non-face kind rejected, less 1 point": all(c["nonface_rejected"][k] >= base["nonface_rejected"][k] - 0.01
                                                                 for k in base["nonface_rejected"]),
            "6 accepted accuracy not lower": c["accepted_accuracy"] >= base["accepted_accuracy"],
        }

    kinds = list(nonfaces)
    lines = [f"# {args.run} against the default on FERPlus validation ({time.time() - t0:.0f} s; {args.machine})",
             "rule: docs/records/studies/mobilefacenet_rule.md; every router calibrated here the same way (face, conformal 5 %, agreement 0.6)",
             f"held-out: the first {len(lab_idx)} labelled validation faces under the {len(HELD_OUT)} held-out shifts; CK+ is a record", "",
             f"{'':18s} {'M':>2s} {'accuracy':>8s} {'rho':>6s} {'sev3':>6s} {'sev5':>6s} {'epi AUROC':>9s} "
             + " ".join(f"{k[:8]:>8s}" for k in kinds) + f" {'accepted':>8s} {'acc. acc.':>9s} {'CK+':>6s} {'s':>5s}"]
    for name, r in rows.items():
        lines.append(f"{name[-18:]:18s} {r['members']:2d} {r['accuracy']:8.4f} {r['spearman']:6.3f} {r['held_out_sev3']:6.3f} "
                     f"{r['held_out_sev5']:6.3f} {r['epistemic_auroc_sev5']:9.3f} "
                     + " ".join(f"{r['nonface_rejected'][k]:8.3f}" for k in kinds)
                     + f" {r['accepted_share']:8.3f} {r['accepted_accuracy']:9.4f} {r['ckplus_accuracy']:6.3f} {r['seconds'] or '':>5}")
    lines += ["", f"one standard error of the default's accuracy: {se:.4f}"]
    verdicts = {}
    for name in (str(args.run), "mixed"):
        c = checks(rows[name])
        verdicts[name] = c
        lines.append(f"{name}: " + "; ".join(f"{k} {'holds' if v else 'FAILS'}" for k, v in c.items()))
    n_run = rows[str(args.run)]["members"]
    if n_run < 5:
        lines.append(f"{args.run} has {n_run} of its 5 members: a record, not the decision")
    else:
        passing = [n for n, c in verdicts.items() if all(c.values())]
        best = max(passing, key=lambda n: rows[n]["accuracy"]) if passing else None
        lines.append(f"verdict: {best + ' replaces the default (if photos_dev >= 40 photos/s; else a named model)' if best else 'nothing ships'}")
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / f"{args.out}.txt").write_text(text)
    (HERE / f"{args.out}.json").write_text(json.dumps({"rows": rows, "checks": verdicts, "standard_error": se}, indent=1) + "\n")


if __name__ == "__main__":
    main()
