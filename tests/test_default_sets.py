"""The default model's sets as data: disjoint photo lists, cached under a name tied to their definition."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from glia_edge.distortions import BUNDLED_PHOTOS, DISTORTIONS
from glia_edge.weights import default_sets


def test_train_validation_and_test_photos_are_disjoint_and_named() -> None:
    sets = default_sets()
    train, val, test = (set(sets[n].photos) for n in ("train", "validation", "test"))
    assert train and val and test
    assert not train & val and not train & test and not val & test
    assert set(sets["calibration"].photos) <= train  # INT8 calibration never sees validation or test photos
    assert all(p in BUNDLED_PHOTOS for s in sets.values() for p in s.photos)
    assert all(t in DISTORTIONS for s in sets.values() for t in s.types)
    # The test set carries types never trained on; grey copies make grey pristine content in every part.
    assert set(sets["test"].types) - set(sets["train"].types)
    assert all(sets[n].grey_copies for n in ("train", "validation", "test"))
    assert "saturation" not in sets["train"].types  # desaturating to grey is not a distortion here


def test_cached_set_folder_changes_with_its_definition(tmp_path, monkeypatch) -> None:
    import glia_edge.weights as weights

    monkeypatch.setenv("GLIA_EDGE_CACHE", str(tmp_path))
    written: list = []
    monkeypatch.setattr(weights.SyntheticSet, "write", lambda self, out, **kw: written.append(out) or out / "labels.csv")
    first = weights.default_set_csv("calibration")
    spec = default_sets()["calibration"]
    changed = {**asdict(spec), "seed": spec.seed + 1}
    monkeypatch.setattr(weights, "default_sets", lambda: {"calibration": weights.SyntheticSet(**changed)})
    second = weights.default_set_csv("calibration")
    assert first.parent != second.parent and first.parent.parent == second.parent.parent == tmp_path
    assert written == [first.parent, second.parent]


def test_recipe_work_folder_refuses_sets_built_with_other_dead_leaves(tmp_path) -> None:
    from glia_edge.recipes.default_model import build_sets

    for name, refs in (("train", ["astronaut", "dead_leaves_0", "dead_leaves_1"]), ("validation", ["coffee"]),
                       ("test", ["camera"])):
        folder = tmp_path / f"synth-{name}"
        folder.mkdir()
        rows = [f"images/{r}-0-ref.png,100.0,{r},none,0,{part}" for r in refs for part in (0, 1)]
        (folder / "labels.csv").write_text("path,score,ref,distortion,level,part\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="holds 2 dead-leaves images, not 6"):
        build_sets(tmp_path, dead_leaves=6)
    assert not (tmp_path / "train-val.csv").exists()
    combined, _, _ = build_sets(tmp_path, dead_leaves=2)  # the folder's own choice is reused
    assert sum("dead_leaves_" in line for line in combined.read_text().splitlines()) == 4


def test_recipe_candidates_add_free_photos_cap_tiles_and_record_their_set(tmp_path, monkeypatch) -> None:
    import json

    import glia_edge.weights as weights
    from glia_edge.recipes import default_model

    free = default_model.free_photos()
    assert {"aero", "ascent"} <= set(free)
    assert not set(free) & set(default_model.TRAIN_REFS + default_model.VALIDATION_REFS + default_model.TEST_REFS)
    spec = default_model.train_set(2, ["aero"], tiles=3)
    assert spec.photos == default_model.TRAIN_REFS + ("aero", "dead_leaves_0", "dead_leaves_1") and spec.tiles == 3
    assert default_model.train_set(2).tiles == default_model.TRAIN.tiles
    for taken in ("coffee", "camera", "astronaut", "lena"):  # validation, test, training, unknown
        with pytest.raises(ValueError, match=f"extra training photo {taken!r}: .*free: .*aero"):
            default_model.train_photos(0, [taken])

    written = []

    def write(self, out, **kw):  # stand-in for writing the images: an empty labels file
        out.mkdir(parents=True, exist_ok=True)
        written.append(self)
        (out / "labels.csv").write_text("path,score,ref,distortion,level,part\nimages/a.png,100.0,a,none,0,0\n")
        return out / "labels.csv"

    monkeypatch.setattr(weights.SyntheticSet, "write", write)
    default_model.build_sets(tmp_path, 2, ["aero"], 3)
    assert written[0] == spec
    assert json.loads((tmp_path / "synth-train" / "spec.json").read_text())["photos"][-3:] == ["aero", "dead_leaves_0",
                                                                                              "dead_leaves_1"]
    default_model.build_sets(tmp_path, 2, ["aero"], 3)  # the same choice: reused, nothing written again
    assert len(written) == 3
    for other in ((2, ["aero"], 4), (2, [], 3), (3, ["aero"], 3)):
        with pytest.raises(ValueError, match="built for another training set"):
            default_model.build_sets(tmp_path, *other)
