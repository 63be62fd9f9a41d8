"""``glia-edge score PATH...``: score image files, folders (recursive) and globs with any artifact.

The artifact is opened with :func:`glia_edge.load` (the packaged default model without
``--model``; OpenVINO with its THROUGHPUT hint when a call carries several crops) and images
are scored through :meth:`Backend.iter_scores`, so one unreadable input (missing, empty, corrupt, not an image, over the pixel limit, unsupported mode) becomes a row with
``status=error`` and its reason, a one-line message on stderr, and a non-zero exit code, while the
rest are still scored. Files in folders with a suffix no image format has (see
``IMAGE_SUFFIXES``) are skipped and reported: a count on stderr, their paths in JSON output.
Every output names the artifact, runtime and precision that scored (table title, JSON fields,
CSV columns). Nothing here imports torch unless the artifact is a PyTorch checkpoint.

Ctrl-C or SIGTERM ends the run with one line and exit 130 or 143; results are written only when
every input has been tried, so an interrupted run writes none (``--output`` stays as it was).
"""
from __future__ import annotations

import csv
import io
import json
import logging
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import typer

from glia_edge.cli.common import MAX_PIXELS_HELP, PRECISION_HELP, cli_errors, exit_on_interrupt, fail

log = logging.getLogger(__name__)

#: Exit code when some inputs could not be scored (2 is for usage and model errors).
EXIT_SOME_FAILED = 1
COLUMNS = ("path", "score", "crops", "status", "error", "model", "runtime", "precision")


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class CropCount(str, Enum):
    one = "1"
    five = "5"
    nine = "9"


#: What ``expand_inputs`` lists in order: a path to read, or (source, reason) for what cannot be.
Entry = Union[str, tuple[str, str]]


def expand_inputs(patterns: Iterable[str]) -> tuple[list[Entry], list[str]]:
    """Files, folders (recursive, image suffixes only) and globs -> (what they name, in the order
    given and without duplicates: a path, or (source, reason) for a glob matching nothing or a
    folder that cannot be read; files in folders skipped for their suffix).

    A path that does not exist and is not a glob is kept, so it is reported as not found; a file
    named explicitly is always tried, whatever its suffix (``preprocess.expand_local``).
    """
    from glia_edge.preprocess import expand_local, unique_paths

    entries: list[Entry] = []
    skipped: list[str] = []
    for pattern in patterns:
        named, other = expand_local(pattern)
        entries.extend(named)
        skipped.extend(other)
    return unique_paths(entries), unique_paths(skipped)


def _run(backend: Any, entries: list[Entry], crops: int | None) -> list[Any]:
    """Score ``entries`` in order with a progress bar on stderr; each failure is also one line on
    stderr. Entries that cannot be read take their place in the results with their reason."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.text import Text

    from glia_edge.errors import printable
    from glia_edge.runtimes import ScoreResult

    paths = [e for e in entries if isinstance(e, str)]
    scored = iter(backend.iter_scores(paths, crops=crops))
    results: list[Any] = []
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    console = Console(stderr=True)  # the bar only on a terminal: a log file would keep its blank last frame
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("score", total=len(paths))
        for entry in entries:
            res = next(scored) if isinstance(entry, str) else ScoreResult(entry[0], None, entry[1])
            if not res.ok:  # printable: a name holding a newline must not forge a second line
                line = printable(f"error: {res.source}: {res.error}")
                progress.console.print(Text(line, style="red"), soft_wrap=True)
            results.append(res)
            if isinstance(entry, str):
                progress.advance(task)
    return results


def _rows(results: list[Any]) -> list[dict[str, Any]]:
    return [{"path": r.source, "score": r.score, "crops": r.crops, "status": "ok" if r.ok else "error",
             "error": r.error or ""} for r in results]


def ran_with(backend: Any) -> dict[str, Any]:
    """Which artifact scored, on which runtime, at which precision (and what the device really ran)."""
    from glia_edge.formats import FORMATS

    return {"model": str(backend.path), "runtime": FORMATS[backend.format].label, "format": backend.meta.format,
            "precision": backend.meta.precision,
            "inference_precision": getattr(backend, "inference_precision", None) or backend.meta.precision}


def render(results: list[Any], fmt: OutputFormat, backend: Any, skipped: list[str] | None = None) -> str:
    """The results as text in ``fmt`` (a table is rendered without colour)."""
    rows, meta, ran = _rows(results), backend.meta, ran_with(backend)
    if fmt is OutputFormat.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        extra = {"model": Path(ran["model"]).name, "runtime": ran["runtime"], "precision": ran["precision"]}
        writer.writerows({**r, **extra, "score": "" if r["score"] is None else f"{r['score']:.6f}"} for r in rows)
        return buf.getvalue()
    if fmt is OutputFormat.json:
        spec = meta.score_spec
        doc = {**ran, "preset": meta.preset,
               "score": {"name": spec.name, "min": spec.min, "max": spec.max,
                         "higher_is_better": spec.higher_is_better},
               "failed": sum(r["status"] == "error" for r in rows), "skipped": list(skipped or []),
               "results": rows}
        return json.dumps(doc, indent=2) + "\n"
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None, soft_wrap=True).print(_table(rows, meta, backend.describe()))
    return buf.getvalue()


def _table(rows: list[dict[str, Any]], meta: Any, title: str) -> Any:
    from rich.table import Table
    from rich.text import Text

    from glia_edge.errors import printable

    table = Table(title=Text(f"scored by {title}"))
    table.add_column("path", overflow="fold")  # a cut path could not tell two rows apart
    for name in (f"score ({meta.score_spec.name})", "crops", "status"):
        table.add_column(name, no_wrap=True)
    table.add_column("error", overflow="fold")
    for r in rows:
        score = "" if r["score"] is None else f"{r['score']:.3f}"
        # Text, not str: a name such as "x[/b].jpg" is not Rich markup (it raised MarkupError).
        table.add_row(Text(printable(r["path"])), score, str(r["crops"] or ""), r["status"],
                      Text(printable(r["error"] or "")),
                      style=None if r["status"] == "ok" else "red")
    return table


def _format_for(fmt: Optional[OutputFormat], output: Optional[Path]) -> OutputFormat:
    if fmt is not None:
        return fmt
    suffix = output.suffix.lower().lstrip(".") if output else ""
    return OutputFormat(suffix) if suffix in ("csv", "json") else OutputFormat.table


def score(
    paths: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) and globs."),
    model: Optional[Path] = typer.Option(None, "--model", "-m",
                                         help="Checkpoint, ONNX, OpenVINO IR or TensorRT engine (default: packaged model)."),
    crops: Optional[CropCount] = typer.Option(None, "--crops", help="Crops per image (default: the model's)."),
    fmt: Optional[OutputFormat] = typer.Option(None, "--format", "-f",
                                               help="Output format (default: from --output's suffix, else table)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Write results here (atomically; a symbolic link's target is "
                                               "replaced, a FIFO or device written in place; - for stdout)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Crops per inference call."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the runtime."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    inference_precision: Optional[str] = typer.Option(None, "--inference-precision",
                                                      help="Run float parts in this precision (OpenVINO: fp32, "
                                                           "bf16, fp16, device; PyTorch: fp32, bf16 autocast)."),
    device: Optional[str] = typer.Option(None, "--device", help="Runtime device (cpu, CPU, GPU, cuda:0 ...)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1, help=MAX_PIXELS_HELP.format("")),
    decode_workers: Optional[int] = typer.Option(None, "--decode-workers", min=0,
                                                 help="Threads decoding images ahead of inference (default: the "
                                                      "cores, up to 4; 0 = serially on the main thread)."),
) -> None:
    """Score images; unreadable inputs are reported (exit code 1) and the rest are still scored."""
    from glia_edge.atomic import check_writable
    from glia_edge.runtimes.base import load_batched

    if output is not None and str(output) == "-":
        output = None  # stdout, as without --output
    left = "no results were written" + (f" ({output} is unchanged)" if output else "")
    with exit_on_interrupt(lambda: left):
        options: dict[str, Any] = {"batch_size": batch_size, "threads": threads, "precision": precision,
                                   "inference_precision": inference_precision, "device": device}
        with cli_errors():
            if output:
                check_writable(output)  # now, not after the whole run
            try:
                given = {k: v for k, v in options.items() if v is not None}
                backend = load_batched(model, batched=batch_size > 1, **given)
            except (ValueError, TypeError) as exc:  # an option the backend refuses or does not take
                fail(str(exc))
            with backend:
                if max_pixels:
                    from glia_edge.preprocess import allow_pillow_pixels

                    backend.preprocess_config = backend.preprocess_config.replace(max_pixels=max_pixels)
                    allow_pillow_pixels(max_pixels)
                backend.decode_workers = decode_workers
                entries, skipped = expand_inputs(paths)
                if skipped:
                    typer.echo(f"skipped {len(skipped)} file(s) in folders with an unsupported suffix "
                               "(their names are in --format json output)", err=True)
                results = _run(backend, entries, int(crops.value) if crops else None)
        _emit(render(results, _format_for(fmt, output), backend, skipped), output)
        failed = sum(not r.ok for r in results)
        typer.echo(f"scored {len(results) - failed} of {len(results)} inputs with {backend.describe()}"
                   + (f"; {failed} could not be read" if failed else "")
                   + (f"; results in {output}" if output else ""), err=True)
        if failed:
            raise typer.Exit(EXIT_SOME_FAILED)


def _emit(text: str, output: Optional[Path]) -> None:
    """The rendered results to ``output`` (atomically: a failure leaves it as it was) or stdout."""
    from glia_edge.atomic import atomic_write
    from glia_edge.errors import OutputError

    if not output:
        typer.echo(text, nl=False)
        return
    with cli_errors():
        try:
            atomic_write(output, lambda tmp: tmp.write_text(text))
        except OSError as exc:
            raise OutputError(f"{output}: could not write the results ({exc.strerror or exc})") from None


def register(app: typer.Typer) -> None:
    app.command()(score)
