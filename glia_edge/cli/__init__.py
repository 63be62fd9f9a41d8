"""The ``glia-edge`` console script: one Typer app, one module per subcommand.

Each module in ``COMMAND_MODULES`` defines ``register(app)``. Heavy imports (torch, runtimes)
happen inside the commands, so ``glia-edge --help`` and scoring stay light.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

import typer

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

app = typer.Typer(
    name="glia-edge",
    help="Blind image quality assessment (GLIA) from training to edge runtimes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only.")) -> None:
    """glia-edge: train, export, score, benchmark and watch image quality."""
    from rich.console import Console
    from rich.logging import RichHandler

    import warnings

    from PIL import Image

    # glia-edge's own pixel limit (--max-pixels) refuses oversized images with a one-line error;
    # Pillow's two-line warning for those over its lower limit would only repeat it.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    # Logs go to stderr: stdout carries results (CSV/JSON) that other programs read. A terminal
    # gets rich's columns; a file or journald one plain line per record (rich would wrap at 80).
    console = Console(stderr=True)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler, fmt = logging.StreamHandler(sys.stderr), "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="[%X]", handlers=[handler], force=True)


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
