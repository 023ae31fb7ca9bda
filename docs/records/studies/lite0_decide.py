"""Study: the rule of ``docs/records/studies/lite0_rule.md``, measured: a candidate ensemble against the default.

    FERPLUS_DIR=... python docs/records/studies/lite0_decide.py [CANDIDATE_DIR] [--photos DIR]   (default: runs/lite0_da)

Both models are judged the same way, on FERPlus **validation** faces only, each with a router
calibrated here as shipped models are (reject score ``face``, split-conformal at 5 %, vote
temperature and ambiguity level fitted on the votes), so the comparison does not depend on
either model's stored router. Rule items:

1. validation accuracy (majority-labelled faces) higher by at least one standard error (the
   binomial standard error of the default's accuracy, ``sqrt(p (1 - p) / n)``);
2. Spearman of aleatoric with annotator disagreement not lower by more than 0.005;
3. accuracy under the four held-out ImageNet-C corruptions the rule names (speckle noise,
   gaussian blur, spatter, saturate) at severities 3 and 5 not lower;
4. validation non-face crops (corners of photos_dev 0-149) rejected not lower by more than 1 point;
5. accuracy of the accepted validation faces not lower;
6. ``ferroute route photos_dev`` at 60 photos/s or more in the core runtime (ONNX graph): timed
   here as the candidate's ensemble graph on 1,024 validation faces, with the default's in the
   same run for scale (the end-to-end figure comes from ``benchmarks/bench_core.py``).

A candidate with fewer members than it was planned with is measured for the record; the rule
applies to the five-member ensemble. Writes ``docs/records/studies/lite0_decide.txt``.

``--mixed`` adds a third row, the candidate's members and the default's together (a mixed
ensemble, each member's probabilities weighed alike), measured the same way for the record: the
rule names it a candidate only if the five-member ensemble fails item 6 alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ferroute.decide.agreement import agreement
from ferroute.evaluate.corrupted_sets import corrupted_set
from ferroute.evaluate.corruptions import IMAGENET_C_HELD_OUT
from ferroute.evaluate.ferplus import load_split, resolve_data_dir
from ferroute.train.ensemble import Ensemble
from ferroute.router import default_model_dir
from ferroute.decide.routing import UncertaintyRouter
from ferroute.decide.shift import FaceLikeness
from ferroute.decide.uncertainty import decompose

OUT = Path(__file__).with_suffix(".txt")


def member_outputs(ens: Ensemble, va, held: dict, corners: np.ndarray) -> dict[str, np.ndarray]:
    """Every member's probabilities ``(N, M, C)`` on the faces the rule reads, each computed once:
    the validation faces, the labelled ones under each held-out corruption, the non-face crops."""
    lab = va.labels >= 0
    return {"valid": ens.predict_proba(va.images), "corners": ens.predict_proba(corners),
            **{f"{h}@{s}": ens.predict_proba(np.asarray(held[(h, s)])[lab]) for h in IMAGENET_C_HELD_OUT for s in (3, 5)}}


def mixed(*outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Several ensembles' members as one: ``(N, M1 + M2 + ..., C)`` on each set, each member weighed alike."""
    return {k: np.concatenate([o[k] for o in outputs], axis=1) for k in outputs[0]}


def measure(out: dict[str, np.ndarray], va, face_va: np.ndarray, face_bg: np.ndarray) -> dict[str, float]:
    """The rule's figures from :func:`member_outputs`."""
    lab = va.labels >= 0
    p = out["valid"]  # (N, M, C)
    d = {**decompose(p), "face": face_va}
    router = UncertaintyRouter(shift="face").fit(d, va.disagreement).fit_agreement(p, va.distributions)
    dec = router.decide(d, agree=agreement(router.calibrated(p)))
    top = p.mean(1).argmax(-1)
    acc_ok = lab & (dec == "accept")
    pbg = out["corners"]
    dec_bg = router.decide({**decompose(pbg), "face": face_bg}, agree=agreement(router.calibrated(pbg)))
    held_acc = {s: float(np.mean([np.mean(out[f"{h}@{s}"].mean(1).argmax(-1) == va.labels[lab]) for h in IMAGENET_C_HELD_OUT]))
                for s in (3, 5)}
    return {
        "members": p.shape[1],
        "accuracy": float(np.mean(top[lab] == va.labels[lab])),
        "n_labelled": int(lab.sum()),
        "spearman": float(spearmanr(d["aleatoric"], va.disagreement).statistic),
        "held_out_sev3": held_acc[3],
        "held_out_sev5": held_acc[5],
        "nonface_rejected": float(np.mean(dec_bg == "reject")),
        "accepted_share": float(np.mean(dec == "accept")),
        "accepted_accuracy": float(np.mean(top[acc_ok] == va.labels[acc_ok])),
        "clean_rejected": float(np.mean(dec == "reject")),
    }


def graph_faces_per_second(model_dir: Path, faces: np.ndarray) -> float | None:
    """The model's ONNX graph on the core runtime, timed as ``docs/records/studies/one_member.py`` (beside this file) times a member."""
    from one_member import faces_per_second

    from ferroute.engine.onnxrun import GRAPH_FILE, OnnxEnsemble

    if not (model_dir / GRAPH_FILE).is_file():
        return None
    return faces_per_second(OnnxEnsemble(model_dir / GRAPH_FILE), faces)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("candidate", nargs="?", default="runs/lite0_da", type=Path)
    ap.add_argument("--photos", type=Path, default=None)
    ap.add_argument("--machine", default=platform.processor() or platform.machine())
    ap.add_argument("--mixed", action="store_true", help="also measure the candidate's and the default's members together (a record)")
    args = ap.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from select_shift_score import background_crops

    t0 = time.time()
    va = load_split("valid")
    corners = background_crops(args.photos or resolve_data_dir(None).parent / "photos_dev")
    face = FaceLikeness()
    face_va, face_bg = face.score(va.images), face.score(corners)
    held = corrupted_set(va.images, list(IMAGENET_C_HELD_OUT), (3, 5), seed=1)
    rows, outputs = {}, {}
    for name, folder in (("default", default_model_dir()), (str(args.candidate), args.candidate)):
        outputs[name] = member_outputs(Ensemble.load(folder), va, held, corners)
        rows[name] = measure(outputs[name], va, face_va, face_bg)
        rows[name]["graph_faces_per_s"] = graph_faces_per_second(Path(folder), va.images[:1024])
    if args.mixed:  # from the two ensembles' outputs above: nothing runs again
        rows["mixed (record)"] = {**measure(mixed(*outputs.values()), va, face_va, face_bg), "graph_faces_per_s": None}
    base, cand = rows["default"], rows[str(args.candidate)]
    se = float(np.sqrt(base["accuracy"] * (1 - base["accuracy"]) / base["n_labelled"]))
    checks = {
        "1 accuracy higher by >= 1 SE": cand["accuracy"] >= base["accuracy"] + se,
        "2 Spearman not lower by > 0.005": cand["spearman"] >= base["spearman"] - 0.005,
        "3 held-out sev 3 and 5 not lower": cand["held_out_sev3"] >= base["held_out_sev3"] and cand["held_out_sev5"] >= base["held_out_sev5"],
        "4 non-faces rejected not lower by > 1 point": cand["nonface_rejected"] >= base["nonface_rejected"] - 0.01,
        "5 accepted accuracy not lower": cand["accepted_accuracy"] >= base["accepted_accuracy"],
    }
    lines = [f"# {args.candidate} against the default on FERPlus validation ({time.time() - t0:.0f} s; {args.machine})",
             "rule: docs/records/studies/lite0_rule.md; both routers calibrated here the same way (face, conformal 5 %, agreement)", "",
             f"{'':22s} {'members':>7s} {'accuracy':>8s} {'rho':>6s} {'sev3':>6s} {'sev5':>6s} {'nonface rej':>11s} "
             f"{'accepted':>8s} {'acc. accuracy':>13s} {'graph faces/s':>13s}"]
    for name, r in rows.items():
        fps = "n/a" if r["graph_faces_per_s"] is None else f"{r['graph_faces_per_s']:.0f}"
        lines.append(f"{name[-22:]:22s} {r['members']:7d} {r['accuracy']:8.4f} {r['spearman']:6.3f} {r['held_out_sev3']:6.3f} "
                     f"{r['held_out_sev5']:6.3f} {r['nonface_rejected']:11.3f} {r['accepted_share']:8.3f} {r['accepted_accuracy']:13.4f} {fps:>13s}")
    lines += ["", f"one standard error of the default's accuracy: {se:.4f}"]
    lines += [f"{k}: {'holds' if v else 'fails'}" for k, v in checks.items()]
    if cand["members"] < 5:
        lines.append(f"the candidate has {cand['members']} of its 5 members: a record, not the decision")
    else:
        verdict = ("replaces the default if item 6 holds (bench_core), else ships as a named model" if all(checks.values())
                   else "not shipped: " + ", ".join(k for k, v in checks.items() if not v))
        lines.append(f"verdict: {verdict}")
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.write_text(text)
    OUT.with_suffix(".json").write_text(json.dumps({"rows": rows, "checks": checks, "standard_error": se}, indent=1) + "\n")


if __name__ == "__main__":
    main()
