"""Calibrate a model to a site: its promises re-made on the user's own ordinary photos, no labels.

Every face found in the photos is scored by the model's reject score, and the reject threshold
is set split-conformally on those faces at the user's rate: for a new face drawn like them, the
chance of a rejection is at most that rate, with a finite-sample 95 % bound for the number of
faces used. The site threshold may tighten the base model's as well as loosen it: the promise
is about this site's ordinary faces, and a site whose faces are more familiar than FERPlus's
gets a stricter gate, which catches more shifted inputs at the same false-reject rate.

Guard rails: what the site threshold lets through is measured on the non-face probe and, where
FERPlus is at hand, on test faces under the 15 corruptions at severity 5; a threshold that lets
through more than 5 points more of the probe than the base model's is refused, naming the site
faces that pushed it up. Photos that fail to decode or hold no face are listed, never counted.

Writes ``site.json`` (:mod:`ferroute.engine.site`), ``site_report.json``, ``site_report.md`` and two
contact sheets into the site folder.
"""

from __future__ import annotations

import datetime
import json
import math
from itertools import islice
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from .. import __version__
from ..decide.conformal import conformal_guarantee, conformal_rank
from ..decide.uncertainty import decompose
from ..engine.config import ModelError
from ..engine.site import FORMAT, SITE_FILE, is_site, model_digest
from ..router import EMBEDDED_MODELS, FERRouter, resolve_model_dir

#: how far under the base model's the site's non-face rejection may fall
NONFACE_SLACK = 0.05
#: how far above the rate the promise's 95 % bound may be for a site to be calibrated
BOUND_SLACK = 0.03
#: and at least this many faces whatever the rate (the emotion mix needs as many)
MIN_FACES = 100


class SiteRefused(ModelError):
    """The site's photos cannot make a promise that keeps the base model's guard rails."""


def faces_needed(rate: float, slack: float = BOUND_SLACK) -> int:
    """The fewest faces whose conformal threshold at ``rate`` has a 95 % bound within ``slack``
    of it (scanned upwards: the bound falls with the number of faces, in small steps)."""
    n = max(MIN_FACES, math.ceil((1 - rate) / rate))
    while conformal_guarantee(n, conformal_rank(n, rate), rate)["reject_rate_upper_95"] > rate + slack:
        n += 1
    return n


def _score_faces(router: FERRouter, faces: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Member probabilities ``(N, M, C)`` and the signals and decomposition ``{name: (N,)}``."""
    probs = router.ensemble.predict_proba(faces)
    d = {**decompose(probs), **{k: router.signals[k].score(faces) for k in router.router.needs}}
    return probs, d


def _find_faces(router: FERRouter, photos: list[str]) -> tuple[np.ndarray, list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """Every face of ``photos``: crops ``(N, 48, 48)``, where each came from, the photos that
    failed (with why) and those without a face."""
    crops, where, failed, empty = [], [], [], []
    it = iter(photos)
    while group := list(islice(it, 32)):
        prep = router.prepare(group)
        for i, item in enumerate(prep.items):
            if "error" in item:
                failed.append({"source": item["source"], "error": str(prep.errors.get(i, item["error"]))})
        seen = {i for i, _ in prep.owners}
        empty += [it_["source"] for i, it_ in enumerate(prep.items) if "error" not in it_ and i not in seen]
        for crop, (i, face) in zip(prep.crops, prep.owners):
            crops.append(crop)
            where.append({"source": prep.items[i]["source"], "box": list(face.box)})
    return (np.stack(crops) if crops else np.zeros((0, 48, 48), np.uint8)), where, failed, empty


def _sheet(faces: np.ndarray, path: Path, cols: int = 8, scale: int = 2) -> str | None:
    if not len(faces):
        return None
    rows = math.ceil(len(faces) / cols)
    grid = np.full((rows * 50, cols * 50), 255, np.uint8)
    for k, f in enumerate(faces):
        r, c = divmod(k, cols)
        grid[r * 50 + 1 : r * 50 + 49, c * 50 + 1 : c * 50 + 49] = f
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)
    return path.name


def _corrupted_rejected(router: FERRouter, thresholds: dict[str, float], faces: int = 500) -> dict[str, Any] | None:
    """Shares of FERPlus test faces under the 15 corruptions at severity 5 rejected under each threshold."""
    from .corruptions import CORRUPTIONS, corrupt
    from .ferplus import DataError, load_split

    try:
        test = load_split("test")
    except (DataError, OSError):
        return None
    clean = test.images[:faces]
    out: dict[str, Any] = {name: {} for name in thresholds}
    for c in CORRUPTIONS:
        _, d = _score_faces(router, corrupt(clean, c, 5))
        z = router.router.shift_score(d)
        for name, thr in thresholds.items():
            out[name][c] = float(np.mean(z > thr))
    return {"faces": len(clean), "severity": 5, **{f"{k}_mean": float(np.mean(list(v.values()))) for k, v in out.items()}, "per_corruption": out}


def calibrate_site(photos: Iterable[str], out: str | Path, model: str | Path | None = None, reject_rate: float = 0.05,
                   corruptions: bool = True) -> dict[str, Any]:
    """Calibrate ``model`` to the faces of ``photos`` and write the site folder ``out``;
    the report (JSON-able). :class:`SiteRefused` where too few faces or a guard rail says no."""
    from .nonface import nonface_crops

    if not 0 < reject_rate < 0.5:
        raise ValueError(f"the reject rate must be between 0 and 0.5, got {reject_rate}")
    if model is not None and is_site(model):
        raise ModelError(f"{model}: a site folder; calibrate the base model it names instead")
    base_dir = resolve_model_dir(model)
    router = FERRouter.load(base_dir)
    photos = list(photos)
    faces, where, failed, empty = _find_faces(router, photos)
    need = faces_needed(reject_rate)
    if len(faces) < need:
        raise SiteRefused(f"{len(faces)} faces found in {len(photos)} photos; a promise at {reject_rate:.0%} needs at least {need} "
                          f"faces (its 95 % bound within {BOUND_SLACK:.0%} of the rate): add ordinary photos of the site")
    probs, d = _score_faces(router, faces)
    z = router.router.shift_score(d)
    rank = conformal_rank(len(z), reject_rate)
    thr = float(np.sort(z)[rank - 1])
    base_thr = float(router.router.thresholds["shift_z"])
    nf, kinds = nonface_crops()
    _, dn = _score_faces(router, nf)
    zn = router.router.shift_score(dn)
    kinds_arr = np.asarray(kinds)
    nonface = {"base": float(np.mean(zn > base_thr)), "site": float(np.mean(zn > thr)),
               "by_kind": {k: {"base": float(np.mean(zn[kinds_arr == k] > base_thr)), "site": float(np.mean(zn[kinds_arr == k] > thr))}
                           for k in sorted(set(kinds))}, "crops": len(nf)}
    order = np.argsort(-z)
    g = conformal_guarantee(len(z), rank, reject_rate)
    promise = {**g, "statement": (f"A face drawn like the {len(z)} faces of this site's photos is rejected with probability at most "
                                  f"{reject_rate:.0%} (exactly {g['reject_rate_expected']:.2%} on average over calibration sets); with 95 % "
                                  f"confidence this calibration rejects at most {g['reject_rate_upper_95']:.2%} of such faces. "
                                  "Faces unlike this site's carry no such promise.")}
    base_name = str(model) if model is not None and str(model) in EMBEDDED_MODELS and not Path(str(model)).exists() else (
        "default" if model is None else str(base_dir.resolve()))
    report: dict[str, Any] = {
        "created": datetime.date.today().isoformat(), "ferroute": __version__,
        "base_model": base_name, "base_digest": model_digest(base_dir), "reject_score": router.router.shift,
        "photos": len(photos), "faces": len(z), "faces_needed": need, "failed": failed, "no_face": empty,
        "reject_rate": reject_rate, "rank": rank, "z_threshold": thr, "base_z_threshold": base_thr,
        "direction": "tighter" if thr < base_thr else "looser" if thr > base_thr else "unchanged",
        "site_faces_rejected_by_base": float(np.mean(z > base_thr)), "promise": promise, "nonface_rejected": nonface,
        "signals": {name: {"median": float(np.median(pc)), "p90": float(np.quantile(pc, 0.9))}
                    for name in ("epistemic", "aleatoric", "total", *[k for k in router.router.needs if np.ndim(d[k]) == 1])
                    for pc in [100 * router.router.percentile(name, d[name])]},
        "most_unusual": [{**where[i], "shift_score": float(z[i])} for i in order[:10]],
    }
    report["signals"]["reject score"] = {"median": float(np.median(100 * router.router.percentile("z", z))),
                                         "p90": float(np.quantile(100 * router.router.percentile("z", z), 0.9))}
    if router.priors is not None and len(probs) >= router.priors.min_faces:
        report["emotion_mix"] = {"site": dict(zip(router.labels, map(float, router.priors.estimate(probs)))),
                                 "ferplus_validation": dict(zip(router.labels, map(float, router.priors.source_mix)))}
    if corruptions:
        report["corrupted_rejected"] = _corrupted_rejected(router, {"base": base_thr, "site": thr})
    if nonface["site"] < nonface["base"] - NONFACE_SLACK:
        names = ", ".join(f"{m['source']} (box {m['box']})" for m in report["most_unusual"][:5])
        raise SiteRefused(f"the site threshold would let through {nonface['base'] - nonface['site']:.0%} more of the non-face probe "
                          f"than the base model's ({nonface['site']:.0%} rejected against {nonface['base']:.0%}): some of these photos' "
                          f"faces are too unusual to call ordinary. Look at the most unusual first: {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report["pictures"] = {"rejected": _sheet(faces[order[z[order] > thr]][:48], out / "site_rejected.png"),
                          "most_unusual_accepted": _sheet(faces[order[z[order] <= thr]][:48], out / "site_most_unusual_kept.png")}
    site = {"format": FORMAT, **{k: report[k] for k in ("created", "ferroute", "base_model", "base_digest", "reject_rate", "rank",
                                                       "z_threshold", "base_z_threshold", "promise")}, "n_faces": len(z)}
    (out / SITE_FILE).write_text(json.dumps(site, indent=1) + "\n")
    (out / "site_report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "site_report.md").write_text(render_site_report(report))
    return report


def render_site_report(r: dict[str, Any]) -> str:
    """``site_report.md``: what a person reads before trusting the site folder."""
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f} %"  # noqa: E731
    nf = r["nonface_rejected"]
    lines = [f"# Site calibration ({r['created']}, ferroute {r['ferroute']})", "",
             f"Base model `{r['base_model']}` (digest `{r['base_digest']}`), reject score `{r['reject_score']}`.", "",
             f"- photos: {r['photos']}; faces found and used: **{r['faces']}** (at least {r['faces_needed']} needed); "
             f"photos without a face: {len(r['no_face'])}; photos that failed: {len(r['failed'])}",
             f"- **promise**: {r['promise']['statement']}",
             f"- reject threshold: site {r['z_threshold']:.4f} against the base model's {r['base_z_threshold']:.4f} ({r['direction']}); "
             f"the base threshold rejected {pct(r['site_faces_rejected_by_base'])} of these faces",
             "", "## What the site threshold lets through", "",
             "| set | rejected, base threshold | rejected, site threshold |", "|---|---|---|",
             f"| non-face probe ({nf['crops']} crops) | {pct(nf['base'])} | {pct(nf['site'])} |"]
    lines += [f"| non-face probe: {k} | {pct(v['base'])} | {pct(v['site'])} |" for k, v in nf["by_kind"].items()]
    cr = r.get("corrupted_rejected")
    if cr:
        lines.append(f"| FERPlus test faces under the 15 corruptions at severity 5 ({cr['faces']} faces each) | {pct(cr['base_mean'])} | {pct(cr['site_mean'])} |")
    else:
        lines.append("| corruptions | not measured (FERPlus not found: set FERPLUS_DIR) | |")
    lines += ["", "## How the site differs from FERPlus, signal by signal", "",
              "Each face's percentile among FERPlus validation faces (50 = typical of FERPlus).", "",
              "| signal | median percentile | 90th percentile |", "|---|---|---|"]
    lines += [f"| {k} | {v['median']:.0f} | {v['p90']:.0f} |" for k, v in r["signals"].items()]
    if "emotion_mix" in r:
        lines += ["", "## Emotion mix (estimated, no labels)", "", "| emotion | this site | FERPlus validation |", "|---|---|---|"]
        lines += [f"| {e} | {pct(s)} | {pct(r['emotion_mix']['ferplus_validation'][e])} |" for e, s in r["emotion_mix"]["site"].items()]
    lines += ["", "## Faces to look at", ""]
    if r["pictures"].get("rejected"):
        lines += ["Site faces the site threshold still rejects (most unusual first):", "", f"![rejected]({r['pictures']['rejected']})", ""]
    if r["pictures"].get("most_unusual_accepted"):
        lines += ["The most unusual site faces it accepts:", "", f"![most unusual kept]({r['pictures']['most_unusual_accepted']})", ""]
    lines += ["Most unusual faces, by source:", ""] + [f"- {m['source']} (box {m['box']}): shift score {m['shift_score']:.3f}" for m in r["most_unusual"]]
    if r["no_face"] or r["failed"]:
        lines += ["", "## Photos not used", ""] + [f"- {s}: no face found" for s in r["no_face"][:50]] + \
                 [f"- {f['source']}: {f['error']}" for f in r["failed"][:50]]
    return "\n".join(lines) + "\n"
