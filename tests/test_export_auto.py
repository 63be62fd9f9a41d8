"""``--precision auto``: the bound, the pick, and a real measured export (slow)."""
from __future__ import annotations

from pathlib import Path

import pytest

from glia_edge.export.auto import AUTO_MAX_DELTA_SHARE, Candidate, passes, pick


def test_bound() -> None:
    assert passes(0.995, AUTO_MAX_DELTA_SHARE)
    assert not passes(0.989, 0.0)
    assert not passes(0.999, AUTO_MAX_DELTA_SHARE + 0.001)
    assert not passes(float("nan"), 0.0) and not passes(None, None)


def test_pick_is_the_fastest_within_the_bound() -> None:
    cands = [Candidate("fp32", "fp32", 0.9999, 0.001, 50.0, True), Candidate("bf16", "bf16", 0.999, 0.004, 90.0, True),
             Candidate("int8", "bf16", 0.95, 0.08, 140.0, False), Candidate("int8", "fp32", None, None, None, False, "x")]
    assert pick(cands) is cands[1]
    assert pick([cands[2], cands[3]]) is None


@pytest.mark.slow
def test_openvino_auto_export_records_what_it_measured(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path) -> None:
    import glia_edge
    from glia_edge.export import export
    from glia_edge.formats import read_meta

    result = export(tiny_checkpoint, target="openvino", precision="auto", calib=image_dir, output=tmp_path / "auto")
    auto = read_meta(result.path).export["auto"]
    measured = [c for c in auto["candidates"] if c["crops_per_s"]]
    assert len(measured) >= 3
    best = max((c for c in measured if c["passes"]), key=lambda c: c["crops_per_s"])
    assert auto["picked"].startswith(best["precision"]) and read_meta(result.path).precision == best["precision"]
    gate = read_meta(result.path).export["gate"]  # the picked candidate's gate, on the calibration subset
    assert gate["spearman"] == pytest.approx(best["spearman"]) and gate["validation_kind"] == "calibration subset"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    with glia_edge.load(result.path) as model:  # runs the float precision it was measured with
        expected = {"fp32": "f32", "bf16": "bf16"}[best["inference_precision"]]
        assert model.inference_precision == expected


def test_bench_recommends_the_fastest_row_within_the_bound() -> None:
    from glia_edge.benchmarks.report import BenchReport, BenchRow
    from glia_edge.benchmarks.report import recommendation

    def row(name: str, target: str, precision: str, rate: float, rho: float | None, delta: float | None) -> BenchRow:
        # judged on the selection set (not the reported test set); the test-set columns disagree on purpose
        return BenchRow(name, target, precision, backend=name, throughput={8: {"crops_per_s": rate}},
                        spearman=1.0, max_abs_diff=0.0, selection_spearman=rho, selection_max_abs_diff=delta,
                        selection_max_delta_share=None if delta is None else delta / 90.0)

    rows = [row("torch fp32 eager", "torch", "fp32", 20.0, 1.0, 0.0),
            row("openvino bf16", "openvino", "bf16", 80.0, 0.999, 0.5),
            row("openvino int8", "openvino", "int8", 120.0, 0.97, 4.0),
            row("onnx int8", "onnx", "int8", 60.0, 0.995, 1.0)]
    report = BenchReport(rows, {}, "machine", "cmd", {"score_range": 90.0})
    assert recommendation(report).startswith("recommendation: openvino bf16 (openvino bf16): 80.0 crops/s at batch 8")
    rows[1].status = "export failed"
    assert recommendation(report).startswith("recommendation: onnx int8")
