"""The face front end on real photos: faces found, false faces, rotation, small faces, and
``ferroute route`` end to end, YuNet (shipped) beside OpenCV's Haar cascade (the old front end).

    pip install scikit-image && python benchmarks/bench_photos.py [--photos ../shared/data/photos_dev] [--out docs/records/bench_photos.txt]

* photos_dev: 1,000 LFW news photos (one centred face, often more behind); share of photos
  with a face, decisions of the main (largest) face, photos/s of ``ferroute route`` end to
  end (a fresh process: start-up, model load, decoding, detection, ensemble, CSV written),
  on the photos as they are and upscaled to 1024x1024 (JPEG, quality 90);
* face-free images: scikit-image's and matplotlib's sample images without a face, whole and
  as deterministic random crops at six sizes (64-512 px; 48x48 images skip detection by
  design, so none is that size); every face found there is a false face;
* rotation: every 10th photo turned by 0, 15, 30, 45 and 90 degrees (canvas expanded);
* small faces: photos downscaled to 64-128 px on the long side, and centre crops of other
  aspect ratios (82x107, like low-resolution movie face crops; 107x82; 100x100).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ferroute.vision.faces import FaceDetector
from ferroute.vision.images import load_image

ROOT = Path(__file__).resolve().parents[1]


class Haar:
    """The front end ferroute shipped before YuNet (same settings), for the side-by-side rows."""

    def __init__(self) -> None:
        if not hasattr(cv2, "data"):  # OpenCV 5 dropped the cascades
            raise SystemExit("the Haar comparison needs OpenCV 4: pip install 'opencv-python-headless<5' for this benchmark")
        self.cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))

    def count(self, rgb: np.ndarray) -> int:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        if max(h, w) <= 128 and 0.8 <= w / h <= 1.25 and min(h, w) >= 24:
            return 1  # the old rule took small square images as face crops
        if min(h, w) < 24:
            return 0
        s = min(1.0, 1024 / max(h, w))
        small = cv2.resize(gray, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else gray
        small = cv2.equalizeHist(small)
        mn = max(24, int(0.06 * min(small.shape)))
        return len(self.cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=6, minSize=(mn, mn)))


def face_free_images() -> dict[str, np.ndarray]:
    """Sample images of scikit-image and matplotlib that show no face, whole and as crops."""
    import matplotlib
    from skimage import data

    names = ["brick", "cell", "chelsea", "checkerboard", "clock", "coffee", "coins", "colorwheel", "grass", "gravel", "horse",
             "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina",
             "rocket", "shepp_logan_phantom", "text"]
    base: dict[str, np.ndarray] = {}
    for n in names:
        a = np.asarray(getattr(data, n)())
        if a.dtype != np.uint8:
            a = (np.clip(a.astype(np.float64) / max(float(a.max()), 1e-9), 0, 1) * 255).astype(np.uint8)
        base[n] = load_image(a)
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    for f in ["logo2.png", "Minduka_Present_Blue_Pack.png"]:
        base[f] = load_image(sample / f)
    rng = np.random.default_rng(0)
    out = dict(base)
    for n, a in base.items():
        h, w = a.shape[:2]
        for size in (64, 96, 128, 192, 256, 512):
            for k in range(2):
                side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
                y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                crop = cv2.resize(a[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
                out[f"{n}@{size}#{k}"] = crop
    return out


def rotated(rgb: np.ndarray, deg: float) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).rotate(deg, resample=Image.BICUBIC, expand=True, fillcolor=(127, 127, 127)))


def route_end_to_end(folder: Path, out_csv: Path) -> float:
    """Wall seconds of one fresh ``ferroute route FOLDER --format csv --out FILE`` process."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ferroute", "route", str(folder), "--format", "csv", "--out", str(out_csv)],
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main_face_decisions(out_csv: Path) -> dict[str, float]:
    """Share of photos whose largest face is accept / ambiguous / reject / no_face / error."""
    main: dict[str, tuple[int, str]] = {}
    for r in csv.DictReader(out_csv.open()):
        area = int(np.prod([int(v) for v in r["box"].split()[2:]])) if r["box"] else -1
        if r["source"] not in main or area > main[r["source"]][0]:
            main[r["source"]] = (area, r["decision"])
    n = len(main)
    keys = ["accept", "ambiguous", "reject", "no_face", "error"]
    return {"photos": n, **{k: round(sum(d == k for _, d in main.values()) / max(n, 1), 4) for k in keys}}


def machine() -> str:
    """CPU model, cores and the instruction sets that decide the ensemble's arithmetic."""
    import torch

    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), platform.processor())
    isa = [n for n, f in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"), ("VNNI", "_is_vnni_supported"))
           if getattr(torch.cpu, f, lambda: False)()]
    return f"{model}, {os.cpu_count()} cores ({', '.join(isa) or 'no AMX/AVX512-BF16/VNNI'}); Python {platform.python_version()}, OpenCV {cv2.__version__}, torch {torch.__version__}"


def framing_effect(files: list[Path], photos: list[np.ndarray], det: FaceDetector, labels_csv: Path) -> dict[str, object]:
    """The main face of each photo cropped two ways, aligned to FER2013's framing (shipped) and
    as a square around YuNet's box with a 10 % margin (the framing before), both through the
    embedded default model: decision shares and agreement with the one annotator's label.
    Writes docs/framing.png: 8 photos (every 125th) cropped both ways, above 8 FERPlus
    training faces (the first 8)."""
    import ferroute
    from ferroute.vision.crops import square_crop

    labels = {r["file"]: r["label_one_annotator"] for r in csv.DictReader(labels_csv.open())} if labels_csv.is_file() else {}
    aligned, square, keep = [], [], []
    for f, a in zip(files, photos):
        faces = det(a)
        if not faces:
            continue
        main_face = max(faces, key=lambda x: x.box[2] * x.box[3])
        aligned.append(main_face.crop)
        square.append(square_crop(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), main_face.box))
        keep.append(labels.get(f.name))
    router = ferroute.load()
    out: dict[str, object] = {}
    for name, crops in (("aligned (shipped)", aligned), ("square box + 10 %", square)):
        reps = router.route_faces(np.stack(crops))
        dec = np.array([r["decision"] for r in reps])
        emo = np.array([r["emotion"] or "" for r in reps])
        lab = np.array([k or "" for k in keep])
        acc = dec == "accept"
        out[name] = {
            **{d: round(float(np.mean(dec == d)), 4) for d in ("accept", "ambiguous", "reject")},
            "accepted_agree_with_annotator": round(float(np.mean(emo[acc] == lab[acc])), 4) if acc.any() else None,
            "top_emotion_agrees_with_annotator": round(float(np.mean([max(r["distribution"], key=r["distribution"].get) == k for r, k in zip(reps, lab)])), 4),
        }
    fer = ROOT.parent / "shared" / "data" / "ferplus" / "FER2013Train"
    pick = list(range(0, len(aligned), 125))[:8]
    rows = [np.hstack([square[i] for i in pick]), np.hstack([aligned[i] for i in pick])]
    if fer.is_dir():
        rows.append(np.hstack([np.asarray(Image.open(p).convert("L")) for p in sorted(fer.glob("*.png"))[:8]]))
    grid = np.vstack(rows)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(ROOT / "docs" / "framing.png")
    return out


def end_to_end(files: list[Path], photos: list[np.ndarray], args: argparse.Namespace) -> dict[str, object]:
    """``ferroute route`` on the photos as they are and upscaled to 1024x1024: speed and the main face's decisions."""
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "photos_1024"
        big.mkdir()
        for f, a in zip(files, photos):
            Image.fromarray(a).resize((1024, 1024), Image.BICUBIC).save(big / f.name, quality=90)
        e2e = {}
        for name, folder in (("photos_dev", args.photos / "images"), ("photos_dev_1024", big)):
            out_csv = Path(tmp) / f"{name}.csv"
            walls = [route_end_to_end(folder, out_csv) for _ in range(args.runs)]
            e2e[name] = {"wall_s": [round(w, 2) for w in walls], "photos_per_s": [round(len(files) / w, 1) for w in walls],
                         "main_face": main_face_decisions(out_csv)}
    return e2e


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos_dev")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "records" / "bench_photos.txt")
    ap.add_argument("--runs", type=int, default=2, help="end-to-end runs of each folder (photos/s of each is reported)")
    ap.add_argument("--routing-only", action="store_true",
                    help="rerun only what depends on the model and router (end-to-end routing, the framing effect) and "
                         "update those keys of --out, keeping the detector's figures (no OpenCV 4 needed)")
    args = ap.parse_args()
    files = sorted((args.photos / "images").glob("*.jpg"))
    if not files:
        sys.exit(f"{args.photos}/images: no photos (see the README of photos_dev)")
    if args.routing_only:
        lines = args.out.read_text().splitlines()
        res = json.loads("\n".join(lines[1:]))
        photos = [load_image(f) for f in files]
        res["routing_machine"] = machine()
        res["route_end_to_end"] = end_to_end(files, photos, args)
        res["framing"] = framing_effect(files, photos, FaceDetector(), args.photos / "labels.csv")
        text = json.dumps(res, indent=1)
        print(text)
        args.out.write_text(f"{lines[0]}; routing keys from python benchmarks/bench_photos.py --routing-only "
                            f"({time.strftime('%Y-%m-%d %H:%M')})\n{text}\n")
        return
    yunet, haar = FaceDetector(), Haar()
    photos = [load_image(f) for f in files]
    res: dict[str, object] = {
        "machine": machine(),
        "photos": len(files), "photo_size": list(photos[0].shape[:2]),
    }

    def found(det, imgs):
        if det is haar:
            return float(np.mean([haar.count(a) > 0 for a in imgs]))
        return float(np.mean([len(yunet(a)) > 0 for a in imgs]))

    res["found"] = {"yunet": found(yunet, photos), "haar": found(haar, photos)}
    free = face_free_images()
    res["face_free"] = {
        "images": len(free),
        "yunet_false_faces": int(sum(len(yunet(a)) for a in free.values())),
        "haar_false_faces": int(sum(haar.count(a) for a in free.values())),
        "yunet_images_with_a_false_face": sorted(n for n, a in free.items() if len(yunet(a))),
    }
    every10 = photos[::10]
    res["rotation"] = {str(d): {"yunet": found(yunet, [rotated(a, d) for a in every10]), "haar": found(haar, [rotated(a, d) for a in every10])}
                       for d in (0, 15, 30, 45, 90)}
    small: dict[str, dict[str, float]] = {}
    for side in (64, 96, 128):
        imgs = [cv2.resize(a, (side, side), interpolation=cv2.INTER_AREA) for a in every10]
        small[f"{side}x{side}"] = {"yunet": found(yunet, imgs), "haar": found(haar, imgs)}
    for w, h in ((82, 107), (107, 82), (100, 100)):
        imgs = []
        for a in every10:
            H, W = a.shape[:2]
            ch = int(H * 0.62)
            cw = int(ch * w / h)
            y0, x0 = (H - ch) // 2, (W - cw) // 2
            imgs.append(cv2.resize(a[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA))
        small[f"centre crop {w}x{h}"] = {"yunet": found(yunet, imgs), "haar": found(haar, imgs)}
    res["small"] = small

    res["route_end_to_end"] = end_to_end(files, photos, args)
    res["framing"] = framing_effect(files, photos, yunet, args.photos / "labels.csv")
    starts = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ferroute", "--help"], check=True, stdout=subprocess.DEVNULL)
        starts.append(round(time.perf_counter() - t, 3))
    res["help_s"] = starts  # `ferroute --help` imports neither torch nor OpenCV
    text = json.dumps(res, indent=1)
    print(text)
    args.out.write_text(f"# python benchmarks/bench_photos.py ({time.strftime('%Y-%m-%d %H:%M')})\n{text}\n")


if __name__ == "__main__":
    main()
