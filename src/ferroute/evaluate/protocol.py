"""The dual-validation protocol: ambiguity, shift and routing, written as a report.

Definitions (fixed; see README):

* ambiguity: Spearman correlation between a score and annotator disagreement (entropy of
  the raw 8-emotion vote distribution) over the FERPlus test faces, with a 1000-resample
  bootstrap 95 % CI;
* shift: AUROC separating clean test faces (0) from the same faces corrupted (1), per
  ImageNet-C corruption and severity, averaged over the 15 corruptions;
* routing: *ambiguous in-distribution faces* are clean test faces whose disagreement is in
  the top third; *OOD* are the test faces under all 15 corruptions at severity 5. At a
  rate ``r`` each router's reject threshold is set so that exactly the fraction ``r`` of
  OOD inputs is rejected; the kept ratio is (ambiguous faces UAR keeps) / (ambiguous faces
  the single-score router keeps). Its cost is reported beside it: the share of *all* clean
  faces each router keeps at the same rate (``routing.kept_clean``, ``routing.dominates``).
  UAR is measured twice: with the reject score the router ships (``routing``) and with
  plain epistemic uncertainty, the paper's method (``routing.paper``);
* deployed: the shipped router at its calibrated (split-conformal) thresholds, on clean
  test faces and on every corrupted set: what a user who relies on ``reject`` gets.

Corruptions are applied at the native 48x48 as the reference implementation does (see
:mod:`ferroute.evaluate.corruptions`). Nothing here chooses anything: scores, thresholds and models
are chosen on validation faces under the held-out shift family and validation non-faces
(``scripts/select_shift_score.py``); the report copies that choice from the router.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from ..decide.agreement import DEFAULT_LEVEL, REPORTED_LEVELS, agreement, flag_quality, level_words
from .corrupted_sets import corrupted_set
from .corruptions import CORRUPTIONS, SEVERITIES
from .ferplus import FERPlusSplit, LabelledFaces
from ..train.ensemble import Ensemble, how_it_runs
from ..train.export import OnnxEnsemble
from ..decide.labelshift import PriorAdapter
from .metrics import (
    N_BOOT,
    RATES,
    auroc,
    average_precision,
    flag_ceiling,
    js_divergence,
    kept_ratio_ci,
    kl_divergence,
    ratio,
    routing_table,
    spearman_ci,
    top_share_calibration,
    vote_noise_ceiling,
)
from .generalization import generalization, shares
from .report import plots, render_markdown, selective_plots
from .selective import selective as selective_report, selective_inputs
from ..decide.routing import UncertaintyRouter
from ..decide.shift import Signal
from ..decide.uncertainty import decompose, entropy


def evaluate(
    ensemble: "Ensemble | OnnxEnsemble",
    valid: FERPlusSplit,
    test: FERPlusSplit,
    out_dir: str | Path,
    ldl: "Ensemble | OnnxEnsemble | None" = None,
    router: UncertaintyRouter | None = None,
    corruptions: list[str] | None = None,
    severities: tuple[int, ...] = SEVERITIES,
    batch_size: int = 512,
    progress: bool = True,
    n_boot: int = N_BOOT,
    workers: int | None = None,
    signals: "dict[str, Signal] | None" = None,
    ckplus: LabelledFaces | None = None,
    priors: PriorAdapter | None = None,
) -> dict[str, Any]:
    """Run the protocol; write ``report.json``, ``report.md`` and PNG plots into ``out_dir``.

    ``signals``: the fitted input signals the router's shift score needs (the model folder's
    ``shift.json``, :func:`ferroute.decide.shift.load_signals`). ``ckplus``: a second data set
    (:func:`ferroute.evaluate.ferplus.load_ckplus`) for the ``generalization`` section, which always
    holds the non-face crops of :mod:`ferroute.evaluate.nonface`. ``priors``: the model's emotion-mix
    adapter (``priors.json``); with it, the section also says what adapting to each set's own
    mix gives (CK+) and costs (FERPlus test, whose mix is the training one)."""
    from tqdm.auto import tqdm

    t0 = time.time()
    if isinstance(ldl, OnnxEnsemble):
        ldl.set_tta(ensemble.tta)  # its views are baked into the graph: a mismatch is refused, naming both
    elif ldl is not None:
        ldl.configure(tta=ensemble.tta)  # the baseline gets the same test-time augmentation
        if isinstance(ensemble, Ensemble):
            try:
                # int8 that runs here, not a fallback: scales fitted on these views of the validation faces
                if ensemble.runtime.uses_int8(ensemble.device) and ldl.int8_tta != ensemble.tta:
                    ldl.quantize(valid.images)
                ldl.configure(precision=ensemble.precision)  # ... and the same arithmetic
            except ValueError:  # a baseline that cannot run in int8 (not a CNN): its fastest other mode
                ldl.configure(precision="auto")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(corruptions or CORRUPTIONS)
    timings: dict[str, float] = {}

    def infer(model: "Ensemble | OnnxEnsemble", faces: np.ndarray) -> np.ndarray:
        return model.predict_proba(np.asarray(faces), batch_size=batch_size)

    router = router or UncertaintyRouter()
    sig = {k: v for k, v in (signals or {}).items() if k in router.needs}  # a folder may store more than its router uses

    def decomposed(probs: np.ndarray, faces: np.ndarray) -> dict[str, np.ndarray]:
        """The decomposition and the input signals the router's shift score needs, of ``faces``."""
        return {**decompose(probs), "agreement": agreement(router.calibrated(probs)),
                **{k: v.score(np.asarray(faces)) for k, v in sig.items()}}

    # ---- calibration on clean validation faces
    if not router.is_fitted:
        pv = infer(ensemble, valid.images)
        router.fit({**decompose(pv), **{k: v.score(valid.images) for k, v in sig.items()}}, valid.disagreement)
        router.fit_agreement(pv, valid.distributions)

    # ---- clean test
    pt = infer(ensemble, test.images)
    dt = decomposed(pt, test.images)
    mean_t = pt.mean(axis=1)
    labelled = test.labels >= 0
    accuracy = _accuracy(mean_t, test.labels)
    dis = test.disagreement
    rho_a, ci_a = spearman_ci(dt["aleatoric"], dis, n_boot)
    ambiguity = {
        "spearman_aleatoric": rho_a,
        "spearman_aleatoric_ci95": ci_a,
        "spearman_total": float(spearmanr(dt["total"], dis).statistic),
        "spearman_epistemic": float(spearmanr(dt["epistemic"], dis).statistic),
        "spearman_shift_score": float(spearmanr(router.shift_score(dt), dis).statistic),  # the shipped reject score
        "n": int(len(dis)),
    }
    z_clean = router.shift_score(dt)
    if ldl is not None:
        pl = infer(ldl, test.images)[:, 0]
        ldl_clean = entropy(pl)
        ldl_acc = _accuracy(pl, test.labels)
    timings["clean_inference_s"] = time.time() - t0

    # ---- corruptions
    t1 = time.time()
    sets = corrupted_set(test.images, names, severities, workers=workers, progress=progress)
    timings["corruptions_s"] = time.time() - t1
    t1 = time.time()
    scores: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    rejected: dict[tuple[str, int], float] = {}
    sel_ood: list[dict[str, np.ndarray]] = []  # selective-prediction inputs of the most severe sets
    agree_ood: list[np.ndarray] = []  # their agreement, for the share the ambiguity flag calls ambiguous
    for key in tqdm(list(sets), desc="shift inference", unit="set", disable=not progress):
        p = infer(ensemble, sets[key])
        d = decomposed(p, sets[key])
        s = {"epistemic": d["epistemic"], "aleatoric": d["aleatoric"], "total": d["total"], "uar": router.shift_score(d)}
        dec = router.decide(d, score=s["uar"])
        rejected[key] = float(np.mean(dec == "reject"))
        pl_k = infer(ldl, sets[key])[:, 0] if ldl is not None else None
        if ldl is not None:
            s["ldl"] = entropy(pl_k)
        if key[1] == max(severities):
            sel_ood.append(selective_inputs(p, d["agreement"], dec, test.labels, pl_k))
            agree_ood.append(d["agreement"])
        scores[key] = s
    timings["shift_inference_s"] = time.time() - t1

    clean_scores = {"epistemic": dt["epistemic"], "aleatoric": dt["aleatoric"], "total": dt["total"], "uar": z_clean}
    if ldl is not None:
        clean_scores["ldl"] = ldl_clean
    n = len(test)
    per: dict[str, dict[str, dict[str, float]]] = {k: {str(s): {} for s in severities} for k in clean_scores}
    for (name, sev), s in scores.items():
        for k in clean_scores:
            per[k][str(sev)][name] = auroc(clean_scores[k], s[k])
    mean_auroc = {k: {sv: float(np.mean(list(v.values()))) for sv, v in per[k].items()} for k in per}
    shift = {
        "shipped_score": router.shift,
        "auroc_shipped": mean_auroc["uar"],
        "auroc_epistemic": mean_auroc["epistemic"],
        "auroc_aleatoric": mean_auroc["aleatoric"],
        "auroc_total": mean_auroc["total"],
        "per_corruption": {("shipped" if k == "uar" else k): per[k] for k in ("epistemic", "aleatoric", "total", "uar")},
        "corruptions": names,
        "resolution": "native 48x48, before any resizing, identical for every model; corrupted as imagecorruptions corrupts a 48x48 image",
    }

    # ---- routing at matched OOD rejection: the shipped score, the paper's (plain epistemic), the single score
    amb = dis >= np.quantile(dis, 2 / 3)
    sev_max = max(severities)
    ood = {k: np.stack([scores[(nm, sev_max)][k] for nm in names]) for k in clean_scores}  # (K, N)
    methods = {"uar": "uar", "paper": "epistemic", "single": "total"}
    if ldl is not None:
        methods["ldl"] = "ldl"
    table = routing_table({m: (clean_scores[k], ood[k].ravel()) for m, k in methods.items()}, amb)

    def ratio_of(m: str) -> dict[str, float | None]:
        return {str(r): ratio(table[f"kept_ambiguous_{m}"][str(r)], table["kept_ambiguous_single"][str(r)]) for r in RATES}

    paper = {
        "reject_score": "epistemic (mutual information), thresholded alone",
        "kept_ratio": ratio_of("paper"),
        "kept_ratio_ci95": {"0.9": kept_ratio_ci(dt["epistemic"], ood["epistemic"], dt["total"], ood["total"], amb, 0.9, n_boot)},
        "kept_ambiguous_uar": table["kept_ambiguous_paper"],
        "kept_clean": table["kept_clean_paper"],
    }
    decisions = router.decide(dt, score=z_clean)
    guarantee = router.guarantee()
    clean_rejected = float(np.mean(decisions == "reject"))
    deployed = {
        "thresholds": router.thresholds,
        "guarantee": guarantee,
        "clean_rejected": clean_rejected,
        "clean_rejected_within_promise": clean_rejected <= guarantee.get("reject_rate_upper_95", router.reject_rate),
        "clean_shares": shares(decisions),
        "ood_rejected": float(np.mean([rejected[(nm, sev_max)] for nm in names])),
        "ood_rejected_per_corruption": {nm: rejected[(nm, sev_max)] for nm in names},
        "ood_rejected_by_severity": {str(sv): float(np.mean([rejected[(nm, sv)] for nm in names])) for sv in severities},
    }
    routing = {
        "reject_score": router.shift,
        "kept_ratio": ratio_of("uar"),
        "kept_ratio_ci95": {"0.9": kept_ratio_ci(z_clean, ood["uar"], dt["total"], ood["total"], amb, 0.9, n_boot)},
        "kept_ambiguous_uar": table["kept_ambiguous_uar"],
        "kept_ambiguous_single": table["kept_ambiguous_single"],
        "kept_clean": {"uar": table["kept_clean_uar"], "paper": table["kept_clean_paper"], "single": table["kept_clean_single"]},
        "dominates": {str(r): table["kept_clean_uar"][str(r)] >= table["kept_clean_single"][str(r)] for r in RATES},
        "paper": paper,
        "deployed": deployed,
        "n_ambiguous": int(amb.sum()),
        "n_ood": int(ood["total"].size),
        "thresholds": router.thresholds,
        "decisions_clean_test": {k: int(v) for k, v in zip(*np.unique(decisions, return_counts=True))},
    }
    # ---- the distribution against the votes; what the ambiguity flag and each decision are worth
    votes = test.distributions
    calib = _calibration(pt, router, votes, dis, valid, pl if ldl is not None else None, test.votes)
    top_votes = votes.max(1)
    level = router.ambiguous_below
    ambiguity["flag"] = _flag_report(dt["agreement"], top_votes, test.votes, level,
                                     np.concatenate(agree_ood) if agree_ood else None) if router.has_agreement else None
    selective: dict[str, Any] = {"clean": selective_report(selective_inputs(pt, dt["agreement"], decisions, test.labels, pl if ldl is not None else None))}
    if sel_ood:
        pooled = {k: np.concatenate([x[k] for x in sel_ood]) for k in sel_ood[0]}
        selective["corrupted"] = {**selective_report(pooled), "severity": max(severities), "corruptions": names}
    report: dict[str, Any] = {
        "machine": machine(),
        "accuracy": accuracy,
        # the emotion a user is shown: the top of the vote-calibrated distribution (its biases can move it)
        "accuracy_reported": _accuracy(router.calibrated(pt), test.labels) if router.has_agreement else accuracy,
        "calibration": calib,
        "selective": selective,
        "n_test": int(n),
        "n_test_labelled": int(labelled.sum()),
        "ambiguity": ambiguity,
        "shift": shift,
        "routing": routing,
        "model": {"members": ensemble.num_members, "backbone": ensemble.config.to_dict(), **how_it_runs(ensemble), "shift_score": router.shift},
    }
    if router.selection is not None:
        report["selection"] = router.selection
    t1 = time.time()
    ck = None  # CK+ through the ensemble and the router once: for generalization and for selective
    if ckplus is not None:
        pc = infer(ensemble, ckplus.images)
        dc = decomposed(pc, ckplus.images)
        ck = (pc, router.decide(dc))
        plc = infer(ldl, ckplus.images)[:, 0] if ldl is not None else None
        selective["ckplus"] = selective_report(selective_inputs(pc, dc["agreement"], ck[1], ckplus.labels, plc))
        if ambiguity.get("flag"):  # posed faces with one validated label each: few should read as split
            for q in [ambiguity["flag"]["default"], *ambiguity["flag"]["at"].values()]:
                q["ckplus_flagged"] = float(np.mean(np.asarray(dc["agreement"]) < q["level"]))
    report["generalization"] = generalization(lambda f: infer(ensemble, f), lambda p, f: router.decide(decomposed(p, f)), ckplus, priors, ck)
    if priors is not None and len(pt) >= priors.min_faces:
        adapted = priors.reweight(pt, priors.estimate(pt)).mean(1)
        report["generalization"]["ferplus_test_accuracy_adapted"] = _accuracy(adapted, test.labels)
    timings["generalization_s"] = time.time() - t1
    if ldl is not None:
        rho_l, ci_l = spearman_ci(ldl_clean, dis, n_boot)
        report["ldl"] = {
            **how_it_runs(ldl),
            "accuracy": ldl_acc,
            "spearman": rho_l,
            "spearman_ci95": ci_l,
            "auroc": mean_auroc["ldl"],
            "per_corruption": per["ldl"],
            "kept_ambiguous": table["kept_ambiguous_ldl"],
            "kept_ratio": {str(r): ratio(table["kept_ambiguous_ldl"][str(r)], table["kept_ambiguous_single"][str(r)]) for r in RATES},
            "uar_over_ldl": {str(r): ratio(table["kept_ambiguous_uar"][str(r)], table["kept_ambiguous_ldl"][str(r)]) for r in RATES},
        }
    timings["total_s"] = time.time() - t0
    report["timings"] = timings

    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plots(out, dt, dis, mean_auroc, per, clean_scores, ood, amb, methods)
    selective_plots(out, report)
    (out / "report.md").write_text(render_markdown(report))
    return report


def machine() -> str:
    """The CPU this ran on (model name, cores it may use, memory), for the report's figures."""
    import os

    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
        flags = Path("/proc/cpuinfo").read_text()
        extras = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX")) if flag in flags]
        mem = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration, ValueError):
        import platform

        return f"{platform.machine()}, {os.cpu_count()} CPUs"
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores ({', '.join(extras) or 'no AVX512-BF16, no AMX'}), {mem:.0f} GB"


def _accuracy(mean_probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of mean probabilities ``(N, C)`` on the faces with a majority label (``labels >= 0``)."""
    keep = labels >= 0
    return float(np.mean(mean_probs[keep].argmax(-1) == labels[keep]))


def _flag_report(agree: np.ndarray, top_votes: np.ndarray, raw_votes: np.ndarray, level: float,
                 agree_ood: np.ndarray | None) -> dict[str, Any]:
    """The ambiguity flag ``agreement < level`` against the votes, at the default level and at
    each of :data:`~ferroute.decide.agreement.REPORTED_LEVELS`: flagged and actual shares,
    precision and recall beside what ten votes allow (:func:`flag_ceiling`), AUROC and average
    precision of ``1 - agreement`` for the faces whose votes split below the level, and the share
    flagged under the most severe corruptions (CK+'s is added with CK+)."""
    agree = np.asarray(agree, float)
    ceilings = flag_ceiling(raw_votes, [level, *REPORTED_LEVELS])  # one set of redrawn votes for every level

    def at(lv: float) -> dict[str, Any]:
        split = np.asarray(top_votes) < lv
        q: dict[str, Any] = {**flag_quality(agree, top_votes, lv), **ceilings[float(lv)]}
        q["auroc"] = auroc(1 - agree[~split], 1 - agree[split]) if split.any() and (~split).any() else None
        q["average_precision"] = average_precision(1 - agree, split) if split.any() else None
        q["corrupted_flagged"] = float(np.mean(np.asarray(agree_ood) < lv)) if agree_ood is not None else None
        return q

    return {"rule": f"agreement < level; default level {level:g}: {level_words(level)}"
                    + (" (no clear majority; docs/records/studies/agreement_rule.md)" if abs(level - DEFAULT_LEVEL) < 1e-9 else " (the user's)"),
            "default": at(level), "at": {f"{lv:.1f}": at(lv) for lv in REPORTED_LEVELS},
            "note": "truth: the test faces' own top vote share below the level; ceiling_*: a predictor that knew each face's "
                    "vote shares, scored against a fresh draw of its votes (ferroute.evaluate.metrics.flag_ceiling)"}


def _calibration(pt: np.ndarray, router: UncertaintyRouter, votes: np.ndarray, dis: np.ndarray, valid: FERPlusSplit,
                 ldl_probs: np.ndarray | None, raw_votes: np.ndarray) -> dict[str, Any]:
    """The predicted distribution against the votes on test: KL(votes || predicted), JS, the
    top-share calibration error, Spearman with disagreement; before and after the vote
    calibration, beside uniform, the class prior (validation votes' mean), the LDL model and
    the vote-noise ceiling (one resampling of the votes predicting another)."""
    from ..decide.uncertainty import entropy as ent

    raw = pt.mean(1)

    def row(pred: np.ndarray) -> dict[str, Any]:
        cal = top_share_calibration(pred, votes)
        h = ent(pred)
        return {"kl": float(kl_divergence(votes, pred).mean()), "js": float(js_divergence(votes, pred).mean()),
                "top_share_ece": cal["ece"], "reliability": cal["bins"],
                "spearman_entropy": float(spearmanr(h, dis).statistic) if np.ptp(h) > 0 else None}

    n = len(votes)
    out: dict[str, Any] = {
        "temperature": router._require().get("vote_temperature"),
        "before": row(raw),
        "uniform": row(np.full_like(votes, 1 / votes.shape[1])),
        "class_prior": row(np.repeat(valid.distributions.mean(0, keepdims=True), n, 0)),
        "noise_ceiling": vote_noise_ceiling(raw_votes),
        "n": int(n),
        "note": "KL floors predictions at 1e-6; reliability bins: [mean predicted top share, mean actual share of votes for that emotion, faces]",
    }
    if out["temperature"] is not None:
        cal = router.calibrated(pt)
        out["bias"] = router._require().get("vote_bias")
        out["after"] = row(cal)
        out["after"]["spearman_disagreement_1_minus_agreement"] = float(spearmanr(-agreement(cal), dis).statistic)
    if ldl_probs is not None:
        out["ldl"] = row(ldl_probs)
    return out
