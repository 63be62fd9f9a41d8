"""The command line's surface: help that is never cut at 80 columns, --version, short flags, help
on every option, one-line errors (info, presets, serve and batch before Ray starts, --ray with
nothing listening), Ray's log levels under -q, and the serve helpers that need no cluster."""
from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner

import glia_edge
from glia_edge.cli import app

WEIGHTS = Path(glia_edge.__file__).parent / "weights"
FP32_ONNX = WEIGHTS / "glia_vit_nano.synthetic.fp32.onnx"
CHECKPOINT = WEIGHTS / "glia_vit_nano.synthetic.safetensors"


def _commands() -> dict[str, click.Command]:
    group = get_command(app)
    ctx = click.Context(group)
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


def _invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80"}, terminal_width=80)


@pytest.mark.parametrize("name", ["", *_commands()])
def test_help_at_80_columns_cuts_no_option_name_or_default(name: str) -> None:
    result = _invoke(*([name] if name else []), "--help")
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, result.output  # no cut option name, default or description
    assert max(map(len, result.output.splitlines())) <= 80, result.output
    tokens = set(result.output.replace(",", " ").replace("/", " ").split())
    params = _commands()[name].params if name else get_command(app).params
    for param in params:
        for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
            if opt.startswith("-"):
                assert opt in tokens, f"{name} --help lacks {opt} whole:\n{result.output}"
        assert isinstance(param, click.Argument) or getattr(param, "help", None), f"{name} {param.opts}: no help"


def test_top_level_help_gives_info_a_one_line_summary_and_version_prints() -> None:
    result = _invoke("--help")
    commands = result.output.partition("Commands:")[2]
    assert not [line for line in commands.splitlines() if line.rstrip().endswith("...")], commands  # none cut
    assert "Print an artifact's metadata (JSON), or which packaged model runs here." in " ".join(commands.split())
    result = _invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"glia-edge {glia_edge.__version__}"


def test_conventional_short_flags() -> None:
    assert "-m, --model" in _invoke("bench", "--help").output
    assert "-o, --output" in _invoke("bench", "--help").output
    assert "-f, --format" in _invoke("eval", "--help").output


@pytest.mark.parametrize("command", ["serve", "batch"])
def test_precision_and_max_pixels_help_match_score(command: str) -> None:
    text = " ".join(_invoke(command, "--help").output.split())
    assert "Precision hint passed to the backend" not in text
    assert "with --model: refused when the artifact is another" in text
    assert "default: the model's own limit" in text and "50000000" not in text


def test_presets_off_a_terminal_are_whole_tab_separated_rows() -> None:
    result = _invoke("presets")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["preset", "backbone", "local stream", "trainable", "total"]
    assert all(len(line.split("\t")) == 5 for line in lines)
    assert "glia_vit_base_resnet50" in {line.split("\t")[0] for line in lines}  # never split across lines


def test_presets_without_a_match_is_one_line_and_exit_1() -> None:
    result = _invoke("presets", "nomatch*")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == "error: no preset matches 'nomatch*' (glia-edge presets lists them all)"


def test_info_checks_precision_against_the_artifact_and_names_valid_ones() -> None:
    result = _invoke("info", str(FP32_ONNX), "--precision", "int8")
    assert result.exit_code == 2 and result.stdout == ""
    assert "is fp32, not int8" in result.stderr
    assert _invoke("info", str(FP32_ONNX), "--precision", "fp32").exit_code == 0
    result = _invoke("info", "--precision", "bogus")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == "error: --precision must be one of fp32, fp16, int8, bf16, got 'bogus'"


def test_info_refuses_truncated_empty_and_fieldless_artifacts(tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(CHECKPOINT.read_bytes()[:-1000])
    result = _invoke("info", str(cut))
    assert result.exit_code == 2 and "truncated safetensors file" in result.stderr, result.output
    longer = tmp_path / "longer.safetensors"
    longer.write_bytes(CHECKPOINT.read_bytes() + b"\0" * 10)
    assert "10 bytes after the tensor data" in _invoke("info", str(longer)).stderr
    empty = tmp_path / "empty.onnx"
    empty.touch()
    result = _invoke("info", str(empty))
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {empty}: empty file (0 bytes)"
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "m.engine.json").write_text(json.dumps({"format": "trt", "precision": "fp16"}))
    result = _invoke("info", str(engine))
    assert result.exit_code == 2 and "TypeError" not in result.stderr and "__init__" not in result.stderr
    assert result.stderr.strip().endswith("glia-edge metadata lacks preset, model_config, preprocess, score")


@pytest.mark.parametrize("command", [["serve", "--num-cpus", "1"], ["batch", "-o", "out.csv", "x.jpg"]])
def test_precision_other_than_the_artifact_is_refused_before_ray_starts(command: list[str]) -> None:
    pytest.importorskip("ray")
    started = time.monotonic()
    result = _invoke(*command, "--precision", "int8", "--model", str(FP32_ONNX))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith("error: this onnx artifact is fp32, not int8")
    assert len(result.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 30


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on leaving: nothing listens there


def test_ray_address_where_nothing_listens_is_one_line_at_once() -> None:
    pytest.importorskip("ray")
    from glia_edge.scale.cluster import ClusterError, probe

    port = _closed_port()
    with pytest.raises(ClusterError, match=f"nothing answers at 127.0.0.1:{port}"):
        probe(f"ray://127.0.0.1:{port}")
    probe("auto")  # left to Ray
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "glia_edge", "-q", "serve", "--ray", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and time.monotonic() - started < 60
    assert proc.stderr.strip() == (f"error: cannot join the Ray cluster at '127.0.0.1:{port}': nothing answers "
                                   f"at 127.0.0.1:{port} (Connection refused)")


def test_ray_loggers_follow_quiet_and_verbose() -> None:
    from glia_edge.cli import _setup
    from glia_edge.cli.common import quiet_ray_logs

    try:
        for flags, level in (({}, logging.WARNING), ({"quiet": True}, logging.ERROR),
                             ({"verbose": True}, logging.INFO)):
            _setup(**{"verbose": False, "quiet": False, **flags})
            logging.getLogger("ray.serve").setLevel(logging.INFO)  # what importing ray.serve sets
            quiet_ray_logs()
            assert logging.getLogger("ray").level == logging.getLogger("ray.serve").level == level
    finally:
        _setup(verbose=False, quiet=False)


def test_verbose_is_glia_edges_own_debug_output_only() -> None:
    from glia_edge.cli import _setup

    try:
        _setup(verbose=True, quiet=False)  # Pillow logs every PNG chunk at DEBUG: not under -v
        assert logging.getLogger("glia_edge.train").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("PIL.PngImagePlugin").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("PIL.PngImagePlugin").isEnabledFor(logging.INFO)
        _setup(verbose=False, quiet=False)  # the level -v set does not outlive it (one process, many calls)
        assert not logging.getLogger("glia_edge.train").isEnabledFor(logging.DEBUG)
        _setup(verbose=False, quiet=True)
        assert not logging.getLogger("glia_edge.train").isEnabledFor(logging.INFO)
    finally:
        _setup(verbose=False, quiet=False)


def test_deploy_failure_reason_is_the_replicas_exception_line() -> None:
    from glia_edge.cli.serve_cmd import deploy_failure_reason

    message = ("Deploying application glia-edge failed: The deployment failed to start 3 times in a row. "
               "See controller logs for details. Error:\nTraceback (most recent call last):\n"
               '  File "replica.py", line 1, in _initialize\n    raise x\n'
               "ray.exceptions.RayTaskError(ValueError): ray::ServeReplica:glia-edge.initialize()\n"
               "ValueError: this onnx artifact is fp32, not int8: its precision is fixed at export\n")
    assert deploy_failure_reason(message) == "this onnx artifact is fp32, not int8: its precision is fixed at export"
    assert deploy_failure_reason("something odd\nlast words") == "last words"


def test_pillow_bomb_message_gives_the_pixel_count() -> None:
    pytest.importorskip("ray.serve")
    from PIL import Image

    from glia_edge.scale.serve import bomb_pixels

    with pytest.raises(Image.DecompressionBombError) as info:
        Image._decompression_bomb_check((20_000, 20_000))
    assert bomb_pixels(info.value) == 400_000_000
    assert bomb_pixels(ValueError("no count")) is None


def test_synth_and_rank_levels_argument_errors_are_one_line(tmp_path: Path) -> None:
    for args in (["synth"], ["synth", str(tmp_path / "out"), "--types", "nosuch"],
                 ["rank-levels", "x.csv", "--crops", "4"]):
        result = _invoke(*args)
        assert result.exit_code == 2 and result.stderr.startswith("error: ") and \
            len(result.stderr.strip().splitlines()) == 1, (args, result.output)


def test_os_errors_are_one_line_but_a_closed_pipe_is_not_the_commands_error() -> None:
    import typer

    from glia_edge.cli.common import cli_errors

    with pytest.raises(typer.Exit) as exited, cli_errors():
        raise NotADirectoryError(20, "Not a directory", "out/bench.md/sub")
    assert exited.value.exit_code == 2
    with pytest.raises(BrokenPipeError), cli_errors():  # `| head` closed stdout: no error line, no exit 2
        raise BrokenPipeError(32, "Broken pipe")
