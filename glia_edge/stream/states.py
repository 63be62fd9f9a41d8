"""Turn a noisy per-frame score into a stable state: EMA smoothing plus hysteresis thresholds.

A camera's score jitters from frame to frame; alerting on the raw score would flap. The score is
first smoothed with an exponential moving average over scored frames, then compared with two
thresholds (a Schmitt trigger): the state drops to ``degraded`` only when the smoothed score has
stayed below ``degrade`` for ``min_frames`` scored frames, and comes back (``recovered``) only when
it has stayed at or above ``recover`` (> ``degrade``) as long. ``recovered`` turns into ``ok``
after ``hold`` more good frames. Each change into ``degraded`` or ``recovered`` is an :class:`Alert`.

The thresholds are either absolute (:class:`Thresholds`, in score units) or relative to the
stream's own normal level (:class:`RelativeThresholds`, baseline mode): the state is ``learning``
until the baseline, the median smoothed score over the first ``learn_s`` seconds of scored frames,
is known; the thresholds then sit ``drop`` below it (and ``drop - hysteresis`` for recovery).
:meth:`QualityState.relearn` starts learning again; ``adapt_s`` lets the baseline follow slow
changes while the state is ``ok``.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Union


class State(str, Enum):
    LEARNING = "learning"
    OK = "ok"
    DEGRADED = "degraded"
    RECOVERED = "recovered"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Thresholds:
    """Hysteresis thresholds on the smoothed score, in the model's score units (higher is better)."""

    degrade: float
    recover: float
    min_frames: int = 2
    hold: int = 5

    def __post_init__(self) -> None:
        if self.recover < self.degrade:
            raise ValueError(f"recover ({self.recover}) must be >= degrade ({self.degrade})")
        if self.min_frames < 1 or self.hold < 0:
            raise ValueError("min_frames must be >= 1 and hold >= 0")

    @classmethod
    def around(cls, threshold: float, hysteresis: float, **kw: Any) -> "Thresholds":
        """``degrade`` at ``threshold``, ``recover`` ``hysteresis`` above it."""
        return cls(degrade=threshold, recover=threshold + abs(hysteresis), **kw)

    @classmethod
    def for_score_range(cls, low: float, high: float, **kw: Any) -> "Thresholds":
        """Absolute defaults for a score range: degrade at 40% of it, recover at 45%."""
        span = high - low
        return cls.around(low + 0.40 * span, 0.05 * span, **kw)


@dataclass(frozen=True)
class RelativeThresholds:
    """Baseline mode: thresholds below the stream's own normal level, in score units.

    The baseline is the median smoothed score of the scored frames in the first ``learn_s``
    seconds (stream time; at least ``learn_frames`` frames); then degraded below
    ``baseline - drop``, recovered at ``baseline - drop + hysteresis``. ``adapt_s`` > 0 moves the
    baseline towards the smoothed score with that time constant (seconds), only while the state is
    ``ok`` and the score at or above the recover level; 0 keeps it until :meth:`QualityState.relearn`.
    """

    drop: float
    hysteresis: float
    learn_s: float = 3.0
    learn_frames: int = 5
    adapt_s: float = 0.0
    min_frames: int = 2
    hold: int = 5

    def __post_init__(self) -> None:
        if self.drop <= 0 or not 0 <= self.hysteresis <= self.drop:
            raise ValueError(f"need drop > 0 and 0 <= hysteresis <= drop, got {self.drop} and {self.hysteresis}")
        if self.learn_s < 0 or self.learn_frames < 1 or self.adapt_s < 0:
            raise ValueError("learn_s and adapt_s must be >= 0 and learn_frames >= 1")
        Thresholds(0.0, self.hysteresis, self.min_frames, self.hold)  # same checks on min_frames and hold

    def at(self, baseline: float) -> Thresholds:
        """The absolute thresholds in force for ``baseline``."""
        degrade = baseline - self.drop
        return Thresholds(degrade, degrade + self.hysteresis, self.min_frames, self.hold)

    @classmethod
    def for_score_range(cls, low: float, high: float, drop: float = 0.2, hysteresis: float = 0.05,
                        **kw: Any) -> "RelativeThresholds":
        """``drop`` and ``hysteresis`` given as fractions of the score range (defaults 20% and 5%)."""
        span = high - low
        return cls(drop=drop * span, hysteresis=hysteresis * span, **kw)


Rule = Union[Thresholds, RelativeThresholds]


@dataclass(frozen=True)
class Alert:
    """A state change worth telling someone about, with the thresholds in force."""

    kind: str  # the new state: "degraded" or "recovered"
    previous: str
    index: int
    timestamp: float
    score: float
    smoothed: float
    baseline: float | None = None  # baseline mode only
    threshold: float | None = None  # degraded below this
    recover: float | None = None  # recovered at this

    def to_dict(self) -> dict[str, Any]:
        return {"event": "alert", **asdict(self)}


class Ema:
    """Exponential moving average: ``s = a * s + (1 - a) * x``; ``a = 0`` switches smoothing off."""

    def __init__(self, smoothing: float) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self.value: float | None = None

    def update(self, x: float) -> float:
        a = self.smoothing
        self.value = x if self.value is None else a * self.value + (1.0 - a) * x
        return self.value


class QualityState:
    """The smoothing + hysteresis state machine; feed it one scored frame at a time.

    ``thresholds`` is the rule as given; ``active`` the absolute thresholds in force (None while
    learning a baseline); ``baseline`` the learned level (baseline mode); ``learned`` is True
    right after the update that finished learning, and ``baseline_frames`` counts the frames it used.
    """

    def __init__(self, thresholds: Rule, smoothing: float = 0.5) -> None:
        self.thresholds = thresholds
        self.ema = Ema(smoothing)
        self.baseline: float | None = None
        self.baseline_frames = 0
        self.learned = False
        self.active: Thresholds | None = None
        self.state = State.OK
        self._window: list[float] = []
        self._t_learn: float | None = None
        self._t_last: float | None = None
        self._run = 0  # consecutive frames pointing to the next state
        self._good = 0  # good frames since recovering
        if isinstance(thresholds, RelativeThresholds):
            self.relearn()
        else:
            self.active = thresholds

    @property
    def relative(self) -> bool:
        return isinstance(self.thresholds, RelativeThresholds)

    def relearn(self) -> None:
        """Forget the baseline and learn it again from the next frames (baseline mode only)."""
        if not self.relative:
            raise ValueError("absolute thresholds have no baseline to learn")
        self.baseline, self.active, self.state = None, None, State.LEARNING
        self._window, self._t_learn, self._run, self._good = [], None, 0, 0

    def update(self, score: float, index: int, timestamp: float) -> tuple[float, State, Alert | None]:
        """Smooth ``score``; returns (smoothed score, state after this frame, alert or None)."""
        smoothed = self.ema.update(score)
        dt = 0.0 if self._t_last is None else max(0.0, timestamp - self._t_last)
        self._t_last = timestamp
        self.learned = False
        t = self.active
        if t is None:
            self._learn(smoothed, timestamp)
            return smoothed, self.state, None
        previous = self.state
        if self.state is State.DEGRADED:
            self._run = self._run + 1 if smoothed >= t.recover else 0
            if self._run >= t.min_frames:
                self.state, self._run, self._good = State.RECOVERED, 0, 0
        else:
            self._run = self._run + 1 if smoothed < t.degrade else 0
            if self._run >= t.min_frames:
                self.state, self._run = State.DEGRADED, 0
            elif self.state is State.RECOVERED and smoothed >= t.recover:
                self._good += 1
                if self._good >= t.hold:
                    self.state = State.OK
        alert = None
        if self.state is not previous and self.state is not State.OK:
            alert = Alert(self.state.value, previous.value, index, timestamp, float(score), float(smoothed),
                          self.baseline, t.degrade, t.recover)
        if previous is State.OK and self.state is State.OK and smoothed >= t.recover:
            self._adapt(smoothed, dt)
        return smoothed, self.state, alert

    def _learn(self, smoothed: float, timestamp: float) -> None:
        rule = self.thresholds
        assert isinstance(rule, RelativeThresholds)
        if self._t_learn is None:
            self._t_learn = timestamp
        self._window.append(smoothed)
        if timestamp - self._t_learn >= rule.learn_s - 1e-9 and len(self._window) >= rule.learn_frames:
            self.baseline = float(statistics.median(self._window))
            self.baseline_frames, self._window = len(self._window), []
            self.active, self.state, self.learned = rule.at(self.baseline), State.OK, True

    def _adapt(self, smoothed: float, dt: float) -> None:
        rule = self.thresholds
        if not isinstance(rule, RelativeThresholds) or rule.adapt_s <= 0 or self.baseline is None:
            return
        self.baseline += (1.0 - math.exp(-dt / rule.adapt_s)) * (smoothed - self.baseline)
        self.active = rule.at(self.baseline)
