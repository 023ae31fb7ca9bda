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
:mod:`ferroute.corruptions`). Nothing here chooses anything: scores, thresholds and models
are chosen on validation faces under the four held-out corruptions
(``scripts/select_shift_score.py``); the report copies that choice from the router.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

from .corruptions import CORRUPTIONS, SEVERITIES, corrupted_set
from .data import FERPlusSplit, LabelledFaces
from .ensemble import Ensemble, how_it_runs
from .export import OnnxEnsemble
from .routing import UncertaintyRouter
from .shift import PixelStats
from .uncertainty import Decomposition, decompose, entropy

RATES = (0.5, 0.7, 0.9, 0.95)
N_BOOT = 1000


def _resampled_ranks(code: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Average ranks (scipy's ``rankdata``) of ``v[i]`` per row of ``i`` ``(b, n)``, by counting
    each distinct value's draws instead of sorting every resample. ``code``: each value's
    index among the distinct values of ``v`` (``np.unique(v, return_inverse=True)[1]``)."""
    b, k = len(i), int(code.max()) + 1
    drawn = np.bincount((code[i] + k * np.arange(b)[:, None]).ravel(), minlength=b * k).reshape(b, k)
    avg = np.cumsum(drawn, axis=1) - (drawn - 1) / 2  # ranks start+1 .. start+count average to this
    return np.take_along_axis(avg, code[i], axis=1)


def spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, list[float]]:
    """Spearman rho of ``x`` vs ``y`` and its percentile-bootstrap 95 % CI."""
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    cx, cy = (np.unique(v, return_inverse=True)[1].ravel() for v in (x, y))
    n = len(cx)
    boots = np.empty(n_boot)
    for start in range(0, n_boot, 100):  # 100 resamples at a time: Pearson's r of their ranks, as spearmanr
        i = np.stack([rng.integers(0, n, n) for _ in range(min(100, n_boot - start))])  # (b, n)
        rx, ry = _resampled_ranks(cx, i), _resampled_ranks(cy, i)
        rx -= rx.mean(axis=1, keepdims=True)
        ry -= ry.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample with one distinct value: nan, as spearmanr
            boots[start:start + len(i)] = (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    return rho, [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def auroc(clean: np.ndarray, shifted: np.ndarray) -> float:
    """AUROC of a score separating ``shifted`` (positives) from ``clean`` inputs: the
    Mann-Whitney U over both sets' average ranks (ties count a half), as
    ``sklearn.metrics.roc_auc_score`` gives, without its per-call checks (375 calls per run)."""
    ranks = rankdata(np.r_[clean, shifted])
    n0, n1 = len(clean), len(shifted)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def kept_at_rate(score_id: np.ndarray, score_ood: np.ndarray, r: float) -> float:
    """Fraction of in-distribution inputs kept when the threshold rejects exactly ``r`` of OOD.

    Higher score = rejected first. Ties at the threshold are split so the OOD rejection
    rate is exactly ``r`` in expectation.
    """
    t = np.quantile(score_ood, 1 - r, method="linear")
    above_ood = np.mean(score_ood > t)
    at_ood = np.mean(score_ood == t)
    frac = 0.0 if at_ood == 0 else np.clip((r - above_ood) / at_ood, 0, 1)  # share of ties rejected
    kept = (score_id < t).astype(float) + (score_id == t) * (1 - frac)
    return float(kept.mean())


def routing_table(
    scores: dict[str, tuple[np.ndarray, np.ndarray]],
    ambiguous: np.ndarray,
    rates: tuple[float, ...] = RATES,
) -> dict[str, dict[str, float]]:
    """Per method: ambiguous faces kept and all clean faces kept at each OOD rejection rate.

    ``scores[method] = (clean_scores (N,), ood_scores (K,))``.
    """
    out: dict[str, dict[str, float]] = {}
    for method, (clean, ood) in scores.items():
        out[f"kept_ambiguous_{method}"] = {str(r): kept_at_rate(clean[ambiguous], ood, r) for r in rates}
        out[f"kept_clean_{method}"] = {str(r): kept_at_rate(clean, ood, r) for r in rates}
    return out


def _ratio(a: float, b: float) -> float | None:
    """a / b, or None when the baseline keeps nothing (the ratio is undefined)."""
    return a / b if b > 0 else None


def kept_ratio_ci(
    clean_a: np.ndarray, ood_a: np.ndarray, clean_b: np.ndarray, ood_b: np.ndarray,
    ambiguous: np.ndarray, r: float, n_boot: int = N_BOOT, seed: int = 0,
) -> list[float | None]:
    """Bootstrap 95 % CI of kept_a / kept_b, resampling test faces (clean and corrupted together).

    ``ood_*`` are shaped ``(n_corruptions, N)`` so a resampled face brings all its corruptions.
    """
    rng = np.random.default_rng(seed)
    n = len(clean_a)
    ratios = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        amb = i[ambiguous[i]]
        ka = kept_at_rate(clean_a[amb], ood_a[:, i].ravel(), r)
        kb = kept_at_rate(clean_b[amb], ood_b[:, i].ravel(), r)
        if kb > 0:
            ratios.append(ka / kb)
    if len(ratios) < n_boot // 2:
        return [None, None]  # the baseline keeps no ambiguous face in most resamples: no ratio
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


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
    signals: "dict[str, PixelStats] | None" = None,
    ckplus: LabelledFaces | None = None,
) -> dict[str, Any]:
    """Run the protocol; write ``report.json``, ``report.md`` and PNG plots into ``out_dir``.

    ``signals``: the fitted input signals the router's shift score needs (the model folder's
    ``shift.json``, :func:`ferroute.shift.load_signals`). ``ckplus``: a second data set
    (:func:`ferroute.data.load_ckplus`) for the ``generalization`` section, which always
    holds the non-face crops of :mod:`ferroute.nonface`."""
    from tqdm.auto import tqdm

    t0 = time.time()
    if ldl is not None:
        ldl.set_tta(ensemble.tta)  # the baseline gets the same test-time augmentation
        if isinstance(ldl, Ensemble) and isinstance(ensemble, Ensemble):
            try:
                # int8 that runs here, not a fallback: scales fitted on these views of the validation faces
                if ensemble.uses_int8(ensemble.device) and ldl.int8_tta != ensemble.tta:
                    ldl.quantize(valid.images)
                ldl.set_precision(ensemble.precision)  # ... and the same arithmetic
            except ValueError:  # a baseline that cannot run in int8 (not a CNN): its fastest other mode
                ldl.set_precision("auto")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(corruptions or CORRUPTIONS)
    timings: dict[str, float] = {}

    def infer(model: "Ensemble | OnnxEnsemble", faces: np.ndarray) -> np.ndarray:
        return model.predict_proba(np.asarray(faces), batch_size=batch_size)

    sig = signals or {}

    def decomposed(probs: np.ndarray, faces: np.ndarray) -> dict[str, np.ndarray]:
        """The decomposition and every fitted input signal of ``faces``."""
        return {**decompose(probs), **{k: v.score(np.asarray(faces)) for k, v in sig.items()}}

    # ---- calibration on clean validation faces
    if router is None or not router.is_fitted:
        router = (router or UncertaintyRouter()).fit(decomposed(infer(ensemble, valid.images), valid.images), valid.disagreement)

    # ---- clean test
    pt = infer(ensemble, test.images)
    dt = decomposed(pt, test.images)
    mean_t = pt.mean(axis=1)
    labelled = test.labels >= 0
    accuracy = float(np.mean(mean_t[labelled].argmax(-1) == test.labels[labelled]))
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
        ldl_acc = float(np.mean(pl[labelled].argmax(-1) == test.labels[labelled]))
    timings["clean_inference_s"] = time.time() - t0

    # ---- corruptions
    t1 = time.time()
    sets = corrupted_set(test.images, names, severities, workers=workers, progress=progress)
    timings["corruptions_s"] = time.time() - t1
    t1 = time.time()
    scores: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    rejected: dict[tuple[str, int], float] = {}
    for key in tqdm(list(sets), desc="shift inference", unit="set", disable=not progress):
        p = infer(ensemble, sets[key])
        d = decomposed(p, sets[key])
        s = {"epistemic": d["epistemic"], "aleatoric": d["aleatoric"], "total": d["total"], "uar": router.shift_score(d)}
        rejected[key] = float(np.mean(router.decide(d, score=s["uar"]) == "reject"))
        if ldl is not None:
            s["ldl"] = entropy(infer(ldl, sets[key])[:, 0])
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
        return {str(r): _ratio(table[f"kept_ambiguous_{m}"][str(r)], table["kept_ambiguous_single"][str(r)]) for r in RATES}

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
        "clean_shares": _shares(decisions),
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
    report: dict[str, Any] = {
        "accuracy": accuracy,
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
    report["generalization"] = _generalization(lambda f: infer(ensemble, f), lambda p, f: router.decide(decomposed(p, f)), ckplus)
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
            "kept_ratio": {str(r): _ratio(table["kept_ambiguous_ldl"][str(r)], table["kept_ambiguous_single"][str(r)]) for r in RATES},
            "uar_over_ldl": {str(r): _ratio(table["kept_ambiguous_uar"][str(r)], table["kept_ambiguous_ldl"][str(r)]) for r in RATES},
        }
    timings["total_s"] = time.time() - t0
    report["timings"] = timings

    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plots(out, dt, dis, mean_auroc, per, clean_scores, ood, amb, methods)
    (out / "report.md").write_text(render_markdown(report))
    return report


def _shares(decisions: np.ndarray) -> dict[str, float]:
    return {k: float(np.mean(decisions == k)) for k in ("accept", "ambiguous", "reject")}


def _generalization(probs_of: Any, decide: Any, ckplus: LabelledFaces | None) -> dict[str, Any]:
    """Beyond FERPlus: what the router does with 48x48 non-face crops, and, with CK+, accuracy
    (per image and per subject, averaged over subjects) and decision shares. ``probs_of(faces)``
    runs the ensemble ``(N, M, C)``; ``decide(probs, faces)`` the router."""
    from .nonface import nonface_crops

    crops, kinds = nonface_crops()
    dec = decide(probs_of(crops), crops)
    kinds_arr = np.asarray(kinds)
    out: dict[str, Any] = {
        "nonface_rejected": float(np.mean(dec == "reject")),
        "nonface_shares": _shares(dec),
        "nonface_rejected_by_kind": {k: float(np.mean(dec[kinds_arr == k] == "reject")) for k in dict.fromkeys(kinds)},
        "n_nonface": len(crops),
    }
    if ckplus is not None:
        probs = probs_of(ckplus.images)  # once: for the accuracy and the decisions
        right = probs.mean(1).argmax(-1) == ckplus.labels
        dec = decide(probs, ckplus.images)
        kept = dec != "reject"
        out.update({
            "ckplus_accuracy": float(right.mean()),
            "ckplus_accuracy_per_subject": float(np.mean([right[ckplus.groups == g].mean() for g in np.unique(ckplus.groups)])),
            "ckplus_accuracy_not_rejected": float(right[kept].mean()) if kept.any() else None,
            "ckplus_shares": _shares(dec),
            "n_ckplus": int(len(right)),
            "n_ckplus_subjects": int(len(np.unique(ckplus.groups))),
        })
    return out


def _plots(out: Path, dt: Decomposition, dis: np.ndarray, mean_auroc: dict, per: dict, clean: dict, ood: dict, amb: np.ndarray, methods: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    jitter = np.random.default_rng(0).normal(0, 0.01, len(dis))
    ax.scatter(dis + jitter, dt["aleatoric"], s=3, alpha=0.3)
    ax.set_xlabel("annotator disagreement (vote entropy, nats)")
    ax.set_ylabel("aleatoric uncertainty (nats)")
    ax.set_title(f"Aleatoric vs human disagreement (rho={spearmanr(dt['aleatoric'], dis).statistic:.3f})")
    fig.tight_layout()
    fig.savefig(out / "aleatoric_vs_disagreement.png", dpi=120)
    plt.close(fig)

    sevs = sorted(per["epistemic"], key=int)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in per["epistemic"][sevs[0]]:
        axes[0].plot([int(s) for s in sevs], [per["epistemic"][s][name] for s in sevs], marker=".", label=name)
    axes[0].set_title("Epistemic AUROC (clean vs corrupted) per corruption")
    axes[0].set_xlabel("severity")
    axes[0].set_ylabel("AUROC")
    axes[0].legend(fontsize=6, ncol=2)
    for k, v in mean_auroc.items():
        axes[1].plot([int(s) for s in sevs], [v[s] for s in sevs], marker="o", label=k)
    n = len(per["epistemic"][sevs[0]])
    axes[1].set_title(f"Mean AUROC over the {n} corruption{'s' if n > 1 else ''}")
    axes[1].set_xlabel("severity")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "auroc_vs_severity.png", dpi=120)
    plt.close(fig)

    rates = np.linspace(0.3, 0.99, 40)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = {"uar": "UAR (shipped score)", "paper": "UAR (plain epistemic, paper)", "single": "single score (total)", "ldl": "LDL entropy"}
    for m, k in methods.items():
        axes[0].plot(rates, [kept_at_rate(clean[k][amb], ood[k].ravel(), r) for r in rates], label=names.get(m, m))
        axes[1].plot(rates, [kept_at_rate(clean[k], ood[k].ravel(), r) for r in rates], label=names.get(m, m))
    axes[0].set_ylabel("ambiguous in-distribution faces kept")
    axes[0].set_title("What routing keeps: ambiguous faces")
    axes[1].set_ylabel("all clean test faces kept")
    axes[1].set_title("What it costs: clean faces")
    for ax in axes:
        ax.set_xlabel("OOD rejected (severity 5, all corruptions pooled)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "kept_ambiguous_vs_rejection.png", dpi=120)
    plt.close(fig)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def render_markdown(r: dict[str, Any]) -> str:
    """A human-readable summary of a report dict."""
    a, s, ro = r["ambiguity"], r["shift"], r["routing"]
    pa, de = ro["paper"], ro["deployed"]
    n = len(s["corruptions"])
    over = "the 15 corruptions" if n == 15 else f"{n} of the 15 corruptions ({', '.join(s['corruptions'])})"
    ci = ro["kept_ratio_ci95"]["0.9"]
    pci = pa["kept_ratio_ci95"]["0.9"]
    lines = [
        "# ferroute evaluation report",
        "",
        f"FERPlus test: {r['n_test']} faces ({r['n_test_labelled']} with a majority label). "
        f"Ensemble of {r['model']['members']} `{r['model']['backbone']['name']}` members. "
        f"Reject score shipped: `{s['shipped_score']}`.",
        "",
        "| measure | value | paper |",
        "|---|---|---|",
        f"| accuracy (majority label) | {r['accuracy']:.3f} | |",
        f"| Spearman aleatoric vs disagreement | {a['spearman_aleatoric']:.3f} ({a['spearman_aleatoric_ci95'][0]:.3f}-{a['spearman_aleatoric_ci95'][1]:.3f}) | 0.66 (0.64-0.68) |",
        f"| mean epistemic AUROC, severity 5 | {s['auroc_epistemic']['5']:.3f} | 0.699 |",
        f"| mean AUROC of the shipped reject score, severity 5 | {s['auroc_shipped']['5']:.3f} | |",
        f"| kept ratio, paper's UAR (plain epistemic) / single score, r=0.9 | {_f(pa['kept_ratio']['0.9'])} ({_f(pci[0])}-{_f(pci[1])}) | about 1.8 |",
        f"| kept ratio, shipped UAR / single score, r=0.9 | {_f(ro['kept_ratio']['0.9'])} ({_f(ci[0])}-{_f(ci[1])}) | |",
        f"| ... at the cost of: clean faces kept, shipped / paper's / single, r=0.9 | {ro['kept_clean']['uar']['0.9']:.3f} / {ro['kept_clean']['paper']['0.9']:.3f} / {ro['kept_clean']['single']['0.9']:.3f} | |",
        f"| deployed: clean test faces rejected | {_pct(de['clean_rejected'])} (promise: at most {_pct(de['guarantee'].get('reject_rate_upper_95', de['guarantee']['reject_rate']))}) | |",
        f"| deployed: severity-5 corrupted faces rejected | {_pct(de['ood_rejected'])} | |",
        "",
        "## Deployed: the shipped router at its calibrated thresholds",
        "",
        de["guarantee"].get("statement", ""),
        "",
        "Clean test faces: " + ", ".join(f"{k} {_pct(v)}" for k, v in de["clean_shares"].items()) + ".",
        "",
        "Corrupted test faces rejected, by severity (mean over " + over + "): "
        + ", ".join(f"{k}: {_pct(v)}" for k, v in de["ood_rejected_by_severity"].items()) + ".",
        "",
        "| corruption (severity 5) | rejected |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_pct(v)} |" for k, v in sorted(de["ood_rejected_per_corruption"].items(), key=lambda kv: -kv[1])]
    lines += [
        "",
        "## Ambiguity",
        "",
        f"Spearman with annotator disagreement: aleatoric {a['spearman_aleatoric']:.3f}, total {a['spearman_total']:.3f}, "
        f"epistemic {a['spearman_epistemic']:.3f}, shipped reject score {a['spearman_shift_score']:.3f}.",
        "",
        "![aleatoric vs disagreement](aleatoric_vs_disagreement.png)",
        "",
        f"## Shift (mean AUROC over {over})",
        "",
        "| score | " + " | ".join(f"sev {k}" for k in sorted(s["auroc_epistemic"], key=int)) + " |",
        "|---|" + "---|" * len(s["auroc_epistemic"]) + "",
    ]
    rows = [("epistemic", s["auroc_epistemic"]), ("aleatoric", s["auroc_aleatoric"]), ("total", s["auroc_total"]), (f"shipped ({s['shipped_score']})", s["auroc_shipped"])]
    if "ldl" in r:
        rows.append(("LDL entropy", r["ldl"]["auroc"]))
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in sorted(m, key=int)) + " |")
    lines += ["", "![AUROC vs severity](auroc_vs_severity.png)", "", "## Routing at matched OOD rejection", ""]
    ldl = "ldl" in r
    lines += ["| r | shipped UAR keeps (ambiguous / clean) | paper's UAR keeps | single score keeps | ratio shipped / paper's | shipped keeps >= clean faces of single |"
              + (" LDL keeps |" if ldl else ""), "|---|---|---|---|---|---|" + ("---|" if ldl else "")]
    kc = ro["kept_clean"]
    for k in ro["kept_ratio"]:
        row = (f"| {k} | {ro['kept_ambiguous_uar'][k]:.3f} / {kc['uar'][k]:.3f} | {pa['kept_ambiguous_uar'][k]:.3f} / {kc['paper'][k]:.3f} | "
               f"{ro['kept_ambiguous_single'][k]:.3f} / {kc['single'][k]:.3f} | {_f(ro['kept_ratio'][k])} / {_f(pa['kept_ratio'][k])} | "
               f"{'yes' if ro['dominates'][k] else 'no'} |")
        if ldl:
            row += f" {r['ldl']['kept_ambiguous'][k]:.3f} |"
        lines.append(row)
    lines += [
        "",
        f"{ro['n_ambiguous']} ambiguous faces (top third of disagreement); {ro['n_ood']} OOD inputs ({over} at severity 5).",
        "",
        "![kept ambiguous vs rejection](kept_ambiguous_vs_rejection.png)",
        "",
    ]
    if ldl:
        lines += [f"LDL baseline (single model): accuracy {r['ldl']['accuracy']:.3f}, Spearman {r['ldl']['spearman']:.3f}, AUROC sev 5 {r['ldl']['auroc']['5']:.3f}.", ""]
    g = r.get("generalization")
    if g:
        lines += ["## Beyond FERPlus", "",
                  f"{g['n_nonface']} non-face 48x48 crops (`ferroute.nonface`): rejected {_pct(g['nonface_rejected'])} ("
                  + ", ".join(f"{k} {_pct(v)}" for k, v in g["nonface_rejected_by_kind"].items()) + "); "
                  + ", ".join(f"{k} {_pct(v)}" for k, v in g["nonface_shares"].items()) + ".", ""]
        if "ckplus_accuracy" in g:
            lines += [f"CK+ ({g['n_ckplus']} crops, {g['n_ckplus_subjects']} subjects; never trained or tuned on): accuracy "
                      f"{g['ckplus_accuracy']:.3f} per image, {g['ckplus_accuracy_per_subject']:.3f} averaged over subjects, "
                      f"{_f(g['ckplus_accuracy_not_rejected'])} on the faces not rejected; "
                      + ", ".join(f"{k} {_pct(v)}" for k, v in g["ckplus_shares"].items()) + ".", ""]
    if "selection" in r:
        sel = r["selection"]
        lines += ["## How the reject score was chosen", "", sel.get("summary", ""), ""]
    lines += [f"Wall time: {r['timings']['total_s']:.0f} s.", ""]
    return "\n".join(lines)
