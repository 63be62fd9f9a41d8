"""``glia-edge build-engine`` on a device with only the TensorRT extra, and the DeepStream configs.

A real ``--target trt --precision fp16 --score-axis`` export (the README's DeepStream recipe; no
engine: no TensorRT here) writes ``model.trt.onnx`` and its metadata sidecar. ``build-engine``
then runs in a fresh process where torch, onnx, onnxruntime and openvino cannot be imported and
``tensorrt``/``cuda`` are the recording stand-in (``_trt_standin``), end to end to an engine file
and its sidecar. The shipped ``deploy/deepstream`` configs are checked against that export's
metadata.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import _trt_standin as standin
from glia_edge.cli import app

TESTS = Path(__file__).parent

#: A device with only the TensorRT extra: none of these import; tensorrt and cuda are the stand-in.
TENSORRT_ONLY = """
import importlib.abc, json, sys
sys.path.insert(0, sys.argv[1])
BLOCKED = ("torch", "onnx", "onnxruntime", "openvino", "onnxscript", "onnxslim", "nncf")
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed on this device")
sys.meta_path.insert(0, _Blocked())
import _trt_standin
settings = _trt_standin.install_into_sys_modules(_trt_standin.Settings(graph_precision=sys.argv[2]))
from glia_edge.cli import main
sys.argv = ["glia-edge", "build-engine", *sys.argv[3:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
imported = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
print("RESULT " + json.dumps({"code": code, "imported": imported, "shapes": settings.named("set_shape"),
                              "networks": settings.named("create_network")}))
"""


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trt_fp16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model exported for TensorRT at FP16 without an engine (as on a machine with no GPU)."""
    out = tmp_path_factory.mktemp("trt") / "glia.fp16.trt"
    result = run("export", "--target", "trt", "--precision", "fp16", "--score-axis", "--no-engine", "--output", out)
    assert result.exit_code == 0, result.output
    return out


def test_export_writes_the_onnx_metadata_sidecar(trt_fp16: Path) -> None:
    from glia_edge.formats import read_meta, read_sidecar

    assert sorted(p.name for p in trt_fp16.iterdir()) == ["model.trt.onnx", "model.trt.onnx.json"]
    onnx = trt_fp16 / "model.trt.onnx"
    side, props = read_sidecar(onnx), read_meta(onnx)
    assert side.to_dict() == props.to_dict() and side.format == "onnx" and side.precision == "fp16"


def test_metadata_reads_from_the_sidecar_without_onnx(trt_fp16: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.formats import read_sidecar

    for name in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # a device with only TensorRT: neither imports
    result = run("info", trt_fp16 / "model.trt.onnx")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["precision"] == read_sidecar(trt_fp16 / "model.trt.onnx").precision


def test_build_engine_with_only_the_tensorrt_extra(trt_fp16: Path, tmp_path: Path) -> None:
    from glia_edge.formats import read_sidecar

    engine = tmp_path / "glia.engine"
    proc = subprocess.run([sys.executable, "-c", TENSORRT_ONLY, str(TESTS), "fp16", str(trt_fp16 / "model.trt.onnx"),
                           "--min-batch", "1", "--opt-batch", "4", "--max-batch", "16", "-o", str(engine)],
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, proc.stdout + proc.stderr
    result = json.loads(line[len("RESULT "):])
    assert result["code"] == 0, proc.stdout + proc.stderr
    assert result["imported"] == []  # torch, onnx, onnxruntime, openvino: none needed
    assert result["shapes"] == [["images", [1, 3, 224, 224], [4, 3, 224, 224], [16, 3, 224, 224]]]
    assert result["networks"] == [[1 << int(standin.NetworkDefinitionCreationFlag.STRONGLY_TYPED)]]
    assert engine.read_bytes().startswith(standin.ENGINE_MAGIC)
    meta, source = read_sidecar(engine), read_sidecar(trt_fp16 / "model.trt.onnx")
    assert meta.format == "trt" and meta.precision == "fp16"
    assert meta.source_checkpoint_sha256 == source.source_checkpoint_sha256
    assert meta.export["engine"] == {"min_batch": 1, "opt_batch": 4, "max_batch": 16, "workspace_gib": 4.0,
                                     "timing_cache": None}
    assert meta.export["fp32_ops"] == source.export["fp32_ops"]
    assert "wrote " in proc.stdout and "fp16" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--precision", "int8"], "is fp16 (its metadata), not int8"),
    (["--precision", "bf16"], "--precision must be one of fp32, fp16, int8"),
    (["--min-batch", "8", "--opt-batch", "4"], "need 1 <= min_batch <= opt_batch <= max_batch"),
    (["--max-batch", "0"], "need 1 <= min_batch"),
    (["--max-batch", "lots"], "--max-batch must be an integer"),
    (["--workspace", "-1"], "workspace_gib must be positive"),
    (["--workspace", "inf"], "workspace_gib must be positive and finite"),
    (["--workspace", "1e30"], "workspace_gib must be between one byte and"),
])
def test_bad_arguments_are_one_line_errors(trt_fp16: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
                                           message: str) -> None:
    standin.install(monkeypatch, standin.Settings(graph_precision="fp16"))
    result = run("build-engine", trt_fp16 / "model.trt.onnx", *args)
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (trt_fp16 / "model.engine").exists()


def test_build_engine_without_a_sidecar_or_onnx_says_what_to_copy(trt_fp16: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    standin.install(monkeypatch)
    lone = tmp_path / "model.trt.onnx"
    shutil.copyfile(trt_fp16 / "model.trt.onnx", lone)
    for name in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # neither can be imported
    result = run("build-engine", lone)
    assert result.exit_code == 2 and "no metadata sidecar model.trt.onnx.json" in result.output
    assert not (tmp_path / "model.engine").exists()


# -- DeepStream configs ------------------------------------------------------------------------
DEEPSTREAM = TESTS.parent / "deploy" / "deepstream"
NETWORK_MODE = {"fp32": "0", "int8": "1", "fp16": "2"}


def _ini(name: str):
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    assert parser.read(DEEPSTREAM / name), f"cannot read {name}"
    return parser


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(";")]


def test_nvinfer_config_matches_the_exported_metadata(trt_fp16: Path) -> None:
    from glia_edge.formats import read_sidecar

    meta = read_sidecar(trt_fp16 / "model.trt.onnx")
    cfg = _ini("config_infer_glia.txt")["property"]
    size = meta.preprocess_config.crop_size
    assert cfg["model-engine-file"].endswith("model.engine")
    # A prebuilt strongly typed engine only: no model file nvinfer could build a weakly typed engine from.
    assert not {"onnx-file", "uff-file", "tlt-encoded-model", "model-file", "proto-file"} & set(cfg)
    assert cfg["network-mode"] == NETWORK_MODE[meta.precision]  # the TensorRT-ready ONNX's own precision
    assert cfg["output-blob-names"] == meta.output_name
    assert meta.export["output_shape"] == ["batch", 1]  # --score-axis: nvinfer gets a 1-element layer
    assert cfg["infer-dims"] == f"3;{size};{size}" and cfg["network-type"] == "100" and cfg["output-tensor-meta"] == "1"
    _check_input(meta, color=cfg["model-color-format"], scale=cfg["net-scale-factor"], offsets=cfg["offsets"])


def test_nvdspreprocess_config_matches_the_exported_metadata(trt_fp16: Path) -> None:
    import importlib.util

    from glia_edge.formats import read_sidecar

    meta = read_sidecar(trt_fp16 / "model.trt.onnx")
    ini = _ini("config_preprocess_glia.txt")
    cfg, user = ini["property"], ini["user-configs"]
    size = meta.preprocess_config.crop_size
    assert cfg["tensor-name"] == meta.input_name
    assert cfg["network-input-shape"] == f"1;3;{size};{size}"
    assert cfg["processing-width"] == cfg["processing-height"] == str(size)
    assert cfg["network-input-order"] == "0" and meta.input["layout"] == "NCHW"
    assert cfg["tensor-data-type"] == "0" and meta.input["dtype"] == "float32"
    _check_input(meta, color=cfg["network-color-format"], scale=user["pixel-normalization-factor"],
                 offsets=user["offsets"])
    spec = importlib.util.spec_from_file_location("glia_rois", DEEPSTREAM / "glia_rois.py")
    rois = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rois)
    line = rois.roi_line(rois.deepstream_rois(1920, 1080, trt_fp16 / "model.trt.onnx"))
    assert ini["group-0"]["roi-params-src-0"] == line.split("=", 1)[1]


def _check_input(meta, *, color: str, scale: str, offsets: str) -> None:
    """RGB (0), [0, 1] (x/255), no offsets: the graph applies its own mean/std, never twice."""
    assert meta.input["channels"] == "RGB" and color == "0"
    low, high = meta.input["range"]
    assert (low, high) == (0.0, 1.0) and abs(float(scale) - 1 / 255) < 1e-12
    assert meta.input["normalization_in_graph"]["mean"] and _floats(offsets) == [0.0, 0.0, 0.0]
