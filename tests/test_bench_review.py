"""Regression tests for the bench's review fixes: artifact reuse keyed on the calibration count,
the agreement and recommendation columns, one-line errors for bad inputs and outputs, options the
chosen mode would ignore, stale plots, the reproduce command, and the console table's width."""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from glia_edge.benchmarks.configs import build_matrix
from glia_edge.benchmarks.report import BenchReport, BenchRow, csv_rows, to_markdown, write_all

ARTIFACT = "glia_edge/weights/glia_vit_nano.synthetic.fp32.onnx"


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def _report(**settings: Any) -> BenchReport:
    rows = [BenchRow("torch fp32 eager", "torch", "fp32", "PyTorch eager", artifact_mb=20.0,
                     throughput={8: {"images_per_s": 10.0, "crops_per_s": 10.0}}, peak_rss_mb=600.0, speedup=1.0,
                     spearman=1.0, max_abs_diff=0.0, max_delta_share=0.0, selection_spearman=1.0,
                     selection_max_abs_diff=0.0, selection_max_delta_share=0.0),
            # agrees on the reported test set, not on the selection set: never recommended
            BenchRow("openvino int8", "openvino", "int8", "OpenVINO", artifact_mb=5.0,
                     throughput={8: {"images_per_s": 40.0, "crops_per_s": 40.0}}, peak_rss_mb=300.0, speedup=4.0,
                     spearman=0.9995, max_abs_diff=0.5, max_delta_share=0.5 / 90, selection_spearman=0.95,
                     selection_max_abs_diff=9.0, selection_max_delta_share=0.1),
            BenchRow("onnx fp32", "onnx", "fp32", "ONNX Runtime", artifact_mb=20.0,
                     throughput={8: {"images_per_s": 14.0, "crops_per_s": 14.0}}, peak_rss_mb=400.0, speedup=1.4,
                     spearman=0.99999, max_abs_diff=0.01, max_delta_share=0.01 / 90, selection_spearman=0.9999,
                     selection_max_abs_diff=0.02, selection_max_delta_share=0.02 / 90)]
    return BenchReport(rows, {}, "AMD EPYC, 2 cores", "glia-edge bench --model m.safetensors",
                       {"model": "m", "score_range": 90.0, "selection_set": "the calibration images c (8 images)",
                        **settings})


# -- 1: reuse keyed on the calibration images --------------------------------------------------------
def test_artifact_reuse_counts_the_calibration_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An INT8 artifact calibrated on 8 images is not reused by a run with the default --calib-size."""
    import glia_edge.runtimes
    from glia_edge.benchmarks.artifacts import artifact_output, prepare_artifacts
    from glia_edge.meta import sha256_file

    checkpoint = tmp_path / "m.safetensors"
    checkpoint.write_bytes(b"weights")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(12):
        (calib / f"{i:02d}.jpg").write_bytes(b"")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    artifact = artifact_output(artifacts, "m", "onnx", "int8")
    artifact.write_bytes(b"onnx")
    meta = SimpleNamespace(source_checkpoint_sha256=sha256_file(checkpoint), precision="int8",
                           export={"crops": 1, "batch": 8,
                                   "calibration": {"source": str(calib), "images": 7, "skipped": 1}})
    monkeypatch.setattr(glia_edge.runtimes, "read_meta", lambda path: meta)
    exported: list[int | None] = []

    def fake_export(ckpt: Path, *, target: str, precision: str, output: Path, **kwargs: Any) -> Any:
        exported.append(kwargs.get("calib_size"))
        return SimpleNamespace(path=output, notes=[])

    configs = build_matrix(["torch", "onnx"], ["int8"], gpu_tensorrt=False)
    for calib_size, expected in ((8, []), (None, [None]), (12, [None, 12])):
        plan = prepare_artifacts(checkpoint, configs, artifacts, calib=calib, crops=1, max_batch=8,
                                 calib_size=calib_size, export_fn=fake_export)
        assert exported == expected, calib_size
        assert plan.paths[("onnx", "int8")] == artifact


# -- 2, 9, 14: the tables, the recommendation line in every report, MiB -------------------------------
def test_tables_show_max_delta_share_and_mib_and_reports_carry_the_recommendation(tmp_path: Path) -> None:
    report = _report()
    md = to_markdown(report)
    header = next(line for line in md.splitlines() if line.startswith("| backend"))
    assert "| Spearman vs PyTorch | max abs delta, % of range |" in header
    assert "| artifact MiB |" in header and "| peak RSS MiB |" in header and " MB " not in header
    assert "| 0.9995 | 0.56 |" in md  # 0.5 of a 90-point range
    assert "recommendation: onnx fp32 (ONNX Runtime): 14.0 crops/s at batch 8" in md
    assert "judged on the calibration images c (8 images)" in md
    paths = write_all(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["recommendation"].startswith("recommendation: onnx fp32")
    assert data["rows"][1]["selection_spearman"] == 0.95 and data["rows"][1]["max_delta_share"] == pytest.approx(0.5 / 90)
    flat = csv_rows(report)[1]
    assert flat["selection_max_delta_share"] == 0.1 and flat["max_delta_share"] == pytest.approx(0.5 / 90)
    assert "recommendation" not in paths["csv"].read_text()  # the CSV stays the rows alone


def test_recommendation_is_judged_on_the_selection_set_not_the_test_set() -> None:
    from glia_edge.benchmarks.report import recommendation

    report = _report()
    assert "openvino int8" not in recommendation(report)  # fastest, and within the bound on the test set only
    report.rows[1].selection_spearman, report.rows[1].selection_max_delta_share = 0.999, 0.01
    assert recommendation(report).startswith("recommendation: openvino int8 (OpenVINO): 40.0 crops/s")
    report.rows[1].spearman = 0.5  # the test-set agreement plays no part
    assert recommendation(report).startswith("recommendation: openvino int8")


def test_selection_set_is_never_the_default_models_test_set(tmp_path: Path) -> None:
    from glia_edge.benchmarks.runner import BenchOptions, _eval_set, _selection_set

    opts = BenchOptions(eval_size=10)
    evalset, _ = _eval_set(opts, tmp_path)
    selection, notes = _selection_set(opts, tmp_path, None, evalset)
    assert "validation split" in selection.source and len(selection) == 10
    assert not set(selection.paths) & set(evalset.paths) and not any("shares" in n for n in notes)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        (calib / f"{i}.jpg").write_bytes(b"")
    other = BenchOptions(model=tmp_path / "m.safetensors", calib=calib, eval_size=3)
    selection, _ = _selection_set(other, tmp_path, calib, evalset)
    assert str(calib) in selection.source and len(selection) == 3


# -- 4: an unwritable output is one line -------------------------------------------------------------
def test_os_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from glia_edge.cli.common import cli_errors

    with pytest.raises(typer.Exit) as info:
        with cli_errors():
            raise NotADirectoryError(20, "Not a directory", "out/file.md/sub")
    assert info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == "error: out/file.md/sub: Not a directory"


@pytest.mark.parametrize("mode", [["--preset", "glia_vit_tiny", "--targets", "torch", "--precisions", "fp32"],
                                  ["--end-to-end", ARTIFACT, "--e2e-sizes", "64x48", "--frames", ""]])
def test_an_output_under_a_file_is_refused_before_any_work(tmp_path: Path, mode: list[str]) -> None:
    from glia_edge.cli import app

    (tmp_path / "file.md").write_text("x")
    result = CliRunner().invoke(app, ["bench", *mode, "--output", str(tmp_path / "file.md" / "sub")])
    assert result.exit_code == 2 and "it is a file" in _flat(result.output), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.md"]


# -- 5: an empty --e2e-files folder ------------------------------------------------------------------
def test_an_empty_e2e_files_folder_is_one_line(tmp_path: Path) -> None:
    from glia_edge.cli import app

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["bench", "--end-to-end", ARTIFACT, "--e2e-files", str(tmp_path / "empty"),
                                      "--e2e-sizes", "", "--frames", "", "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--e2e-files" in result.output and "no images found" in result.output, \
        result.output
    assert not (tmp_path / "out").exists()


# -- 6: --model must be a checkpoint -----------------------------------------------------------------
def test_a_model_that_is_not_a_checkpoint_is_refused_before_any_work(tmp_path: Path) -> None:
    from glia_edge.benchmarks.runner import BenchOptions, checkpoint_to_bench
    from glia_edge.cli import app
    from glia_edge.errors import CheckpointError

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "--model", ARTIFACT, "--targets", "torch", "--precisions", "fp32",
                                      "--output", str(out)])
    assert result.exit_code == 2 and "not a .safetensors checkpoint" in _flat(result.output), result.output
    assert not out.exists()
    with pytest.raises(CheckpointError, match="not a .safetensors checkpoint"):
        checkpoint_to_bench(BenchOptions(model=Path(ARTIFACT)), tmp_path)


# -- 7: options the mode would ignore ----------------------------------------------------------------
def test_options_the_chosen_mode_ignores_are_refused(tmp_path: Path) -> None:
    from glia_edge.cli import app

    result = CliRunner().invoke(app, ["bench", "--end-to-end", ARTIFACT, "--preset", "nope", "--targets", "foo",
                                      "--min-speedup", "99", "--output", str(tmp_path / "out")])
    flat = _flat(result.output)
    assert result.exit_code == 2 and "do not apply with --end-to-end" in flat, result.output
    assert all(name in flat for name in ("--preset", "--targets", "--min-speedup"))
    result = CliRunner().invoke(app, ["bench", "--e2e-count", "3", "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--e2e-count apply only with --end-to-end" in _flat(result.output)
    assert not (tmp_path / "out").exists()


# -- 8: no stale plot --------------------------------------------------------------------------------
def test_a_rerun_without_a_plot_removes_the_stale_one(tmp_path: Path) -> None:
    assert "png" in write_all(_report(), tmp_path)
    failed = BenchReport([BenchRow("torch fp32 eager", "torch", "fp32", status="load failed: x")], {}, "m", "c", {})
    assert "png" not in write_all(failed, tmp_path)
    assert not (tmp_path / "bench.png").exists()


# -- 10: the reproduce command spells out the threads ------------------------------------------------
def test_the_reproduce_command_spells_out_the_resolved_threads() -> None:
    import shlex

    from glia_edge.benchmarks.runner import BenchOptions, resolve_threads
    from glia_edge.cli.bench_cmd import _command

    args = shlex.split(_command(BenchOptions(model=Path("m.safetensors"))))
    assert args[args.index("--threads") + 1] == str(resolve_threads(None))
    for flag in ("--calib-size", "--openvino-modes", "--openvino-shapes", "--compile", "--memory", "--eval-size"):
        assert flag in args, flag
    assert "--threads 3" in _command(BenchOptions(threads=3))


# -- 11: bad inputs leave nothing behind --------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--images", "--calib", "--labels"])
def test_a_missing_input_names_its_option_and_creates_nothing(tmp_path: Path, flag: str) -> None:
    from glia_edge.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "--preset", "glia_vit_tiny", "--targets", "torch", "--precisions",
                                      "fp32", "--device", "cpu", flag, "/nonexistent", "--output", str(out)])
    assert result.exit_code == 2 and f"{flag}: /nonexistent not found" in _flat(result.output), result.output
    assert not out.exists()


# -- 13: a narrow console never cuts a number short ---------------------------------------------------
def test_the_console_table_wraps_instead_of_cutting_numbers() -> None:
    from rich.console import Console

    from glia_edge.cli.bench_cmd import _print

    buffer = io.StringIO()
    _print(_report(), {}, Console(file=buffer, width=80, force_terminal=False))
    text = buffer.getvalue()
    assert "…" not in text and "0.56" in text and "bench.md has them all" in text
    assert max(len(line) for line in text.splitlines()) <= 80
