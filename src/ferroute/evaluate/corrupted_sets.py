"""Many (corruption, severity) versions of a set of faces at once: computed in parallel
processes and cached on disk (:mod:`ferroute.engine.cache`), each by :func:`~ferroute.evaluate.corruptions.corrupt`."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..engine import cache
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt

__all__ = ["CACHE_VERSION", "corrupted_set"]

CACHE_VERSION = 2  # per-name cache entries: adding shifts does not change the others


def _job(args: tuple[np.ndarray, str, int, int, str]) -> tuple[str, int, Path | None]:
    """Compute one set and store it; returns where it went (None: the cache cannot be written)."""
    faces, name, severity, seed, stem = args
    out = corrupt(faces, name, severity, seed)
    return name, severity, cache.store(Path(stem), ".npy", lambda tmp: np.save(tmp, out))


def corrupted_set(
    faces: np.ndarray,
    names: tuple[str, ...] | list[str] | None = None,
    severities: tuple[int, ...] | list[int] = SEVERITIES,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict[tuple[str, int], np.ndarray]:
    """All (corruption, severity) versions of ``faces``, computed in parallel and cached on disk.

    The cache key covers the faces' bytes, the seed and the algorithm version, so a change
    in any of them recomputes. Returns ``{(name, severity): (N, H, W) uint8}`` (memory-mapped).
    """
    names = list(names or CORRUPTIONS)
    key = hashlib.sha1(np.ascontiguousarray(faces).tobytes() + f"{seed}/{CACHE_VERSION}".encode()).hexdigest()[:16]
    root = cache.cache_dir("corruptions", key)
    # each entry is verified (hashed) once: here, or when it is stored below
    hits = {(n, s): cache.find(root / f"{n}-{s}", ".npy") for n in names for s in severities}
    todo = [(faces, n, s, seed, str(root / f"{n}-{s}")) for (n, s), hit in hits.items() if hit is None]  # missing or damaged
    if todo:
        from tqdm.auto import tqdm

        workers = workers or min(len(todo), os.cpu_count() or 1)
        bar = tqdm(total=len(todo), desc="corruptions", unit="set", disable=not progress)
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for n, s, path in pool.map(_job, todo):
                    hits[(n, s)] = path
                    bar.update()
        else:
            for job in todo:
                n, s, path = _job(job)
                hits[(n, s)] = path
                bar.update()
        bar.close()
    # an unwritable cache: compute in memory instead
    return {(n, s): np.load(hit, mmap_mode="r") if hit is not None else corrupt(faces, n, s, seed) for (n, s), hit in hits.items()}
