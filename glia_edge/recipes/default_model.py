"""Rebuild the packaged default model, ``glia_vit_nano.synthetic``, its artifacts and its card's figures.

    python -m glia_edge.recipes.default_model --work runs/default --install

1. The sets (:func:`glia_edge.weights.default_sets`, data in ``glia_vit_nano.synthetic.sets.json``):
   graded distortions (5 levels) of photos that install with the dependencies, on disjoint photo
   lists: ``train``, ``validation`` (chooses the epoch and the recipe) and ``test`` (the model
   card's figures, scored once at the end, three types in it never trained on). Every colour
   photo also enters as a grey-level copy: pristine content, with every series but the colour ones.
2. ``glia_edge.train`` trains ``glia_vit_nano`` (ViT-Ti/16 cut to 4 blocks, random and frozen: no
   pretrained weights are reachable where it is built) with a sigmoid head bounded to the labels'
   range, on *ladders* (one crop of one reference at every level of one type), with PLCC + L1 +
   a ranking loss inside each ladder + a ranking loss across ladders (other photos and types,
   margin growing with the level gap: a level means the same score on any content). ``best`` is
   the epoch with the highest validation SRCC (one centre crop, as the runtimes score).
3. Once per seed (``--seeds``, three by default). The model card reports every figure as the mean
   and spread over the seeds; the seed shipped is the one whose *validation* figures sit nearest
   the seeds' mean (not the best test draw). Test figures are computed after all training is done.
   The settings (``--epochs``, ``--lr``, the loss weights, ``--ladder-repeats``) were chosen among
   candidate recipes by their mean over three seeds on the validation photos alone:
   ``--validation-only`` trains (or reuses) the seeds, writes ``validation.json`` (also the figures
   of the seeds' mean score, ``seed_mean``: what an ensemble would buy) and stops before any test
   image is scored; :func:`floor_score` ranks them.
4. ``report.json`` and ``report.md`` land in ``--work``; ``--install`` copies the chosen checkpoint
   into the package and re-exports the packaged runtime artifacts from it
   (:mod:`glia_edge.recipes.package_artifacts`), so checkpoint, artifacts and figures move together.

Rerunning with the same ``--work`` reuses finished seeds (their ``best.safetensors``).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from glia_edge.atomic import atomic_write
from glia_edge.errors import DatasetError
from glia_edge.weights import DEFAULT_MODEL, SyntheticSet, default_checkpoint, default_sets

log = logging.getLogger(__name__)

SETS = default_sets()
TRAIN, VALIDATION, TEST = SETS["train"], SETS["validation"], SETS["test"]
TRAIN_REFS, VALIDATION_REFS, TEST_REFS = TRAIN.photos, VALIDATION.photos, TEST.photos
TRAIN_TYPES = TRAIN.types
HELD_OUT_TYPES = tuple(t for t in TEST.types if t not in TRAIN_TYPES)
PRESET = "glia_vit_nano"
SEEDS = (3407, 3408, 3409)
#: The figures the shipped seed must sit near (validation), and the card's floors.
KEY_FIGURES = ("within_trained", "within_held_out", "pooled_srcc", "pristine_floor")
#: Ladders served more than once per epoch: the detail-loss types, slowest to learn (chosen on validation).
LADDER_REPEATS = {"jpeg": 3, "gaussian_blur": 2, "pixelate": 2}
#: Generated dead-leaves images among the training photos (``--dead-leaves``).
DEAD_LEAVES = 12
#: The card's floors on the ranking figures: the recipe is chosen by :func:`floor_score` on validation.
FLOORS = {"within_all": -0.9, "worst_trained": -0.8, "pooled_srcc": -0.75, "pristine_floor": 0.8}


def train_photos(dead_leaves: int, extra_photos: Sequence[str] = ()) -> tuple[str, ...]:
    """The training photos, ``extra_photos`` (bundled photos, for candidate recipes) and ``dead_leaves``
    generated dead-leaves images (glia_edge.dead_leaves)."""
    free = free_photos()
    for name in extra_photos:
        if name not in free:
            raise ValueError(f"extra training photo {name!r}: expected a bundled photo outside the training, "
                             f"validation and test photos; free: {', '.join(free)}")
    return TRAIN_REFS + tuple(extra_photos) + tuple(f"dead_leaves_{k}" for k in range(dead_leaves))


def free_photos() -> tuple[str, ...]:
    """Bundled photos in none of the default sets (what ``--extra-photos`` may add)."""
    from glia_edge.distortions import BUNDLED_PHOTOS

    return tuple(p for p in BUNDLED_PHOTOS if p not in TRAIN_REFS + VALIDATION_REFS + TEST_REFS)


def train_set(dead_leaves: int = DEAD_LEAVES, extra_photos: Sequence[str] = (),
              tiles: int | None = None) -> SyntheticSet:
    """The training set of a recipe: the default one, or a candidate's (more photos, another tile cap)."""
    tiles = TRAIN.tiles if tiles is None else tiles
    return replace(TRAIN, photos=train_photos(dead_leaves, extra_photos), tiles=tiles)


def _check_reused(labels: Path, spec: SyntheticSet) -> None:
    """Raise when a reused training set was built for another choice than ``spec``.

    Folders record their set in ``spec.json``; older ones (without it) are checked on their number
    of dead-leaves images."""
    from glia_edge.dead_leaves import is_dead_leaves

    recorded = labels.parent / "spec.json"
    if recorded.is_file():
        if SyntheticSet.from_dict(json.loads(recorded.read_text())) != spec:
            raise ValueError(f"{labels.parent} was built for another training set ({recorded}): "
                             "use a new --work folder for other --dead-leaves, --extra-photos or --tiles")
        return
    with open(labels, newline="") as fh:
        held_leaves = len({row["ref"] for row in csv.DictReader(fh) if is_dead_leaves(row["ref"])})
    dead_leaves = sum(is_dead_leaves(p) for p in spec.photos)
    if held_leaves != dead_leaves:
        raise ValueError(f"{labels} holds {held_leaves} dead-leaves images, not {dead_leaves}: "
                         "use a new --work folder for another --dead-leaves")


def build_sets(work: Path, dead_leaves: int = DEAD_LEAVES, extra_photos: Sequence[str] = (),
               tiles: int | None = None) -> tuple[Path, Path, Path]:
    """Write train, validation and test sets; returns (train+validation CSV, validation CSV, test CSV).

    The combined CSV marks each row's part in a ``set`` column, so training runs the ``official``
    split: the validation photos are named, not drawn. ``dead_leaves`` generated images join the
    training photos, with ``extra_photos`` and at most ``tiles`` tiles per photo when a candidate
    asks. A work folder holds one choice: its sets are reused, and a folder built for another
    training set raises :class:`ValueError` rather than train on what it holds.
    """
    paths = {}
    train = train_set(dead_leaves, extra_photos, tiles)
    for name, spec in (("train", train), ("validation", VALIDATION), ("test", TEST)):
        labels = work / f"synth-{name}" / "labels.csv"
        if not labels.is_file():
            spec.write(labels.parent, progress=True)
            if name == "train":
                _write_text(labels.parent / "spec.json", json.dumps(asdict(spec), indent=2))
        elif name == "train":  # reused: check it before writing the other sets
            _check_reused(labels, train)
        paths[name] = labels
    combined = work / "train-val.csv"
    if not combined.is_file():
        rows = []
        for name in ("train", "validation"):
            with open(paths[name], newline="") as fh:
                for row in csv.DictReader(fh):
                    rows.append({**row, "path": f"synth-{name}/{row['path']}", "set": name})
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(combined, write)
    return combined, paths["validation"], paths["test"]


def train_seed(work: Path, train_csv: Path, seed: int, args: argparse.Namespace) -> Path:
    """Train one seed (or reuse a finished run); returns its best checkpoint."""
    from glia_edge.train import TrainConfig, train

    out = work / f"seed-{seed}"
    if (out / "best.safetensors").is_file() and (out / "done").is_file():
        log.info("seed %d: reusing %s", seed, out)
        return out / "best.safetensors"
    cfg = TrainConfig(dataset="csv", csv=str(train_csv), preset=PRESET, backbone_weights="none", split="official",
                      output=str(out), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      l1_weight=args.l1_weight, crops_per_image=args.crops_per_image, rank_weight=args.rank_weight,
                      cross_rank_weight=args.cross_rank_weight, ladder_repeats=dict(args.ladder_repeats),
                      eval_crops="grid1", seed=seed, workers=0,
                      max_steps=args.max_steps, model_overrides={"score_head": "sigmoid"}, progress=args.progress,
                      overwrite=True)  # a seed cut short before "done" is trained again from the start
    started = time.perf_counter()
    result = train(cfg)
    (out / "done").write_text(f"{time.perf_counter() - started:.0f} s\n")
    return result.best


class SeedMean:
    """The mean of several models' scores per image (a seed ensemble), for :func:`scale_report`."""

    def __init__(self, models: list[Any]) -> None:
        self.models = models

    def iter_scores(self, images: list[Path], crops: int | None = None) -> Iterator[Any]:
        from dataclasses import replace

        images = list(images)
        for results in zip(*(list(m.iter_scores(images, crops=crops)) for m in self.models)):
            if all(r.ok for r in results):
                yield replace(results[0], score=float(np.mean([r.score for r in results])))
            else:
                yield next(r for r in results if not r.ok)


def figures(checkpoint: Path | list[Path], labels: Path) -> dict[str, Any]:
    """The card's figures of ``checkpoint`` on a set: within-series ranking per type, pooled, pristine,
    range. Several checkpoints: the figures of their mean score (:class:`SeedMean`)."""
    import glia_edge
    from glia_edge.ranking import scale_report

    paths = checkpoint if isinstance(checkpoint, list) else [checkpoint]
    models = [glia_edge.load(path, runtime="torch") for path in paths]
    spec = models[0].meta.score_spec
    report = scale_report(models[0] if len(models) == 1 else SeedMean(models), labels, (spec.min, spec.max)).to_dict()
    per_type = report["per_type"]
    trained = [v for k, v in per_type.items() if k in TRAIN_TYPES]
    held = [v for k, v in per_type.items() if k not in TRAIN_TYPES]
    report.update(within_all=report["mean_srcc"], within_trained=float(np.mean(trained)),
                  within_held_out=float(np.mean(held)) if held else float("nan"),
                  worst_trained=max(trained))
    return report


def floor_score(report: dict[str, Any]) -> float:
    """How close a set of figures comes to the card's floors: the sum over :data:`FLOORS` of
    ``min(1, figure / floor)`` (4.0 = every floor met; a figure on the wrong side of zero counts
    below 0). Candidate recipes are compared by it on the *validation* photos."""
    return float(sum(min(1.0, report[key] / floor) for key, floor in FLOORS.items()))


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def mean_spread(reports: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, float]]:
    return {k: {"mean": float(np.mean([r[k] for r in reports])), "std": float(np.std([r[k] for r in reports])),
                "min": float(np.min([r[k] for r in reports])), "max": float(np.max([r[k] for r in reports]))}
            for k in keys}


def nearest_to_mean(reports: dict[int, dict[str, Any]]) -> int:
    """The seed whose validation figures sit nearest the seeds' mean (distance in units of each figure's spread)."""
    table = np.array([[r[k] for k in KEY_FIGURES] for r in reports.values()])
    spread = table.std(axis=0)
    z = (table - table.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    return list(reports)[int(np.argmin((z ** 2).sum(axis=1)))]


def shipped_form(best: Path, seed: int, args: argparse.Namespace) -> Path:
    """The shipped form of a seed's best checkpoint (frozen weights in float16, the recipe in its
    record), beside it; every figure is computed on this form, the one users run."""
    from glia_edge.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(best)
    meta.training.update(frozen_dtype="float16", recipe="python -m glia_edge.recipes.default_model", seed=seed,
                         seeds=list(args.seeds), train_refs=list(train_photos(args.dead_leaves, args.extra_photos)),
                         validation_refs=list(VALIDATION_REFS),
                         test_refs=list(TEST_REFS), train_types=list(TRAIN_TYPES),
                         held_out_types=list(HELD_OUT_TYPES), grey_copies=True)
    return save_checkpoint(best.parent / f"{DEFAULT_MODEL}.safetensors", model, meta)


def markdown(report: dict[str, Any]) -> str:
    """The card's tables: per type and headline figures, test mean +- spread over seeds and the shipped seed."""
    seeds, shipped = report["seeds"], report["shipped_seed"]
    test = report["test"]
    lines = [f"Test photos: {', '.join(TEST_REFS)} (and grey copies of the colour ones); seeds {', '.join(map(str, seeds))};"
             f" shipped: seed {shipped}.", "",
             "| type | in training | mean over seeds | spread (std) | shipped seed |", "|---|---|---|---|---|"]
    for kind in TEST.types:
        values = [test[str(s)]["per_type"][kind] for s in seeds]
        lines.append(f"| {kind} | {'yes' if kind in TRAIN_TYPES else 'held out'} | {np.mean(values):.3f} | "
                     f"{np.std(values):.3f} | {test[str(shipped)]['per_type'][kind]:.3f} |")
    lines += ["", "| figure | floor | mean over seeds | spread (std) | shipped seed |", "|---|---|---|---|---|"]
    floors = {**{k: f"{'<=' if v < 0 else '>='} {v:g}" for k, v in FLOORS.items()}, "inside_range": ">= 0.99"}
    names = {"within_all": "within-series Spearman, mean over types", "worst_trained": "weakest trained type",
             "pooled_srcc": "pooled Spearman (all photos, all types)",
             "pristine_floor": "lowest pristine score (share of range)", "inside_range": "scores inside the range"}
    summary = report["test_summary"]
    for key, floor in floors.items():
        lines.append(f"| {names[key]} | {floor} | {summary[key]['mean']:.3f} | {summary[key]['std']:.3f} | "
                     f"{test[str(shipped)][key]:.3f} |")
    lines += ["", "Pristine test photos, shipped seed (score; range "
              f"{test[str(shipped)]['score_range'][0]:g}..{test[str(shipped)]['score_range'][1]:g}):", "",
              "| photo | grey | score |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if p['grey'] else 'no'} | {p['score']:.1f} |"
              for name, p in test[str(shipped)]["pristine"].items()]
    return "\n".join(lines) + "\n"


def _type_repeat(text: str) -> tuple[str, int]:
    """``TYPE=N`` (``--ladder-repeats``): a trained distortion type and a count >= 1."""
    from glia_edge.train_config import parse_ladder_repeat

    try:
        name, count = parse_ladder_repeat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if name not in TRAIN_TYPES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TYPE=N with TYPE one of {', '.join(TRAIN_TYPES)}")
    return name, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/default"), help="working folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="training seeds (>= 3 for the card)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=30, help="images per step (5 ladders of 6 levels)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--crops-per-image", type=int, default=2, help="ladders per (reference, type) per epoch")
    parser.add_argument("--l1-weight", type=float, default=0.1,
                        help="L1 to the labels (absolute level: pristine near the top) beside PLCC (0 = off)")
    parser.add_argument("--rank-weight", type=float, default=1.0, help="ranking loss inside ladders (0 = off)")
    parser.add_argument("--cross-rank-weight", type=float, default=1.0, help="ranking loss across ladders (0 = off)")
    parser.add_argument("--ladder-repeats", type=_type_repeat, nargs="*", default=list(LADDER_REPEATS.items()),
                        metavar="TYPE=N", help="serve the ladders of TYPE N times per epoch (types slow to learn; "
                                               "none given: every type once)")
    parser.add_argument("--dead-leaves", type=int, default=DEAD_LEAVES,
                        help="generated dead-leaves images added to the training photos (glia_edge.dead_leaves)")
    parser.add_argument("--extra-photos", nargs="*", default=[], choices=free_photos(), metavar="NAME",
                        help="bundled photos added to the training photos (candidate recipes): "
                             f"{', '.join(free_photos())}, the bundled photos outside every default set "
                             "(mate_* and kde_* need the Debian packages mate-backgrounds and "
                             "plasma-workspace-wallpapers)")
    parser.add_argument("--tiles", type=int, default=None,
                        help=f"at most this many tiles per training photo (default: {TRAIN.tiles})")
    parser.add_argument("--max-steps", type=int, default=None, help="stop early (smoke runs)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--train-only", action="store_true",
                        help="train the seeds and stop (run seeds in parallel processes, then once without it)")
    parser.add_argument("--validation-only", action="store_true",
                        help="score the seeds on the validation photos only (comparing candidate recipes) and stop")
    parser.add_argument("--install", action="store_true", help="copy the result into the package and re-export")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    started = time.perf_counter()
    try:
        train_csv, val_csv, test_csv = build_sets(args.work, args.dead_leaves, args.extra_photos, args.tiles)
    except DatasetError as exc:  # a photo that is not installed: one line, not a traceback
        parser.error(str(exc))
    best = {seed: shipped_form(train_seed(args.work, train_csv, seed, args), seed, args) for seed in args.seeds}
    if args.train_only:
        return
    validation = {seed: figures(path, val_csv) for seed, path in best.items()}
    for seed, report in validation.items():
        report["floor_score"] = floor_score(report)
    if args.validation_only:  # no test figures: candidates are compared on validation alone
        summary = mean_spread(list(validation.values()), [*FLOORS, "floor_score"])
        # The seeds' mean score as one model: what averaging the seeds (an ensemble) would buy.
        seed_mean = figures(list(best.values()), val_csv) if len(best) > 1 else None
        if seed_mean is not None:
            seed_mean["floor_score"] = floor_score(seed_mean)
        _write_text(args.work / "validation.json", json.dumps(
            {"recipe": vars(args) | {"work": str(args.work)}, "summary": summary, "seed_mean": seed_mean,
             "validation": {str(s): r for s, r in validation.items()}}, indent=2, default=str))
        log.info("validation (mean over seeds %s): %s", ", ".join(map(str, best)),
                 ", ".join(f"{k} {v['mean']:.3f}" for k, v in summary.items()))
        if seed_mean is not None:
            log.info("validation of the seeds' mean score (an ensemble): floor_score %.3f", seed_mean["floor_score"])
        return
    shipped = nearest_to_mean(validation) if len(best) > 1 else args.seeds[0]
    # Test figures only now, after every choice (epochs, seed) was made on validation.
    test = {seed: figures(path, test_csv) for seed, path in best.items()}
    keys = ["within_all", "within_trained", "within_held_out", "worst_trained", "pooled_srcc", "pristine_floor",
            "inside_range"]
    report = {"seeds": list(args.seeds), "shipped_seed": shipped, "recipe": vars(args) | {"work": str(args.work)},
              "validation_refs": list(VALIDATION_REFS), "test_refs": list(TEST_REFS),
              "validation_summary": mean_spread(list(validation.values()), keys),
              "test_summary": mean_spread(list(test.values()), keys),
              "validation": {str(s): r for s, r in validation.items()}, "test": {str(s): r for s, r in test.items()},
              "minutes": round((time.perf_counter() - started) / 60, 1)}
    _write_text(args.work / "report.json", json.dumps(report, indent=2, default=str))
    _write_text(args.work / "report.md", markdown(report))
    log.info("%s", markdown(report))
    shipped_ckpt = best[shipped]
    if args.install:
        target = default_checkpoint().parent
        for suffix in (".safetensors", ".json"):
            src = shipped_ckpt.with_suffix(suffix)
            if src.is_file():
                shutil.copy2(src, target / f"{DEFAULT_MODEL}{suffix}")
        log.info("installed %s (seed %d) into %s", DEFAULT_MODEL, shipped, target)
        from glia_edge.recipes.package_artifacts import package

        package()  # the runtime artifacts and their figures, from the checkpoint just installed
    log.info("recipe took %.1f min", (time.perf_counter() - started) / 60)


if __name__ == "__main__":
    main()
