"""README's TensorRT, DeepStream and Jetson sections name files, extras, commands and flags that exist."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glia_edge.cli import app

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 3)
    return README[start:end if end > 0 else None]


SECTIONS = {name: _section(name) for name in ("DeepStream and GStreamer recipe", "Jetson")}


@pytest.mark.parametrize("name", SECTIONS)
def test_named_files_exist(name: str) -> None:
    paths = set(re.findall(r"\b((?:deploy|benchmarks|tests)/[\w./-]+\.(?:txt|py|sh|md))", SECTIONS[name]))
    assert paths or name == "Jetson"
    missing = sorted(p for p in paths if not (ROOT / p).exists() and not p.endswith("RESULTS-gpu.md"))
    assert not missing, missing


@pytest.mark.parametrize("name", SECTIONS)
def test_named_commands_and_flags_exist(name: str) -> None:
    text = SECTIONS[name]
    code = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
    commands = [c for snippet in code for c in re.findall(r"glia-edge ([a-z-]+)((?: [^\n#]*)?)", snippet)]
    assert commands
    for command, rest in commands:
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, f"glia-edge {command}: {result.output}"
        help_text = re.sub(r"\s+", " ", result.output)
        for flag in re.findall(r"(--[a-z][a-z0-9-]*)", rest):
            assert flag in help_text, f"glia-edge {command} has no {flag}"


def test_named_extras_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = set(re.findall(r"glia-edge\[([\w-]+)\]", README)) | set(re.findall(r"`\[([\w-]+)\]`", README))
    assert {"tensorrt-cu12", "tensorrt-cu13", "jetson"} <= named
    assert named <= set(extras), sorted(named - set(extras))
    assert "tensorrt" not in extras  # ambiguous: which CUDA major?
    assert any(r.startswith("cuda-python") and "<13" in r for r in extras["tensorrt-cu12"])
    assert any(r.startswith("tensorrt-cu12") and "<11" in r for r in extras["tensorrt-cu12"])
    assert any(r.startswith("cuda-python") and "<14" in r and ">=13" in r for r in extras["tensorrt-cu13"])
    # JetPack 6.1/6.2's CUDA 12.6: a newer cuda-python 12.x needs a newer driver than the Jetson's.
    assert extras["jetson"] == ["cuda-python>=12.6,<12.7"]
