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
