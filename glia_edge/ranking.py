"""Distortion-level ranking: does a model's score fall as a graded distortion rises?

For every reference (and tile) and distortion type in a synthetic ``labels.csv``
(``glia_edge.distortions.make_dataset``), the Spearman correlation between level (0..5, level 0 is
the reference) and the model's score is computed; the table reports its mean per type. Scores that
fall as distortion rises give values near -1. No torch here: any artifact can be checked.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from glia_edge.errors import DatasetError
from glia_edge.metrics import srcc


@dataclass
class RankingReport:
    """Mean level-vs-score Spearman per distortion type, over the groups (reference tiles) of each type."""

    per_type: dict[str, float]
    groups: dict[str, int]
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.per_type.values()))) if self.per_type else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"mean_srcc": self.mean, "per_type": self.per_type, "groups": self.groups, "failed": self.failed}


def read_ladder_rows(csv_path: str | Path, refs: Sequence[str] | None = None,
                types: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Rows of a synthetic labels.csv restricted to ``refs`` and ``types`` (level-0 rows always kept)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"labels file not found: {csv_path}")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    needed = {"path", "ref", "distortion", "level"}
    if not rows or not needed <= set(rows[0]):
        raise DatasetError(f"{csv_path}: needs columns {sorted(needed)} (a glia-edge synth labels.csv)")
    keep = [r for r in rows if (not refs or r["ref"] in refs) and
            (r["distortion"] == "none" or not types or r["distortion"] in types)]
    if not keep:
        raise DatasetError(f"{csv_path}: no rows for refs={refs} types={types}")
    return keep


def level_ranking(model: Any, csv_path: str | Path, *, refs: Sequence[str] | None = None,
                  types: Sequence[str] | None = None, crops: int | None = None) -> RankingReport:
    """Score the selected rows with ``model`` (a runtime Backend) and rank levels per group."""
    rows = read_ladder_rows(csv_path, refs, types)
    root = Path(csv_path).parent
    results = model.iter_scores([root / r["path"] for r in rows], crops=crops)
    score_of: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    failed: list[tuple[str, str]] = []
    for row, res in zip(rows, results):
        group = (row["ref"], row.get("part", "0"))
        if res.ok:
            score_of[group][f"{row['distortion']}:{row['level']}"] = res.score
        else:
            failed.append((res.source, res.error or ""))
    per_group: dict[str, list[float]] = defaultdict(list)
    for group, scores in score_of.items():
        ref_score = scores.get("none:0")
        for dist in sorted({k.split(":")[0] for k in scores} - {"none"}):
            levels = sorted(int(k.split(":")[1]) for k in scores if k.startswith(dist + ":"))
            values = [scores[f"{dist}:{lv}"] for lv in levels]
            if ref_score is not None:
                levels, values = [0, *levels], [ref_score, *values]
            if len(levels) >= 3:
                per_group[dist].append(srcc(np.array(values), np.array(levels, dtype=float)))
    per_type = {d: float(np.mean(v)) for d, v in sorted(per_group.items())}
    return RankingReport(per_type, {d: len(v) for d, v in per_group.items()}, failed)
