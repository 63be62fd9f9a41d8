"""Decode and preprocess images on a small pool of worker threads, ahead of inference, in input order.

:meth:`Backend.iter_scores` takes its crops from :func:`decode_ahead`: while the backend scores
one batch, the workers decode and resize the next images. Threads, not processes: Pillow and
OpenCV release the GIL while they decode and resample, and a thread hands its crops over without
pickling them (docs/benchmarks.md has the measured comparison). At most ``ahead`` images are
submitted and not yet taken by the consumer, so memory stays bounded (a few batches) however
many inputs there are. ``workers=0`` is the serial path: each image decoded on the calling thread
when the consumer asks for it (how glia-edge worked before the pool, kept for comparison).
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from glia_edge.errors import ImageLoadError
from glia_edge.preprocess import ImageInput, describe

#: Default number of decode threads: the cores, up to 4 (decoding more images at once than that
#: only holds more memory; inference needs the cores too).
DEFAULT_DECODE_WORKERS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Decoded:
    """One input after preprocessing: its crops, or the reason it could not be used."""

    source: str
    crops: np.ndarray | None
    error: str | None = None


def resolve_workers(workers: int | None) -> int:
    """``None`` -> :data:`DEFAULT_DECODE_WORKERS`; a negative count is a ``ValueError``."""
    if workers is None:
        return DEFAULT_DECODE_WORKERS
    if workers < 0:
        raise ValueError(f"decode_workers must be >= 0 (0 = serial), got {workers}")
    return int(workers)


def _run(decode: Callable[[ImageInput], np.ndarray], image: ImageInput, index: int) -> Decoded:
    name = describe(image)
    if not isinstance(image, (str, os.PathLike)):  # arrays, bytes, PIL images: say which one
        name = f"[{index}] {name}"
    try:
        return Decoded(name, decode(image))
    except ImageLoadError as exc:
        return Decoded(name, None, exc.reason)


def decode_ahead(images: Iterable[ImageInput], decode: Callable[[ImageInput], np.ndarray], *,
                 workers: int, ahead: int) -> Iterator[Decoded]:
    """``decode`` applied to each image, yielded in input order.

    ``decode`` raises :class:`ImageLoadError` for an unusable input, which becomes a
    :class:`Decoded` with ``error`` set; any other exception propagates to the consumer, in
    order. With ``workers`` > 0, up to ``ahead`` images are in flight (queued, decoding, or
    done and waiting); leaving the loop early cancels the queued ones and waits only for the
    few being decoded.
    """
    if workers <= 0:
        for index, image in enumerate(images):
            yield _run(decode, image, index)
        return
    ahead = max(ahead, workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="glia-decode")
    pending: deque[Future[Decoded]] = deque()
    source = enumerate(images)
    try:
        while True:
            try:
                index, image = next(source)
            except StopIteration:
                break
            except Exception:  # the input iterable failed: the images before it still come out first
                while pending:
                    yield pending.popleft().result()
                raise
            pending.append(pool.submit(_run, decode, image, index))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
