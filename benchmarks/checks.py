"""The regression check of ``glia-edge bench``: ``--min-speedup`` and ``--max-drop``.

``--min-speedup X`` asks every measured non-PyTorch row for at least X times the PyTorch FP32
eager crops/s; ``--min-speedup openvino:int8=3.5,onnx:int8=2.2`` names rows instead, and a named
row that could not be measured fails the check. ``--max-drop Y`` asks every measured non-PyTorch
row for ``1 - Spearman(scores, PyTorch FP32 scores) <= Y``. Skipped rows (no GPU) are not failures
unless named. Names are ``target:precision`` (PyTorch rows add the variant: ``torch:fp32:compile``).
"""
from __future__ import annotations

import math
from typing import Sequence

from glia_edge.benchmarks.configs import BenchConfig
from glia_edge.benchmarks.report import BenchRow


def parse_min_speedup(spec: str | None) -> tuple[float | None, dict[str, float]]:
    """``"2.5"`` (every non-PyTorch row) or ``"openvino:int8=3.5,onnx:int8=2.2"`` (named rows)."""
    if not spec:
        return None, {}
    spec = spec.strip()
    if "=" not in spec:
        return _ratio(spec), {}
    named: dict[str, float] = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        if not key.strip() or not value.strip():
            raise ValueError(f"--min-speedup: expected TARGET:PRECISION=X, got {part!r}")
        named[key.strip()] = _ratio(value)
    return None, named


def _ratio(text: str) -> float:
    """A speed-up bound: a finite number above 0 (nan would never fail, so the check would be off)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--min-speedup: {text.strip()!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--min-speedup: {text.strip()!r} must be a finite ratio above 0")
    return value


def check_max_drop(value: float | None) -> None:
    """``--max-drop``: 1 - Spearman lies in [0, 2], so the bound must too (nan would switch it off)."""
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 2.0):
        raise ValueError(f"--max-drop must be between 0 and 2 (1 - Spearman), got {value}")


def check_regressions(rows: Sequence[BenchRow], configs: Sequence[BenchConfig], min_speedup: str | None,
                      max_drop: float | None) -> list[str]:
    """Failures of the regression check (empty when it passes, or when no check was asked for)."""
    failures: list[str] = []
    overall, named = parse_min_speedup(min_speedup)
    keys = {c.key: r for r, c in zip(rows, configs)}
    for key, floor in named.items():
        row = keys.get(key)
        if row is None or not row.ok or row.speedup is None:
            failures.append(f"{key}: not measured ({row.status if row else 'no such row'}), needs >= {floor:g}x")
        elif row.speedup < floor:
            failures.append(f"{key}: speed-up {row.speedup:.2f}x < {floor:g}x")
    for row in rows:
        if row.target == "torch" or not row.ok:
            continue
        if overall is not None and (row.speedup is None or row.speedup < overall):
            failures.append(f"{row.name}: speed-up {_x(row.speedup)} < {overall:g}x")
        if max_drop is not None:
            if row.spearman is None or math.isnan(row.spearman):
                failures.append(f"{row.name}: Spearman with PyTorch undefined, cannot check the drop")
            elif 1.0 - row.spearman > max_drop:
                failures.append(f"{row.name}: Spearman {row.spearman:.4f} drops {1 - row.spearman:.4f} > {max_drop:g}")
    return failures


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"
