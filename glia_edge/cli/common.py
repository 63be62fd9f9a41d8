"""Helpers shared by CLI commands: clean one-line errors instead of tracebacks."""
from __future__ import annotations

import ast
import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import typer

from glia_edge.errors import GliaError

log = logging.getLogger("glia_edge")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn domain errors (and missing files) into one red line and exit code 2."""
    try:
        yield
    except (GliaError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


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
