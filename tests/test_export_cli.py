"""``glia-edge export`` and ``glia-edge build-engine`` as users type them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from _export_fixtures import CALIB_SIZE, artifact_scores, reference_scores, spearman
from glia_edge.cli import app


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trt_int8(tiny_checkpoint: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cli") / "tiny.int8.trt"
    result = run("export", "--checkpoint", tiny_checkpoint, "--target", "trt", "--precision", "int8",
                 "--calib", image_dir, "--calib-size", CALIB_SIZE, "--val", image_dir, "--output", out)
    return result, out


def test_trt_int8_writes_a_tensorrt_ready_qdq_onnx(trt_int8, tiny_checkpoint: Path, image_dir: Path) -> None:
    from glia_edge.export import check_trt_qdq, tensorrt_unavailable_reason

    result, out = trt_int8
    assert result.exit_code == 0, result.output
    onnx_path = out / "model.trt.onnx"
    assert check_trt_qdq(onnx_path) == []
    # It runs on ONNX Runtime here, within the INT8 bound.
    got, want = artifact_scores(onnx_path, image_dir), reference_scores(tiny_checkpoint, image_dir)
    assert spearman(got, want) >= 0.99
    if tensorrt_unavailable_reason() is not None:
        assert sorted(p.name for p in out.iterdir()) == ["model.trt.onnx", "model.trt.onnx.json"]


def test_cli_says_why_no_engine_and_how_to_build_it(trt_int8) -> None:
    from glia_edge.runtimes.tensorrt import REASON_KINDS, unavailable_error

    err = unavailable_error()
    if err is None:
        pytest.skip("tensorrt and a GPU are present: the engine is built")
    assert err.kind in REASON_KINDS  # no TensorRT, too old, no cuda-python, no driver or GPU ...
    result, out = trt_int8
    text = " ".join(result.output.split())
    assert "No TensorRT engine was built" in text and " ".join(str(err).split()) in text
    assert f"glia-edge build-engine {out / 'model.trt.onnx'} --precision int8" in text


def test_summary_shows_artifact_precision_and_gate(trt_int8) -> None:
    result, out = trt_int8
    text = result.output
    for expected in ("model.trt.onnx", "int8", "Spearman vs PyTorch", "max |delta score|", "calibration"):
        assert expected in text, text


def test_onnx_fp32_export_with_labelled_val_csv(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path) -> None:
    from conftest import image_level

    images = sorted(image_dir.glob("*.jpg"))
    rows = "\n".join(f"{p},{100 - 20 * image_level(p)}" for p in images)
    (tmp_path / "val.csv").write_text("path,mos\n" + rows + "\n")
    out = tmp_path / "m.onnx"
    result = run("export", "-c", tiny_checkpoint, "-t", "onnx", "-p", "fp32", "--val", tmp_path / "val.csv",
                 "-o", out, "--max-drop", "0.001", "--static", "--batch", "4")
    assert result.exit_code == 0, result.output
    assert "SRCC / PLCC vs labels" in result.output
    got = artifact_scores(out, image_dir)  # a static-batch model: the runtime pads the last batch
    np.testing.assert_allclose(got, reference_scores(tiny_checkpoint, image_dir), atol=1e-4 * 100)


def test_max_drop_failure_exits_nonzero_and_writes_nothing(tiny_checkpoint: Path, image_dir: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.export import exporter

    # A gate that measures a large drop (as for a wrecked INT8 model) must stop the export.
    real = exporter.run_gate

    def strict_gate(*args, **kwargs):
        kwargs["max_drop"] = -1.0  # no artifact can pass: exercise the failure path end to end
        return real(*args, **kwargs)

    monkeypatch.setattr(exporter, "run_gate", strict_gate)
    out = tmp_path / "m.onnx"
    result = run("export", "-c", tiny_checkpoint, "-t", "onnx", "--val", image_dir, "-o", out, "--max-drop", "0.5")
    assert result.exit_code == 2
    assert "accuracy gate failed" in result.output
    assert list(tmp_path.iterdir()) == []


def test_bad_precision_and_missing_checkpoint_are_one_line_errors(tmp_path: Path) -> None:
    result = run("export", "-c", tmp_path / "nope.safetensors", "-t", "onnx")
    assert result.exit_code == 2 and "checkpoint not found" in result.output
    result = run("export", "-c", tmp_path / "nope.safetensors", "-t", "onnx", "-p", "bf16")
    assert result.exit_code != 0 and "bf16" in result.output
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.safetensors").write_bytes(b"")
    result = run("export", "-c", tmp_path / "run", "-t", "onnx")  # a run folder, not its checkpoint
    assert result.exit_code == 2 and "is a folder: pass a checkpoint file in it (best.safetensors)" in result.output


def test_an_output_that_is_not_an_export_is_refused_before_exporting(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The export replaces what is at --output: a user's folder or a file is never taken for an old export."""
    user = tmp_path / "userdir"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("precious")
    (tmp_path / "afile").write_text("")
    for out, words in [(user, "holds other files than an export's"), (tmp_path / "afile", "is a file"),
                       (tmp_path / "m.onnx", None)]:
        if words is None:  # a folder named like the one-file target
            (tmp_path / "m.onnx").mkdir()
            words = "is a folder"
        result = run("export", "-c", tiny_checkpoint, "-t", "openvino" if out != tmp_path / "m.onnx" else "onnx",
                     "-o", out)
        assert result.exit_code == 2 and words in " ".join(result.output.replace("│", " ").split()), result.output
    assert (user / "notes.txt").read_text() == "precious" and (user / "sub").is_dir()
    old = tmp_path / "old_export"  # a folder of only an export's files is replaced
    old.mkdir()
    (old / "model.xml").write_text("<old/>")
    result = run("export", "-c", tiny_checkpoint, "-t", "openvino", "-o", old)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in old.iterdir()) == ["model.bin", "model.xml"]


def test_export_without_checkpoint_uses_the_default_model_and_its_calibration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No -c: the packaged model; INT8 with no --calib: calibration photos made from its training set."""
    from glia_edge.meta import sha256_file
    from glia_edge.formats import read_meta
    from glia_edge.weights import default_checkpoint

    monkeypatch.setenv("GLIA_EDGE_CACHE", str(tmp_path / "cache"))
    result = run("export", "-t", "onnx", "-p", "int8", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    meta = read_meta(tmp_path / "m.onnx")
    assert meta.preset == "glia_vit_nano" and meta.precision == "int8"
    assert meta.source_checkpoint_sha256 == sha256_file(default_checkpoint()) and meta.calibration_sha256
    assert len(list((tmp_path / "cache").glob("glia_vit_nano.synthetic.calibration-*/labels.csv"))) == 1


def test_info_on_a_tensorrt_export_folder_names_the_file_to_open(trt_int8) -> None:
    _, folder = trt_int8
    result = run("info", folder)
    assert result.exit_code == 2 and "open a file in it (model.trt.onnx)" in result.output


def test_build_engine_without_tensorrt_says_so(trt_int8) -> None:
    from glia_edge.runtimes.tensorrt import unavailable_error

    err = unavailable_error()
    if err is None:
        pytest.skip("tensorrt and a GPU are present")
    _, out = trt_int8
    result = run("build-engine", out / "model.trt.onnx", "--max-batch", "8")
    assert result.exit_code == 2 and " ".join(str(err).split()) in " ".join(result.output.split())
    assert not (out / "model.engine").exists()
