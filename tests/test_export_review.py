"""Export review fixes: output folders never delete user files, the gate counts non-finite artifact
scores, auto gates the default model on its validation set, and one-line errors that name the input."""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from _export_fixtures import one_error_line, run_cli as run
from glia_edge.errors import AccuracyGateError, CalibrationError, OutputError


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- 1. an export folder is recognised by its exact file names --------------------------------------
def test_cli_openvino_export_into_the_checkpoints_folder_is_refused(tiny_checkpoint: Path, image_dir: Path,
                                                                    tmp_path: Path, no_work: None) -> None:
    run1 = tmp_path / "run1"
    run1.mkdir()
    shutil.copy(tiny_checkpoint, run1 / "model.safetensors")
    (run1 / "model.json").write_text("{}")
    (run1 / "model.txt").write_text("notes\n")
    before = _tree(run1)
    result = run("export", "-c", run1 / "model.safetensors", "-t", "openvino", "--calib", image_dir, "-o", run1)
    assert result.exit_code != 0
    assert str(run1) in one_error_line(result.output)
    assert _tree(run1) == before


@pytest.mark.parametrize("target,names,ok", [
    ("openvino", ["model.xml", "model.bin"], True),
    ("trt", ["model.trt.onnx", "model.trt.onnx.json", "model.engine", "model.engine.json"], True),
    ("openvino", ["model.xml", "model.bin", "model.txt"], False),
    ("openvino", ["model.safetensors"], False),
    ("trt", ["model.xml", "model.bin"], False),  # another target's export is not this one's
    ("openvino", ["model.json"], False),
])
def test_only_an_earlier_exports_exact_files_may_be_replaced(tmp_path: Path, target: str, names: list[str],
                                                             ok: bool) -> None:
    from glia_edge.export.exporter import check_output
    from glia_edge.formats import get_format

    out = tmp_path / "out"
    out.mkdir()
    for name in names:
        (out / name).write_text("x")
    if ok:
        assert check_output(out, get_format(target)) == out
    else:
        with pytest.raises(ValueError, match="holds other files than an export's for"):
            check_output(out, get_format(target))


def test_output_holding_the_checkpoint_is_refused(tmp_path: Path) -> None:
    from glia_edge.export.exporter import check_output
    from glia_edge.formats import get_format

    out = tmp_path / "empty"
    out.mkdir()
    with pytest.raises(ValueError, match="holds the checkpoint"):
        check_output(out, get_format("openvino"), out / "sub" / "model.safetensors")


# -- 2. non-finite artifact scores are disagreement ------------------------------------------------
class _Scorer:
    def __init__(self, scores: list[float]) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)
        self.meta = SimpleNamespace(score_spec=SimpleNamespace(range=100.0))

    def __enter__(self) -> "_Scorer":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def score_paths(self, paths: list[str], crops: int = 1) -> np.ndarray:
        return self.scores[: len(paths)]


def _fake_gate(monkeypatch: pytest.MonkeyPatch, got: list[float], want: list[float]) -> None:
    import glia_edge
    import glia_edge.runtimes.torch as torch_rt

    monkeypatch.setattr(glia_edge, "load", lambda *a, **k: _Scorer(got))
    monkeypatch.setattr(torch_rt, "TorchBackend", lambda *a, **k: _Scorer(want))


def test_gate_counts_artifact_nan_where_pytorch_scored(monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.export.gate import run_gate

    want = [10.0, 20.0, 30.0, 40.0, 50.0]
    _fake_gate(monkeypatch, [10.0, 20.0, 30.0, 40.0, float("inf")], want)
    paths = [Path(f"{i}.jpg") for i in range(5)]
    report = run_gate("a.onnx", "c.safetensors", paths)
    assert report is not None and report.nonfinite == 1 and report.failed_images == 0
    assert "non-finite" in report.summary()
    with pytest.raises(AccuracyGateError, match="non-finite scores for 1 of 5"):
        run_gate("a.onnx", "c.safetensors", paths, max_drop=0.5)


def test_gate_unreadable_images_stay_failed_not_nonfinite(monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.export.gate import run_gate

    _fake_gate(monkeypatch, [10.0, 20.0, 30.0, float("nan")], [10.0, 20.0, 30.0, float("nan")])
    report = run_gate("a.onnx", "c.safetensors", [Path(f"{i}.jpg") for i in range(4)], max_drop=0.5)
    assert report is not None and report.nonfinite == 0 and report.failed_images == 1


# -- 3, 5. auto: the default model's validation set; the real error when nothing was measured --------
def test_auto_default_model_gates_on_its_validation_set_and_reports_the_real_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, image_dir: Path) -> None:
    import glia_edge.weights as weights
    from glia_edge.export import exporter
    from glia_edge.export.auto import export_auto

    def default_set_csv(name: str) -> Path:  # a folder per set stands in for its labels.csv
        folder = tmp_path / "sets" / name
        folder.mkdir(parents=True, exist_ok=True)
        for p in sorted(image_dir.glob("*.jpg"))[:4]:
            shutil.copy(p, folder / p.name)
        return folder

    seen: list[Any] = []

    def fake_export(checkpoint: Any, **kwargs: Any) -> None:
        seen.append(kwargs.get("val"))
        raise CalibrationError("calib.csv: none of 4 images could be read")

    monkeypatch.setattr(weights, "default_set_csv", default_set_csv)
    monkeypatch.setattr(exporter, "export", fake_export)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AccuracyGateError) as err:
        export_auto(None, target="onnx", output=tmp_path / "m.onnx")
    assert seen and all(Path(v) == tmp_path / "sets" / "validation" for v in seen)
    assert "none of 4 images could be read" in str(err.value) and "Spearman" not in str(err.value)


def test_auto_never_picks_a_candidate_with_nonfinite_scores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            tiny_checkpoint: Path, image_dir: Path) -> None:
    import glia_edge
    from glia_edge.export import exporter
    from glia_edge.export.auto import export_auto
    from glia_edge.export.gate import GateReport

    def fake_export(checkpoint: Any, *, precision: str, output: Path, **kwargs: Any) -> Any:
        output.write_text("x")
        gate = GateReport(images=20, spearman=1.0, max_abs_delta=0.0, max_rel_delta=0.0, drop=0.0)
        object.__setattr__(gate, "nonfinite", 2)  # perfect on the finite scores, NaN on two images
        return SimpleNamespace(path=output, meta=SimpleNamespace(format="onnx"), gate_report=gate, notes=())

    backend = SimpleNamespace(predict_batch=lambda b: np.zeros(len(b)), close=lambda: None,
                              preprocess_config=SimpleNamespace(crop_size=8))
    monkeypatch.setattr(exporter, "export", fake_export)
    monkeypatch.setattr(glia_edge, "load", lambda *a, **k: backend)
    with pytest.raises(AccuracyGateError, match="no onnx candidate met"):
        export_auto(tiny_checkpoint, target="onnx", output=tmp_path / "m.onnx", val=image_dir, rounds=1)
    assert not (tmp_path / "m.onnx").exists()


# -- 4. fewer than 3 gate images ----------------------------------------------------------------
def test_two_gate_images_skip_the_gate_with_a_note(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path) -> None:
    from glia_edge.export import export

    result = export(tiny_checkpoint, target="onnx", calib=image_dir, calib_size=2, output=tmp_path / "m.onnx")
    assert result.gate_report is None and result.path.is_file()
    assert any("gate skipped" in n for n in result.notes)


def test_max_drop_with_two_gate_images_fails_before_any_work(tiny_checkpoint: Path, image_dir: Path,
                                                             tmp_path: Path, no_work: None) -> None:
    from glia_edge.export import export

    with pytest.raises(AccuracyGateError, match="--max-drop.*at least 3.*--calib-size 2"):
        export(tiny_checkpoint, target="onnx", calib=image_dir, calib_size=2, max_drop=0.1,
               output=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


# -- 6. a non-UTF-8 calibration CSV -------------------------------------------------------------
def test_non_utf8_calibration_csv_names_the_file(tmp_path: Path) -> None:
    from glia_edge.export.calibration import read_image_list

    csv = tmp_path / "calib.csv"
    csv.write_bytes(b"path,score\n\xff\xfeimg.jpg,3\n")
    with pytest.raises(CalibrationError, match=r"calib\.csv: not a UTF-8 CSV"):
        read_image_list(csv)


# -- 7. a symlinked output folder -----------------------------------------------------------------
def test_replace_path_replaces_a_linked_folders_target_and_leaves_nothing(tmp_path: Path) -> None:
    from glia_edge.atomic import replace_path, staging_dir

    real = tmp_path / "store" / "export"
    real.mkdir(parents=True)
    (real / "model.xml").write_text("old")
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    with staging_dir(link) as work:
        assert work.parent == real.parent  # staged beside the target: a same-filesystem rename
        (work / "out").mkdir()
        (work / "out" / "model.xml").write_text("new")
        replace_path(work / "out", link)
    assert link.is_symlink() and (link / "model.xml").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "store"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["export"]


# -- 8. output paths checked up front, named as given --------------------------------------------------
@pytest.mark.parametrize("target,make,words", [
    ("onnx", lambda t: (t / "afile").write_text("x") and t / "afile" / "x.onnx", "it is a file"),
    ("onnx", lambda t: Path("/proc/x.onnx"), "cannot write in /proc"),
    ("openvino", lambda t: Path("."), "needs a file or folder name"),
])
def test_cli_bad_output_is_one_line_naming_it(tiny_checkpoint: Path, image_dir: Path, tmp_path: Path,
                                              no_work: None, monkeypatch: pytest.MonkeyPatch, target: str,
                                              make: Any, words: str) -> None:
    monkeypatch.chdir(tmp_path)
    out = make(tmp_path)
    result = run("export", "-c", tiny_checkpoint, "-t", target, "-o", out)
    line = one_error_line(result.output)
    assert result.exit_code != 0 and words in line and str(out) in line and ".tmp" not in line


def test_check_output_names_the_given_path(tmp_path: Path) -> None:
    from glia_edge.export.exporter import check_output
    from glia_edge.formats import get_format

    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=f"^{tmp_path}/afile/x.onnx: cannot create folders"):
        check_output(tmp_path / "afile" / "x.onnx", get_format("onnx"))


# -- 9. the FP16 converter's INFO protobuf dumps -----------------------------------------------------
def test_fp16_converter_info_logs_are_held_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    import onnx
    from onnx import TensorProto, helper
    import onnxruntime.transformers.float16 as f16

    from glia_edge.export.quantize import onnx_to_fp16

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    real = f16.convert_float_to_float16

    def noisy(model: Any, **kwargs: Any) -> Any:
        f16.logger.info("graph: %s", "protobuf dump")
        return real(model, **kwargs)

    monkeypatch.setattr(f16, "convert_float_to_float16", noisy)
    with caplog.at_level(logging.INFO):
        onnx_to_fp16(src, tmp_path / "m16.onnx")
    assert not [r for r in caplog.records if r.name == "onnxruntime.transformers.float16"]
    assert logging.getLogger("onnxruntime.transformers.float16").level == logging.NOTSET  # restored


# -- 10. NNCF telemetry -------------------------------------------------------------------------------
def test_nncf_telemetry_is_opted_out_before_nncf_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.export.openvino import NNCF_TELEMETRY_OFF_ENV, no_nncf_telemetry

    definitions = pytest.importorskip("nncf.definitions")
    assert definitions.NNCF_CI_ENV_VAR_NAME == NNCF_TELEMETRY_OFF_ENV  # the variable nncf's telemetry reads
    monkeypatch.delenv(NNCF_TELEMETRY_OFF_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "nncf", raising=False)
    no_nncf_telemetry()
    assert os.environ[NNCF_TELEMETRY_OFF_ENV] == "1"


# -- 11. errors name the CLI options -------------------------------------------------------------------
@pytest.mark.parametrize("flag,value", [("--calib-size", "0"), ("--crops", "3")])
def test_cli_errors_name_the_option(tiny_checkpoint: Path, tmp_path: Path, no_work: None, flag: str,
                                    value: str) -> None:
    result = run("export", "-c", tiny_checkpoint, "-t", "onnx", "-o", tmp_path / "m.onnx", flag, value)
    assert result.exit_code != 0 and f"{flag} must be" in one_error_line(result.output)
