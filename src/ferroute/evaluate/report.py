"""The evaluation report as people read it: ``report.md`` and the figures beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from .metrics import kept_at_rate
from ..decide.uncertainty import Decomposition


def plots(out: Path, dt: Decomposition, dis: np.ndarray, mean_auroc: dict, per: dict, clean: dict, ood: dict, amb: np.ndarray, methods: dict) -> None:
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


def selective_plots(out: Path, r: dict[str, Any]) -> None:
    """``risk_coverage.png`` (selective risk against coverage per scorer: clean, corrupted, CK+)
    and ``reliability.png`` (predicted against actual top share, before and after the vote calibration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = r["selective"]
    names = {"uar": "UAR (decision, then agreement)", "max_prob": "max probability", "neg_total_entropy": "total entropy",
             "ldl_max_prob": "LDL max probability"}
    fig, axes = plt.subplots(1, len(sel), figsize=(4.2 * len(sel), 3.8), squeeze=False)
    for ax, (where, x) in zip(axes[0], sel.items()):
        cov = x["risk_coverage"]["coverage"]
        for k, label in names.items():
            if k in x["risk_coverage"]:
                ax.plot(cov, x["risk_coverage"][k], label=f"{label} (AURC {x['aurc'][k]:.3f})")
        acc = x["decisions"]["accept"]
        if acc["accuracy"] is not None:
            ax.scatter([acc["share"]], [1 - acc["accuracy"]], color="green", zorder=5, label="UAR accept")
        _label(ax, f"{where} ({x['n']} labelled faces)", "coverage (share of faces kept)", "error among kept", 7)
    _save(fig, out / "risk_coverage.png")
    cal = r["calibration"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    for key, label in (("before", "members' mean"), ("after", "vote-calibrated"), ("ldl", "LDL model")):
        if key in cal:
            b = np.array(cal[key]["reliability"])
            ax.plot(b[:, 0], b[:, 1], marker="o", label=f"{label} (ECE {cal[key]['top_share_ece']:.3f})")
    _label(ax, "Reliability on FERPlus test", "predicted share of people picking the top emotion", "actual share of votes for it", 8)
    _save(fig, out / "reliability.png")


def _label(ax: Any, title: str, xlabel: str, ylabel: str, fontsize: int) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=fontsize)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


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
                  f"{g['n_nonface']} non-face 48x48 crops (`ferroute.evaluate.nonface`): rejected {_pct(g['nonface_rejected'])} ("
                  + ", ".join(f"{k} {_pct(v)}" for k, v in g["nonface_rejected_by_kind"].items()) + "); "
                  + ", ".join(f"{k} {_pct(v)}" for k, v in g["nonface_shares"].items()) + ".", ""]
        if "ckplus_accuracy" in g:
            lines += [f"CK+ ({g['n_ckplus']} crops, {g['n_ckplus_subjects']} subjects; never trained or tuned on): accuracy "
                      f"{g['ckplus_accuracy']:.3f} per image ({_f(g.get('ckplus_accuracy_own_labels'))} with the top emotion taken among CK+'s own labels), {g['ckplus_accuracy_per_subject']:.3f} averaged over subjects, "
                      f"{_f(g['ckplus_accuracy_not_rejected'])} on the faces not rejected; "
                      + ", ".join(f"{k} {_pct(v)}" for k, v in g["ckplus_shares"].items()) + ".", ""]
        if "ckplus_accuracy_adapted" in g and "ferplus_test_accuracy_adapted" in g:
            lines += [f"Adapted to each set's own emotion mix (`route --adapt`, estimated from the unlabelled faces): CK+ "
                      f"accuracy {g['ckplus_accuracy_adapted']:.3f} per image, {g['ckplus_accuracy_adapted_per_subject']:.3f} "
                      f"per subject; its cost where the mix is FERPlus's own: test accuracy "
                      f"{g['ferplus_test_accuracy_adapted']:.3f} against {r['accuracy']:.3f}.", ""]
    lines += _worth_lines(r)
    if "selection" in r:
        sel = r["selection"]
        lines += ["## How the reject score was chosen", "", sel.get("summary", ""), ""]
    lines += [f"Wall time: {r['timings']['total_s']:.0f} s.", ""]
    return "\n".join(lines)


def _worth_lines(r: dict[str, Any]) -> list[str]:
    """The distribution against the votes, the ambiguity flag and what each decision is worth."""
    lines: list[str] = []
    cal = r.get("calibration")
    if cal:
        lines += ["## The distribution against the votes (FERPlus test)", "",
                  f"Vote temperature {_f(cal['temperature'])} (fitted on validation votes). KL(votes || predicted) and JS in nats; "
                  "ECE: mean gap between the predicted and the actual share of people picking the top emotion.", "",
                  "| predictor | KL | JS | top-share ECE | Spearman (entropy vs disagreement) |", "|---|---|---|---|---|"]
        for key, label in (("before", "members' mean"), ("after", "vote-calibrated (shipped)"), ("ldl", "LDL single model"),
                           ("class_prior", "class prior"), ("uniform", "uniform")):
            if key in cal:
                x = cal[key]
                lines.append(f"| {label} | {x['kl']:.3f} | {x['js']:.3f} | {x['top_share_ece']:.3f} | {_f(x['spearman_entropy'])} |")
        nc = cal["noise_ceiling"]
        lines += [f"| vote-noise ceiling (one resampling of the votes predicting another) | {nc['kl']:.3f} | {nc['js']:.3f} | "
                  f"{nc['ece']:.3f} | {nc['spearman']:.3f} |", "", "![reliability](reliability.png)", ""]
    flag = r["ambiguity"].get("flag")
    if flag:
        d = flag["default"]
        lines += ["## The ambiguity flag", "", f"Ambiguous when the predicted agreement is below the level. {flag['rule']}.", "",
                  "Precision and recall against the test faces' own ten-or-so votes, beside the ceiling: a predictor that knew each "
                  "face's vote shares, scored against a fresh draw of its votes. AUROC and AP: `1 - agreement` ranking the faces "
                  "whose votes split below the level. The last two columns: the share flagged on CK+ (posed, one validated label "
                  "each) and on test faces under the 15 corruptions at severity 5.", "",
                  "| level | flagged | actually split | precision (ceiling) | recall (ceiling) | AUROC | AP | CK+ flagged | corrupted flagged |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for lv, x in [(f"{d['level']:.2f} (default)", d)] + [(k, v) for k, v in flag["at"].items()]:
            lines.append(f"| {lv} | {_pct(x['flagged_share'])} | {_pct(x['actual_share'])} | {_f(x['precision'])} ({_f(x.get('ceiling_precision'))}) | "
                         f"{_f(x['recall'])} ({_f(x.get('ceiling_recall'))}) | {_f(x.get('auroc'))} | {_f(x.get('average_precision'))} | "
                         f"{_pct(x.get('ckplus_flagged'))} | {_pct(x.get('corrupted_flagged'))} |")
        lines.append("")
    sel = r.get("selective")
    if sel:
        lines += ["## What each decision is worth", "",
                  "| faces | accept: share / accuracy | ambiguous | reject | all | max-probability at accept's coverage | AURC: UAR / max prob / entropy / LDL |",
                  "|---|---|---|---|---|---|---|"]
        for where, x in sel.items():
            dd = x["decisions"]
            cell = {k: f"{_pct(v['share'])} / {_f(v['accuracy'])}" for k, v in dd.items()}
            mp = x.get("max_prob_at_accept_coverage")
            au = x["aurc"]
            lines.append(f"| {where} ({x['n']}) | {cell['accept']} | {cell['ambiguous']} | {cell['reject']} | {x['accuracy_all']:.3f} | "
                         f"{_f(mp['accuracy']) if mp else 'n/a'} | " + " / ".join(_f(au.get(k)) for k in ("uar", "max_prob", "neg_total_entropy", "ldl_max_prob")) + " |")
        lines += ["", "![risk-coverage](risk_coverage.png)", ""]
    return lines
