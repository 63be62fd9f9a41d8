"""Names that look like Rich markup are printed as they are: a file called ``x[/bold].jpg`` made
``score``'s table raise ``MarkupError``, and ``[bold]b.jpg`` lost its brackets."""
from __future__ import annotations

import shutil
from pathlib import Path

from tests._export_fixtures import run_cli


def test_score_table_prints_markup_like_names_literally(tiny_checkpoint: Path, image_dir: Path,
                                                        tmp_path: Path) -> None:
    photo = sorted(image_dir.glob("*.jpg"))[0]
    bold = tmp_path / "[bold]b.jpg"
    shutil.copy(photo, bold)
    missing = tmp_path / "x[red]gone.png"  # no such file: its row carries the error
    result = run_cli("score", "-m", tiny_checkpoint, "--decode-workers", "0", bold, missing)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output  # one input could not be read
    rows = _table_rows(result.output)
    assert any("[bold]b.jpg" in row for row in rows) and any("x[red]gone.png" in row for row in rows), rows


def test_score_table_row_with_closing_tag_and_newline(tiny_checkpoint: Path, tmp_path: Path) -> None:
    closing = "x[/bold].png"  # a closing tag with no opening one was the MarkupError
    newline = tmp_path / "odd\nname.png"
    result = run_cli("score", "-m", tiny_checkpoint, "--decode-workers", "0", tmp_path / "none.png",
                     closing, newline)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output
    rows = _table_rows(result.output)
    assert any("x[/bold].png" in row for row in rows), rows
    assert any("odd\\nname.png" in row for row in rows), rows  # escaped: the row stays one line
    assert not any(row.lstrip("│ ").startswith("name.png") for row in rows), rows


def _table_rows(output: str) -> list[str]:
    """The table's body lines (the error lines on stderr name the same files)."""
    return [line for line in output.splitlines() if line.startswith("│")]

