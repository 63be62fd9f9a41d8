"""Helpers shared by CLI commands: clean one-line errors instead of tracebacks."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

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
