"""Write MODEL_CARD.md for a model directory from its own records.

    python scripts/make_model_card.py MODEL_DIR REPORT_DIR --machine "..."

Everything in the card is read from files that commands wrote: config.json and
train_log.json (ferroute train), router.json (ferroute calibrate) and report.json
(ferroute evaluate). Nothing is typed in by hand except the machine description.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def fmt(x, nd=3):
    return "n/a" if x is None else f"{x:.{nd}f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("report", type=Path)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--eval-command", default="ferroute evaluate --out reports/default")
    ap.add_argument("--title", default="ferroute default model")
    args = ap.parse_args()
    cfg = json.loads((args.model / "config.json").read_text())
    log = json.loads((args.model / "train_log.json").read_text())
    router = json.loads((args.model / "router.json").read_text())
    rep = json.loads((args.report / "report.json").read_text())
    a, s, ro = rep["ambiguity"], rep["shift"], rep["routing"]
    secs = sum(m["seconds"] for m in log["members"].values())
    valid = [m["epochs"][-1].get("valid_acc") for m in log["members"].values()]
    size = sum(p.stat().st_size for p in args.model.glob("*.safetensors"))
    inf = cfg["meta"].get("inference", {})
    tta, precision = inf.get("tta", "none"), inf.get("precision", "fp32")
    int8_lines = [
        f"- int8 (CPU, PyTorch's x86 quantized engine; other CPUs fall back to `auto`): weights per output channel, "
        f"activation scales fitted on {inf['int8']['faces']} FERPlus validation faces and stored in `config.json`"
    ] if "int8" in inf else []
    lines = [
        f"# {args.title}",
        "",
        f"A Deep Ensemble of {cfg['members']} `{cfg['backbone']['name']}` members "
        f"({json.dumps(cfg['backbone']['kwargs'])}), input {cfg['backbone']['in_chans']}x{cfg['backbone']['input_size']}x{cfg['backbone']['input_size']}, "
        f"{size / 2**20:.1f} MiB of safetensors weights, with its calibrated router.",
        "",
        "## Training",
        "",
        f"- data: FERPlus `FER2013Train` ({cfg['meta'].get('train_size')} faces after dropping unknown/not-a-face), "
        f"target: {cfg['meta']['train']['target']} (vote distributions); validation: `FER2013Valid`",
        f"- command: `{log['command']} --data $FERPLUS_DIR`",
        f"- schedule: {json.dumps(cfg['meta']['train'])}",
        f"- members differ only by seed ({', '.join(str(m['seed']) for m in log['members'].values())}); "
        f"validation accuracy per member: {', '.join(fmt(v) for v in valid)}",
        f"- machine: {args.machine}; training time {secs / 60:.0f} min in all",
        "",
        "## Router",
        "",
        f"- inference: test-time augmentation `{tta}`, arithmetic `{precision}`, shift score `{router.get('shift', 'conditional')}` "
        "(both chosen on FERPlus valid with `scripts/select_shift_score.py`, never on test)",
        f"- `ferroute calibrate --model DIR --tta {tta} --precision {precision} --shift {router.get('shift', 'conditional')}` on FERPlus valid: shift-score threshold z > {router['state']['z_threshold']:.3f} "
        f"(reject rate {router['reject_rate']:.0%} of clean validation faces), ambiguity threshold aleatoric > {router['state']['aleatoric_threshold']:.3f} nats",
        *int8_lines,
        "",
        "## Measured (FERPlus test)",
        "",
        f"From `{args.eval_command}` on {args.machine}:",
        "",
        "| measure | value | paper |",
        "|---|---|---|",
        f"| accuracy (majority label, n={rep['n_test_labelled']}) | {fmt(rep['accuracy'])} | |",
        f"| Spearman aleatoric vs disagreement (n={a['n']}) | {fmt(a['spearman_aleatoric'])} ({fmt(a['spearman_aleatoric_ci95'][0])}-{fmt(a['spearman_aleatoric_ci95'][1])}) | 0.66 (0.64-0.68) |",
        f"| mean epistemic AUROC, severity 5 | {fmt(s['auroc_epistemic']['5'])} | 0.699 |",
        f"| kept ratio UAR/single at r=0.9 | {fmt(ro['kept_ratio']['0.9'], 2)} ({fmt(ro['kept_ratio_ci95']['0.9'][0], 2)}-{fmt(ro['kept_ratio_ci95']['0.9'][1], 2)}) | about 1.8 |",
        f"| kept ratio at r=0.5 / 0.7 / 0.95 | {' / '.join(fmt(ro['kept_ratio'][k], 2) for k in ('0.5', '0.7', '0.95'))} | |",
    ]
    if "ldl" in rep:
        lines.append(f"| LDL baseline: accuracy / Spearman / AUROC sev 5 | {fmt(rep['ldl']['accuracy'])} / {fmt(rep['ldl']['spearman'])} / {fmt(rep['ldl']['auroc']['5'])} | |")
    lines += [
        "",
        f"Evaluation wall time: {rep['timings']['total_s'] / 60:.1f} min ({json.dumps({k: round(v) for k, v in rep['timings'].items()})}).",
        "",
        "## Intended use and limits",
        "",
        "Research and prototyping of uncertainty-aware expression recognition on gray, frontal, FER2013-like face crops. "
        "Not for decisions about people. FERPlus's annotators and FER2013's web images carry their own biases; "
        "accuracy on other populations, poses and cameras is unmeasured.",
        "",
        "## Licence",
        "",
        "Weights: MIT, trained on FERPlus labels (MIT, Microsoft) and FER2013 images (research use only; "
        "the weights inherit that restriction in practice).",
        "",
    ]
    (args.model / "MODEL_CARD.md").write_text("\n".join(lines))
    print(args.model / "MODEL_CARD.md")


if __name__ == "__main__":
    main()
