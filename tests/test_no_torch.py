"""A camera box installs only ``glia-edge[onnxruntime]`` or ``[openvino]``: loading and running those
artifacts, through ``glia_edge.load`` or ``glia-edge score``, must never import torch.

The artifacts are exported in this (torch-using) process; the checks run in fresh subprocesses.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import glia_edge

from _runtimes_fixtures import exported

#: Makes ``import torch`` fail, as on a box where torch is not installed.
BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is not installed on this box ({name})")
sys.meta_path.insert(0, _NoTorch())
"""

LOAD_AND_RUN = """
import json, sys
import glia_edge
artifacts, image = json.loads(sys.argv[1]), sys.argv[2]
scores = {}
for path in artifacts:
    with glia_edge.load(path) as model:
        scores[path] = [type(model).__name__, float(model.predict(image)[0])]
torch_modules = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not torch_modules, f"torch was imported: {torch_modules[:5]}"
print(json.dumps(scores))
"""

SCORE_CLI = """
import sys
from glia_edge.cli import main
sys.argv = ["glia-edge", "score", "-f", "json", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
assert "torch" not in sys.modules, "glia-edge score imported torch"
sys.exit(code)
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def artifacts(tiny_checkpoint: Path) -> dict[str, Path]:
    return {"OnnxRuntimeBackend": exported(tiny_checkpoint, "onnx"),
            "OpenVinoBackend": exported(tiny_checkpoint, "openvino")}


@pytest.mark.parametrize("block", [False, True], ids=["torch-installed", "torch-missing"])
def test_load_and_predict_never_import_torch(artifacts: dict[str, Path], image_dir: Path, block: bool) -> None:
    image = sorted(image_dir.glob("*.jpg"))[0]
    code = (BLOCK_TORCH if block else "") + LOAD_AND_RUN
    proc = run_python(code, json.dumps([str(p) for p in artifacts.values()]), str(image))
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    for backend, path in artifacts.items():
        name, score = scores[str(path)]
        assert name == backend
        with glia_edge.load(path) as model:  # the same score as in this process
            np.testing.assert_allclose(score, model.predict(image)[0], rtol=0, atol=1e-4)


def test_score_command_runs_without_torch(artifacts: dict[str, Path], image_dir: Path) -> None:
    images = sorted(image_dir.glob("coffee_*.jpg"))
    for path in artifacts.values():
        proc = run_python(BLOCK_TORCH + SCORE_CLI, "-m", str(path), *map(str, images))
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["failed"] == 0 and [r["path"] for r in doc["results"]] == [str(p) for p in images]
        assert all(np.isfinite(r["score"]) for r in doc["results"])


@pytest.mark.parametrize("block", [False, True], ids=["torch-installed", "torch-missing"])
def test_default_score_never_imports_torch(block: bool) -> None:
    """No --model: the packaged default runs on an installed runtime; torch is installed here, so
    without the blocker the check on sys.modules is a real one."""
    from glia_edge.weights import sample_images

    samples = sample_images()
    proc = run_python((BLOCK_TORCH if block else "") + SCORE_CLI, *map(str, samples))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["failed"] == 0 and len(doc["results"]) == len(samples) and doc["runtime"] != "PyTorch"


def test_checkpoint_without_torch_is_a_clear_error(tiny_checkpoint: Path, image_dir: Path) -> None:
    proc = run_python(BLOCK_TORCH + SCORE_CLI, "-m", str(tiny_checkpoint), str(sorted(image_dir.glob("*.jpg"))[0]))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: PyTorch checkpoints need torch")
