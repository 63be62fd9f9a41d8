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
    with pytest.raises(DatasetError, match="no distorted rows"):
        read_ladder_rows(synth_csv, refs=["nobody"])
    with pytest.raises(DatasetError, match="no distorted rows.*types here: .*contrast"):  # was a nan mean
        read_ladder_rows(synth_csv, types=["foo"])
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


class _LevelModel:
    """A stand-in backend scoring from the file name: ``100 - 18 * level`` plus an offset per photo."""

    def __init__(self, offsets: dict[str, float]) -> None:
        self.offsets = offsets

    def iter_scores(self, paths, crops=None):
        from glia_edge.runtimes.base import ScoreResult

        for p in paths:
            stem = p.stem
            level = 0 if stem.endswith("-ref") else int(stem.rsplit("-", 1)[1])
            yield ScoreResult(str(p), 100.0 - 18.0 * level + self.offsets[stem.split("-")[0]], None)


def test_scale_report_pools_photos_and_flags_grey_pristine_references(synth_csv) -> None:
    from glia_edge.ranking import scale_report

    aligned = scale_report(_LevelModel({"astronaut": 0.0, "coffee": 0.0}), synth_csv, (10.0, 100.0))
    assert aligned.pooled == pytest.approx(-1.0) and aligned.ranking.mean == pytest.approx(-1.0)
    assert aligned.inside == 1.0 and aligned.pristine_floor == 1.0
    assert {k: v["grey"] for k, v in aligned.pristine.items()} == {"astronaut-0": False, "coffee-0": False}
    # One photo 40 points down: every series still ranks perfectly, the pooled figure and the floor do not.
    shifted = scale_report(_LevelModel({"astronaut": 0.0, "coffee": -40.0}), synth_csv, (10.0, 100.0))
    assert shifted.ranking.mean == pytest.approx(-1.0) and shifted.pooled > -0.95
    assert shifted.pristine_floor == pytest.approx((60.0 - 10.0) / 90.0) and shifted.inside < 1.0


class _FlatForType(_LevelModel):
    """Scores like :class:`_LevelModel`, except every ``contrast`` image scores as its reference."""

    def iter_scores(self, paths, crops=None):
        from glia_edge.runtimes.base import ScoreResult

        for p, res in zip(paths, super().iter_scores(paths, crops)):
            yield ScoreResult(res.source, 100.0 if "-contrast-" in p.stem else res.score, None)


def test_a_constant_series_counts_as_no_ranking_and_json_stays_valid(synth_csv, monkeypatch, caplog) -> None:
    from glia_edge.ranking import RankingReport

    model = _FlatForType({"astronaut": 0.0, "coffee": 0.0})
    with caplog.at_level("WARNING"):
        report = level_ranking(model, synth_csv)
    assert report.per_type == {"contrast": 0.0, "gaussian_blur": pytest.approx(-1.0)}  # agreement's rule: 0, not NaN
    assert report.constant == {"contrast": 2} and report.mean == pytest.approx(-0.5)
    assert "contrast: 2 of 2 series score every level the same" in caplog.text

    def strict(text: str) -> dict:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))

    assert strict(json.dumps(RankingReport({}, {}).to_dict()))["mean_srcc"] is None  # nothing ranked: null
    monkeypatch.setattr(glia_edge, "load", lambda *a, **k: model)
    result = CliRunner().invoke(app, ["rank-levels", str(synth_csv), "--json"])
    assert result.exit_code == 0, result.output
    data = strict(result.stdout)
    assert data["per_type"]["contrast"] == 0.0 and data["constant"] == {"contrast": 2}


@pytest.fixture()
def small_csv(tmp_path):
    refs = reference_images(names=["coffee"], size=128, max_tiles=1)
    return make_dataset(tmp_path / "set", refs, types=["jpeg", "gaussian_blur", "contrast"], levels=2, seed=1)


def _rank(*args: str):  # noqa: ANN202
    return CliRunner().invoke(app, ["rank-levels", *map(str, args)])


def test_rank_levels_exits_1_when_images_fail(tiny_checkpoint, small_csv) -> None:
    broken = small_csv.parent / "images" / "coffee-0-jpeg-1.png"
    broken.write_bytes(b"")
    result = _rank(small_csv, "--model", tiny_checkpoint, "--json")
    assert result.exit_code == 1, result.output
    assert f"error: {broken}: empty file" in result.stderr
    assert json.loads(result.stdout)["failed"]  # the rest still ranked and printed


def test_rank_levels_escapes_control_characters_in_names(tiny_checkpoint, small_csv, tmp_path) -> None:
    # A name holding a newline stays one line, in the failed-image rows and in fail()'s errors alike.
    images = small_csv.parent / "images"
    (images / "coffee-0-jpeg-1.png").unlink()
    (images / "coffee-0-jpeg-1\nerror: forged.png").write_bytes(b"")
    small_csv.write_text(small_csv.read_text().replace("images/coffee-0-jpeg-1.png",
                                                       '"images/coffee-0-jpeg-1\nerror: forged.png"'))
    result = _rank(small_csv, "--model", tiny_checkpoint, "--json")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "jpeg-1\\nerror: forged.png: empty file" in errors[0], result.stderr
    missing = _rank(tmp_path / "no\nerror: such.csv", "--model", tiny_checkpoint)
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1 and "no\\nerror" in missing.stderr


def test_rank_levels_refuses_rows_that_do_not_match_the_header(small_csv) -> None:
    rows = small_csv.read_text().splitlines()[1:]
    small_csv.write_text(small_csv.read_text() + "images/x,y.png,50.0,coffee,jpeg,1,0\n")  # unquoted comma
    with pytest.raises(DatasetError, match=rf"data row {len(rows) + 1} does not match the header"):
        read_ladder_rows(small_csv)
    small_csv.write_text("\n".join(["path,score,ref,distortion,level,part", *rows[:2], "images/z.png,50.0"]))
    with pytest.raises(DatasetError, match=r"data row 3 does not match the header"):
        read_ladder_rows(small_csv)


def test_rank_levels_takes_repeated_and_comma_separated_filters(tiny_checkpoint, small_csv) -> None:
    result = _rank(small_csv, "--model", tiny_checkpoint, "--json", "--types", "jpeg", "--types",
                   "gaussian_blur,contrast", "--refs", "coffee")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["per_type"]) == {"jpeg", "gaussian_blur", "contrast"}


def test_rank_levels_checks_arguments_before_the_model_loads(small_csv, tmp_path) -> None:
    nomodel = tmp_path / "nosuch.onnx"  # were the model loaded first, this would be the error
    result = _rank(tmp_path / "missing.csv", "--model", nomodel)
    assert result.exit_code == 2 and "labels file not found" in result.stderr, result.output
    result = _rank(small_csv, "--model", nomodel, "--refs", "nosuch", "--types", "jpeg")
    assert result.exit_code == 2 and "[" not in result.stderr and "None" not in result.stderr
    assert result.stderr.strip() == f"error: --refs: {small_csv} has no nosuch (it holds: coffee)"
    result = _rank(small_csv, "--types", "jpeg,bogus")
    assert result.stderr.strip().endswith("has no bogus (it holds: contrast, gaussian_blur, jpeg)")
    result = _rank(small_csv, "--threads", "0")
    assert result.exit_code == 2 and "--threads" in result.output
