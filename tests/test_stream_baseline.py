"""Baseline mode (the default): learn the stream's normal level, alert on a relative drop below it."""
from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pytest

from _stream_fixtures import SharpnessBackend, pan_frames
from glia_edge.stream import FrameResult, QualityMonitor, QualityState, RelativeThresholds, State, Thresholds

pytestmark = pytest.mark.timeout(120)


def _feed(st: QualityState, scores: list[float], fps: float = 10.0, first: int = 0) -> list[tuple[Any, ...]]:
    return [st.update(s, first + i, (first + i) / fps) for i, s in enumerate(scores)]


def _learnt(scores: list[float], adapt_s: float = 0.0) -> QualityState:
    """A state (no smoothing, drop 10, hysteresis 3, 1 s at 10 fps) that has learned on ``scores``."""
    st = QualityState(RelativeThresholds(drop=10, hysteresis=3, learn_s=1.0, adapt_s=adapt_s), smoothing=0.0)
    _feed(st, scores)
    assert st.state is State.OK and st.baseline is not None
    return st


def test_baseline_is_the_median_of_the_smoothed_scores_over_the_window() -> None:
    st = QualityState(RelativeThresholds(drop=10, hysteresis=3, learn_s=1.0), smoothing=0.5)
    scores = [50, 90, 70, 60, 80, 75, 100, 65, 70, 72, 71, 20, 20]  # 10 fps: frames 0-10 span the first 1.0 s
    seen = _feed(st, scores)
    assert [str(state) for _, state, _ in seen[:10]] == ["learning"] * 10
    smoothed = [s for s, _, _ in seen]
    assert str(seen[10][1]) == "ok" and st.baseline_frames == 11
    assert st.baseline == pytest.approx(statistics.median(smoothed[:11]))
    assert st.active == Thresholds(st.baseline - 10, st.baseline - 7, 2, 5)
    assert all(alert is None for _, _, alert in seen[:11])
    # at least learn_frames frames, however short the window
    quick = QualityState(RelativeThresholds(drop=10, hysteresis=3, learn_s=0.0, learn_frames=3), smoothing=0.0)
    assert [str(s) for _, s, _ in _feed(quick, [80, 82, 90, 91])] == ["learning", "learning", "ok", "ok"]
    assert quick.baseline == 82


def test_relative_drop_alerts_with_hysteresis_and_minimum_duration() -> None:
    st = _learnt([80.0] * 11)  # baseline 80: degraded below 70, recovered at 73
    scores = [69, 75, 69, 68, 72, 72, 73, 71, 74, 74, 74, 74, 74, 74, 74]
    seen = _feed(st, scores, first=11)
    states = [str(s) for _, s, _ in seen]  # one frame below is no alert; the band 70-73 changes nothing
    assert states == ["ok"] * 3 + ["degraded"] * 6 + ["recovered"] * 5 + ["ok"]
    alerts = [a for _, _, a in seen if a is not None]
    assert [(a.kind, a.index) for a in alerts] == [("degraded", 14), ("recovered", 20)]
    assert (alerts[0].baseline, alerts[0].threshold, alerts[0].recover) == (80, 70, 73)
    assert alerts[0].to_dict()["baseline"] == 80


def test_no_alert_on_a_clean_stream_with_drifting_content_and_jitter() -> None:
    """10,000 frames at 30 fps: the level wanders with the view (+-6 over 40 s) and jitters (sd 3)."""
    rng = np.random.default_rng(0)
    st = QualityState(RelativeThresholds.for_score_range(0, 100))  # the monitor's defaults
    alerts = []
    for i in range(10_000):
        t = i / 30
        _, _, alert = st.update(80 + 6 * math.sin(2 * math.pi * t / 40) + rng.normal(0, 3), i, t)
        alerts.append(alert)
    assert not any(alerts) and st.state is State.OK and 78 < st.baseline < 86  # type: ignore[operator]


def test_relearn_starts_over_and_never_alerts() -> None:
    st = _learnt([80.0] * 11)
    _feed(st, [50, 50], first=11)
    assert st.state is State.DEGRADED
    st.relearn()
    seen = _feed(st, [50.0] * 11 + [49, 49], first=13)
    assert [str(s) for _, s, _ in seen] == ["learning"] * 10 + ["ok"] * 3
    assert st.baseline == 50 and st.active.degrade == 40 and not any(a for _, _, a in seen)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="no baseline"):
        QualityState(Thresholds(40, 45)).relearn()


def test_adaptation_follows_slow_changes_only_while_ok() -> None:
    st = _learnt([80.0] * 11, adapt_s=1.0)
    _feed(st, [85.0] * 50, first=11)  # 5 s at 10 fps, time constant 1 s
    assert st.baseline == pytest.approx(85, abs=0.05)
    assert st.active is not None and st.active.degrade == pytest.approx(75, abs=0.05)
    _feed(st, [40.0] * 30, first=61)
    assert st.state is State.DEGRADED and st.baseline == pytest.approx(85, abs=0.05)  # held while degraded
    fixed = _learnt([80.0] * 11)
    _feed(fixed, [85.0] * 50, first=11)
    assert fixed.baseline == 80


def test_relative_thresholds_validate() -> None:
    rel = RelativeThresholds.for_score_range(10, 100)
    assert (rel.drop, rel.hysteresis, rel.learn_s) == pytest.approx((18, 4.5, 3.0))
    assert rel.at(90) == Thresholds(72, 76.5, 2, 5)
    for bad in ({"drop": 0, "hysteresis": 0}, {"drop": 5, "hysteresis": 6},
                {"drop": 5, "hysteresis": 1, "learn_frames": 0}, {"drop": 5, "hysteresis": 1, "min_frames": 0}):
        with pytest.raises(ValueError):
            RelativeThresholds(**bad)  # type: ignore[arg-type]


# -- the monitor ---------------------------------------------------------------------------------

def test_monitor_defaults_to_baseline_mode_on_a_moving_clean_stream() -> None:
    clip = pan_frames(300)  # 10 s at 30 fps of a pan: the sharpness wanders with the view
    monitor = QualityMonitor(SharpnessBackend(), block=True)
    results = list(monitor.run((f, i / 30) for i, f in enumerate(clip)))
    assert monitor.relative and isinstance(monitor.thresholds, RelativeThresholds)
    learned = [r.index for r in results if r.learned]
    assert learned == [90] and all(r.state == "learning" and r.threshold is None for r in results[:90])
    assert all(r.state == "ok" and r.alert is None for r in results[90:])
    assert results[-1].baseline == monitor.baseline and results[-1].threshold == pytest.approx(monitor.baseline - 20)
    assert results[-1].to_dict()["baseline"] == pytest.approx(monitor.baseline, abs=1e-4)
    assert monitor.stats.alerts == 0


def test_monitor_flags_a_degradation_of_a_moving_stream_and_relearns_on_request() -> None:
    clip = pan_frames(300, start=120, end=180)  # blurred from 4 s to 6 s
    relearn_at = 200
    monitor = QualityMonitor(SharpnessBackend(), block=True)

    def on_result(res: FrameResult) -> None:
        if res.index == relearn_at:
            monitor.relearn()  # from the worker thread; takes effect with the next frame

    monitor.on_result = on_result
    results = list(monitor.run((f, i / 30) for i, f in enumerate(clip)))
    alerts = [(r.alert.kind, r.index) for r in results if r.alert is not None]
    assert [k for k, _ in alerts] == ["degraded", "recovered"]
    assert 120 < alerts[0][1] < 150 < alerts[1][1] <= 185
    assert [r.index for r in results if r.learned] == [90, relearn_at + 1 + 90]
    assert {r.state for r in results[relearn_at + 1:relearn_at + 91]} == {"learning"}


def test_monitor_with_absolute_thresholds_has_no_baseline() -> None:
    monitor = QualityMonitor(SharpnessBackend(), block=True, thresholds=Thresholds(degrade=30, recover=35))
    results = list(monitor.run(pan_frames(5)))
    assert [r.state for r in results] == ["ok"] * 5 and not monitor.relative
    assert {(r.baseline, r.threshold, r.recover) for r in results} == {(None, 30, 35)}
    with pytest.raises(ValueError, match="baseline mode"):
        monitor.relearn()
