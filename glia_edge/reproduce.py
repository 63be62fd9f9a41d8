"""The papers' protocol as one command per dataset: train 10 splits, score their test parts, tabulate.

``reproduce(options)`` fixes what a published table depends on (preset, training recipe,
evaluation crops, epochs, splits), then for every split trains one run in its own folder
(``<output>/split<N>``), skipping splits already finished and resuming a split that was cut
short (only when they were trained with the same settings, recorded in ``done.json`` and the
training state: a folder trained otherwise is refused before anything trains), and scores that split's *test* part only after training, at the epoch chosen on the
validation part (``best``) and at the last epoch. Cross-dataset rows score each split's ``best``
on every image of another set (LoDa's: train on KonIQ-10k, test on LIVE Challenge and SPAQ).
The table (median over splits of SRCC, PLCC, KRCC, RMSE, as the papers print it) is written as
Markdown and CSV together with the command that made it; any setting that differs from the
papers' protocol is listed under the table.
"""
from __future__ import annotations

import csv
import json
import logging
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from glia_edge.atomic import atomic_write
from glia_edge.data.crop_protocol import DEFAULT_EVAL_CROPS, parse_crops
from glia_edge.errors import DatasetError, OutputError
from glia_edge.meta import dumps_json

log = logging.getLogger(__name__)

DONE = "done.json"
TEST_RESULTS = "test.json"
METRICS = ("srcc", "plcc", "krcc", "rmse")
#: The settings that define a trained split: a folder trained with other values is never reused.
#: (The split file is the output folder's own ``splits-SOURCE.json``: ``split_source`` names it.)
PROTOCOL_KEYS = ("dataset", "root", "csv", "preset", "backbone_weights", "local_weights", "split", "split_source",
                 "epochs", "batch_size", "eval_crops", "seed", "short_side", "model_overrides")
NAMES = {"koniq": "KonIQ-10k", "livec": "LIVE Challenge", "spaq": "SPAQ", "kadid": "KADID-10k", "csv": "CSV set"}
#: LoDa's cross-dataset rows: trained on KonIQ-10k, tested on these sets whole.
CROSS_TARGETS = {"koniq": ("livec", "spaq")}
#: LoDa's published medians (SRCC, PLCC), for the table's reference line.
LODA_REFERENCE = {"koniq": (0.932, 0.944), "livec": (0.876, 0.899), "spaq": (0.925, 0.928), "kadid": (0.931, 0.936)}


@dataclass
class ReproduceOptions:
    """One dataset's reproduction. Defaults are the papers' protocol; tests shrink the model."""

    dataset: str
    root: str | None = None
    csv: str | None = None
    output: str | None = None
    preset: str = "glia_vit_base"
    backbone_weights: str = "pretrained"
    local_weights: str = "pretrained"
    splits: list[int] = field(default_factory=lambda: list(range(10)))
    split_source: str = "glia"
    eval_crops: str = DEFAULT_EVAL_CROPS
    epochs: int = 10
    batch_size: int = 128
    seed: int = 3407
    device: str = "auto"
    workers: int = 4
    cross: dict[str, str] = field(default_factory=dict)  # set name -> root (or CSV file for the csv set)
    short_side: int = 384
    model_overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def output_dir(self) -> Path:
        return Path(self.output) if self.output else Path("runs") / "reproduce" / self.dataset / self.preset

    def deviations(self) -> list[str]:
        """Settings that differ from the papers' protocol (so the table says what it is not)."""
        default = ReproduceOptions(self.dataset)
        keys = ("preset", "backbone_weights", "splits", "eval_crops", "epochs", "batch_size", "seed", "short_side",
                "model_overrides")
        return [f"{k}={getattr(self, k)!r} (protocol: {getattr(default, k)!r})" for k in keys
                if getattr(self, k) != getattr(default, k)]


def split_state(run: Path) -> str:
    """``done`` (trained and marked), ``resume`` (a run cut short: its training state exists) or ``new``."""
    if (run / DONE).is_file():
        return "done"
    if (run / "last.state.pt").is_file() and (run / "last.safetensors").is_file():
        return "resume"
    return "new"


def split_protocol(opts: ReproduceOptions, split: int) -> dict[str, Any]:
    """The settings a split trains with, as compared with an earlier run in its folder."""
    from glia_edge.run_state import run_protocol

    protocol = run_protocol(_train_config(opts, split, opts.output_dir() / f"split{split}", resume=False))
    return {k: protocol[k] for k in PROTOCOL_KEYS}


def _recorded_protocol(run: Path, state: str) -> dict[str, Any] | None:
    """What the run in ``run`` was trained with: ``done.json``'s record, else its training state's."""
    from glia_edge.run_state import load_state, saved_protocol

    if state == "done":
        try:
            recorded = json.loads((run / DONE).read_text()).get("protocol")
        except (OSError, ValueError, AttributeError) as exc:
            raise OutputError(f"{run / DONE}: unreadable ({exc}); remove {run} to train this split again") from None
        if recorded is not None:
            return recorded
    state_file = run / "last.state.pt"
    return saved_protocol(load_state(state_file)) if state_file.is_file() else None


def check_split_folder(opts: ReproduceOptions, split: int) -> str:
    """The split folder's state (:func:`split_state`), after checking that a run already there was
    trained with these options; one trained otherwise is an :class:`OutputError` naming what differs."""
    from glia_edge.run_state import protocol_differences

    run = opts.output_dir() / f"split{split}"
    state = split_state(run)
    if state == "new":
        return state
    recorded = _recorded_protocol(run, state)
    if recorded is None:
        raise OutputError(f"{run}: a finished split with no record of the settings it was trained with (written by "
                          "an older glia-edge); use another --output folder, or remove it to train it again")
    changed = protocol_differences(recorded, split_protocol(opts, split), PROTOCOL_KEYS)
    if changed:
        raise OutputError(f"{run}: trained with other settings ({'; '.join(changed)}); use another --output "
                          "folder for these, or remove it to train it again")
    return state


def _train_config(opts: ReproduceOptions, split: int, run: Path, resume: bool) -> Any:
    from glia_edge.train_config import TrainConfig

    return TrainConfig(dataset=opts.dataset, root=opts.root, csv=opts.csv, preset=opts.preset,
                       backbone_weights=opts.backbone_weights, local_weights=opts.local_weights, split=split,
                       splits_file=str(opts.output_dir() / f"splits-{opts.split_source}.json"),
                       split_source=opts.split_source, output=str(run), epochs=opts.epochs,
                       batch_size=opts.batch_size, eval_crops=opts.eval_crops, seed=opts.seed, device=opts.device,
                       workers=opts.workers, resume=str(run) if resume else None, short_side=opts.short_side,
                       model_overrides=dict(opts.model_overrides), progress=opts.progress,
                       # check_split_folder has already refused a folder trained otherwise; "new" ones
                       # may hold the debris of a run cut short before its state, replaced as before.
                       overwrite=not resume)


def _score(opts: ReproduceOptions, run: Path, split: int) -> dict[str, Any]:
    """The split's test part at ``best`` and ``last``, and ``best`` on each cross-dataset target."""
    from glia_edge.checkpoint import read_checkpoint_meta
    from glia_edge.evaluate import evaluate

    common = dict(crops=parse_crops(opts.eval_crops), progress=opts.progress)
    out: dict[str, Any] = {"split": split, "crops": parse_crops(opts.eval_crops).name}
    meta = read_checkpoint_meta(run / "best.safetensors")
    out["sizes"] = meta.training.get("split_sizes", {})
    out["score"] = meta.score
    for which in ("best", "last"):
        res = evaluate(run / f"{which}.safetensors", opts.dataset, root=opts.root, csv=opts.csv, split=split, **common)
        out[which] = {**res.metrics.to_dict(), "epoch": res.epoch, "failed": res.failed}
    for target, location in sorted(opts.cross.items()):
        where = {"csv": location} if target == "csv" else {"root": location}
        res = evaluate(run / "best.safetensors", target, split="all", **where, **common)
        out[f"cross:{target}"] = {**res.metrics.to_dict(), "epoch": res.epoch, "failed": res.failed}
    return out


def run_split(opts: ReproduceOptions, split: int, train_fn: Callable[[Any], Any] | None = None,
              score_fn: Callable[[ReproduceOptions, Path, int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train (or resume, or skip) one split, then score it once; results are cached in its folder."""
    run = opts.output_dir() / f"split{split}"
    state = check_split_folder(opts, split)
    if state != "done":
        if train_fn is None:
            from glia_edge.train import train as train_fn
        log.info("split %d: %s", split, "resuming the interrupted run" if state == "resume" else "training")
        train_fn(_train_config(opts, split, run, resume=state == "resume"))
        done = {"split": split, "epochs": opts.epochs, "protocol": split_protocol(opts, split)}
        atomic_write(run / DONE, lambda tmp: tmp.write_text(dumps_json(done, indent=1)))
        (run / TEST_RESULTS).unlink(missing_ok=True)  # scored again from the new checkpoints
    cached = run / TEST_RESULTS
    if cached.is_file():
        result = json.loads(cached.read_text())
        if result.get("crops") == parse_crops(opts.eval_crops).name and all(
                f"cross:{t}" in result for t in opts.cross):
            return result
    result = (score_fn or _score)(opts, run, split)
    atomic_write(cached, lambda tmp: tmp.write_text(dumps_json(result, indent=1)))
    return result


@dataclass
class TableRow:
    train_set: str
    test_set: str
    checkpoint: str  # "best (validation)" or "last epoch"
    splits: int
    srcc: float
    plcc: float
    krcc: float
    rmse: float
    rmse_scale: str


def _scale(score: dict[str, Any]) -> str:
    return f"{score.get('name', 'MOS')} {score.get('min', 0):g}-{score.get('max', 0):g}"


def summarise(dataset: str, results: Sequence[dict[str, Any]]) -> list[TableRow]:
    """Median over splits per (test set, checkpoint): the rows the papers print."""
    if not results:
        raise DatasetError("no split results to summarise")
    keys = [("best", dataset, "best (validation)"), ("last", dataset, "last epoch")]
    keys += [(k, k.split(":", 1)[1], "best (validation)") for k in sorted({k for r in results for k in r
                                                                          if k.startswith("cross:")})]
    rows = []
    for key, test_set, label in keys:
        found = [r[key] for r in results if key in r]
        # test.json holds an undefined metric (constant scores) as null: NaN again here.
        medians = {m: float(np.median([np.nan if f[m] is None else f[m] for f in found])) for m in METRICS}
        own = key in ("best", "last")
        scale = _scale(results[0].get("score", {})) if own else f"{NAMES.get(test_set, test_set)} scale"
        rows.append(TableRow(NAMES.get(dataset, dataset), NAMES.get(test_set, test_set), label, len(found),
                             **medians, rmse_scale=scale))
    return rows


def command_line(opts: ReproduceOptions) -> str:
    """The ``glia-edge reproduce`` command that repeats this reproduction: the dataset, where it and
    the output live, and every setting that is not the protocol's default."""
    default = ReproduceOptions(opts.dataset)
    words = ["glia-edge", "reproduce", opts.dataset]
    for flag, value in (("--root", opts.root), ("--csv", opts.csv), ("--output", opts.output)):
        if value:
            words += [flag, str(value)]
    if opts.splits != default.splits:
        words += ["--splits", ",".join(map(str, opts.splits))]
    simple = (("--preset", "preset"), ("--backbone-weights", "backbone_weights"), ("--local-weights", "local_weights"),
              ("--split-source", "split_source"), ("--eval-crops", "eval_crops"), ("--epochs", "epochs"),
              ("--batch-size", "batch_size"), ("--device", "device"), ("--workers", "workers"),
              ("--short-side", "short_side"))
    for flag, key in simple:
        if getattr(opts, key) != getattr(default, key):
            words += [flag, str(getattr(opts, key))]
    for name, where in sorted(opts.cross.items()):
        words += ["--cross", f"{name}={where}"]
    for key, value in opts.model_overrides.items():
        text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
        words += ["--model-opt", f"{key}={text}"]
    return " ".join(shlex.quote(w) for w in words)


def write_table(folder: Path, opts: ReproduceOptions, rows: Sequence[TableRow], results: Sequence[dict[str, Any]],
                command: str) -> tuple[Path, Path]:
    """``table.md`` and ``table.csv`` in ``folder``, each naming the command and the protocol."""
    crops = parse_crops(opts.eval_crops)
    lines = [f"# {NAMES.get(opts.dataset, opts.dataset)}: {opts.preset}", "", f"Command: `{command}`", "",
             f"Protocol: {len(opts.splits)} splits ({opts.split_source} splits, 80/20, validation part carved "
             f"from each training part; best epoch chosen on it), {opts.epochs} epochs, batch {opts.batch_size}, "
             f"seed {opts.seed}; evaluation crops {crops.name} ({crops.describe()}). Medians over splits; "
             "PLCC and RMSE after the 4-parameter logistic fit.", "",
             "| Train | Test | Checkpoint | Splits | SRCC | PLCC | KRCC | RMSE | RMSE scale |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.train_set} | {r.test_set} | {r.checkpoint} | {r.splits} | {r.srcc:.3f} | {r.plcc:.3f} | "
              f"{r.krcc:.3f} | {r.rmse:.3f} | {r.rmse_scale} |" for r in rows]
    sizes = sorted({tuple(sorted(r.get("sizes", {}).items())) for r in results})
    lines += ["", "Split sizes (train / val / test images): " + "; ".join(
        " / ".join(str(v) for _, v in sorted(s, key=lambda kv: ("train", "val", "test").index(kv[0]))) for s in sizes)]
    if opts.dataset in LODA_REFERENCE:
        srcc, plcc = LODA_REFERENCE[opts.dataset]
        lines += ["", f"LoDa's published median SRCC / PLCC on this set: {srcc:.3f} / {plcc:.3f} (its own 10 splits, "
                      "15 random test crops, test scored every epoch)."]
    if opts.deviations():
        lines += ["", "Differs from the papers' protocol: " + "; ".join(opts.deviations()) + "."]
    folder.mkdir(parents=True, exist_ok=True)
    md, table_csv = folder / "table.md", folder / "table.csv"
    atomic_write(md, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([*asdict(rows[0]).keys(), "crops", "command"])
            writer.writerows([*asdict(r).values(), crops.name, command] for r in rows)

    atomic_write(table_csv, write_csv)
    return md, table_csv


def _check_before_training(opts: ReproduceOptions) -> None:
    """What would otherwise fail only after a split has trained (hours on the real protocol)."""
    from glia_edge.data import dataset_spec
    from glia_edge.data.splits import check_split_numbers

    from glia_edge.train import check_config

    check_split_numbers(opts.splits)
    if opts.splits:  # e.g. a --short-side below the crop size
        check_config(_train_config(opts, opts.splits[0], opts.output_dir() / f"split{opts.splits[0]}", resume=False))
    for target, location in sorted(opts.cross.items()):
        dataset_spec(target)
        if not Path(location).exists():
            raise DatasetError(f"--cross {target}={location}: not found")


def reproduce(opts: ReproduceOptions, command: str | None = None, **fns: Any) -> tuple[list[TableRow], Path, Path]:
    """Every split (resumable), then the table; returns its rows and the Markdown and CSV paths."""
    _check_before_training(opts)
    if opts.dataset in CROSS_TARGETS:
        missing = [t for t in CROSS_TARGETS[opts.dataset] if t not in opts.cross]
        if missing:
            log.warning("cross-dataset rows left out for %s: pass --cross %s=DIR", ", ".join(missing),
                        "=DIR --cross ".join(missing))
    for split in opts.splits:  # every folder before any training: a mismatch must not wait for hours
        check_split_folder(opts, split)
    results = [run_split(opts, split, **fns) for split in opts.splits]
    rows = summarise(opts.dataset, results)
    md, table_csv = write_table(opts.output_dir(), opts, rows, results, command or command_line(opts))
    return rows, md, table_csv


__all__ = ["ReproduceOptions", "TableRow", "reproduce", "run_split", "split_state", "check_split_folder",
           "split_protocol", "summarise", "write_table", "LODA_REFERENCE"]
