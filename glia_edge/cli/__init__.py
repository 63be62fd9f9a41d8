"""The ``glia-edge`` console script: one Typer app, one module per subcommand.

Each module in ``COMMAND_MODULES`` defines ``register(app)``. Heavy imports (torch, runtimes)
happen inside the commands, so ``glia-edge --help`` and scoring stay light.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from glia_edge.cli.common import RAY_LOG_LEVEL, set_ray_log_level

COMMAND_MODULES = (
    "glia_edge.cli.info_cmd",
    "glia_edge.cli.export_cmd",
    "glia_edge.cli.train_cmd",
    "glia_edge.cli.eval_cmd",
    "glia_edge.cli.reproduce_cmd",
    "glia_edge.cli.rank_cmd",
    "glia_edge.cli.synth_cmd",
    "glia_edge.cli.watch_cmd",
    "glia_edge.cli.score_cmd",
    "glia_edge.cli.bench_cmd",
    "glia_edge.cli.batch_cmd",
    "glia_edge.cli.serve_cmd",
)

class GliaGroup(TyperGroup):
    """Help in click's plain layout (``rich_markup_mode=None`` below): option names and defaults are
    never cut with an ellipsis at 80 columns or in a pipe, as rich's boxed columns cut them. The
    command list wraps each summary instead of truncating it at the terminal's width."""

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:  # click's HelpFormatter
        rows = [(name, cmd.get_short_help_str(limit=1_000)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="glia-edge",
    cls=GliaGroup,
    help="Blind image quality assessment (GLIA) from training to edge runtimes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's layout: see GliaGroup
)


def _print_version(value: bool) -> None:
    if value:
        import glia_edge

        typer.echo(f"glia-edge {glia_edge.__version__}")
        raise typer.Exit()


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
           version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                        help="Print the version and exit.")) -> None:
    """glia-edge: train, export, score, benchmark and watch image quality."""
    from rich.console import Console
    from rich.logging import RichHandler

    import warnings

    from PIL import Image

    # glia-edge's own pixel limit (--max-pixels) refuses oversized images with a one-line error;
    # Pillow's two-line warning for those over its lower limit would only repeat it.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    if not verbose:  # OpenCV's and FFmpeg's own lines ("moov atom not found", "[ WARN:0@0.01] ...")
        # only repeat the one-line source error; -v keeps them. Read when cv2 is first imported
        # (lazily, later), and a user's own setting wins.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    # -v is glia-edge's own debug output: other libraries stay at INFO (Pillow alone logs every PNG
    # chunk at DEBUG, over a thousand lines per training epoch).
    level = logging.WARNING if quiet else logging.INFO
    # Logs go to stderr: stdout carries results (CSV/JSON) that other programs read. A terminal
    # gets rich's columns; a file or journald one plain line per record (rich would wrap at 80).
    console = Console(stderr=True)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler, fmt = logging.StreamHandler(sys.stderr), "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="[%X]", handlers=[handler], force=True)
    logging.getLogger("glia_edge").setLevel(logging.DEBUG if verbose else logging.NOTSET)
    # Ray's own loggers (serve, batch): no INFO chatter by default, errors only under -q.
    set_ray_log_level(RAY_LOG_LEVEL["verbose" if verbose else "quiet" if quiet else "default"])


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)

#: Optional packages (top-level module names) -> the extra that installs them.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "torchvision", "timm", "safetensors", "scipy", "tqdm", "pandas", "openpyxl", "skimage",
                     "sklearn", "pywt"), "train"),
    **dict.fromkeys(("onnx", "onnxscript", "onnxslim", "nncf"), "export"),
    "onnxruntime": "onnxruntime", "openvino": "openvino", "cv2": "camera", "matplotlib": "camera",
    "psutil": "bench", "cpuinfo": "bench", "ray": "ray", "pyarrow": "ray",
    "tensorrt": "tensorrt-cu12", "cuda": "tensorrt-cu12",
}


def missing_extra_line(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra that installs a missing optional package; None for any other module."""
    root = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(root)
    if extra is None:
        return None
    return f"error: this command needs {root}, which is not installed: pip install 'glia-edge[{extra}]'"


def main() -> None:
    """The console script: a command that needs an optional package this install lacks ends in
    one line naming the extra to install, not a traceback; NO_COLOR turns colour off everywhere."""
    try:
        app(color=False if os.environ.get("NO_COLOR") else None)
    except ModuleNotFoundError as exc:
        line = missing_extra_line(exc)
        if line is None:
            raise
        typer.secho(line, err=True, color=False if os.environ.get("NO_COLOR") else None, fg=typer.colors.RED)
        raise SystemExit(2) from None
