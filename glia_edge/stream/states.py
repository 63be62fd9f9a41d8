"""Turn a noisy per-frame score into a stable state: EMA smoothing plus hysteresis thresholds.

A camera's score jitters from frame to frame; alerting on the raw score would flap. The score is
first smoothed with an exponential moving average over scored frames, then compared with two
thresholds (a Schmitt trigger): the state drops to ``degraded`` only when the smoothed score has
stayed below ``degrade`` for ``min_frames`` scored frames, and comes back (``recovered``) only when
it has stayed at or above ``recover`` (> ``degrade``) as long. ``recovered`` turns into ``ok``
after ``hold`` more good frames. Each change into ``degraded`` or ``recovered`` is an :class:`Alert`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class State(str, Enum):
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
        """Defaults for a score range: degrade at 40% of it, recover at 45%."""
        span = high - low
        return cls.around(low + 0.40 * span, 0.05 * span, **kw)


@dataclass(frozen=True)
class Alert:
    """A state change worth telling someone about."""

    kind: str  # the new state: "degraded" or "recovered"
    previous: str
    index: int
    timestamp: float
    score: float
    smoothed: float

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
    """The smoothing + hysteresis state machine; feed it one scored frame at a time."""

    def __init__(self, thresholds: Thresholds, smoothing: float = 0.5) -> None:
        self.thresholds = thresholds
        self.ema = Ema(smoothing)
        self.state = State.OK
        self._run = 0  # consecutive frames pointing to the next state
        self._good = 0  # good frames since recovering

    def update(self, score: float, index: int, timestamp: float) -> tuple[float, State, Alert | None]:
        """Smooth ``score``; returns (smoothed score, state after this frame, alert or None)."""
        smoothed = self.ema.update(score)
        t = self.thresholds
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
            alert = Alert(self.state.value, previous.value, index, timestamp, float(score), float(smoothed))
        return smoothed, self.state, alert
