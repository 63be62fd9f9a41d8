"""Helpers shared by CLI commands: clean one-line errors instead of tracebacks."""
from __future__ import annotations

import ast
import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, NoReturn, Optional, Sequence

import typer

from glia_edge.errors import GliaError

log = logging.getLogger("glia_edge")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn domain errors, missing files and other OS errors (an unwritable or file-blocked output
    path) into one red line naming the path and the reason, and exit code 2."""
    try:
        yield
    except (GliaError, FileNotFoundError) as exc:
        fail(str(exc))
    except BrokenPipeError:  # a reader that stopped early (| head) is not this command's error
        raise
    except OSError as exc:
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or str(exc) or type(exc).__name__
        fail(f"{where}: {reason}" if where else reason)


#: ``--precision`` of the commands that load an artifact (score's wording; serve and batch share it).
PRECISION_HELP = ("The artifact's precision (fp32, fp16, bf16, int8). Without --model: picks the packaged artifact "
                  "of this precision (fp32 by default, int8); with --model: refused when the artifact is another.")
#: ``--max-pixels``: one default everywhere (None), the model's own limit; each help says so.
MAX_PIXELS_HELP = ("Refuse images with more pixels, a decompression-bomb guard{} (default: the model's own limit, "
                   "100000000 unless its metadata sets another).")


def fail(message: str, code: int = 2) -> NoReturn:
    """End the command with one red ``error: message`` line on stderr and exit ``code`` (2: usage
    and model errors, 1: some inputs failed); non-printable characters (a newline in a file name or
    URL) are escaped, so the message stays one line."""
    from glia_edge.errors import printable

    typer.secho(printable(f"error: {message}"), fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def bars_wanted(progress: bool) -> bool:
    """Progress bars follow ``-q`` as the log lines do (off when ``glia_edge`` logs warnings only),
    and, as ``score``'s and ``synth``'s, draw only on a terminal: redirected to a file or journald,
    each redraw would be another ``\r`` line in the log."""
    return (progress and logging.getLogger("glia_edge").getEffectiveLevel() < logging.WARNING
            and stderr_is_terminal())


def stderr_is_terminal() -> bool:
    """Whether stderr (where bars and logs go) is a terminal, looked up at call time."""
    import sys

    return sys.stderr.isatty()


def split_items(items: Optional[Sequence[str]]) -> list[str] | None:
    """A list option given repeated and/or comma-separated (``--types a --types b,c``) -> its
    items in order, without blanks or duplicates; None when none were given."""
    out = [t.strip() for item in (items or []) for t in item.split(",") if t.strip()]
    return list(dict.fromkeys(out)) or None


def check_precision_name(precision: Optional[str]) -> None:
    """``--precision`` must name a precision: a typo is one line listing the valid ones (exit 2)."""
    from glia_edge.formats import PRECISIONS

    if precision is not None and precision not in PRECISIONS:
        fail(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def checked_artifact_meta(model: Any, precision: Optional[str]) -> Any:
    """``model``'s metadata with ``--precision`` checked against it as ``glia_edge.load()`` checks
    it (``Backend.check_precision``), before any Ray process starts or a replica loads it: an
    unreadable artifact raises its domain error (one line under :func:`cli_errors`), another
    precision is one ``error:`` line, exit 2."""
    from glia_edge.runtimes.base import Backend
    from glia_edge.scale.artifact import read_artifact_meta

    check_precision_name(precision)
    meta = read_artifact_meta(model)
    try:
        Backend.check_precision(meta, precision)
    except ValueError as exc:
        fail(str(exc))
    return meta


#: Level of Ray's own loggers ("ray", "ray.serve"), set by the ``-v``/``-q`` of the console script.
RAY_LOG_LEVEL = {"verbose": logging.INFO, "default": logging.WARNING, "quiet": logging.ERROR}
_ray_level = RAY_LOG_LEVEL["default"]


def set_ray_log_level(level: int) -> None:
    """The level :func:`quiet_ray_logs` gives Ray's loggers (the CLI's logging setup calls this)."""
    global _ray_level
    _ray_level = level


def quiet_ray_logs() -> None:
    """Ray's loggers to the CLI's level: WARNING by default (no Serve start-up INFO lines), ERROR
    under ``-q``. Called after Ray is imported and joined, since both reset the levels."""
    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(_ray_level)


def parse_key_values(items: Iterable[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> a dict; values are Python literals where they parse (True, 0.15,
    None, ['a', 'b'], 8,16 as a tuple), else plain text. Raises ``ValueError`` naming ``flag``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM (``docker stop``, systemd, a batch scheduler): it ends a run as Ctrl-C does."""


#: Exit codes of a run a signal ended: 128 + the signal's number, as a shell reports it.
SIGNAL_EXIT_CODES = {"interrupted": 130, "terminated": 143}


def interruption(exc: KeyboardInterrupt) -> str:
    """``terminated`` for SIGTERM, ``interrupted`` for Ctrl-C: the key of :data:`SIGNAL_EXIT_CODES`."""
    return "terminated" if isinstance(exc, Terminated) else "interrupted"


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) while the block runs, so a
    service manager's stop ends the run through the same clean-up as Ctrl-C. Installed after
    libraries that set their own handler (Ray's prints a native stack trace and exits 15)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def exit_on_interrupt(what_is_left: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside the block ends the command with one line, ``interrupted: ...`` or
    ``terminated: ...`` followed by ``what_is_left()`` (what the run kept, how to go on), and exit
    130 or 143. SIGTERM is turned into the same interruption (:func:`sigterm_as_interrupt`)."""
    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt as exc:
        how = interruption(exc)
        typer.secho(f"{how}: {what_is_left()}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(SIGNAL_EXIT_CODES[how]) from None
