"""Every decision says why, in words a user can check: the reason for a rejection (which signal,
and how unusual it is against validation faces), for ``ambiguous`` (the shares and the level
in words) and for ``accept``; and the JSON-able report of each face built from them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import agreement as agr
from .uncertainty import decompose

if TYPE_CHECKING:
    from .routing import UncertaintyRouter


def reject_reason(part: str, percentile: float) -> str:
    """Why an input is rejected, in words: the shift score's ``part`` that fired, at its
    ``percentile`` (0-100) among validation faces."""
    than = "any validation face" if percentile >= 99.95 else f"{min(percentile, 99.0):.0f}% of validation faces"
    if part == "pixels":
        return (f"Rejected: the image itself is unlike the faces the model was trained on (its blur, noise, contrast, "
                f"exposure or compression is more unusual than on {than}), so no emotion is reported.")
    if part == "face":
        return (f"Rejected: the face detector hardly sees a face in this crop (it looks less like a face than "
                f"{than}), so no emotion is reported.")
    similar = " of similar ambiguity" if part == "conditional" else ""
    return (f"Rejected: the input looks unlike the faces the model was trained on (the ensemble members disagree more "
            f"than on {than}{similar}), so no emotion is reported.")


def keep_reason(decision: str, top2: list[tuple[str, float]], level: float | None = None) -> str:
    """Why a face is ``ambiguous`` or accepted, from its two likeliest emotions ``[(label, p), ...]``
    (vote-calibrated shares of people) and the ambiguity ``level`` it was compared with."""
    (top, p1), (second, p2) = top2
    if level is None:  # a router calibrated before agreement: shares are the members' mean
        if decision == "ambiguous":
            return f"Ambiguous: people would likely disagree about this face; it reads as {top} ({p1:.0%}) or {second} ({p2:.0%})."
        return f"Clear {top} expression ({p1:.0%}); the members agree and the face looks familiar."
    if decision == "ambiguous":
        share = f"{p1:.1%}" if round(p1, 2) >= level else f"{p1:.0%}"  # 0.596 at level 0.6 reads 59.6 %, not 60 %
        return (f"Ambiguous: about {share} of people would call this {top}, {p2:.0%} {second}; "
                f"{_no_majority(level)}.")
    other = f", {p2:.0%} {second}" if p2 >= 0.05 else ""
    return f"{top.capitalize()}: about {p1:.0%} of people would call it that{other}; the face looks familiar to the model."


def _no_majority(level: float) -> str:
    """Why a face is ambiguous at ``level``, in words: "no clear majority (fewer than 3 in 5
    people would pick the top emotion)" at the default."""
    words = agr.level_words(level)
    return f"no clear majority ({words})" if abs(level - agr.DEFAULT_LEVEL) < 1e-9 else words


def face_reports(router: "UncertaintyRouter", probs: np.ndarray, labels: tuple[str, ...] | list[str],
                 signals: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """One JSON-able report per input of member probabilities ``(B, M, C)``: the decision,
    its reason, the emotion, the vote-calibrated distribution, agreement, the decomposition,
    the shift score and each part's percentile among validation faces."""
    router._require()
    p = np.asarray(probs, float)
    d: dict[str, np.ndarray] = {**decompose(p), **(signals or {})}
    mean = router.calibrated(p)  # vote-calibrated shares of people (the members' mean on an older router)
    agree = agr.agreement(mean)
    level = router.ambiguous_below if router.has_agreement else None
    z = router.shift_score(d)  # type: ignore[arg-type]
    decisions = router.decide(d, score=z, agree=agree)  # type: ignore[arg-type]
    pct = {k: router.percentile(k, d[k]) for k in ("aleatoric", "epistemic", "total")}
    part_pct = router._part_percentiles(d) if np.any(decisions == "reject") else {}
    reports = []
    for i in range(len(p)):
        order = np.argsort(-mean[i])
        top = labels[order[0]]
        dist = {lab: round(float(mean[i, j]), 4) for j, lab in enumerate(labels)}
        dec = str(decisions[i])
        if dec == "reject":
            part = max(part_pct, key=lambda q: part_pct[q][i])
            pct_i = 100 * float(part_pct[part][i])
            if part == "learned":  # name the signal that raised the learned score most
                part = str(router.learned.top_group({k: v[i : i + 1] for k, v in d.items()})[0])
            reason = reject_reason(part, pct_i)
        else:
            reason = keep_reason(dec, [(labels[j], float(mean[i, j])) for j in order[:2]], level)
        reports.append(
            {
                "decision": dec,
                "reason": reason,
                "emotion": None if dec == "reject" else top,
                "distribution": dist,
                "agreement": None if dec == "reject" else round(float(agree[i]), 4),
                "aleatoric": round(float(d["aleatoric"][i]), 5),
                "epistemic": round(float(d["epistemic"][i]), 6),
                "total": round(float(d["total"][i]), 5),
                "shift_score": round(float(z[i]), 4),
                "percentiles": {k: round(float(v[i]), 1) for k, v in pct.items()},
            }
        )
    return reports
