"""Helpers shared by the export tests: score a folder with an artifact and with the PyTorch reference."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import stats

def run_cli(*args: object):  # noqa: ANN201 (click's Result)
    """``glia-edge ARGS`` in-process."""
    from typer.testing import CliRunner

    from glia_edge.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(output: str) -> str:
    """The one ``error:`` line a refused command prints (no usage block, no rich panel)."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Usage" not in output and "\u2502" not in output, output
    return lines[0]


#: Small calibration sets keep the suite fast; quantization still sees every blur level.
CALIB_SIZE = 12


def images_of(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


def artifact_scores(artifact: Path, folder: Path) -> np.ndarray:
    """Per-image scores through ``glia_edge.load`` (the path users take)."""
    import glia_edge

    with glia_edge.load(artifact) as model:
        return model.predict([str(p) for p in images_of(folder)])


@lru_cache(maxsize=4)
def _reference(checkpoint: str, folder: str) -> tuple[float, ...]:
    from glia_edge.runtimes.torch import TorchBackend

    with TorchBackend(checkpoint) as model:
        return tuple(model.predict([str(p) for p in images_of(Path(folder))]))


def reference_scores(checkpoint: Path, folder: Path) -> np.ndarray:
    """PyTorch scores of the checkpoint (cached per session)."""
    return np.array(_reference(str(checkpoint), str(folder)))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.spearmanr(a, b)[0])


def assert_close_to_reference(artifact: Path, checkpoint: Path, folder: Path, *, fp32: bool) -> None:
    """FP32: within 1e-4 of the score range; otherwise Spearman >= 0.99 with the PyTorch scores."""
    from glia_edge.runtimes import read_meta

    got, want = artifact_scores(artifact, folder), reference_scores(checkpoint, folder)
    assert len(got) == len(want) == len(images_of(folder))
    if fp32:
        bound = 1e-4 * read_meta(artifact).score_spec.range
        assert np.max(np.abs(got - want)) <= bound, (got - want)
    else:
        assert spearman(got, want) >= 0.99, (got, want)
