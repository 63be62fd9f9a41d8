"""Distortion-level ranking: does a model's score fall as a graded distortion rises?

For every reference (and tile) and distortion type in a synthetic ``labels.csv``
(``glia_edge.distortions.make_dataset``), the Spearman correlation between level (0..5, level 0 is
the reference) and the model's score is computed; the table reports its mean per type. Scores that
fall as distortion rises give values near -1. A series the model scores the same at every level
kept no ranking and counts as 0, by the project's one constant-series rule
(:func:`glia_edge.metrics.agreement`); how many did is reported per type. No torch here: any
artifact can be checked.
"""
from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from glia_edge.errors import DatasetError
from glia_edge.meta import finite_or_none
from glia_edge.metrics import agreement

log = logging.getLogger(__name__)


@dataclass
class RankingReport:
    """Mean level-vs-score Spearman per distortion type, over the groups (reference tiles) of each type."""

    per_type: dict[str, float]
    groups: dict[str, int]
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Per type, how many of its series scored every level the same (each counted as 0).
    constant: dict[str, int] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.per_type.values()))) if self.per_type else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Valid JSON: ``mean_srcc`` is ``null`` when no type could be ranked."""
        return {"mean_srcc": finite_or_none(self.mean),
                "per_type": {k: finite_or_none(v) for k, v in self.per_type.items()}, "groups": self.groups,
                "constant": self.constant, "failed": self.failed}


def read_ladder_rows(csv_path: str | Path, refs: Sequence[str] | None = None,
                types: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Rows of a synthetic labels.csv restricted to ``refs`` and ``types`` (level-0 rows always kept)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"labels file not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:  # a BOM (Excel) must not rename "path"
        rows = list(csv.DictReader(fh))
    needed = {"path", "ref", "distortion", "level"}
    if not rows or not needed <= set(rows[0]):
        raise DatasetError(f"{csv_path}: needs columns {sorted(needed)} (a glia-edge synth labels.csv)")
    for n, row in enumerate(rows, start=1):  # DictReader pads a short row with None, keys a long one's rest None
        if None in row or None in row.values():
            raise DatasetError(f"{csv_path}: data row {n} does not match the header (an unquoted comma or a "
                               "missing value?)")
    keep = [r for r in rows if (not refs or r["ref"] in refs) and
            (r["distortion"] == "none" or not types or r["distortion"] in types)]
    if all(r["distortion"] == "none" for r in keep):  # references alone rank nothing
        raise DatasetError(f"{csv_path}: no distorted rows for refs={refs} types={types} "
                           f"(types here: {', '.join(sorted({r['distortion'] for r in rows} - {'none'}))})")
    return keep


def _score_groups(model: Any, rows: list[dict[str, str]], root: Path, crops: int | None
                  ) -> tuple[dict[tuple[str, str], dict[str, float]], list[tuple[str, str]]]:
    """Scores per group (reference tile) keyed ``"type:level"`` (the reference is ``"none:0"``)."""
    results = model.iter_scores([root / r["path"] for r in rows], crops=crops)
    score_of: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    failed: list[tuple[str, str]] = []
    for row, res in zip(rows, results):
        if res.ok:
            score_of[(row["ref"], row.get("part", "0"))][f"{row['distortion']}:{row['level']}"] = res.score
        else:
            failed.append((res.source, res.error or ""))
    return score_of, failed


def _series(scores: dict[str, float]) -> dict[str, tuple[list[int], list[float]]]:
    """Each type's (levels, scores) of one group, the reference first as level 0."""
    out = {}
    ref_score = scores.get("none:0")
    for dist in sorted({k.split(":")[0] for k in scores} - {"none"}):
        levels = sorted(int(k.split(":")[1]) for k in scores if k.startswith(dist + ":"))
        values = [scores[f"{dist}:{lv}"] for lv in levels]
        if ref_score is not None:
            levels, values = [0, *levels], [ref_score, *values]
        out[dist] = (levels, values)
    return out


def level_ranking(model: Any, csv_path: str | Path, *, refs: Sequence[str] | None = None,
                  types: Sequence[str] | None = None, crops: int | None = None) -> RankingReport:
    """Score the selected rows with ``model`` (a runtime Backend) and rank levels per group."""
    rows = read_ladder_rows(csv_path, refs, types)
    return _ranking(*_score_groups(model, rows, Path(csv_path).parent, crops))


def _ranking(score_of: dict[tuple[str, str], dict[str, float]], failed: list[tuple[str, str]]) -> RankingReport:
    per_group: dict[str, list[float]] = defaultdict(list)
    constant: dict[str, int] = defaultdict(int)
    for scores in score_of.values():
        for dist, (levels, values) in _series(scores).items():
            if len(levels) >= 3:
                # agreement's rule: a constant score series kept no ranking and counts 0, not NaN
                per_group[dist].append(agreement(values, levels).spearman)
                constant[dist] += int(np.ptp(values) == 0)
    for dist, n in sorted(constant.items()):
        if n:
            log.warning("%s: %d of %d series score every level the same; each counts as Spearman 0",
                        dist, n, len(per_group[dist]))
    per_type = {d: float(np.mean(v)) for d, v in sorted(per_group.items())}
    return RankingReport(per_type, {d: len(v) for d, v in per_group.items()}, failed,
                         {d: n for d, n in sorted(constant.items()) if n})


@dataclass
class ScaleReport:
    """What a score means across photos: within-series and pooled level ranking, pristine scores, range.

    ``pooled`` is Spearman(level, score) over every image of every photo and type at once (a level
    must mean about the same score on any content); ties (scores equal at a bound) count as ties.
    ``pristine`` maps each reference tile (``ref-part``) to its score and whether it is grey-level.
    """

    ranking: RankingReport
    pooled: float
    pristine: dict[str, dict[str, Any]]
    inside: float  # share of scores inside [lo, hi]
    score_range: tuple[float, float]
    n: int

    @property
    def pristine_floor(self) -> float:
        """The lowest pristine score as a share of the range (0 = min, 1 = max)."""
        lo, hi = self.score_range
        return min((p["score"] - lo) / (hi - lo) for p in self.pristine.values()) if self.pristine else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**self.ranking.to_dict(), "pooled_srcc": self.pooled, "pristine": self.pristine,
                "pristine_floor": self.pristine_floor, "inside_range": self.inside,
                "score_range": list(self.score_range), "n": self.n}


def scale_report(model: Any, csv_path: str | Path, score_range: tuple[float, float], *,
                 refs: Sequence[str] | None = None, types: Sequence[str] | None = None,
                 crops: int | None = None) -> ScaleReport:
    """Score the selected rows once and report :class:`ScaleReport` over them."""
    from glia_edge.distortions import is_grey
    from glia_edge.preprocess import load_image

    rows = read_ladder_rows(csv_path, refs, types)
    root = Path(csv_path).parent
    score_of, failed = _score_groups(model, rows, root, crops)
    ranking = _ranking(score_of, failed)
    flat = [(int(k.split(":")[1]), v) for scores in score_of.values() for k, v in scores.items()]
    levels, values = (np.array(x, dtype=float) for x in zip(*flat)) if flat else (np.array([]), np.array([]))
    ref_rows = {(r["ref"], r.get("part", "0")): r["path"] for r in rows if r["distortion"] == "none"}
    pristine = {f"{ref}-{part}": {"score": scores["none:0"], "grey": is_grey(load_image(root / ref_rows[(ref, part)]))}
                for (ref, part), scores in sorted(score_of.items()) if "none:0" in scores}
    lo, hi = score_range
    inside = float(((values >= lo) & (values <= hi)).mean()) if values.size else float("nan")
    pooled = agreement(values, levels).spearman  # NaN below 3 images; the constant-series rule otherwise
    return ScaleReport(ranking, float(pooled), pristine, inside, (float(lo), float(hi)), int(values.size))
