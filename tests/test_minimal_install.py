"""Camera-box installs for real: a wheel of this checkout in a fresh virtual environment with only
``[onnxruntime]`` or only ``[openvino]``; ``glia-edge score`` with no ``--model`` scores the bundled
sample images on the packaged default model, without torch, under 300 MiB resident.

Slow (each install takes about a minute); ``.ci/run`` runs it after the main suite.
"""
from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from _wheel import built_wheel
from test_no_torch import SCORE_CLI  # the score CLI in-process; it asserts torch was not imported

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

#: Peak resident memory allowed for the torch-free default ``score``.
PEAK_RSS_MB = 300

#: Runs ``glia-edge score`` in a child and prints its JSON plus the child's peak RSS (KiB on Linux),
#: then whether that child imported torch (the CLI checks itself: it runs in-process here).
MEASURE = """
import json, resource, subprocess, sys
proc = subprocess.run([sys.argv[1], "score", "-f", "json", *sys.argv[2:]], capture_output=True, text=True)
print(json.dumps({"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""



def _venv(root: Path, extra: str) -> Path:
    """A fresh virtual environment with the wheel and ``[extra]`` only; returns its bin folder."""
    venv.EnvBuilder(with_pip=True).create(root)
    bin_dir = root / "bin"
    proc = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{built_wheel()}[{extra}]"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return bin_dir


@pytest.mark.parametrize("extra,runtime", [("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO")])
def test_minimal_install_scores_the_samples_without_torch(tmp_path: Path, extra: str, runtime: str) -> None:
    bin_dir = _venv(tmp_path / f"venv-{extra}", extra)
    python = str(bin_dir / "python")
    # Run outside the checkout, so that `python -c` imports the installed package, not the source tree.
    check = subprocess.run([python, "-c", "import importlib.util as u, json; print(json.dumps("
                            "[u.find_spec(m) is not None for m in ('torch', 'onnxruntime', 'openvino')]))"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert json.loads(check.stdout) == [False, extra == "onnxruntime", extra == "openvino"], check.stderr
    samples = subprocess.run([python, "-c", "from glia_edge.weights import sample_images as s; "
                              "print(s()[0].parent)"], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path).stdout.strip()
    assert samples.startswith(str(tmp_path)), samples  # the installed copy
    count = len([p for p in Path(samples).iterdir() if p.is_file()])

    # The console script, as a user runs it, with its peak memory.
    proc = subprocess.run([python, "-c", MEASURE, str(bin_dir / "glia-edge"), samples], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    run = json.loads(proc.stdout)
    assert run["rc"] == 0, run["stderr"]
    doc = json.loads(run["stdout"])
    assert doc["runtime"] == runtime and doc["precision"] == "fp32" and doc["failed"] == 0
    assert len(doc["results"]) == count >= 3 and all(r["status"] == "ok" for r in doc["results"])
    scores = {Path(r["path"]).name: r["score"] for r in doc["results"]}
    assert scores["coffee.jpg"] > max(scores["coffee_blur.jpg"], scores["coffee_noise.png"])
    peak_mb = run["peak_kib"] / 1024
    print(f"{extra}: peak RSS of glia-edge score {samples} = {peak_mb:.0f} MiB")
    assert peak_mb < PEAK_RSS_MB, f"peak RSS {peak_mb:.0f} MiB"

    # In-process, without any import blocker: the assertion on sys.modules can fail.
    proc = subprocess.run([python, "-c", SCORE_CLI, samples], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["runtime"] == runtime

    # A command that needs PyTorch says which extra to install, in one line (before: a traceback).
    proc = subprocess.run([str(bin_dir / "glia-edge"), "presets"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip() == ("error: this command needs torch, which is not installed: "
                                   "pip install 'glia-edge[train]'"), proc.stderr
