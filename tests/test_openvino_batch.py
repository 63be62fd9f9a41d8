"""An OpenVINO artifact scores an image the same wherever it sits in a batch.

OpenVINO 2026.4's CPU plugin, compiling an NNCF INT8 IR for a fixed batch, fused a FakeQuantize
into a ``keep_dims=False`` ReduceMean and computed it wrongly, differently in each batch row: the
packaged default model scored 8 copies of one crop between 69.37 and 69.78.
``runtimes.openvino.keep_reduce_dims`` rewrites such reductions before compiling.
"""
from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from glia_edge.runtimes.openvino import keep_reduce_dims  # noqa: E402


def _crop_of(backend: object, name: str) -> np.ndarray:
    from glia_edge.preprocess import preprocess
    from glia_edge.weights import sample_images

    crop = np.asarray(preprocess(next(p for p in sample_images() if p.name == name), backend.meta.preprocess_config))
    return crop[None] if crop.ndim == 3 else crop


@pytest.mark.parametrize("shapes", ["static", "dynamic"])
def test_copies_of_one_crop_score_alike_in_every_batch_row(shapes: str) -> None:
    import glia_edge
    from glia_edge.weights import packaged_artifacts

    int8 = next(a for a in packaged_artifacts("int8") if a.runtime == "openvino")
    backend = glia_edge.load(int8.path, shapes=shapes, batch_size=8)
    crop = _crop_of(backend, "coffee.jpg")
    eight = backend.predict_batch(np.repeat(crop, 8, axis=0))
    assert np.ptp(eight) <= 1e-4, eight  # was 0.42 with static shapes
    assert abs(float(backend.predict_batch(crop)[0]) - float(eight[0])) <= 1e-3


def test_keep_reduce_dims_rewrites_only_axis_dropping_reductions_and_keeps_values() -> None:
    from openvino import opset13 as ops

    x = ops.parameter([2, 5, 3], np.float32, name="x")
    axes = ops.constant(np.array([1], dtype=np.int64))
    dropped = ops.reduce_mean(x, axes, keep_dims=False)
    kept = ops.reduce_max(x, axes, keep_dims=True)
    model = ov.Model([ops.concat([dropped, ops.squeeze(kept, axes)], axis=-1)], [x])
    data = np.random.default_rng(0).random((2, 5, 3), dtype=np.float32)
    before = ov.Core().compile_model(model, "CPU")(data)[0]
    assert keep_reduce_dims(model) == 1
    assert all(op.get_attributes()["keep_dims"] for op in model.get_ops() if op.get_type_name().startswith("Reduce"))
    after = ov.Core().compile_model(model, "CPU")(data)[0]
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(after, np.concatenate([data.mean(1), data.max(1)], axis=-1), atol=1e-6)
    assert keep_reduce_dims(model) == 0  # idempotent
