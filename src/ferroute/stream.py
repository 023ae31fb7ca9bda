"""Route a stream of images with flat memory: decoding and detection in threads, the model in batches.

Kept apart from :mod:`ferroute.router` (which imports torch) so that a caller can start
finding faces while the model is still loading: pass a ``Future`` of the router.
"""

from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Union

from .vision.faces import FaceDetector, Prepared, find_faces, input_name
from .vision.images import ImageInput

#: batches whose faces may be found ahead while the model is still loading (crops only: small)
_AHEAD_WHILE_LOADING = 8

if TYPE_CHECKING:
    from .router import FERRouter


def route_stream(
    router: "Union[FERRouter, Future[FERRouter]]",
    images: Iterable[ImageInput],
    names: Iterable[str] | None = None,
    batch_size: int = 64,
    workers: int = 2,
    detector: FaceDetector | None = None,
) -> Iterator[dict[str, Any]]:
    """One report per image (``{'source', 'faces'}`` or ``{'source', 'error'}``), in input order.

    ``workers`` threads decode and detect (OpenCV and Pillow release the GIL) while the
    ensemble runs on the previous batch; at most two batches are in flight, so memory stays
    flat however many images come. ``router`` may be a ``Future``: faces are found while it
    loads, and the first batch waits for it.
    """
    detector = detector or (router.detector if not isinstance(router, Future) else FaceDetector())
    pairs: Iterable[tuple[Any, Any]] = zip(images, names) if names is not None else ((img, None) for img in images)
    named = ((img, nm if nm is not None else input_name(img, i)) for i, (img, nm) in enumerate(pairs))
    pending: deque[list[Future[Prepared]]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ferroute-faces") as pool:
        while True:
            chunk = list(itertools.islice(named, batch_size))
            if chunk:
                step = -(-len(chunk) // max(1, workers))
                parts = [chunk[k : k + step] for k in range(0, len(chunk), step)]
                pending.append([pool.submit(find_faces, [c[0] for c in part], detector, [c[1] for c in part]) for part in parts])
            loading = isinstance(router, Future) and not router.done()
            if pending and (not chunk or len(pending) > (_AHEAD_WHILE_LOADING if loading else 1)):
                model = router.result() if isinstance(router, Future) else router
                yield from model.finish(Prepared.concat([f.result() for f in pending.popleft()]))
            if not chunk and not pending:
                return
