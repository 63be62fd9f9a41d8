"""Evaluating any artifact on an IQA split: SRCC, PLCC (logistic-fitted), KRCC, RMSE.

Images are scored through the runtime API (``glia_edge.load(path).predict_batch`` on the crops
of the evaluation-crop protocol, :mod:`glia_edge.data.crop_protocol`), so a checkpoint, an ONNX
model, an OpenVINO IR or a TensorRT engine are measured by the same code with the same
preprocessing. The default protocol is LoDa's: 15 random crops per image, seeded per image.
``evaluate_splits`` runs one checkpoint per split (a path pattern with ``{split}`` or the run
folders ``glia-edge train`` writes, ``runs/<set>/<preset>/split<N>/best.safetensors``) and reports
the medians, as the protocol does; ``which`` picks the run's ``best`` (the epoch chosen on the
validation part) or its ``last`` epoch. Only the split's test part is scored; on the set a run
trained on, a split whose test part holds the run's training images is refused (every split is
checked before any is scored) unless ``allow_train_overlap``. An image that cannot
be read is reported and left out. No torch is imported here; the PyTorch backend imports it when a
checkpoint is scored.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from glia_edge.data import load_dataset, validate
from glia_edge.data.base import IQADataset
from glia_edge.data.crop_protocol import DEFAULT_EVAL_CROPS, CropProtocol, parse_crops
from glia_edge.data.splits import (ALL, check_split_numbers, fingerprint, load_or_create_splits, read_splits, select,
                                   split_parts)
from glia_edge.errors import CheckpointError, DatasetError, printable
from glia_edge.meta import ArtifactMeta
from glia_edge.metrics import IQAMetrics, iqa_metrics, median_metrics

log = logging.getLogger(__name__)


@dataclass
class SplitEval:
    """One artifact on one split's held-out images."""

    split: int | str
    artifact: Path
    metrics: IQAMetrics
    failed: int
    predictions: list[tuple[str, float, float]] = field(default_factory=list)  # (key, score, prediction)
    epoch: int | None = None  # the training epoch the artifact holds, where its metadata says
    crops: str = DEFAULT_EVAL_CROPS

    @property
    def part(self) -> str:
        """What was scored: ``all`` images of the set, or the split's ``test`` part."""
        return "all" if self.split == ALL else "test"

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "part": self.part, "artifact": str(self.artifact), "epoch": self.epoch,
                "crops": self.crops, **self.metrics.to_dict(), "failed": self.failed}


def split_checkpoint(spec: str | Path, split: int | str | None, which: str = "best") -> Path:
    """The artifact for ``split``: ``spec`` with ``{split}`` filled in, or a run folder's ``which`` file."""
    text = str(spec)
    if "{split}" in text and split is None:
        raise CheckpointError(f"{text} names a checkpoint per split: pass --split or --splits")
    path = Path(text.format(split=split)) if "{split}" in text else Path(text)
    if path.is_dir():
        run = path / f"split{split}"
        if split is not None and run.is_dir():
            path = run
        if (path / f"{which}.safetensors").is_file():
            path = path / f"{which}.safetensors"
        elif not any(path.glob("*.xml")):  # an OpenVINO IR folder is itself an artifact
            where = f" for split {split}" if split is not None else ""
            raise CheckpointError(f"no {which}.safetensors{where} in {path}")
    if not path.exists():
        raise CheckpointError(f"checkpoint{f' for split {split}' if split is not None else ''} not found: {path}")
    return path


def score_dataset(artifact: Path, dataset: IQADataset, *, crops: "str | int | CropProtocol" = DEFAULT_EVAL_CROPS,
                  progress: bool = False, **backend_options: Any) -> np.ndarray:
    """Mean protocol-crop score of every record through the runtime API (``Backend.iter_scores``,
    with the protocol's crops); NaN (and a warning) where an image fails."""
    from tqdm import tqdm

    import glia_edge
    from glia_edge.preprocess import load_resized

    protocol = parse_crops(crops)
    paths = [str(rec.path) for rec in dataset.records]
    keys = {str(rec.path): rec.key for rec in dataset.records}  # seeds the protocol's random crops
    preds = np.full(len(paths), np.nan)
    with glia_edge.load(artifact, **backend_options) as backend:
        cfg = backend.preprocess_config

        def cut(source: Any) -> np.ndarray:
            return protocol.crops(load_resized(source, cfg), cfg, keys[str(source)])

        results = backend.iter_scores(paths, cut=cut)
        for i, res in enumerate(tqdm(results, total=len(paths), desc=f"scoring {dataset.name}", unit="img",
                                     disable=not progress, leave=False)):
            if res.ok:
                preds[i] = res.score
            else:
                log.warning("skipping %s", printable(f"{res.source}: {res.error}"))
    return preds


def _run_splits_file(artifact: Path, meta: ArtifactMeta) -> Path | None:
    """The split file a run trained with: the copy beside its checkpoint, else the one it recorded."""
    beside = artifact.parent / "splits.json"
    if beside.is_file():
        return beside
    recorded = meta.training.get("splits_file")
    return Path(recorded) if recorded and Path(recorded).is_file() else None


def _splits_file(artifact: Path, meta: ArtifactMeta, explicit: str | Path | None, trained: bool) -> Path | None:
    """An explicit file; else, for the set the run trained on, the one beside it or the one it recorded."""
    if explicit:
        return Path(explicit)
    return _run_splits_file(artifact, meta) if trained else None


def _run_fingerprint(artifact: Path | None, meta: ArtifactMeta) -> str | None:
    """The group fingerprint in the run's split file, where one can be read."""
    path = _run_splits_file(artifact, meta) if artifact is not None else None
    if path is None:
        return None
    try:
        return read_splits(path).fingerprint or None
    except DatasetError:
        return None


def trained_on(meta: ArtifactMeta, dataset: IQADataset, artifact: Path | None = None) -> bool:
    """Whether the artifact was trained on this dataset.

    The set's name must match; then the same annotation file by absolute path, or else the same
    images/references (the fingerprint the run's split file stores), decides. A recorded path
    typed relative to the training's working folder says nothing from another folder, and a set
    that moved keeps its fingerprint, so the path alone is not trusted; it is the fallback only
    when no split file of the run can be read. No recorded annotation (older checkpoints): yes.
    """
    if meta.training.get("dataset") != dataset.name:
        return False
    annotation = meta.training.get("annotation")
    if annotation is None:
        return True
    same_file = Path(annotation).resolve() == Path(dataset.source).resolve()
    if Path(annotation).is_absolute() and same_file:
        return True  # a later fingerprint mismatch (annotation edited) is then refused by the split file
    recorded = _run_fingerprint(artifact, meta)
    if recorded is not None:
        return recorded == fingerprint(dataset.groups())
    return same_file


def default_split(meta: ArtifactMeta, dataset: IQADataset, artifact: Path | None = None) -> int | str:
    """The split the artifact was trained on when it was trained on this dataset, else ``all``."""
    if trained_on(meta, dataset, artifact) and meta.training.get("split") is not None:
        return meta.training["split"]
    return ALL


def _trained_groups(artifact: Path, meta: ArtifactMeta) -> set[str] | None:
    """The groups the run trained and selected on (train and val of its split, from the run's own
    split file); None when that file or the split cannot be read."""
    path = _run_splits_file(artifact, meta)
    recorded = meta.training.get("split")
    if path is None or recorded is None:
        return None
    try:
        parts = split_parts(read_splits(path), recorded)
    except DatasetError:
        return None
    return set(parts.get("train", [])) | set(parts.get("val", []))


def _check_overlap(test: IQADataset, dataset: IQADataset, split: int | str, artifact: Path, meta: ArtifactMeta,
                   allow: bool) -> None:
    """Refuse a test part holding images the run trained (or selected) on: its metrics would be
    inflated. Read from the run's split file where it is kept, else any split but the run's own
    counts as overlapping. ``allow`` (``--allow-train-overlap``) only warns."""
    recorded = meta.training.get("split")
    groups = _trained_groups(artifact, meta)
    if groups is not None:
        shared = sum(r.group in groups for r in test.records)
        if not shared:
            return
        what = f"{shared} of its {len(test.records)} test images are among the run's training/validation images"
    elif split != recorded:
        what = "its test images may include the run's training images"
    else:
        return
    message = (f"{artifact} was trained on {dataset.name} split {recorded}; split {split}: {what}. Evaluate the "
               f"run's own split (--split {recorded}), or pass --allow-train-overlap to score it anyway")
    if not allow:
        raise DatasetError(message)
    log.warning("%s", message)


def held_out(dataset: IQADataset, split: int | str, artifact: Path, meta: ArtifactMeta,
             splits_file: str | Path | None = None, split_source: str | None = None,
             allow_train_overlap: bool = False) -> IQADataset:
    """The split's test images (every image for ``all``), with unreadable files dropped.

    A named ``splits_file`` must exist: evaluation never draws a new split file in its place. On
    the set the run trained on, a split whose test part holds the run's training images is refused
    unless ``allow_train_overlap`` (:func:`_check_overlap`).
    """
    if splits_file and not Path(splits_file).is_file():
        raise DatasetError(f"split file not found: {splits_file} (only training creates split files)")
    trained = trained_on(meta, dataset, artifact)
    if split == ALL:
        if trained:
            log.warning("evaluating %s on all of %s, which it was trained on", artifact, dataset.name)
        elif meta.training.get("dataset") == dataset.name:  # a set of the same kind not matched to the run's
            log.warning("evaluating %s on all of %s (%s): it was trained on a %s set (%s) not matched to this one; "
                        "if it is the same set, its training images are included (pass --split N)", artifact,
                        dataset.name, dataset.source, dataset.name, meta.training.get("annotation", "unrecorded"))
        return validate(dataset)
    source = split_source or (meta.training.get("split_source", "glia") if trained else "glia")
    splits, _ = load_or_create_splits(dataset, _splits_file(artifact, meta, splits_file, trained), source=source,
                                      create=not splits_file)
    test = select(dataset, splits, split)["test"]
    if trained:
        _check_overlap(test, dataset, split, artifact, meta, allow_train_overlap)
    return validate(test)


@dataclass
class EvalPlan:
    """What one evaluation scores, prepared (and checked) before anything is scored."""

    artifact: Path
    meta: ArtifactMeta
    dataset: IQADataset
    split: int | str
    test: IQADataset


def plan_evaluation(artifact: str | Path, dataset_name: str, *, root: str | Path | None = None,
                    csv: str | Path | None = None, split: int | str | None = None,
                    splits_file: str | Path | None = None, split_source: str | None = None,
                    dataset_options: dict[str, Any] | None = None, allow_train_overlap: bool = False) -> EvalPlan:
    """The dataset, split and held-out images of one evaluation: a split that does not exist or
    overlaps the run's training images fails here, before any image is scored."""
    from glia_edge.runtimes import read_meta

    artifact = Path(artifact)
    meta = read_meta(artifact)
    dataset = load_dataset(dataset_name, root, csv, short_side=meta.preprocess_config.short_side,
                           **(dataset_options or {}))
    split = default_split(meta, dataset, artifact) if split is None else split
    test = held_out(dataset, split, artifact, meta, splits_file, split_source, allow_train_overlap)
    return EvalPlan(artifact, meta, dataset, split, test)


def score_plan(plan: EvalPlan, *, crops: "str | int | CropProtocol" = DEFAULT_EVAL_CROPS, progress: bool = False,
               **backend_options: Any) -> SplitEval:
    """Score a prepared evaluation (:func:`plan_evaluation`)."""
    test, split = plan.test, plan.split
    preds = score_dataset(plan.artifact, test, crops=crops, progress=progress, **backend_options)
    ok = np.isfinite(preds)
    if ok.sum() < 3:
        raise DatasetError(f"only {int(ok.sum())} image(s) of {plan.dataset.name} split {split} could be scored")
    mos = np.array(test.scores())
    rows = [(r.key, r.score, float(p)) for r, p in zip(test.records, preds) if np.isfinite(p)]
    return SplitEval(split, plan.artifact, iqa_metrics(preds[ok], mos[ok]), int((~ok).sum()), rows,
                     epoch=plan.meta.training.get("epoch"), crops=parse_crops(crops).name)


PLAN_KEYS = ("root", "csv", "split", "splits_file", "split_source", "dataset_options", "allow_train_overlap")


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``evaluate``'s keyword options as (:func:`plan_evaluation`'s, :func:`score_plan`'s)."""
    return ({k: v for k, v in options.items() if k in PLAN_KEYS},
            {k: v for k, v in options.items() if k not in PLAN_KEYS})


def evaluate(artifact: str | Path, dataset_name: str, *, root: str | Path | None = None, csv: str | Path | None = None,
             split: int | str | None = None, splits_file: str | Path | None = None,
             crops: "str | int | CropProtocol" = DEFAULT_EVAL_CROPS, split_source: str | None = None,
             progress: bool = False, dataset_options: dict[str, Any] | None = None,
             allow_train_overlap: bool = False, **backend_options: Any) -> SplitEval:
    """Score ``artifact`` on the test part of one split of a dataset (default: the split it was
    trained on, else all of it) with the evaluation-crop protocol ``crops``."""
    plan = plan_evaluation(artifact, dataset_name, root=root, csv=csv, split=split, splits_file=splits_file,
                           split_source=split_source, dataset_options=dataset_options,
                           allow_train_overlap=allow_train_overlap)
    return score_plan(plan, crops=crops, progress=progress, **backend_options)


def evaluate_splits(checkpoint: str | Path, dataset_name: str, splits: Sequence[int | str], *, which: str = "best",
                    **kwargs: Any) -> tuple[list[SplitEval], dict[str, float]]:
    """One artifact per split (see :func:`split_checkpoint`); returns each result and the medians."""
    check_split_numbers(splits)
    plan_kw, score_kw = split_options(kwargs)
    plans = [plan_evaluation(split_checkpoint(checkpoint, s, which), dataset_name, split=s, **plan_kw)
             for s in splits]  # every split checked before the first is scored
    results = [score_plan(p, **score_kw) for p in plans]
    return results, median_metrics([r.metrics for r in results])
