"""The console script as a whole: a missing optional package is one line naming its extra, NO_COLOR
turns colour off, and logs are one plain line per record when stderr is not a terminal."""
from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

import glia_edge.cli as cli


def test_a_missing_optional_package_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def needs(module: str):  # noqa: ANN202
        def command(**_: object) -> None:
            raise ModuleNotFoundError(f"No module named '{module}'", name=module)
        return command

    for module, extra in [("torch", "train"), ("scipy.stats", "train"), ("cv2", "camera"), ("nncf", "export")]:
        monkeypatch.setattr(cli, "app", needs(module))
        with pytest.raises(SystemExit) as info:
            cli.main()
        assert info.value.code == 2
        root = module.partition(".")[0]
        assert capsys.readouterr().err.strip() == (f"error: this command needs {root}, which is not installed: "
                                                   f"pip install 'glia-edge[{extra}]'")
    monkeypatch.setattr(cli, "app", needs("glia_edge.nosuch"))  # our own module missing is a bug: traceback
    with pytest.raises(ModuleNotFoundError):
        cli.main()


def _stderr_on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """What the console script writes to stderr when stderr is a terminal (a pseudo-terminal here)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", "from glia_edge.cli import main; main()", *args],
                              stdout=subprocess.DEVNULL, stderr=slave, timeout=120, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    assert proc.returncode == 2
    return b"".join(chunks).decode()


def test_no_color_turns_error_colour_off_on_a_terminal() -> None:
    args = ["score", "/no/such/image.jpg", "--model", "/no/such/model.onnx"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm"}
    assert "\x1b[31m" in _stderr_on_a_terminal(args, env)  # red, as before
    plain = _stderr_on_a_terminal(args, {**env, "NO_COLOR": "1"})
    assert "\x1b[31m" not in plain and "error: artifact not found" in plain, plain


def test_logs_are_one_plain_line_per_record_off_a_terminal() -> None:
    env = {"COLUMNS": "60", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    code = ("import logging, sys; from glia_edge.cli import _setup; _setup(verbose=False, quiet=False); "
            "logging.getLogger('glia_edge.x').info('a long message ' * 8)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("a long message") and " INFO " in lines[0], proc.stderr  # not wrapped at 60
