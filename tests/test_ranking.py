"""Level ranking on a synthetic set: the check the default model is held to."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import glia_edge
from glia_edge.cli import app
from glia_edge.distortions import make_dataset, reference_images
from glia_edge.errors import DatasetError
from glia_edge.ranking import level_ranking, read_ladder_rows


@pytest.fixture(scope="module")
def synth_csv(tmp_path_factory):
    refs = reference_images(names=["astronaut", "coffee"], size=256, max_tiles=1)
    return make_dataset(tmp_path_factory.mktemp("synth") / "set", refs, types=["gaussian_blur", "contrast"], seed=1)


def test_blur_levels_rank_below_reference(tiny_checkpoint, synth_csv) -> None:
    report = level_ranking(glia_edge.load(tiny_checkpoint), synth_csv)
    assert set(report.per_type) == {"gaussian_blur", "contrast"}
    assert report.groups == {"gaussian_blur": 2, "contrast": 2}
    # The fixture model was fitted to score blur down, so blur levels must rank inversely.
    assert report.per_type["gaussian_blur"] <= -0.8
    assert -1.0 <= report.mean <= 1.0 and not report.failed


def test_filters_and_bad_rows(tiny_checkpoint, synth_csv) -> None:
    rows = read_ladder_rows(synth_csv, refs=["coffee"], types=["contrast"])
    assert {r["ref"] for r in rows} == {"coffee"} and {r["distortion"] for r in rows} == {"none", "contrast"}
    with pytest.raises(DatasetError, match="no rows"):
        read_ladder_rows(synth_csv, refs=["nobody"])
    (synth_csv.parent / rows[1]["path"]).write_bytes(b"")  # one broken image: reported, the rest ranked
    report = level_ranking(glia_edge.load(tiny_checkpoint), synth_csv, refs=["coffee"], types=["contrast"])
    assert len(report.failed) == 1 and "empty file" in report.failed[0][1]
    assert report.groups == {"contrast": 1}


def test_rank_levels_cli_json(tiny_checkpoint, synth_csv) -> None:
    result = CliRunner().invoke(app, ["rank-levels", str(synth_csv), "--model", str(tiny_checkpoint),
                                      "--types", "gaussian_blur", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["per_type"]) == ["gaussian_blur"] and data["mean_srcc"] <= -0.8
