"""Exactly-once, resumable batch output: committed Parquet parts, merged into one file at the end.

While a job runs, the driver commits scored rows in parts (``part-*.parquet``) inside a hidden
folder beside the output, ``.<output name>.parts/``; each part is written to a temporary name and
renamed, so a part is either complete or absent. A job killed at any moment is rerun with the same
``--output``: the paths already in committed parts are skipped, the rest are scored, and the final
merge keeps each input exactly once in input order, writes the output atomically and then deletes
the parts folder. ``job.json`` in the folder records the artifact and settings; a rerun with a
different model or crop count is refused instead of mixing scores from two models in one file.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from glia_edge.atomic import atomic_write
from glia_edge.errors import GliaError

log = logging.getLogger(__name__)

#: Output columns, in order. ``score`` is null for inputs that failed; ``error`` says why.
COLUMNS = ("path", "score", "crops", "status", "error", "model", "artifact_sha256", "format", "precision",
           "node", "worker_pid")
OUTPUT_FORMATS = ("parquet", "csv")


def schema() -> Any:
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("score", pa.float64()), ("crops", pa.int32()),
                      ("status", pa.string()), ("error", pa.string()), ("model", pa.string()),
                      ("artifact_sha256", pa.string()), ("format", pa.string()), ("precision", pa.string()),
                      ("node", pa.string()), ("worker_pid", pa.int64())])


def output_format(output: Path, fmt: str | None) -> str:
    """``parquet`` or ``csv``: from ``fmt``, else from the output's suffix."""
    if fmt:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
        return fmt
    suffix = output.suffix.lower().lstrip(".")
    if suffix in ("parquet", "pq"):
        return "parquet"
    if suffix == "csv":
        return "csv"
    raise ValueError(f"{output}: name the output .parquet or .csv (or pass --format)")


class ResumeMismatchError(GliaError, RuntimeError):
    """An interrupted job's parts were written with another model or settings."""


class OutputExistsError(GliaError, FileExistsError):
    """The output of a finished job is there and ``--overwrite`` was not given."""


def parts_dir_of(output: Path) -> Path:
    """The hidden folder beside ``output`` that holds an unfinished job's committed parts."""
    return output.parent / f".{output.name}.parts"


def check_can_start(output: Path, overwrite: bool) -> None:
    """Before any work: a finished output is only replaced with ``overwrite`` (an interrupted
    job's parts, if any, decide later whether this is a resume)."""
    if output.exists() and not parts_dir_of(output).is_dir() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it or choose another --output")


class ResultStore:
    """The committed parts of one job's output and the final merge."""

    def __init__(self, output: Path, fmt: str, job: dict[str, Any]) -> None:
        self.output = output
        self.fmt = fmt
        self.job = job
        self.parts_dir = parts_dir_of(output)

    # -- opening --------------------------------------------------------------------------------
    def open(self, *, overwrite: bool = False) -> set[str]:
        """Prepare the parts folder; returns the paths already committed (empty for a fresh job).

        A finished output (no parts folder) is only replaced with ``overwrite``; an interrupted
        job's parts are reused when ``job.json`` matches, and discarded with ``overwrite``.
        """
        job_file = self.parts_dir / "job.json"
        if self.parts_dir.is_dir() and overwrite:
            shutil.rmtree(self.parts_dir)
        if self.parts_dir.is_dir():
            previous = json.loads(job_file.read_text()) if job_file.is_file() else {}
            differs = {k: (previous.get(k), v) for k, v in self.job.items() if previous.get(k) != v}
            if differs:
                what = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in differs.items())
                raise ResumeMismatchError(f"{self.output}: an interrupted run with other settings left parts in "
                                          f"{self.parts_dir} ({what}); rerun with those settings or pass "
                                          "--overwrite to start again")
            done = self.committed_paths()
            log.info("resuming: %d inputs already scored in %s", len(done), self.parts_dir)
            return done
        check_can_start(self.output, overwrite)
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(job_file, lambda tmp: tmp.write_text(json.dumps(self.job, indent=2, sort_keys=True)))
        return set()

    def part_files(self) -> list[Path]:
        return sorted(self.parts_dir.glob("part-*.parquet"))

    def committed_paths(self) -> set[str]:
        import pyarrow.parquet as pq

        done: set[str] = set()
        for part in self.part_files():
            done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        return done

    # -- writing --------------------------------------------------------------------------------
    def commit(self, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` as one part (atomically); after this they survive a killed driver."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        table = pa.Table.from_pylist(rows, schema=schema())
        # Names sort in commit order (clock first), so "the first row" of a path is well defined.
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        atomic_write(self.parts_dir / name, lambda tmp: pq.write_table(table, tmp))

    def finalize(self, order: Iterable[str]) -> Any:
        """Merge the parts into the output (each path once, input order) and remove the parts.

        Returns the merged pyarrow table. Rows for paths no longer among the inputs are left out.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        position = {path: i for i, path in enumerate(order)}
        tables = [pq.read_table(p, schema=schema()) for p in self.part_files()]
        merged = pa.concat_tables(tables) if tables else schema().empty_table()
        seen: set[str] = set()
        keep: list[int] = []
        ranks: list[int] = []
        for i, path in enumerate(merged.column("path").to_pylist()):
            if path in seen or path not in position:
                if path in seen:
                    log.warning("%s: committed twice; keeping the first row", path)
                continue
            seen.add(path)
            keep.append(i)
            ranks.append(position[path])
        merged = merged.take(pa.array(keep, pa.int64()))
        merged = merged.take(pc.sort_indices(pa.array(ranks, pa.int64())))
        missing = len(position) - len(seen)
        if missing:
            raise RuntimeError(f"{missing} inputs have no committed row; rerun to finish them")
        if self.fmt == "parquet":
            atomic_write(self.output, lambda tmp: pq.write_table(merged, tmp))
        else:
            atomic_write(self.output, lambda tmp: pa_csv.write_csv(merged, tmp))
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return merged
