"""An on-disk cache that cannot go silently wrong: verified, atomic, safe for concurrent runs.

Each entry is one file whose name carries the SHA-256 of its own bytes
(``<stem>.<digest16><suffix>``). A writer writes a uniquely named temporary file, hashes it
and renames it into place (atomic on one file system), so a reader sees a whole entry or
none, and two runs filling the same entry at once both succeed (the second rename replaces
an identical file, or leaves a second valid one). A reader re-hashes the entry: a damaged,
truncated or zeroed file does not match its name, is deleted with a warning, and the caller
rebuilds it. Hashing costs about 1 s per GB here, small beside what the cache saves.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterable

DIGEST_CHARS = 16


def cache_dir(*parts: str) -> Path:
    """ferroute's cache folder (``$FERROUTE_CACHE``, default ``~/.cache/ferroute``), or a sub-folder."""
    return Path(os.environ.get("FERROUTE_CACHE", Path.home() / ".cache" / "ferroute")).joinpath(*parts)


def file_digest(path: Path) -> str:
    """The first :data:`DIGEST_CHARS` hex characters of a file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:DIGEST_CHARS]


def named_files_digest(files: Iterable[Path]) -> str:
    """SHA-256 (hex) of each existing file's name and bytes, in the order given: what identifies a
    model folder's contents (its graph's weights, its results' version, a site's base model)."""
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def find(stem: Path, suffix: str) -> Path | None:
    """A verified entry ``<stem>.<digest><suffix>``, or None; damaged entries are removed with a warning."""
    if not stem.parent.is_dir():
        return None
    for p in sorted(stem.parent.glob(f"{stem.name}.*{suffix}")):
        digest = p.name[len(stem.name) + 1 : len(p.name) - len(suffix)]
        if len(digest) != DIGEST_CHARS or not all(c in "0123456789abcdef" for c in digest):
            continue  # another entry's name, or a temporary file
        if p.is_symlink() or not p.is_file():  # a FIFO, a device, a folder, a link (to /dev/zero, say): never opened
            done = "removed, rebuilding it" if _remove(p) else "it could not be removed (remove it by hand); not cached"
            warnings.warn(f"{p}: cache entry is not a regular file; {done}", stacklevel=2)
            continue
        try:
            ok = file_digest(p) == digest
        except OSError:
            ok = False
        if ok:
            return p
        done = "removed, rebuilding it" if _remove(p) else "it could not be removed (remove it by hand)"
        warnings.warn(f"{p}: damaged cache entry (its content does not match its checksum); {done}", stacklevel=2)
    return None


def _remove(p: Path) -> bool:
    """Remove a cache entry of any kind (a folder with what is in it); whether it is gone."""
    import shutil

    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    except OSError:
        pass
    return not (p.exists() or p.is_symlink())


def store(stem: Path, suffix: str, write: Callable[[Path], None]) -> Path | None:
    """Write an entry with ``write(tmp_path)`` and move it into place under its checksum name;
    None where the cache cannot be written (a read-only cache only costs speed)."""
    tmp = stem.parent / f".{stem.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp{suffix}"
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        final = stem.parent / f"{stem.name}.{file_digest(tmp)}{suffix}"
        if final.is_dir() and not final.is_symlink():  # a folder in the entry's place would block it forever
            _remove(final)
        os.replace(tmp, final)
        return final
    except OSError:
        return None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass
