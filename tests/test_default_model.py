"""The packaged default model: present, small, bounded, documented, and its card's figures reproducible."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import glia_edge
from glia_edge.checkpoint import read_checkpoint_meta
from glia_edge.recipes.default_model import (DEAD_LEAVES, FLOORS, HELD_OUT_TYPES, SEEDS, TEST, TEST_REFS,
                                             TRAIN_TYPES, VALIDATION_REFS, floor_score, train_photos)
from glia_edge.weights import DEFAULT_MODEL, default_checkpoint

CARD = Path(glia_edge.__file__).parent / "weights" / "MODEL_CARD.md"


def test_the_default_model_ships_small_and_says_how_it_was_made() -> None:
    path = default_checkpoint()
    assert path.name == f"{DEFAULT_MODEL}.safetensors"
    assert path.stat().st_size <= 25 * 2**20
    meta = read_checkpoint_meta(path)
    assert meta.preset == "glia_vit_nano" and meta.model_config["score_head"] == "sigmoid"
    training = meta.training
    assert training["frozen_dtype"] == "float16" and training["seed"] in SEEDS and len(training["seeds"]) >= 3
    assert training["backbone_weights"] is None and training["rank_weight"] > 0 and training["cross_rank_weight"] > 0
    assert (training["train_refs"], training["validation_refs"], training["test_refs"]) == \
        (list(train_photos(DEAD_LEAVES)), list(VALIDATION_REFS), list(TEST_REFS))
    assert training["eval_part"] == "val" and training["split"] == "official"  # epoch chosen on validation photos
    assert set(training["held_out_types"]) == set(HELD_OUT_TYPES) and not set(HELD_OUT_TYPES) & set(TRAIN_TYPES)
    assert meta.preprocess.get("version") == 2  # trained on the fast preprocessing definition


def test_scores_stay_inside_the_declared_range_whatever_the_input() -> None:
    model = glia_edge.load()  # no path: the packaged default
    spec = model.meta.score_spec
    rng = np.random.default_rng(0)
    extremes = [np.zeros((300, 400, 3), np.uint8), np.full((300, 400, 3), 255, np.uint8),
                rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
                np.tile(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], (300, 1, 3))]
    scores = [r.score for r in model.iter_scores(extremes)]
    assert all(spec.min <= s <= spec.max for s in scores), scores


def test_model_card_names_its_photos_and_gives_the_recipe_and_the_per_type_table() -> None:
    card = CARD.read_text()
    assert "python -m glia_edge.recipes.default_model" in card
    assert all(str(seed) in card for seed in SEEDS)
    for photo in (*VALIDATION_REFS, *TEST_REFS):
        assert photo in card, photo
    for kind in TEST.types:
        assert re.search(rf"\| {kind} \| (yes|held out) \| -?\d\.\d+", card), kind
    assert "random" in card.lower() and "KonIQ" in card


def test_the_cards_test_figures_are_what_the_packaged_model_scores(tmp_path: Path) -> None:
    """Rebuilt from scratch: the test photos' images, scored by what ``load()`` picks."""
    from glia_edge.ranking import scale_report

    labels = TEST.write(tmp_path / "test")
    model = glia_edge.load()
    spec = model.meta.score_spec
    report = scale_report(model, labels, (spec.min, spec.max))
    assert not report.ranking.failed
    card = CARD.read_text()

    def shipped(name: str) -> float:  # the card's "shipped seed" column of one headline figure
        return float(re.search(rf"\| {re.escape(name)} \|[^|]*\|[^|]*\|[^|]*\| (-?\d\.\d+) \|", card).group(1))

    assert report.ranking.mean == pytest.approx(shipped("within-series Spearman, mean over types"), abs=0.005)
    assert report.pooled == pytest.approx(shipped("pooled Spearman (all photos, all types)"), abs=0.005)
    assert report.pristine_floor == pytest.approx(shipped("lowest pristine score (share of range)"), abs=0.005)
    assert report.inside == pytest.approx(shipped("scores inside the range"), abs=0.005)
    assert report.inside == 1.0  # the sigmoid head: nothing escapes the range


def test_the_recipe_choice_rule_rewards_each_floor_up_to_meeting_it_and_no_further() -> None:
    met = dict(FLOORS)
    assert floor_score(met) == pytest.approx(4.0)
    assert floor_score({k: 2 * v for k, v in FLOORS.items()}) == pytest.approx(4.0)  # beyond a floor: no credit
    half = {**met, "pooled_srcc": FLOORS["pooled_srcc"] / 2}
    assert floor_score(half) == pytest.approx(3.5)
    wrong_sign = {**met, "worst_trained": 0.4}  # a type that ranks backwards costs
    assert floor_score(wrong_sign) == pytest.approx(3.0 - 0.5)


def test_ladder_repeats_take_trained_types_only() -> None:
    import argparse

    from glia_edge.recipes.default_model import _type_repeat

    assert _type_repeat("jpeg=3") == ("jpeg", 3)
    for bad in ("jpeg", "jpeg=0", "jpeg=x", "motion_blur=2"):  # motion blur is held out of training
        with pytest.raises(argparse.ArgumentTypeError, match="TYPE=N"):
            _type_repeat(bad)


def test_the_recipes_loss_weights_reach_the_training_run(tmp_path: Path, monkeypatch) -> None:
    import glia_edge.train
    from glia_edge.recipes import default_model

    seen = []

    class Stop(Exception):
        pass

    def fake_train(cfg):  # stop before any image is read: only the config is checked
        seen.append(cfg)
        raise Stop

    sets_asked = []
    monkeypatch.setattr(default_model, "build_sets", lambda work, *choice: sets_asked.append(choice) or (
        work / "t.csv", work / "v.csv", work / "x.csv"))
    monkeypatch.setattr(glia_edge.train, "train", fake_train)
    with pytest.raises(Stop):
        default_model.main(["--work", str(tmp_path), "--seeds", "5", "--train-only", "--l1-weight", "0.7",
                            "--rank-weight", "0.5", "--cross-rank-weight", "2.0", "--extra-photos", "aero", "ascent",
                            "--tiles", "4"])
    cfg = seen[0]
    assert (cfg.l1_weight, cfg.rank_weight, cfg.cross_rank_weight, cfg.seed) == (0.7, 0.5, 2.0, 5)
    assert sets_asked[0] == (default_model.DEAD_LEAVES, ["aero", "ascent"], 4)
    # the defaults stay the shipped recipe's
    seen.clear()
    with pytest.raises(Stop):
        default_model.main(["--work", str(tmp_path), "--seeds", "5", "--train-only"])
    assert (seen[0].l1_weight, seen[0].rank_weight, seen[0].cross_rank_weight) == (0.1, 1.0, 1.0)
    assert sets_asked[1] == (default_model.DEAD_LEAVES, [], None)


def test_recipe_names_the_missing_debian_package_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    from glia_edge import distortions
    from glia_edge.recipes import default_model

    monkeypatch.setitem(distortions.DEBIAN_PHOTOS, "kde_path",
                        ("plasma-workspace-wallpapers", str(tmp_path / "absent" / "2560x1600.jpg")))
    with pytest.raises(SystemExit) as exit_info:
        default_model.main(["--work", str(tmp_path / "w"), "--seeds", "5", "--train-only", "--no-progress",
                            "--extra-photos", "kde_path"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("'kde_path' comes with the Debian package plasma-workspace-wallpapers: "
                          "apt-get install plasma-workspace-wallpapers")
    assert not (tmp_path / "w" / "synth-train" / "labels.csv").exists()  # nothing half-written


def test_seed_mean_scores_each_image_by_the_mean_and_keeps_errors() -> None:
    from glia_edge.recipes.default_model import SeedMean
    from runtimes.base import ScoreResult

    class Fixed:
        def __init__(self, scores):
            self.scores = scores

        def iter_scores(self, images, crops=None):
            for image, score in zip(images, self.scores):
                yield (ScoreResult(str(image), None, error=f"{image}: unreadable") if score is None
                       else ScoreResult(str(image), score, crops=1))

    mean = SeedMean([Fixed([10.0, 40.0, None]), Fixed([30.0, 60.0, 5.0])])
    out = list(mean.iter_scores([Path("a.png"), Path("b.png"), Path("c.png")]))
    assert [r.score for r in out[:2]] == [20.0, 50.0] and out[0].source == "a.png"
    assert not out[2].ok and out[2].error == "c.png: unreadable"  # one model's error is the image's error
