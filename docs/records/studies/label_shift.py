"""Study: adapting to a batch's emotion mix (``ferroute.decide.labelshift``), and how its two settings were chosen.

    FERPLUS_DIR=... python docs/records/studies/label_shift.py > docs/records/studies/label_shift.txt

Chosen on FERPlus validation faces only. Half of them fit the adapter (calibration and the
validation mix), the other half are drawn as batches of 25-400 faces:
- with the validation mix as it is (what adapting costs when nothing shifted);
- resampled to random mixes, Dirichlet(1) over the 8 emotions (what it gains when the mix shifts).

Rule: ``min_faces`` = 100, fixed before looking (fewer faces say little about 8 shares). The
pull is the one with the largest mean gain on shifted batches of 100-400 faces, among pulls
that cost at most 0.005 of accuracy on unshifted batches of those sizes. The default model,
as shipped, runs the batches; CK+, FERPlus test and ``photos_dev`` (1,000 LFW news photos,
500 labelled happiness and 500 neutral by one annotator: a rough check) are printed as
records, not used. For the photos, the main (largest) face of each photo is routed through
:class:`ferroute.FERRouter` as ``ferroute route --adapt`` routes it.
"""

from __future__ import annotations

import numpy as np

from ferroute.evaluate.ferplus import load_ckplus, load_split, resolve_data_dir
from ferroute.train.ensemble import Ensemble
from ferroute.decide.labelshift import PriorAdapter
from ferroute.router import FERRouter, default_model_dir

PULLS = (0.0, 25.0, 100.0, 400.0)
SIZES = (25, 50, 100, 200, 400)
TRIALS = 120


def gain(adapter: PriorAdapter, probs: np.ndarray, labels: np.ndarray) -> float:
    adapted = adapter.reweight(probs, adapter.estimate(probs))
    return float(np.mean(adapted.mean(1).argmax(1) == labels) - np.mean(probs.mean(1).argmax(1) == labels))


def main() -> None:
    ens = Ensemble.load(default_model_dir())
    va, te = load_split("valid"), load_split("test")
    ck = load_ckplus(resolve_data_dir(None).parent / "ckplus48")
    pv = ens.predict_proba(va.images)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pv))
    fit_half, draw_half = order[: len(order) // 2], order[len(order) // 2:]
    base = PriorAdapter(min_faces=1).fit(pv[fit_half], va.distributions[fit_half])
    labelled = draw_half[va.labels[draw_half] >= 0]
    by_class = [labelled[va.labels[labelled] == c] for c in range(8)]
    print(f"# default model ({ens.num_members} x {ens.config.name}); adapter fitted on {len(fit_half)} validation faces, "
          f"batches drawn from the other {len(labelled)} majority-labelled ones, {TRIALS} per cell")
    print(f"temperature {base.temperature:.3f}; validation mix " + " ".join(f"{q:.3f}" for q in base.source_mix))
    print("\naccuracy change from adapting, mean over batches (unshifted | shifted to random mixes)")
    print(f"{'pull':>6s} " + " ".join(f"{f'{n} faces':>19s}" for n in SIZES))
    table: dict[float, dict[int, tuple[float, float]]] = {}
    for pull in PULLS:
        adapter = PriorAdapter.from_dict({**base.to_dict(), "pull": pull})
        table[pull] = {}
        for n in SIZES:
            same, shifted = [], []
            for _ in range(TRIALS):
                pick = rng.choice(labelled, n, replace=False)
                same.append(gain(adapter, pv[pick], va.labels[pick]))
                mix = rng.dirichlet(np.ones(8))
                counts = rng.multinomial(n, mix)
                pick = np.concatenate([rng.choice(by_class[c], k) for c, k in enumerate(counts) if k])
                shifted.append(gain(adapter, pv[pick], va.labels[pick]))
            table[pull][n] = (float(np.mean(same)), float(np.mean(shifted)))
        print(f"{pull:6.0f} " + " ".join(f"{a:+8.3f} | {b:+7.3f} " for a, b in table[pull].values()), flush=True)
    ok = [p for p in PULLS if all(table[p][n][0] >= -0.005 for n in SIZES if n >= 100)]
    chosen = max(ok, key=lambda p: np.mean([table[p][n][1] for n in SIZES if n >= 100]))
    print(f"\nrule: min_faces 100; largest mean shifted gain at 100-400 faces among pulls costing <= 0.005 there -> pull {chosen:.0f}")

    shipped = PriorAdapter.load(default_model_dir())  # fitted by `ferroute calibrate` on all validation faces
    print(f"\nrecords, with the shipped adapter (pull {shipped.pull:.0f}, min_faces {shipped.min_faces}), never used to choose:")
    for name, faces, labels in (("FERPlus test (the training mix)", te.images, te.labels), ("CK+ (posed; no neutral)", ck.images, ck.labels)):
        probs = ens.predict_proba(faces)
        keep = labels >= 0
        mix = shipped.estimate(probs)
        adapted = shipped.reweight(probs, mix).mean(1).argmax(1)
        print(f"  {name:32s} accuracy {np.mean(probs.mean(1).argmax(1)[keep] == labels[keep]):.3f} -> "
              f"{np.mean(adapted[keep] == labels[keep]):.3f}; estimated mix " + " ".join(f"{q:.2f}" for q in mix))
    truth = np.bincount(ck.labels, minlength=8) / len(ck.labels)
    print("  CK+ true mix" + " " * 44 + " ".join(f"{q:.2f}" for q in truth))
    photos_record()


def photos_record() -> None:
    """Main faces of photos_dev, routed as the model ships and adapted to their own mix."""
    import csv

    folder = resolve_data_dir(None).parent / "photos_dev"
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    router = FERRouter.load()
    prep = router.prepare([str(folder / "images" / r["file"]) for r in rows])
    crops = []
    for i, item in enumerate(prep.items):
        owned = [(face, crop) for (j, face), crop in zip(prep.owners, prep.crops) if j == i]
        crops.append(max(owned, key=lambda fc: fc[0].box[2] * fc[0].box[3])[1] if owned else None)
    found = [i for i, c in enumerate(crops) if c is not None]
    faces = np.stack([crops[i] for i in found])
    labels = [rows[i]["label_one_annotator"] for i in found]
    adapted = router.adapt_to(faces)
    print(f"  photos_dev main faces ({len(found)} of {len(rows)} photos; one annotator's happiness/neutral):")
    for name, r in (("as shipped", router), ("adapted", adapted)):
        reps = r.route_faces(faces)
        dec = np.array([x["decision"] for x in reps])
        kept = dec != "reject"
        right = np.array([x["emotion"] == y for x, y in zip(reps, labels)])
        print(f"    {name:10s} agreement with the annotator {right[kept].mean():.3f} (faces not rejected); "
              + ", ".join(f"{k} {np.mean(dec == k):.1%}" for k in ("accept", "ambiguous", "reject")))
    print("    estimated mix " + " ".join(f"{lab} {q:.2f}" for lab, q in zip(router.labels, adapted.mix)))


if __name__ == "__main__":
    main()
