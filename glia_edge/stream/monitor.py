"""QualityMonitor: score a stream of frames without ever blocking the producer.

Frames arrive from any iterator (``run(frames)``) or callback (``submit(frame, ts)``). Sampling
(``every_n``, ``max_fps``) picks which frames to score; picked frames go into a bounded queue that
keeps the newest ones (``queue_size``) and counts what it had to drop, so a camera loop never
waits for the model. One worker thread scores what is queued with the backend's shared
preprocessing (``model.crop_batch`` + ``model.predict_batch``: a frame scores as ``glia-edge score``
scores a lossless file of the same pixels, a PNG; a frame decoded from a large JPEG can score
slightly differently from that JPEG file, which ``score`` decodes at reduced size (libjpeg's DCT
scaling) where the frame was decoded at full size; a large frame is area-averaged in OpenCV
before the small bicubic resize, with no full-size PIL copy: :func:`glia_edge.preprocess.load_reduced`),
smooths and classifies the score (:mod:`glia_edge.stream.states`) and publishes a
:class:`FrameResult` to ``results()`` and the ``on_result`` / ``on_alert`` callbacks.

By default the monitor runs in baseline mode (:class:`~glia_edge.stream.states.RelativeThresholds`
for the model's score range): it learns the stream's normal level over its first seconds and
alerts on a relative drop below it; ``relearn()`` (any thread) learns it again. Pass
:class:`~glia_edge.stream.states.Thresholds` for absolute thresholds.

When several frames are queued (``queue_size`` > 1) the worker scores them as one batch, which a
backend with an asynchronous mode spreads over its requests (OpenVINO opened with
``mode="throughput"`` splits a batch across async infer requests). ``block=True`` is for
offline analysis of files: the producer then waits for room instead of dropping frames.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NoReturn

import numpy as np

from glia_edge.errors import ImageLoadError
from glia_edge.preprocess import CROP_COUNTS, aggregate
from glia_edge.stream.states import Alert, QualityState, RelativeThresholds, Rule, Thresholds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    """The outcome for one scored frame. ``dropped`` and ``skipped`` are running totals at the time
    it was scored: frames lost to a full queue, and frames passed over by sampling. ``threshold``
    (degraded below) and ``recover`` are the thresholds in force after this frame (None while
    learning), ``baseline`` the learned level in baseline mode; ``learned`` marks the frame that
    finished learning it."""

    index: int
    timestamp: float
    score: float | None
    smoothed: float | None
    state: str
    dropped: int
    skipped: int
    latency_ms: float
    alert: Alert | None = None
    error: str | None = None
    baseline: float | None = None
    threshold: float | None = None
    recover: float | None = None
    learned: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "timestamp": round(self.timestamp, 6), "score": _round(self.score),
               "smoothed": _round(self.smoothed), "state": self.state, "baseline": _round(self.baseline),
               "threshold": _round(self.threshold), "recover": _round(self.recover), "dropped": self.dropped,
               "skipped": self.skipped, "latency_ms": round(self.latency_ms, 2)}
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class MonitorStats:
    seen: int
    skipped: int
    dropped: int
    scored: int
    errors: int
    alerts: int
    elapsed_s: float

    @property
    def scored_fps(self) -> float:
        return self.scored / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class _Item:
    index: int
    timestamp: float
    frame: Any
    submitted: float


class QualityMonitor:
    """Score frames on a worker thread; see the module docstring."""

    def __init__(self, model: Any, *, every_n: int = 1, max_fps: float | None = None, crops: int = 1,
                 smoothing: float = 0.5, thresholds: Rule | None = None,
                 on_alert: Callable[[Alert], None] | None = None,
                 on_result: Callable[[FrameResult], None] | None = None, queue_size: int = 1, bgr: bool = True,
                 block: bool = False, results_buffer: int = 1024) -> None:
        if every_n < 1 or queue_size < 1 or results_buffer < 1 or (max_fps is not None and max_fps <= 0):
            raise ValueError("every_n, queue_size and results_buffer must be >= 1 and max_fps > 0")
        if crops not in CROP_COUNTS:  # here, not in the worker at the first frame
            raise ValueError(f"crops must be one of {CROP_COUNTS}, got {crops}")
        if thresholds is None:  # baseline mode, sized by the model's declared score range
            spec = model.meta.score_spec
            thresholds = RelativeThresholds.for_score_range(spec.min, spec.max)
        self.model, self.every_n, self.max_fps, self.crops, self.bgr = model, every_n, max_fps, crops, bgr
        self.queue_size, self.block = queue_size, block
        self.thresholds = thresholds
        self.on_alert, self.on_result = on_alert, on_result
        self._state = QualityState(thresholds, smoothing)
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._results: deque[FrameResult] = deque(maxlen=results_buffer)
        self._seen = self._skipped = self._dropped = self._scored = self._errors = self._alerts = self._lost = 0
        self._next_due: float | None = None
        self._relearn = False
        self._t0: float | None = None
        self._t_last = 0.0
        self._closing = False
        self._worker_done = False
        self.error: BaseException | None = None
        self._worker = threading.Thread(target=self._work, name="glia-monitor", daemon=True)
        self._worker.start()

    # -- producer side -----------------------------------------------------------------------
    def submit(self, frame: np.ndarray, timestamp: float | None = None) -> bool:
        """Offer one frame (HWC uint8, BGR if ``bgr``); returns whether it was queued for scoring.

        Never waits (unless ``block=True``): when the queue is full the oldest queued frame is
        dropped. The monitor keeps a reference to queued frames: pass a copy if you reuse buffers.
        """
        queued = self._offer(frame, timestamp)
        if queued is None:
            self._raise_closed()
        return queued

    def _raise_closed(self) -> NoReturn:
        """Say why the monitor takes no more frames: its worker failed (the cause chained), or it was closed."""
        if self.error is not None:
            raise RuntimeError(f"QualityMonitor stopped: its worker failed: {self.error}") from self.error
        raise RuntimeError("QualityMonitor is closed (run() closes it when its stream ends): create a new one "
                           "per stream")

    def _offer(self, frame: np.ndarray, timestamp: float | None) -> bool | None:
        """``submit`` without the raise: None when the monitor is closed."""
        now = time.monotonic()
        ts = time.time() if timestamp is None else float(timestamp)
        with self._cond:
            if self._closing:
                return None
            index = self._seen
            self._seen += 1
            self._t0 = now if self._t0 is None else self._t0
            if not self._sampled(index, ts):
                self._skipped += 1
                return False
            if self.block:
                while len(self._queue) >= self.queue_size and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return None
            elif len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append(_Item(index, ts, frame, now))
            self._cond.notify_all()
            return True

    def _sampled(self, index: int, ts: float) -> bool:
        if index % self.every_n:
            return False
        if self.max_fps is not None:
            if self._next_due is not None and ts < self._next_due - 1e-6:
                return False
            self._next_due = ts + 1.0 / self.max_fps
        return True

    # -- worker side -------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue:
                        return
                    items = list(self._queue)
                    self._queue.clear()
                    self._cond.notify_all()
                for result in self._score(items):
                    self._publish(result)
        except BaseException as exc:  # a broken backend: stop, and let the consumer re-raise it
            log.error("quality monitor worker failed: %s", exc)
            self.error = exc
        finally:
            with self._cond:
                self._worker_done = True
                self._closing = True
                self._queue.clear()
                self._cond.notify_all()

    def _score(self, items: list[_Item]) -> list[tuple[_Item, float | None, str | None]]:
        batches: list[np.ndarray] = []
        outcome: list[tuple[_Item, float | None, str | None]] = []
        for item in items:
            try:
                batches.append(self.model.crop_batch(item.frame, crops=self.crops, bgr=self.bgr))
                outcome.append((item, None, None))
            except ImageLoadError as exc:
                outcome.append((item, None, exc.reason))
        if batches:
            scores = iter(aggregate(self.model.predict_batch(np.concatenate(batches)), [len(b) for b in batches]))
            outcome = [(it, float(next(scores)) if err is None else None, err) for it, _, err in outcome]
        return outcome

    def _publish(self, scored: tuple[_Item, float | None, str | None]) -> None:
        item, score, error = scored
        with self._cond:
            relearn, self._relearn = self._relearn, False
        st = self._state
        if relearn:
            st.relearn()
            log.debug("re-learning the baseline from frame %d", item.index)
        if error is not None:
            log.warning("frame %d could not be scored: %s", item.index, error)
            smoothed, state, alert = st.ema.value, st.state, None
            st.learned = False
        else:
            smoothed, state, alert = st.update(score, item.index, item.timestamp)  # type: ignore[arg-type]
        limits = st.active
        degrade, recover = (None, None) if limits is None else (limits.degrade, limits.recover)
        if st.learned:
            log.debug("baseline %.2f learned from %d frames: degraded below %.2f, recovered at %.2f", st.baseline,
                     st.baseline_frames, degrade, recover)
        with self._cond:
            self._scored += error is None
            self._errors += error is not None
            self._alerts += alert is not None
            self._t_last = time.monotonic()
            result = FrameResult(item.index, item.timestamp, score, smoothed, state.value, self._dropped,
                                 self._skipped, (self._t_last - item.submitted) * 1000.0, alert, error, st.baseline,
                                 degrade, recover, st.learned)
            if len(self._results) == self._results.maxlen:
                self._lost += 1
                if self._lost == 1:
                    log.warning("results are not being read: keeping the newest %d (callbacks still get all)",
                                self._results.maxlen)
            self._results.append(result)
            self._cond.notify_all()
        for callback, arg in ((self.on_result, result), (self.on_alert, alert)):
            if callback is not None and arg is not None:
                try:
                    callback(arg)  # type: ignore[operator]
                except Exception:
                    log.exception("quality monitor callback %r failed", callback)

    # -- consumer side -----------------------------------------------------------------------
    def results(self, timeout: float | None = None) -> Iterator[FrameResult]:
        """Yield results as they arrive until the monitor is closed and drained.

        ``timeout`` bounds each wait; when it passes with nothing new the iterator ends.
        Re-raises the worker's error, if it failed.
        """
        while True:
            # One result at a time: a consumer that stops (an exception, a signal) between two
            # results leaves the rest in the buffer for poll(), not in this generator's hands.
            with self._cond:
                self._cond.wait_for(lambda: self._results or self._worker_done, timeout)
                result = self._results.popleft() if self._results else None
            if result is None:
                break  # finished and drained, or ``timeout`` passed with nothing new
            yield result
        if self.error is not None:
            raise self.error

    def poll(self) -> list[FrameResult]:
        """The results ready now, without waiting."""
        with self._cond:
            batch = list(self._results)
            self._results.clear()
        return batch

    def run(self, frames: Iterable[Any]) -> Iterator[FrameResult]:
        """Feed ``frames`` from a producer thread and yield results; closes the monitor at the end.

        Items are HWC arrays, ``(array, timestamp)`` pairs, or objects with ``image`` and
        ``timestamp`` (:class:`~glia_edge.stream.sources.Frame`); any other item is taken as the
        frame, so a failed read's None is that frame's error, as ``submit(None)`` is. An error raised by the source is
        re-raised here after the frames already queued are scored. A monitor runs one stream:
        ``run`` on a closed (or finished) monitor raises ``RuntimeError`` here, at the call,
        instead of yielding nothing.
        """
        with self._cond:
            closed = self._closing
        if closed:
            self._raise_closed()
        return self._run(frames)

    def _run(self, frames: Iterable[Any]) -> Iterator[FrameResult]:
        failure: list[BaseException] = []
        producer = threading.Thread(target=self._produce, args=(frames, failure), name="glia-producer", daemon=True)
        producer.start()
        try:
            yield from self.results()
        finally:
            self._stop_producer(frames, producer)
        if failure:
            raise failure[0]

    def _produce(self, frames: Iterable[Any], failure: list[BaseException]) -> None:
        try:
            for item in frames:
                if self._offer(*_unpack(item)) is None:
                    break
        except BaseException as exc:
            failure.append(exc)
        finally:
            self.close(timeout=0)

    def _stop_producer(self, frames: Iterable[Any], producer: threading.Thread, timeout: float = 10.0) -> None:
        self.close(drain=False, timeout=timeout)
        if producer.is_alive() and callable(getattr(frames, "close", None)):
            frames.close()  # type: ignore[attr-defined]
        producer.join(timeout)
        if producer.is_alive():
            log.warning("frame source did not stop within %.0f s; leaving its thread behind", timeout)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self, drain: bool = True, timeout: float | None = 10.0) -> bool:
        """Stop accepting frames; score what is queued (``drain``) or drop it; wait for the worker.

        Returns whether the worker has finished (``timeout=0`` only signals it).
        """
        with self._cond:
            self._closing = True
            if not drain:
                self._dropped += len(self._queue)
                self._queue.clear()
            self._cond.notify_all()
        if timeout != 0 and threading.current_thread() is not self._worker:
            self._worker.join(timeout)
        return not self._worker.is_alive()

    def relearn(self) -> None:
        """Learn the baseline again, starting with the next scored frame (baseline mode; any thread).

        The state goes back to ``learning`` (no alert) until the new baseline is known."""
        if not self.relative:
            raise ValueError("relearn() needs baseline mode (RelativeThresholds); these thresholds are absolute")
        with self._cond:
            self._relearn = True

    @property
    def baseline(self) -> float | None:
        """The learned baseline (None while learning, and with absolute thresholds)."""
        return self._state.baseline

    @property
    def baseline_frames(self) -> int:
        """How many scored frames the current baseline was learned from."""
        return self._state.baseline_frames

    @property
    def relative(self) -> bool:
        """Whether the monitor runs in baseline mode."""
        return self._state.relative

    @property
    def active_thresholds(self) -> Thresholds | None:
        """The absolute thresholds in force now (None while learning a baseline)."""
        return self._state.active

    @property
    def alive(self) -> bool:
        return self._worker.is_alive()

    @property
    def state(self) -> str:
        return self._state.state.value

    @property
    def stats(self) -> MonitorStats:
        with self._cond:
            elapsed = (self._t_last - self._t0) if self._t0 is not None and self._t_last else 0.0
            return MonitorStats(self._seen, self._skipped, self._dropped, self._scored, self._errors, self._alerts,
                                max(0.0, elapsed))

    def __enter__(self) -> "QualityMonitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(drain=exc[0] is None)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _unpack(item: Any) -> tuple[Any, float | None]:
    """A source's item -> (frame, timestamp). Anything but a Frame or a pair is the frame itself, so
    a bad one (a failed ``cv2.VideoCapture.read()``'s None) is that frame's error, not the stream's end."""
    if isinstance(item, np.ndarray):
        return item, None
    if hasattr(item, "image"):
        return item.image, getattr(item, "timestamp", None)
    if isinstance(item, tuple) and len(item) == 2:
        return item[0], item[1]
    return item, None
