"""The statistics of the dual-validation protocol: rank correlation with a bootstrap CI,
AUROC, what a router keeps at a matched rejection rate, and the kept ratio with its CI; the
predicted distribution against the votes (KL, JS, top-share calibration, the vote-noise
ceiling); selective accuracy (risk-coverage, AURC).

Shapes: scores are ``(N,)`` per face; higher means more uncertain or less familiar.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from scipy.stats import rankdata, spearmanr

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


def ratio(a: float, b: float) -> float | None:
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


# --------------------------------------------------------------------------- distributions against votes


def kl_divergence(votes: np.ndarray, pred: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """KL(votes || pred) per face ``(N,)`` in nats; ``pred`` floored at ``eps`` and renormalised
    (a zero predicted where people voted would be infinite)."""
    p, q = np.asarray(votes, float), np.clip(np.asarray(pred, float), eps, None)
    q = q / q.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0).sum(-1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence per face ``(N,)`` in nats (symmetric, finite, at most ln 2)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    m = (p + q) / 2
    return (kl_divergence(p, m, 1e-12) + kl_divergence(q, m, 1e-12)) / 2


def top_share_calibration(pred: np.ndarray, votes: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability of the predicted share of the top emotion against the actual share of votes
    for that emotion: 10 equal-width bins of the prediction; ``ece`` is the face-weighted mean
    gap. Bins as lists (centre-free: mean predicted, mean actual, count)."""
    pred, votes = np.asarray(pred, float), np.asarray(votes, float)
    top = pred.argmax(-1)
    conf = pred[np.arange(len(pred)), top]
    actual = votes[np.arange(len(votes)), top]
    which = np.clip((conf * bins).astype(int), 0, bins - 1)
    rows, gap = [], 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            rows.append([float(conf[sel].mean()), float(actual[sel].mean()), int(sel.sum())])
            gap += sel.sum() * abs(conf[sel].mean() - actual[sel].mean())
    return {"ece": float(gap / len(pred)), "bins": rows}


def vote_noise_ceiling(votes: np.ndarray, draws: int = 20, seed: int = 0) -> dict[str, float]:
    """How well one draw of each face's votes predicts another: resample each face's ``n`` votes
    twice from its observed vote shares (plug-in multinomial, ``n`` = its own vote count) and
    score draw A as a "prediction" of draw B as the report scores the model: KL(B || A) (A
    floored at 1e-6), JS(A, B), top-share calibration error, and Spearman between the two draws'
    vote entropies (the ceiling for aleatoric against disagreement). Averaged over ``draws``."""
    from ..decide.uncertainty import entropy

    n, share = _vote_shares(votes)
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {"kl": [], "js": [], "ece": [], "spearman": []}
    for _ in range(draws):
        a, b = _redraw(n, share, rng), _redraw(n, share, rng)
        out["kl"].append(float(kl_divergence(b, a).mean()))
        out["js"].append(float(js_divergence(a, b).mean()))
        out["ece"].append(top_share_calibration(a, b)["ece"])
        out["spearman"].append(float(spearmanr(entropy(a), entropy(b)).statistic))
    return {k: float(np.mean(v)) for k, v in out.items()} | {"draws": draws}


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """Average precision of ``score`` (higher = more likely positive) for boolean ``positive``:
    the precision at each distinct threshold weighted by the recall it adds, ties taken
    together (as ``sklearn.metrics.average_precision_score``)."""
    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    if not positive.any():
        return float("nan")
    order = np.argsort(-score, kind="stable")
    s, y = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the end of each run of tied scores
    tp = np.cumsum(y)[last]
    precision, recall = tp / (last + 1), tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _vote_shares(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each face's vote count ``(N,)`` and observed vote shares ``(N, C)``."""
    counts = np.asarray(votes, np.int64)
    n = counts.sum(-1)
    return n, counts / n[:, None]


def _redraw(n: np.ndarray, share: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One fresh draw of every face's votes from its shares (multinomial, its own count), as shares."""
    return np.stack([rng.multinomial(k, s) for k, s in zip(n, share)]) / n[:, None]


def flag_ceiling(votes: np.ndarray, levels: Iterable[float], draws: int = 20, seed: int = 0) -> dict[float, dict[str, float]]:
    """What ten votes allow a flag "fewer than ``level`` of people pick the top emotion", at each
    of ``levels``: a predictor that knew each face's vote shares (the observed shares taken as
    the truth) flags ``share < level`` and is scored, as the model is, against a fresh draw of
    the face's votes (multinomial, its own vote count): precision and recall, averaged over
    ``draws`` (the same draws for every level). Faces whose true share sits near the level land
    on either side of it by vote noise alone, so neither reaches 1."""
    n, share = _vote_shares(votes)
    levels = list(dict.fromkeys(float(lv) for lv in levels))
    rng = np.random.default_rng(seed)
    tops = [_redraw(n, share, rng).max(-1) for _ in range(draws)]
    out = {}
    for level in levels:
        flag = share.max(-1) < level
        prec, rec = [], []
        for top in tops:
            actual = top < level
            prec.append(actual[flag].mean() if flag.any() else np.nan)
            rec.append(flag[actual].mean() if actual.any() else np.nan)
        out[level] = {"ceiling_precision": float(np.nanmean(prec)), "ceiling_recall": float(np.nanmean(rec)), "draws": draws}
    return out


# --------------------------------------------------------------------------- selective prediction


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and selective risk (error rate among the kept) when keeping the most confident
    first; ties kept together in input order (a stable sort)."""
    order = np.argsort(-np.asarray(confidence, float), kind="stable")
    c = np.asarray(correct, float)[order]
    k = np.arange(1, len(c) + 1)
    return k / len(c), 1 - np.cumsum(c) / k


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve (lower is better): the mean selective risk over all
    coverages, as in Geifman et al. (2019)."""
    return float(risk_coverage(confidence, correct)[1].mean())
