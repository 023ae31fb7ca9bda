"""Choose the reject (shift) score on validation faces under the held-out shift family.

    FERPLUS_DIR=... python scripts/select_shift_score.py [MODEL_DIR] [--write] [--n-train 12000]

Nothing here sees the test faces or the 15 test corruptions' role in the choice:

* density signals (:mod:`ferroute.decide.shift`) are fitted on ``--n-train`` FERPlus training faces;
* FERPlus valid is split in two halves by a seeded permutation: the first calibrates each
  candidate (its conformal 5 % threshold, and the per-signal percentiles a union uses) and
  trains the learned score (:class:`ferroute.decide.shift.LearnedScore`: logistic regression over log
  epistemic, face-likeness and the image statistics, on these faces clean and under the
  held-out family, and on non-face corners of photos 150-299; its threshold comes from
  5-fold out-of-fold scores), the second measures every candidate, clean and under the
  held-out family (:data:`ferroute.evaluate.corruptions.HELD_OUT`: speckle noise, gaussian blur,
  spatter, six ImageNet-C-bar shifts, resolution loss, exposure with noise, occlusion) at
  severities 1-5;
* validation non-faces of two kinds, disjoint from the non-face probe that ``ferroute
  evaluate`` reports (scikit-image samples, drawings, text, noise): background corners of
  ``--photos`` (photos_dev, LFW news photos: 64x64 corners of the first 150 photos, away from
  the centred face) and measuring-half faces cut into shuffled, turned tiles
  (:func:`ferroute.evaluate.nonface.tiled_faces`), which keep a face's pixel statistics;
* since 2026-12-07, four more kinds of validation non-face not made of people
  (:mod:`ferroute.evaluate.synthetic`: scenes, textures, strokes, face-like arrangements) and the
  third rule (``docs/records/studies/shift_rule_3.md``): every kind rejected >= 97 % first, then the
  highest held-out AUROC; ``learned6`` is the learned score trained with all six kinds;
* the second rule (written 2026-12-06 before its run, ``docs/records/studies/shift_rule_2.md``,
  kept for the record): among the scores the router can ship
  (:data:`UncertaintyRouter.SHIFT_SCORES`) that do not track annotator disagreement more
  than plain epistemic does (Spearman with disagreement on clean faces), so that ambiguity
  is not punished, and that reject at least ``face``'s share of validation non-faces less one
  point, the highest validation shift AUROC (the mean over the held-out shifts at severity 5,
  with the validation non-faces weighing as much as all of them together, each against the
  clean measuring half). The other candidates (DDU feature density, energy, their unions) are
  measured for the record. Until the 2026-12-01 run the rule used the four corruptions alone; the
  table shows that column too, and which score it would pick.

Then, for the record only, the same validation faces under the 15 test corruptions show
how the held-out ranking transfers (Spearman between the two rankings), and the
deterministic non-face probe (:mod:`ferroute.evaluate.nonface`) shows what each rejects at its
threshold. Writes ``docs/records/shift_score_selection.txt`` and ``.json``; with ``--write`` the
model folder's ``router.json`` is recalibrated on all validation faces with the chosen
score (and ``shift.safetensors`` holds any density it needs).
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ferroute.evaluate.corrupted_sets import corrupted_set
from ferroute.evaluate.corruptions import CORRUPTIONS, HELD_OUT
from ferroute.evaluate.ferplus import load_split, resolve_data_dir
from ferroute.train.ensemble import Ensemble
from ferroute.evaluate.metrics import auroc, kept_at_rate
from ferroute.evaluate.nonface import nonface_crops, tiled_faces
from ferroute.evaluate.synthetic import validation_nonfaces
from ferroute.router import default_model_dir
from ferroute.decide.routing import UncertaintyRouter, conformal_rank, percentile_in
from ferroute.decide.shift import (
    FaceLikeness,
    FeatureDensity,
    ImageStatistics,
    LearnedScore,
    PixelStats,
    energy,
    fit_signals,
    save_signals,
    training_subset,
)
from ferroute.decide.uncertainty import decompose

DOCS = Path(__file__).resolve().parents[1] / "docs" / "records"
BASE = ("total", "epistemic", "conditional", "energy", "density", "pixels", "face")
RATES = (0.5, 0.7, 0.9, 0.95)


def signals(ens: Ensemble, faces: np.ndarray, router: UncertaintyRouter, density: FeatureDensity, pixels: PixelStats,
            face: FaceLikeness) -> dict[str, np.ndarray]:
    """Every base signal ``(N,)`` of ``faces``, plus the aleatoric part (for the record)."""
    em = ens.embed(faces)
    d = decompose(em.probs)
    return {"total": d["total"], "epistemic": d["epistemic"], "conditional": router.shift_score(d), "energy": energy(em.logits),
            "density": density.score(em.features), "pixels": pixels.score(faces), "face": face.score(faces), "aleatoric": d["aleatoric"],
            "stats": ImageStatistics().score(faces)}


def background_crops(photos: Path, n_photos: int = 150, side: int = 64, start: int = 0) -> np.ndarray:
    """Validation non-face crops ``(4 * n_photos, 48, 48)``: the four ``side`` x ``side``
    corners of the first ``n_photos`` photos (sorted by name) of an LFW-style folder, whose
    face is centred; gray, resized to 48x48. A rule blind to any model."""
    from PIL import Image

    folder = photos / "images" if (photos / "images").is_dir() else photos
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[start : start + n_photos]
    if not files:
        raise SystemExit(f"{folder}: no photos for the validation non-face crops; pass --photos DIR")
    out = []
    for f in files:
        im = np.asarray(Image.open(f).convert("L"))
        h, w = im.shape
        for r, c in ((0, 0), (0, w - side), (h - side, 0), (h - side, w - side)):
            out.append(np.asarray(Image.fromarray(im[r : r + side, c : c + side]).resize((48, 48), Image.BILINEAR)))
    return np.stack(out)


def union(parts: tuple[str, ...], cal: dict[str, np.ndarray]):
    """Reject when any part is unusual: the largest of the parts' calibration percentiles
    (the router's union rule, on any parts, shippable or not)."""
    refs = {p: np.sort(cal[p]) for p in parts}

    def score(s: dict[str, np.ndarray]) -> np.ndarray:
        return np.max([percentile_in(refs[p], s[p]) for p in parts], axis=0)

    return score


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--photos", type=Path, default=None, help="LFW-style photo folder for the validation non-face crops "
                    "(default: <FERPlus folder>/../photos_dev)")
    ap.add_argument("--faces", type=int, default=None, help="only the first N validation faces (a smoke run; never for a decision)")
    ap.add_argument("--record", default="shift_score_selection", help="name of the record files in docs/records/ (.txt, .json)")
    ap.add_argument("--write", action="store_true", help="recalibrate the model's router.json with the chosen score")
    ap.add_argument("--tta", action="store_true",
                    help="instead: compare the test-time views for the model's current reject score, same halves and held-out "
                         "corruptions (docs/records/tta_selection.txt)")
    args = ap.parse_args()
    if args.tta:
        return compare_tta(args)
    t0 = time.time()
    model_dir = Path(args.model) if args.model else default_model_dir()
    ens = Ensemble.load(model_dir)
    tr, va = load_split("train"), load_split("valid")
    if args.faces:
        va = va.subset(np.arange(min(args.faces, len(va))))
    rng = np.random.default_rng(0)
    pick = rng.permutation(np.flatnonzero(tr.labels >= 0))[: args.n_train]
    assert np.array_equal(pick, training_subset(tr.labels, args.n_train))  # the faces `ferroute calibrate` fits on
    idx = rng.permutation(len(va))
    cal, ev = va.subset(idx[: len(va) // 2]), va.subset(idx[len(va) // 2 :])

    emt = ens.embed(tr.images[pick])
    density = FeatureDensity().fit(emt.features, tr.labels[pick])
    fitted = fit_signals(("pixels", "face"), tr.images, tr.labels, n=args.n_train)  # pixels on the same `pick`
    pixels, face = fitted["pixels"], fitted["face"]
    router = UncertaintyRouter(shift="conditional").fit(ens.predict_proba(cal.images), cal.disagreement)

    def sig(faces: np.ndarray) -> dict[str, np.ndarray]:
        return signals(ens, faces, router, density, pixels, face)

    s_cal, s_ev = sig(cal.images), sig(ev.images)
    held = corrupted_set(ev.images, list(HELD_OUT), (1, 2, 3, 4, 5), seed=1)
    held_cal = corrupted_set(cal.images, list(HELD_OUT), (1, 2, 3, 4, 5), seed=2)  # the learned score's shifted faces
    s_held_cal = {k: sig(np.asarray(v)) for k, v in held_cal.items()}
    test15 = corrupted_set(ev.images, list(CORRUPTIONS), (5,), seed=1)
    s_held = {k: sig(np.asarray(v)) for k, v in held.items()}
    s_15 = {k: sig(np.asarray(v)) for k, v in test15.items()}
    nonface, _ = nonface_crops()
    s_nf = sig(nonface)
    photos = args.photos or resolve_data_dir(None).parent / "photos_dev"
    # validation non-faces of two kinds (docs/records/studies/shift_rule_2.md): photo corners, and tiled faces that keep a face's
    # pixel statistics; the learned score trains on other photos' corners and the calibration half's faces tiled
    s_corner, s_tiled = sig(background_crops(photos)), sig(tiled_faces(ev.images, seed=3))
    bg_kinds = {"corners": s_corner, "tiled": s_tiled}

    def cat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.concatenate([p[k] for p in parts]) for k in ("epistemic", "face", "stats")}

    s_bg_train = cat([sig(background_crops(photos, start=150)), sig(tiled_faces(cal.images, seed=4))])
    # the third rule (docs/records/studies/shift_rule_3.md): four kinds not made of people, judged on seed 11, trained on seed 12
    s_synth = {k: sig(v) for k, v in validation_nonfaces(150, seed=11).items()}
    bg_kinds.update(s_synth)
    s_bg_train6 = cat([s_bg_train, *[sig(v) for v in validation_nonfaces(150, seed=12).values()]])

    def fit_learned(keep: np.ndarray, nonface: dict[str, np.ndarray]) -> LearnedScore:
        """The learned score from the calibration faces ``keep`` (clean and shifted) and the training non-faces."""
        clean = {k: v[keep] for k, v in s_cal.items() if k in ("epistemic", "face", "stats")}
        shifted = cat([{k: v[keep] for k, v in s.items() if k in ("epistemic", "face", "stats")} for s in s_held_cal.values()])
        return LearnedScore().fit(clean, shifted, nonface=nonface)

    folds = np.arange(len(cal)) % 5
    learned_models = {}
    for name, train_nf in (("learned", s_bg_train), ("learned6", s_bg_train6)):
        oof = np.empty(len(cal))
        for f in range(5):
            m = fit_learned(folds != f, train_nf)
            oof[folds == f] = m.score({k: v[folds == f] for k, v in s_cal.items()})
        learned_models[name] = fit_learned(np.ones(len(cal), bool), train_nf)
        s_cal[name] = oof  # a union's percentiles and thresholds on the calibration half use out-of-fold scores
        for s in (s_ev, s_nf, *bg_kinds.values(), *s_held.values(), *s_15.values()):
            s[name] = learned_models[name].score(s)
    t_face = time.perf_counter()
    face.score(ev.images[:500])
    face_ms = (time.perf_counter() - t_face) / 500 * 1e3

    cands: dict[str, object] = {b: b for b in BASE}
    cands["learned"] = "learned"
    cands["learned+face"] = union(("learned", "face"), s_cal)
    cands["learned6"] = "learned6"
    cands["learned6+face"] = union(("learned6", "face"), s_cal)
    for k in (2, 3):
        for parts in combinations(("epistemic", "conditional", "density", "pixels", "energy", "face"), k):
            if not ("epistemic" in parts and "conditional" in parts):
                cands["+".join(parts)] = union(parts, s_cal)

    def value(c: object, s: dict[str, np.ndarray]) -> np.ndarray:
        return s[c] if isinstance(c, str) else c(s)  # type: ignore[operator]

    amb = ev.disagreement >= np.quantile(ev.disagreement, 2 / 3)
    rows = {}
    for name, c in cands.items():
        clean, calv = value(c, s_ev), value(c, s_cal)
        k = conformal_rank(len(calv), 0.05)
        thr = np.sort(calv)[k - 1]
        held5 = {h: value(c, s_held[(h, 5)]) for h in HELD_OUT}
        ood_held = np.concatenate(list(held5.values()))
        ood_single = np.concatenate([s_held[(h, 5)]["total"] for h in HELD_OUT])
        r15 = {n: value(c, s_15[(n, 5)]) for n in CORRUPTIONS}
        ood15 = np.concatenate(list(r15.values()))
        ood15_single = np.concatenate([s_15[(n, 5)]["total"] for n in CORRUPTIONS])
        by_kind = {kind: {"auroc": auroc(clean, value(c, sk)), "rejected": float(np.mean(value(c, sk) > thr))} for kind, sk in bg_kinds.items()}
        rows[name] = {
            "spearman_disagreement": float(spearmanr(clean, ev.disagreement).statistic),
            "held_out_auroc_5": float(np.mean([auroc(clean, v) for v in held5.values()])),
            "background_auroc": float(np.mean([v["auroc"] for v in by_kind.values()])),  # each kind weighs the same
            "background_rejected": float(np.mean([v["rejected"] for v in by_kind.values()])),
            "background_by_kind": by_kind,
            "background_min_rejected": float(min(v["rejected"] for v in by_kind.values())),
            "held_out_auroc_by_severity": {str(sv): float(np.mean([auroc(clean, value(c, s_held[(h, sv)])) for h in HELD_OUT])) for sv in range(1, 6)},
            "held_out_auroc_5_per_corruption": {h: auroc(clean, v) for h, v in held5.items()},
            "clean_rejected": float(np.mean(clean > thr)),
            "held_out_rejected_5": float(np.mean(ood_held > thr)),
            "held_out_kept_ratio_0.9": kept_at_rate(clean[amb], ood_held, 0.9) / max(kept_at_rate(s_ev["total"][amb], ood_single, 0.9), 1e-9),
            "held_out_dominates": all(kept_at_rate(clean, ood_held, r) >= kept_at_rate(s_ev["total"], ood_single, r) for r in RATES),
            "test15_auroc_5": float(np.mean([auroc(clean, v) for v in r15.values()])),
            "test15_rejected_5": float(np.mean(ood15 > thr)),
            "test15_kept_ratio_0.9": kept_at_rate(clean[amb], ood15, 0.9) / max(kept_at_rate(s_ev["total"][amb], ood15_single, 0.9), 1e-9),
            "nonface_rejected": float(np.mean(value(c, s_nf) > thr)),
        }
    limit = rows["epistemic"]["spearman_disagreement"]
    shippable = (*UncertaintyRouter.SHIFT_SCORES, "learned6", "learned6+face")  # learned6: the router's `learned`, trained on six kinds
    eligible = [n for n, r in rows.items() if r["spearman_disagreement"] <= limit + 1e-9 and n in shippable]
    for r in rows.values():  # the non-face crops weigh as much as the held-out shifts together
        r["validation_auroc"] = float((r["held_out_auroc_5"] + r["background_auroc"]) / 2)
    floor = rows["face"]["background_rejected"] - 0.01  # the second rule (docs/records/studies/shift_rule_2.md)
    passing = [n for n in eligible if rows[n]["background_rejected"] >= floor - 1e-9]
    chosen_rule2 = max(passing, key=lambda n: rows[n]["validation_auroc"]) if passing else "face"
    # the third rule (docs/records/studies/shift_rule_3.md): every validation non-face kind rejected >= 97 %, then held-out AUROC
    promise = [n for n in eligible if rows[n]["background_min_rejected"] >= 0.97 - 1e-9]
    chosen = (max(promise, key=lambda n: rows[n]["held_out_auroc_5"]) if promise else
              max(eligible, key=lambda n: (rows[n]["background_min_rejected"], rows[n]["held_out_auroc_5"])))
    chosen_first_rule = max(eligible, key=lambda n: rows[n]["validation_auroc"])  # the rule of commit 6b93706
    chosen_before = max(eligible, key=lambda n: rows[n]["held_out_auroc_5"])  # the rule until commit 8b32b70 (2026-12-01)
    names = list(rows)
    transfer = float(spearmanr([rows[n]["held_out_auroc_5"] for n in names], [rows[n]["test15_auroc_5"] for n in names]).statistic)

    lines = [
        f"# reject-score selection on validation faces under the {len(HELD_OUT)} held-out shifts ({time.time() - t0:.0f} s)",
        f"model {model_dir.name}: {ens.num_members} x {ens.config.name}, tta {ens.tta}; densities fitted on {len(pick)} training faces; "
        f"{len(cal)} validation faces calibrate, {len(ev)} measure; {sum(len(sk['face']) for sk in bg_kinds.values())} validation non-face crops (two kinds, below); "
        f"{len(nonface)} probe non-face crops (record only); face signal {face_ms:.2f} ms per crop",
        f"non-faces for validation: {len(s_corner['face'])} photo corners and {len(s_tiled['face'])} tiled measuring-half faces; the learned score "
        f"trained on {len(s_bg_train['face'])} others (corners of photos 150-299, tiled calibration-half faces)",
        f"rule (docs/records/studies/shift_rule_3.md): among scores whose Spearman with annotator disagreement is at most plain epistemic's "
        f"({limit:.3f}), those rejecting at least 97 % of every kind of validation non-face ({len(bg_kinds)} kinds: {', '.join(bg_kinds)}); among "
        f"them the highest mean AUROC over the {len(HELD_OUT)} held-out shifts at severity 5 "
        + ("" if promise else "(none keeps that promise: the highest smallest per-kind rejection) ")
        + "; thresholds: conformal 5 % on the calibration half",
        "",
        f"{'score':34s} {'rho dis':>7s} {'val AUROC':>9s} {'held AUROC5':>11s} {'bg AUROC':>8s} {'held rej5':>9s} {'bg rej':>6s} {'held ratio':>10s} "
        f"{'dom':>4s} {'clean rej':>9s} | {'15 AUROC5':>9s} {'15 rej5':>7s} {'15 ratio':>8s} | {'nonface rej':>11s}",
    ]
    for n in sorted(names, key=lambda n: -rows[n]["validation_auroc"]):
        r = rows[n]
        mark = (" <- chosen" if n == chosen else " (a non-face kind under 97 %)" if n in eligible and n not in promise else "" if n in eligible else " (tracks ambiguity)"
                if r["spearman_disagreement"] > limit + 1e-9 else " (measured, not shippable)")
        lines.append(f"{n:34s} {r['spearman_disagreement']:7.3f} {r['validation_auroc']:9.3f} {r['held_out_auroc_5']:11.3f} "
                     f"{r['background_auroc']:8.3f} {r['held_out_rejected_5']:9.3f} {r['background_rejected']:6.3f} "
                     f"{r['held_out_kept_ratio_0.9']:10.2f} {'yes' if r['held_out_dominates'] else 'no':>4s} {r['clean_rejected']:9.3f} | "
                     f"{r['test15_auroc_5']:9.3f} {r['test15_rejected_5']:7.3f} {r['test15_kept_ratio_0.9']:8.2f} | {r['nonface_rejected']:11.3f}{mark}")
    lines += ["", f"the second rule (docs/records/studies/shift_rule_2.md) would pick: {chosen_rule2}; "
              f"the first rule of 2026-12-06 (commit 6b93706: no non-face floor): {chosen_first_rule}",
              "validation non-faces by kind (AUROC / rejected):"] + [
                  f"  {n}: " + ", ".join(f"{k} {v['auroc']:.3f}/{v['rejected']:.3f}" for k, v in rows[n]["background_by_kind"].items())
                  for n in dict.fromkeys(("face", "learned", "learned+face", "learned6", "learned6+face", chosen)) if n in rows]
    lines += [
              f"the rule before commit 8b32b70 (2026-12-01) (held-out shifts alone) would pick: {chosen_before}",
              f"transfer: Spearman between the candidates' held-out and 15-corruption AUROC at severity 5: {transfer:.3f}",
              "per held-out corruption (severity 5 AUROC) of the chosen score: "
              + ", ".join(f"{h} {v:.3f}" for h, v in rows[chosen]["held_out_auroc_5_per_corruption"].items())]
    text = "\n".join(lines) + "\n"
    print(text)
    DOCS.mkdir(exist_ok=True)
    (DOCS / f"{args.record}.txt").write_text(text)
    summary = {"chosen": chosen, "rule": lines[3], "transfer_spearman": transfer, "rows": rows,
               "summary": f"`{chosen}` was chosen on validation faces under the {len(HELD_OUT)} held-out shifts and validation non-face crops "
                          f"(mean AUROC {rows[chosen]['validation_auroc']:.3f}; held-out corruptions at severity 5: "
                          f"{rows[chosen]['held_out_auroc_5']:.3f}; the 15 test corruptions on the "
                          f"same validation faces, for the record: {rows[chosen]['test15_auroc_5']:.3f}; ranking transfer Spearman {transfer:.2f}). "
                          f"See docs/records/{args.record}.txt."}
    (DOCS / f"{args.record}.json").write_text(json.dumps(summary, indent=1) + "\n")
    if args.write:  # what `ferroute calibrate --shift <chosen>` does, plus the record of the choice
        router = UncertaintyRouter(shift=chosen.replace("learned6", "learned"))
        fitted["stats"] = ImageStatistics()
        if "learned" in router.parts:  # thresholded on the measuring half, which the learned score never saw
            router.learned = learned_models["learned6" if "learned6" in chosen else "learned"]
            pv = {**decompose(ens.predict_proba(ev.images)), **{k: fitted[k].score(ev.images) for k in router.needs}}
            ref = {**decompose(ens.predict_proba(cal.images)), **{k: fitted[k].score(cal.images) for k in router.needs}}
            router.fit(pv, ev.disagreement, reference=ref)  # a union's percentiles on the calibration half: all of ev sets the threshold
        else:
            pv = {**decompose(ens.predict_proba(va.images)), **{k: fitted[k].score(va.images) for k in router.needs}}
            router.fit(pv, va.disagreement)
        old = json.loads((model_dir / "router.json").read_text())["state"] if (model_dir / "router.json").is_file() else {}
        for k in ("vote_temperature", "vote_bias", "ambiguous_below"):  # the agreement is the model's, whatever rejects
            if k in old:
                router._state[k] = old[k]
        router.selection = {k: v for k, v in summary.items() if k != "rows"} | {"chosen_row": rows[chosen]}
        (model_dir / "router.json").write_text(json.dumps(router.to_dict()) + "\n")
        if router.needs:
            save_signals(model_dir, {k: fitted[k] for k in router.needs if k in fitted},
                         note=f"pixels fitted on {len(pick)} FERPlus training faces (ferroute.decide.shift.training_subset); face needs no fitting")
        print(f"wrote {model_dir / 'router.json'} ({chosen}; thresholds {router.thresholds})")


def compare_tta(args: argparse.Namespace) -> None:
    """Each TTA setting with the model's own reject score: accuracy and Spearman on the
    measuring half, held-out AUROC at severity 5; the rule picks the highest AUROC among
    settings within 0.005 of the best accuracy."""
    from ferroute.train.ensemble import TTA_VIEWS
    from ferroute.router import load_router

    t0 = time.time()
    model_dir = Path(args.model) if args.model else default_model_dir()
    ens = Ensemble.load(model_dir)
    shift = load_router(model_dir).shift
    tr, va = load_split("train"), load_split("valid")
    rng = np.random.default_rng(0)
    rng.permutation(np.flatnonzero(tr.labels >= 0))  # the same draws as main(): the same halves
    idx = rng.permutation(len(va))
    cal, ev = va.subset(idx[: len(va) // 2]), va.subset(idx[len(va) // 2 :])
    needs = UncertaintyRouter(shift=shift).needs
    fitted = fit_signals(needs, tr.images, tr.labels, n=args.n_train)
    held = corrupted_set(ev.images, list(HELD_OUT), (5,), seed=1)
    lab = ev.labels >= 0
    rows = {}
    for tta in TTA_VIEWS:
        ens.configure(tta=tta)

        def d(faces: np.ndarray) -> dict[str, np.ndarray]:
            return {**decompose(ens.predict_proba(faces)), **{k: fitted[k].score(faces) for k in needs}}

        dc, de = d(cal.images), d(ev.images)
        router = UncertaintyRouter(shift=shift).fit(dc, cal.disagreement)
        clean = router.shift_score(de)
        rows[tta] = {
            "accuracy": float((ens.predict_proba(ev.images).mean(1).argmax(-1)[lab] == ev.labels[lab]).mean()),
            "spearman_aleatoric": float(spearmanr(de["aleatoric"], ev.disagreement).statistic),
            "held_out_auroc_5": float(np.mean([auroc(clean, router.shift_score(d(np.asarray(held[(h, 5)])))) for h in HELD_OUT])),
        }
    best_acc = max(r["accuracy"] for r in rows.values())
    chosen = max((t for t, r in rows.items() if r["accuracy"] >= best_acc - 0.005), key=lambda t: rows[t]["held_out_auroc_5"])
    lines = [f"# test-time views, reject score {shift}, on validation faces under the 4 held-out corruptions ({time.time() - t0:.0f} s)",
             "rule: highest held-out mean AUROC at severity 5 among settings within 0.005 of the best accuracy", ""]
    lines += [f"{t:12s} accuracy {r['accuracy']:.3f}  Spearman {r['spearman_aleatoric']:.3f}  held-out AUROC5 {r['held_out_auroc_5']:.3f}"
              + ("  <- chosen" if t == chosen else "") for t, r in rows.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    (DOCS / "tta_selection.txt").write_text(text)


if __name__ == "__main__":
    main()
