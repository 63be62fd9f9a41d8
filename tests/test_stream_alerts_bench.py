"""benchmarks/stream_alerts.py: its clips and figures, on the sharpness stand-in model (fast)."""
from __future__ import annotations

import numpy as np
import pytest

from _stream_fixtures import SharpnessBackend

pytestmark = pytest.mark.timeout(120)


def test_stream_alerts_benchmark_on_a_stand_in_model() -> None:
    pytest.importorskip("skimage")
    from glia_edge.benchmarks import stream_alerts as bench

    photo, name = bench.load_photo()
    assert photo.shape[0] > bench.SIZE[1] and photo.shape[1] > bench.SIZE[0] and "motorcycle" in name
    assert not np.array_equal(bench.pan(photo, 0), bench.pan(photo, 3))  # the content moves
    assert bench.severity(99) == 0 == bench.severity(200) and bench.severity(149) == pytest.approx(1, abs=0.02)
    figures, degraded, clean = bench.measure(SharpnessBackend(), photo, clean_frames=120)
    d, c = figures["degraded"], figures["clean"]
    assert d["scored"] == 300 == len(degraded) and d["dropped"] == 0 and c["scored"] == 120 == len(clean)
    assert d["first_visible_frame"] == 112 and d["last_visible_frame"] == 187
    assert d["first_alert_frame"] is not None and d["delay_from_visible_s"] == pytest.approx(
        (d["first_alert_frame"] - 112) / 30, abs=1e-3)
    assert d["recovery_after_span_end_s"] == pytest.approx((d["recovered_frame"] - 200) / 30, abs=1e-3)
    assert c["alerts"] == 0 and c["pass_no_alert"] and c["baseline"]["frame"] == 90
    lines = bench.summary_lines({"degraded": d, "clean": c})
    assert "delay" in lines[1] and "0 alerts" in lines[3]


def test_a_longer_minimum_duration_delays_the_alert_by_the_extra_frames() -> None:
    pytest.importorskip("skimage")
    from glia_edge.benchmarks import stream_alerts as bench
    from glia_edge.stream import RelativeThresholds

    photo, _ = bench.load_photo()
    base = RelativeThresholds.for_score_range(0.0, 100.0)
    first = {}
    for n in (base.min_frames, base.min_frames + 3):
        figures, _, _ = bench.measure(SharpnessBackend(), photo, clean_frames=10,
                                      thresholds=RelativeThresholds.for_score_range(0.0, 100.0, min_frames=n))
        first[n] = figures["degraded"]["first_alert_frame"]
    assert first[base.min_frames] is not None and first[base.min_frames + 3] == first[base.min_frames] + 3
    assert bench._parse_args(["--min-frames", "8"]).min_frames == 8 and bench._parse_args([]).min_frames is None
