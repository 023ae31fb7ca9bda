"""Route millions of photos on Ray Data: files in, a Dataset of result rows out.

Two stages, as Ray Data's batch inference is meant to be built:

1. :func:`find_faces_batch`, plain CPU tasks: read each file (local path or any URI that
   ``pyarrow.fs`` opens, :func:`read_input`), decode it and find its faces; one row per
   face with its 48x48 crop, or one row per image without a face or with an error (a bad
   file is an error row, never a failed job);
2. :class:`RouteCrops`, an actor pool (``map_batches`` with a callable class) that loads
   the model once per actor and routes the crops in batches, returning rows of the schema
   in :mod:`ferroute.output.results` (the same as the local path's Parquet output).

``route_dataset(ds)`` composes them on a Dataset with a ``path`` column, so users can put
their own reading before and their own writing after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..vision.faces import Face, FaceDetector, Prepared, find_faces
from ..vision.images import ImageError, ImageInput

_DETECTOR: FaceDetector | None = None  # one per Ray worker process, built on first use


def read_input(where: str, source: str) -> ImageInput:
    """What stage 1 decodes: a local path as it is (decoding reads it and names what is wrong
    with it, as on the local path), or a URI's bytes through ``pyarrow.fs`` (s3://, gs://,
    hdfs://...); ImageError where the URI cannot be read."""
    if "://" not in where or where.startswith("file://"):
        return Path(where.removeprefix("file://"))
    try:
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(where)
        with filesystem.open_input_stream(path) as f:
            return f.read()
    except Exception as exc:  # pyarrow raises its own types (and OSError) by file system
        raise ImageError(source, f"cannot read it ({type(exc).__name__}: {exc})", "check the URI and its credentials") from None


def find_faces_batch(batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    """Stage 1 (CPU task): ``{'path'[, 'source']}`` -> one row per face (``crop`` 2304 bytes) or per image
    without a face or with an error (``crop`` empty), with the face's box, score and index."""
    global _DETECTOR
    if _DETECTOR is None:
        import cv2

        cv2.setNumThreads(1)  # Ray schedules one task per CPU
        _DETECTOR = FaceDetector()
    out: dict[str, list[Any]] = {"source": [], "face": [], "crop": [], "meta": []}
    sources = batch["source"] if "source" in batch else batch["path"]
    for where, source in zip(batch["path"], sources):
        path = str(source)
        try:
            prep = find_faces([read_input(str(where), path)], _DETECTOR, [path])
        except ImageError as exc:  # a URI that could not be read
            prep = None
            err = str(exc)
        if prep is None or "error" in prep.items[0]:
            rows = [(-1, b"", {"error": err if prep is None else prep.items[0]["error"]})]
        elif not prep.crops:
            rows = [(-1, b"", {})]  # no face
        else:
            rows = [(k, np.ascontiguousarray(crop, np.uint8).tobytes(), {"box": list(face.box), "score": face.score})
                    for k, (crop, (_, face)) in enumerate(zip(prep.crops, prep.owners))]
        for face_index, crop_bytes, meta in rows:
            out["source"].append(path)
            out["face"].append(face_index)
            out["crop"].append(crop_bytes)
            out["meta"].append(json.dumps(meta))
    return out


class RouteCrops:
    """Stage 2 (actor): the model, loaded once per actor; routes a batch of stage-1 rows."""

    def __init__(self, model: str | None = None, threads: int | None = None):
        from ..router import FERRouter
        from .results import model_identity

        # the actor's CPUs, set on the onnxruntime session itself (it ignores OMP_NUM_THREADS)
        self.router = FERRouter.load(model, threads=threads)
        self.model, self.version = model_identity(self.router)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        """Stage-1 rows -> result rows, through the router's own ``finish`` (as on the local path)."""
        import pyarrow as pa

        from .results import result_rows, schema

        prep = Prepared([], [], [], {})
        for source, crop, meta in zip(batch["source"], batch["crop"], batch["meta"]):
            info = json.loads(meta)
            if "error" in info:
                prep.items.append({"source": str(source), "error": info["error"]})
                continue
            prep.items.append({"source": str(source), "faces": []})  # no crop: finish reports no_face
            if len(crop):
                prep.crops.append(np.frombuffer(crop, np.uint8).reshape(48, 48))
                prep.owners.append((len(prep.items) - 1, Face(tuple(info["box"]), prep.crops[-1], info["score"])))
        rows: list[dict[str, Any]] = []
        for face, item in zip(batch["face"], self.router.finish(prep)):
            for row in result_rows(item, self.model, self.version):
                if face >= 0:
                    row["face"] = int(face)
                rows.append(row)
        return pa.Table.from_pylist(rows, schema=schema(self.router.labels))


def route_dataset(ds: Any, model: str | None = None, workers: int = 1, batch_size: int = 32, actor_batch: int = 256,
                  threads_per_worker: int = 1) -> Any:
    """A Ray Dataset with a ``path`` column -> a Dataset of result rows (:mod:`ferroute.output.results`).

    ``workers`` model actors (each loads the model once and uses ``threads_per_worker`` CPU
    threads); faces are found by CPU tasks ahead of them."""
    from ray.data import ActorPoolStrategy

    found = ds.map_batches(find_faces_batch, batch_size=batch_size, batch_format="numpy", num_cpus=1)
    return found.map_batches(RouteCrops, fn_constructor_kwargs={"model": model, "threads": threads_per_worker}, batch_size=actor_batch,
                             batch_format="numpy", compute=ActorPoolStrategy(size=workers), num_cpus=threads_per_worker)


def run(paths: list[str], out: str | Path, model: str | None = None, address: str | None = None, workers: int = 1,
        resume: bool = False) -> dict[str, Any]:
    """``ferroute route --engine ray``: route ``paths`` (already expanded) into a folder of
    Parquet parts at ``out``, skipping the sources already there with ``resume``. Starts a local
    Ray (no dashboard) and stops it after, or joins the cluster at ``address``."""
    import ray

    from .results import done_sources

    out = Path(out)
    done = done_sources(out) if resume else set()
    todo = [p for p in paths if p not in done]
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if address else {"num_cpus": None}))
    try:
        if todo:
            # read by absolute path (Ray workers need not share the driver's folder); report as given
            items = [{"path": p if "://" in p else str(Path(p).resolve()), "source": p} for p in todo]
            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(todo) // 32, 1000)))
            route_dataset(ds, model=model, workers=workers).write_parquet(str(out.resolve()))
    finally:
        if started:
            ray.shutdown()
    return {"skipped": len(paths) - len(todo), "routed": len(todo), "out": str(out)}
