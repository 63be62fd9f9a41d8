"""Export arguments checked before any work, and what an export records in its artifact's metadata."""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from _export_fixtures import one_error_line, run_cli as run


# -- 1. --max-drop ---------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "auto"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 2.5])
def test_max_drop_out_of_range_is_refused_before_any_work(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path,
                                                          no_work: None, precision: str, value: float) -> None:
    from glia_edge.export import export

    with pytest.raises(ValueError, match=r"--max-drop must be between 0 and 2"):
        export(tiny_checkpoint, target="onnx", precision=precision, val=image_dir, max_drop=value,
               output=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_auto_checks_max_drop_itself(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path,
                                            no_work: None) -> None:
    from glia_edge.export.auto import export_auto

    with pytest.raises(ValueError, match="--max-drop"):
        export_auto(tiny_checkpoint, target="onnx", output=tmp_path / "m.onnx", val=image_dir, max_drop=float("nan"))
    assert list(tmp_path.iterdir()) == []


def test_cli_max_drop_nan_is_one_line_exit_2(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path,
                                             no_work: None) -> None:
    for value in ("nan", "-1"):
        result = run("export", "-c", tiny_checkpoint, "-t", "onnx", "--val", image_dir, "--max-drop", value,
                     "-o", tmp_path / "m.onnx")
        assert result.exit_code == 2
        assert "--max-drop must be between 0 and 2" in one_error_line(result.output)
    assert list(tmp_path.iterdir()) == []


# -- 2. bad values, --precision auto checked before its candidates ------------------------------
def test_batch_zero_is_a_value_error_and_a_wrong_type_a_type_error() -> None:
    from glia_edge.export.options import export_options

    with pytest.raises(ValueError, match="--batch must be a positive integer, got 0"):
        export_options("onnx", batch=0)
    with pytest.raises(TypeError, match="batch must be a positive integer"):
        export_options("onnx", batch="8")


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_cli_batch_zero_is_one_line_exit_2(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path, no_work: None,
                                           precision: str) -> None:
    result = run("export", "-c", tiny_checkpoint, "-t", "onnx", "-p", precision, "--calib", image_dir,
                 "--batch", "0", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2
    assert "--batch must be a positive integer, got 0" in one_error_line(result.output)


@pytest.mark.parametrize("options, words", [({"batch": 0}, "--batch must be a positive integer"),
                                            ({"calib_size": 0}, "--calib-size must be a positive integer"),
                                            ({"crops": 3}, "crops must be 1, 5 or 9")])
def test_auto_checks_its_arguments_before_the_candidates(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path,
                                                         no_work: None, options: dict, words: str) -> None:
    from glia_edge.export import export

    with pytest.raises(ValueError, match=words):  # not "no onnx candidate met the bound"
        export(tiny_checkpoint, target="onnx", precision="auto", calib=image_dir, output=tmp_path / "m.onnx",
               **options)
    assert list(tmp_path.iterdir()) == []


# -- 3. auto gates every candidate on the same images -------------------------------------------
def test_auto_gate_images_are_the_val_set_else_the_exports_calibration_subset(tiny_checkpoint: Path,
                                                                              image_dir: Path, tmp_path: Path) -> None:
    from glia_edge.checkpoint import read_checkpoint_meta
    from glia_edge.export.auto import _gate_images
    from glia_edge.export.calibration import CalibrationSet, read_image_list

    preprocess = read_checkpoint_meta(tiny_checkpoint).preprocess_config
    used = CalibrationSet.from_path(image_dir, preprocess, size=5).images
    assert len(read_image_list(image_dir)) > 5
    assert _gate_images({"calib": image_dir, "calib_size": 5}).paths == used.paths
    val = tmp_path / "val"
    val.mkdir()
    for p in sorted(image_dir.glob("*.jpg"))[:4]:
        shutil.copy(p, val / p.name)
    assert len(_gate_images({"calib": image_dir, "calib_size": 5, "val": val})) == 4
    assert _gate_images({}) is None


def test_auto_default_float_precision_is_resolved() -> None:
    from glia_edge.export.auto import _default_float

    int8 = SimpleNamespace(format="openvino", precision="int8", export={})
    assert _default_float(int8) in ("fp32", "bf16")  # never the unresolved "bf16-if-supported"
    assert _default_float(SimpleNamespace(format="onnx", precision="int8", export={})) is None


# -- 4. the gate's numbers travel with the artifact ----------------------------------------------
def test_gate_report_is_recorded_in_the_artifact(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path) -> None:
    from glia_edge.export import export
    from glia_edge.formats import read_meta

    result = export(tiny_checkpoint, target="onnx", val=image_dir, max_drop=0.5, output=tmp_path / "m.onnx")
    gate = read_meta(tmp_path / "m.onnx").export["gate"]
    assert gate["spearman"] == pytest.approx(result.gate_report.spearman)
    assert gate["images"] == result.gate_report.images and gate["drop"] == pytest.approx(result.gate_report.drop)
    assert gate["validation"] == str(image_dir) and gate["validation_kind"] == "val"
    assert result.meta.export["gate"] == gate


# -- 5. calibration images used, not listed -------------------------------------------------------
def test_calibration_metadata_counts_the_images_decoded(tiny_checkpoint: Path, image_dir: Path,
                                                        tmp_path: Path) -> None:
    from glia_edge.checkpoint import read_checkpoint_meta
    from glia_edge.export.calibration import CalibrationSet
    from glia_edge.export.exporter import artifact_meta
    from glia_edge.export.options import export_options

    calib = tmp_path / "calib"
    calib.mkdir()
    for p in sorted(image_dir.glob("*.jpg"))[:4]:
        shutil.copy(p, calib / p.name)
    (calib / "broken.jpg").write_bytes(b"not a jpeg")
    source = read_checkpoint_meta(tiny_checkpoint)
    cs = CalibrationSet.from_path(calib, source.preprocess_config, size=10)
    meta = artifact_meta(source, target="onnx", precision="int8", options=export_options("onnx"),
                         checkpoint_sha256="0" * 64, calib=cs, fusions={})
    assert meta.export["calibration"]["images"] == 4 and meta.export["calibration"]["skipped"] == 1


# -- 6. TensorRT engine options recorded, printed and used by build-engine -----------------------
def test_trt_engine_options_are_recorded_and_build_engine_defaults_to_them(
        tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.export import export, tensorrt
    from glia_edge.formats import read_sidecar

    out = tmp_path / "m.trt"
    result = export(tiny_checkpoint, target="trt", batch=4, max_batch=16, build_engine=False, output=out)
    onnx_path = out / "model.trt.onnx"
    recorded = read_sidecar(onnx_path).export["engine_options"]
    assert recorded == {"min_batch": 1, "opt_batch": 4, "max_batch": 16, "workspace_gib": 4.0}
    assert "--min-batch 1 --opt-batch 4 --max-batch 16 --workspace 4" in result.notes[0]

    built: list = []

    def fake_build(onnx: Path, engine: Path, *, precision: str, options, meta) -> Path:
        built.append(options)
        Path(engine).write_bytes(b"engine")
        return Path(engine)

    monkeypatch.setattr(tensorrt, "onnx_to_engine", fake_build)
    assert run("build-engine", onnx_path).exit_code == 0
    assert (built[-1].min_batch, built[-1].opt_batch, built[-1].max_batch) == (1, 4, 16)
    assert run("build-engine", onnx_path, "--max-batch", "8").exit_code == 0  # a flag overrides the record
    assert (built[-1].opt_batch, built[-1].max_batch) == (4, 8)
    result = run("build-engine", onnx_path, "--max-batch", "2")  # below the recorded opt batch
    assert result.exit_code == 2 and "min_batch <= opt_batch <= max_batch" in one_error_line(result.output)


# -- 7. NNCF writes to stderr ----------------------------------------------------------------------
def test_nncf_output_goes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("nncf")
    from glia_edge.export.openvino import _stdout_to_stderr

    nncf_log = logging.getLogger("nncf")
    before = [getattr(h, "stream", None) for h in nncf_log.handlers]
    capfd.readouterr()
    with _stdout_to_stderr():
        print("progress-bar")
        nncf_log.info("INFO-line")
    out, err = capfd.readouterr()
    assert "progress-bar" not in out and "INFO-line" not in out
    assert "progress-bar" in err
    assert [getattr(h, "stream", None) for h in nncf_log.handlers] == before


# -- 8. options a target would ignore are refused --------------------------------------------------
@pytest.mark.parametrize("target, precision, options, words", [
    ("onnx", None, {"smooth_quant_alpha": 0.1}, "smooth_quant_alpha does not apply to target onnx"),
    ("onnx", None, {"int8_graph": "fp16"}, "int8_graph does not apply to target onnx"),
    ("trt", "fp16", {"int8_graph": "fp16"}, "int8_graph does not apply to target trt fp16"),
    ("openvino", "int8", {"per_channel": False}, "per_channel does not apply to target openvino"),
    ("onnx", "fp32", {"per_channel": False}, "per_channel does not apply to target onnx fp32"),
    ("onnx", None, {"max_batch": 16}, "max_batch does not apply to target onnx"),
    ("onnx", None, {"build_engine": True}, "build_engine (--engine/--no-engine) applies to target trt only"),
])
def test_options_the_target_ignores_are_refused(target: str, precision: str | None, options: dict,
                                                words: str) -> None:
    from glia_edge.export.options import export_options

    with pytest.raises(ValueError, match=re.escape(words)):
        export_options(target, precision=precision, **options)


def test_options_that_apply_are_taken() -> None:
    from glia_edge.export.options import export_options, option_applies

    assert export_options("openvino", precision="auto", smooth_quant_alpha=0.2).openvino.smooth_quant_alpha == 0.2
    assert export_options("trt", precision="int8", int8_graph="fp16").trt.int8_graph == "fp16"
    assert export_options("trt", build_engine=False, max_batch=16).engine.max_batch == 16
    assert option_applies("per_channel", "onnx", "auto") and not option_applies("per_channel", "onnx", "fp16")


@pytest.mark.parametrize("args, words", [(["-t", "onnx", "--engine"], "applies to target trt only"),
                                         (["-t", "trt", "-p", "fp16", "--int8-graph", "fp16"],
                                          "int8_graph does not apply to target trt fp16")])
def test_cli_refuses_options_the_target_ignores(tiny_checkpoint: Path, tmp_path: Path, no_work: None,
                                                args: list, words: str) -> None:
    result = run("export", "-c", tiny_checkpoint, *args, "-o", tmp_path / "out")
    assert result.exit_code == 2 and words in one_error_line(result.output)


# -- 10. interrupted exports leave nothing behind --------------------------------------------------
def test_auto_builds_in_a_staging_folder_that_remove_stale_knows(tiny_checkpoint: Path, image_dir: Path,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.export import exporter
    from glia_edge.export.auto import export_auto

    seen: list[str] = []

    def interrupted(*args: object, **kwargs: object) -> None:
        seen.extend(p.name for p in tmp_path.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_auto(tiny_checkpoint, target="onnx", output=tmp_path / "m.onnx", calib=image_dir)
    assert len(seen) == 1 and re.fullmatch(r"\.m\.onnx\.[a-z0-9_]{8}\.tmp", seen[0]), seen  # atomic.staging_dir
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("how, code", [("sigterm", 143), ("ctrl-c", 130)])
def test_cli_export_interrupted_exits_with_the_signal_code(tiny_checkpoint: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, how: str,
                                                           code: int) -> None:
    import time

    import glia_edge.export

    def stopped(*args: object, **kwargs: object) -> None:
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt the export")

    monkeypatch.setattr(glia_edge.export, "export", stopped)
    result = run("export", "-c", tiny_checkpoint, "-t", "onnx", "-o", tmp_path / "m.onnx")
    assert result.exit_code == code, result.output
    assert ("terminated" if code == 143 else "interrupted") in result.output
    assert signal.getsignal(signal.SIGTERM) is not None and list(tmp_path.iterdir()) == []
