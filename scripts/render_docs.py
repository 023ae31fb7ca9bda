"""Write the README's and the manual's figure tables from the files that hold the figures, so
they cannot go stale: ``docs/report.json`` (``ferroute evaluate --out reports/default``, copied
to ``docs/``), ``docs/fast/report.json`` and ``docs/records/bench_core.txt``.

    python scripts/render_docs.py           # rewrite the marked blocks in README.md and docs/results.md
    python scripts/render_docs.py --check   # exit 1 when a block differs from what the files say

Each table sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def bench_core() -> dict[str, str]:
    """The figures of ``docs/records/bench_core.txt`` this page quotes."""
    text = (ROOT / "docs" / "records" / "bench_core.txt").read_text()

    def grab(pattern: str) -> str:
        m = re.search(pattern, text)
        return m.group(1) if m else "n/a"

    return {"core_mb": grab(r"core venv: (\d+) MB"), "torch_mb": grab(r"torch venv: (\d+) MB"),
            "core_pps": grab(r"route core \(onnx\) photos_dev\s*: best\s+[\d.]+ s =\s+([\d.]+)"),
            "torch_pps": grab(r"route torch path photos_dev\s*: best\s+[\d.]+ s =\s+([\d.]+)"),
            "core_rss": grab(r"route core \(onnx\) examples\s*:.*peak RSS\s+(\d+)"),
            "same_test": grab(r"default FERPlus test \(\d+ faces\): same decision ([\d.]+)"),
            "machine": grab(r"^# bench_core: [\d-]+, ferroute [\d.]+, ([^;]+?), \d+ GB")}


def worth(r: dict) -> str:
    """What ``accept`` is worth, on clean, corrupted and CK+ faces."""
    sel = r["selective"]
    rows = ["| faces (labelled) | accepted | right when accepted | all faces right | max-probability threshold at the same coverage |",
            "|---|---|---|---|---|"]
    names = {"clean": "FERPlus test", "corrupted": "FERPlus test, 15 corruptions at severity 5", "ckplus": "CK+, posed, never trained on"}
    for k, label in names.items():
        if k in sel:
            x = sel[k]
            a = x["decisions"]["accept"]
            mp = x.get("max_prob_at_accept_coverage") or {}
            rows.append(f"| {label} ({x['n']:,}) | {pct(a['share'])} | **{f3(a['accuracy'])}** | {f3(x['accuracy_all'])} | {f3(mp.get('accuracy'))} |")
    level = r["ambiguity"]["flag"]["default"]["level"] if r["ambiguity"].get("flag") else None

    def pair(k: str) -> tuple[float, float]:
        x = sel[k]
        return x["decisions"]["accept"]["accuracy"], (x.get("max_prob_at_accept_coverage") or {}).get("accuracy")

    (uc, mc), (uo, mo) = pair("clean"), pair("corrupted") if "corrupted" in sel else (None, None)
    clean_says = ("a plain max-probability threshold keeping as many faces does as well or better"
                  if mc is not None and mc >= uc else "UAR's accept is the better of the two")
    rows += ["", f"At the default level ({level:.2f}), from [report.json](docs/report.json) `selective`. On clean FERPlus faces "
             f"{clean_says} ({f3(mc)} against {f3(uc)}); on corrupted faces UAR's accept is right {f3(uo)} of the time against "
             f"{f3(mo)} for that threshold, because it rejects what the model cannot read and says why."]
    return "\n".join(rows)


def results(r: dict, fast: dict | None, core: dict[str, str], link: str) -> str:
    """The headline table: each figure, the paper's, its cost, where it comes from."""
    a, s, ro, g = r["ambiguity"], r["shift"], r["routing"], r.get("generalization", {})
    de, pa = ro["deployed"], ro["paper"]
    per = sorted(de["ood_rejected_per_corruption"].items(), key=lambda kv: kv[1])
    weakest = ", ".join(f"{k.replace('_', ' ')} {100 * v:.0f} %" for k, v in per[:4])
    ci = ro["kept_ratio_ci95"]["0.9"]
    cal, flag = r.get("calibration", {}), (a.get("flag") or {}).get("default")
    rep = f"[report]({link}report.md)"
    rows = [
        "| measure | ferroute | paper | its cost | from |",
        "|---|---|---|---|---|",
        f"| accuracy, FERPlus test (majority label, n={r['n_test_labelled']:,}) | **{r['accuracy']:.3f}** | | "
        + (f"the emotion shown, the top of the vote-calibrated distribution: {r['accuracy_reported']:.3f}"
           if r.get("accuracy_reported") is not None and abs(r["accuracy_reported"] - r["accuracy"]) >= 5e-4 else "") + f" | {rep} |",
        f"| Spearman, aleatoric vs annotator disagreement (n={a['n']:,}) | **{a['spearman_aleatoric']:.3f}** "
        f"({a['spearman_aleatoric_ci95'][0]:.3f}-{a['spearman_aleatoric_ci95'][1]:.3f}) | 0.66 | | {rep} |",
        f"| mean AUROC, clean vs corrupted, severity 5: epistemic / the shipped reject score (`{s['shipped_score']}`) | "
        f"{s['auroc_epistemic']['5']:.3f} / **{s['auroc_shipped']['5']:.3f}** | 0.699 | | {rep} |",
        f"| ambiguous faces kept at 90 % OOD rejection against the single score: the paper's UAR / shipped | "
        f"{pa['kept_ratio']['0.9']:.2f} / **{ro['kept_ratio']['0.9']:.2f}** ({ci[0]:.2f}-{ci[1]:.2f}) | about 1.8 | "
        f"all clean faces kept: {ro['kept_clean']['uar']['0.9']:.3f} (single score {ro['kept_clean']['single']['0.9']:.3f}) | {rep} |",
        f"| deployed: severity-5 corrupted faces rejected | **{pct(de['ood_rejected'])}** | | clean faces rejected "
        f"{pct(de['clean_rejected'])} (promise: at most {pct(de['guarantee'].get('reject_rate_upper_95'))}); weakest: {weakest} | {rep} |",
    ]
    if cal.get("after"):
        nc = cal["noise_ceiling"]
        rows.append(f"| the distribution against the votes: JS / top-share calibration error | {cal['after']['js']:.3f} / "
                    f"**{cal['after']['top_share_ece']:.3f}** (uncalibrated {cal['before']['js']:.3f} / {cal['before']['top_share_ece']:.3f}) | | "
                    f"vote-noise ceiling {nc['js']:.3f} / {nc['ece']:.3f}; LDL model {cal['ldl']['js']:.3f} / {cal['ldl']['top_share_ece']:.3f} | {rep} |"
                    if "ldl" in cal else
                    f"| the distribution against the votes: JS / top-share calibration error | {cal['after']['js']:.3f} / {cal['after']['top_share_ece']:.3f} | | | {rep} |")
    if flag:
        ceiling = (f" against {f3(flag['ceiling_precision'])} / {f3(flag['ceiling_recall'])} for a predictor that knew each face's vote "
                   f"shares (ten votes a face are noisy); AUROC {f3(flag.get('auroc'))}") if "ceiling_precision" in flag else " (10 votes a face are noisy)"
        ck = f"; flagged on CK+ (posed) {pct(flag['ckplus_flagged'])}" if flag.get("ckplus_flagged") is not None else ""
        rows.append(f"| `ambiguous` at the default level {flag['level']:.2f} (no clear majority): flagged / actually split | **{pct(flag['flagged_share'])}** / "
                    f"{pct(flag['actual_share'])} | | precision / recall {f3(flag['precision'])} / {f3(flag['recall'])}{ceiling}{ck} | {rep} |")
    if "nonface_rejected" in g:
        rows.append(f"| beyond FERPlus: non-face 48x48 crops rejected (n={g['n_nonface']}) | **{pct(g['nonface_rejected'])}** | | | {rep} |")
    if "ckplus_accuracy" in g:
        own = g.get("ckplus_accuracy_own_labels")
        cost = (f"adapted to CK+'s mix (`--adapt`): {f3(g.get('ckplus_accuracy_adapted'))}, costing FERPlus test "
                f"{r['accuracy']:.3f} -> {f3(g.get('ferplus_test_accuracy_adapted'))}") if "ckplus_accuracy_adapted" in g else ""
        rows.append(f"| beyond FERPlus: CK+ accuracy, 8 emotions / CK+'s own 7 (n={g['n_ckplus']}) | {g['ckplus_accuracy']:.3f} / "
                    f"**{f3(own)}** | | {cost} | {rep} |")
    if fast is not None:
        rows.append(f"| `fast` model: accuracy / Spearman / shipped AUROC sev 5 / kept ratio | {fast['accuracy']:.3f} / "
                    f"{fast['ambiguity']['spearman_aleatoric']:.3f} / {fast['shift']['auroc_shipped']['5']:.3f} / "
                    f"{fast['routing']['kept_ratio']['0.9']:.2f} | | epistemic AUROC {fast['shift']['auroc_epistemic']['5']:.3f} | "
                    f"[fast report]({link}fast/report.md) |")
    bench = f"[bench_core]({link}records/bench_core.txt)"
    rows += [
        f"| core install (`pip install .`, no torch) | **{core['core_mb']} MB** | | with PyTorch: {core['torch_mb']} MB | {bench} |",
        f"| `ferroute route photos_dev` (1,000 photos), core / torch path | **{core['core_pps']}** / {core['torch_pps']} photos/s | | "
        f"the ensemble alone is slower on onnxruntime float32 than torch bf16 on AMX; same decision on {pct(float(core['same_test']) if core['same_test'] != 'n/a' else None)} of test faces | {bench} |",
    ]
    machine = (r.get("machine") or "").strip()
    rows += ["", f"`ferroute evaluate` ran on {machine or 'the machine named in the report'}; the benchmarks on {core['machine']}."]
    return "\n".join(rows)


def replace_block(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"no {start} ... {end} block to fill")
    a, b = text.index(start) + len(start), text.index(end)
    return text[:a] + "\n" + body + "\n" + text[b:]


def render() -> dict[Path, str]:
    r = json.loads((ROOT / "docs" / "report.json").read_text())
    fp = ROOT / "docs" / "fast" / "report.json"
    fast = json.loads(fp.read_text()) if fp.is_file() else None
    core = bench_core()
    out = {}
    readme = (ROOT / "README.md").read_text()
    readme = replace_block(readme, "worth", worth(r))
    out[ROOT / "README.md"] = replace_block(readme, "results", results(r, fast, core, "docs/"))
    res = (ROOT / "docs" / "results.md").read_text()
    out[ROOT / "docs" / "results.md"] = replace_block(res, "results", results(r, fast, core, "").replace("(docs/report.json)", "(report.json)"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a block is stale, writing nothing")
    args = ap.parse_args()
    stale = []
    for path, text in render().items():
        if path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print("stale: " + ", ".join(str(p.relative_to(ROOT)) for p in stale) + "; run `python scripts/render_docs.py`")
        sys.exit(1)
    print("up to date" if not stale else "wrote " + ", ".join(str(p.relative_to(ROOT)) for p in stale))


if __name__ == "__main__":
    main()
