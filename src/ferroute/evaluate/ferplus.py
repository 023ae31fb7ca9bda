"""FERPlus reader: images, vote distributions, majority labels and disagreement.

Reads the official FERPlus layout (``FER2013Train``, ``FER2013Valid``, ``FER2013Test``,
each holding 48x48 grayscale PNGs and a headerless ``label.csv``). Decoded splits are
cached as ``.npz`` arrays (never pickles) so repeated runs skip the PNG decoding.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine.cache import cache_dir, find, store
from ..labels import EMOTIONS

VOTE_COLUMNS: tuple[str, ...] = EMOTIONS + ("unknown", "NF")
SPLIT_FOLDERS: dict[str, str] = {
    "train": "FER2013Train",
    "valid": "FER2013Valid",
    "test": "FER2013Test",
}
NO_LABEL = -1


class DataError(ValueError):
    """A FERPlus file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class FERPlusSplit:
    """One FERPlus split, faces dominated by unknown/NF votes already dropped.

    Attributes:
        name: ``train``, ``valid`` or ``test``.
        images: ``(N, 48, 48)`` uint8 grayscale faces.
        votes: ``(N, 8)`` raw annotator vote counts for the 8 emotions.
        labels: ``(N,)`` majority label index by the FERPlus rule, ``-1`` when no emotion
            holds more than half of the votes left after outlier removal.
        files: ``(N,)`` image file names.
    """

    name: str
    images: np.ndarray
    votes: np.ndarray
    labels: np.ndarray
    files: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def distributions(self) -> np.ndarray:
        """``(N, 8)`` vote distributions (raw votes normalised to sum to one)."""
        v = self.votes.astype(np.float64)
        return v / v.sum(axis=1, keepdims=True)

    @property
    def disagreement(self) -> np.ndarray:
        """``(N,)`` Shannon entropy (nats) of the raw 8-emotion vote distribution."""
        return vote_entropy(self.votes)

    def subset(self, index: np.ndarray | slice) -> "FERPlusSplit":
        """The same split restricted to ``index`` (boolean mask, integer indices or a slice)."""
        return FERPlusSplit(
            self.name,
            self.images[index],
            self.votes[index],
            self.labels[index],
            self.files[index],
        )


def vote_entropy(votes: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of ``votes`` ``(N, C)`` after normalising to sum one."""
    v = np.asarray(votes, dtype=np.float64)
    p = v / np.clip(v.sum(axis=-1, keepdims=True), 1e-12, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=-1)


def majority_label(votes10: np.ndarray) -> int | None:
    """FERPlus majority rule on one row of the 10 vote counts.

    Single votes are dropped as outliers. Returns ``None`` when the face is to be dropped
    (unknown or not-a-face wins, or no emotion vote survives), ``-1`` when no class holds
    more than half of the remaining votes, and the emotion index otherwise.
    """
    v = np.where(votes10 <= 1, 0, votes10).astype(np.int64)
    total = int(v.sum())
    if total == 0 or int(np.asarray(votes10)[: len(EMOTIONS)].sum()) == 0:
        return None
    top = int(np.argmax(v))
    if top >= len(EMOTIONS):
        return None
    if v[top] * 2 > total:
        return top
    return NO_LABEL


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The FERPlus root: ``data_dir``, else ``$FERPLUS_DIR``; a clear error if neither exists."""
    raw = data_dir if data_dir is not None else os.environ.get("FERPLUS_DIR")
    if not raw:
        raise DataError(
            "no FERPlus folder given: pass --data DIR or set FERPLUS_DIR to the folder "
            "holding FER2013Train/, FER2013Valid/ and FER2013Test/"
        )
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: FERPlus folder not found; set FERPLUS_DIR or --data to it")
    return root


def read_label_csv(path: Path) -> list[tuple[str, np.ndarray]]:
    """Rows of a headerless FERPlus ``label.csv`` as ``(image name, 10 vote counts)``."""
    if not path.is_file():
        raise DataError(f"{path}: label file not found (expected the official FERPlus layout)")
    rows: list[tuple[str, np.ndarray]] = []
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 12:
                raise DataError(
                    f"{path}:{lineno}: expected 12 fields (image, face box, 10 vote counts), "
                    f"found {len(row)}"
                )
            try:
                votes = np.array([int(float(c)) for c in row[2:]], dtype=np.int64)
            except ValueError:
                raise DataError(f"{path}:{lineno}: vote counts must be numbers, got {row[2:]}") from None
            if (votes < 0).any():
                raise DataError(f"{path}:{lineno}: negative vote count in {row[2:]}")
            rows.append((row[0].strip(), votes))
    return rows


def _content_key(label_csv: Path, folder: Path, rows: list[tuple[str, np.ndarray]]) -> str:
    """A key over the label file and every listed image's bytes: a replaced image is a new key."""
    h = hashlib.sha256(label_csv.read_bytes())
    for name, _ in rows:
        try:
            h.update((folder / name).read_bytes())
        except OSError:
            h.update(b"\0unreadable:" + name.encode())
    return h.hexdigest()[:16]


def load_split(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
) -> FERPlusSplit:
    """Load one FERPlus split (``train``, ``valid`` or ``test``).

    Faces dominated by unknown/not-a-face votes are dropped; see :func:`majority_label`.
    """
    if split not in SPLIT_FOLDERS:
        raise DataError(f"unknown split {split!r}; choose one of {sorted(SPLIT_FOLDERS)}")
    root = resolve_data_dir(data_dir)
    packed = root / f"{split}.npz"
    if packed.is_file():  # a folder written by pack_splits (for machines without the PNGs)
        with np.load(packed, allow_pickle=False) as z:
            return FERPlusSplit(split, z["images"], z["votes"], z["labels"], z["files"])
    folder = root / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise DataError(f"{folder}: split folder not found (expected the official FERPlus layout)")
    label_csv = folder / "label.csv"
    rows = read_label_csv(label_csv)
    stem = cache_dir() / f"ferplus-{split}-{_content_key(label_csv, folder, rows)}"
    hit = find(stem, ".npz") if cache else None
    if hit is not None:
        with np.load(hit, allow_pickle=False) as z:
            return FERPlusSplit(split, z["images"], z["votes"], z["labels"], z["files"])

    images, votes, labels, files = [], [], [], []
    for lineno, (name, v10) in enumerate(rows, start=1):
        label = majority_label(v10)
        if label is None:
            continue
        path = folder / name
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("L"), dtype=np.uint8)
        except FileNotFoundError:
            raise DataError(f"{label_csv}:{lineno}: image {name} not found in {folder}") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot decode image ({exc})") from None
        if arr.shape != (48, 48):
            with Image.fromarray(arr) as im:
                arr = np.asarray(im.resize((48, 48), Image.BILINEAR), dtype=np.uint8)
        images.append(arr)
        votes.append(v10[: len(EMOTIONS)])
        labels.append(label)
        files.append(name)
    out = FERPlusSplit(
        split,
        np.stack(images) if images else np.zeros((0, 48, 48), np.uint8),
        np.stack(votes).astype(np.int64) if votes else np.zeros((0, 8), np.int64),
        np.asarray(labels, dtype=np.int64),
        np.asarray(files, dtype=str),
    )
    if cache:
        store(stem, ".npz", lambda tmp: np.savez_compressed(tmp, images=out.images, votes=out.votes, labels=out.labels, files=out.files))
    return out


def pack_splits(out_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, splits: tuple[str, ...] = ("train", "valid", "test")) -> Path:
    """Write decoded splits as compressed ``<split>.npz`` files that :func:`load_split` reads
    in place of the PNG folders (about 45 MB for train): for carrying FERPlus to a GPU box."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in splits:
        s = load_split(split, data_dir)
        np.savez_compressed(out / f"{split}.npz", images=s.images, votes=s.votes, labels=s.labels, files=s.files)
    return out


@dataclass
class LabelledFaces:
    """Faces from another data set, for checking generalization: ``images (N, 48, 48)`` uint8,
    ``labels (N,)`` indices into :data:`EMOTIONS`, ``groups (N,)`` (e.g. the subject)."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray


def load_ckplus(root: str | os.PathLike[str]) -> LabelledFaces:
    """The 48x48 CK+ crops at ``root`` (``labels.csv``: file, label, subject; images under
    ``images/``). A check, never training data."""
    root = Path(root)
    table = root / "labels.csv"
    if not table.is_file():
        raise DataError(f"{table}: not found; point --ckplus at the ckplus48 folder (labels.csv and images/)")
    images, labels, groups = [], [], []
    with table.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            try:
                label = EMOTIONS.index(row["label"])
                with Image.open(root / "images" / row["file"]) as im:
                    img = np.asarray(im.convert("L"))
            except (KeyError, ValueError, OSError) as exc:
                raise DataError(f"{table}, line {n}: {type(exc).__name__}: {exc}") from None
            if img.shape != (48, 48):
                raise DataError(f"{root / 'images' / row['file']}: {img.shape[1]}x{img.shape[0]}, expected 48x48")
            images.append(img)
            labels.append(label)
            groups.append(row["subject"])
    return LabelledFaces(np.stack(images), np.asarray(labels), np.asarray(groups))
