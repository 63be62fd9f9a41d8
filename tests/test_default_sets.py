"""The default model's sets as data: disjoint photo lists, cached under a name tied to their definition."""
from __future__ import annotations

from dataclasses import asdict

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
