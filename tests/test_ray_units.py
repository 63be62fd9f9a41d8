"""The pieces of scale-out that need no running Ray: CPU sizing, artifact shipping, input
expansion and the exactly-once result store (resume, refusal, merge order)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pyarrow")

from glia_edge.scale.artifact import ArtifactBundle  # noqa: E402
from glia_edge.scale.cluster import plan_resources  # noqa: E402
from glia_edge.preprocess import NO_MATCH, PreprocessConfig, crops_uint8  # noqa: E402
from glia_edge.scale.inputs import expand_inputs, load_source, read_manifest  # noqa: E402
from glia_edge.scale.output import OutputExistsError, ResultStore, ResumeMismatchError, schema  # noqa: E402


@pytest.mark.parametrize("cpus,actors", [(1, None), (2, None), (2, 2), (2, 3), (3, None), (16, None), (64, 8)])
def test_plan_always_leaves_room_for_decode_tasks(cpus: int, actors: int | None) -> None:
    plan = plan_resources(cpus, actors)
    assert plan.actor_cpus <= 1.0 and plan.threads >= 1
    assert plan.actors * plan.actor_cpus + plan.decode_cpus <= cpus + 1e-9  # one decode task always fits
    assert plan.actors == (actors or max(1, int(cpus - max(0.5, cpus / 4))))


def test_plan_on_two_cpus() -> None:
    assert (plan_resources(2).actors, plan_resources(2).actor_cpus) == (1, 1.0)
    assert plan_resources(2, 2).actor_cpus == 0.75
    with pytest.raises(ValueError, match="no CPUs"):
        plan_resources(0)


def test_bundle_ships_companion_files_and_hashes_them(tmp_path: Path) -> None:
    xml, bin_ = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_text("<net/>")
    bin_.write_bytes(b"\x00\x01")
    (tmp_path / "other.onnx").write_bytes(b"x")
    bundle = ArtifactBundle.from_path(xml)
    assert [rel for rel, _ in bundle.files] == ["m.xml", "m.bin"]
    lines = sorted(f"{n}  {hashlib.sha256(p.read_bytes()).hexdigest()}\n" for n, p in (("m.xml", xml), ("m.bin", bin_)))
    assert bundle.sha256 == hashlib.sha256("".join(lines).encode()).hexdigest()
    cache = tmp_path / "cache"
    loaded = bundle.materialize(cache)
    assert loaded == cache / bundle.sha256 / "m.xml" and loaded.read_text() == "<net/>"
    assert (loaded.parent / "m.bin").read_bytes() == b"\x00\x01"
    assert bundle.materialize(cache) == loaded  # the second actor on a node reuses the copy
    assert [p.name for p in cache.iterdir()] == [bundle.sha256]  # no staging folders left
    single = ArtifactBundle.from_path(tmp_path / "other.onnx")
    assert single.sha256 == hashlib.sha256(b"x").hexdigest()
    with pytest.raises(FileNotFoundError):
        ArtifactBundle.from_path(tmp_path / "missing.onnx")


def test_inputs_manifests_and_file_uris(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a").mkdir()
    for name in ("x.png", "y.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / "a" / name)
    (tmp_path / "a" / "notes.txt").write_text("skip me")
    (tmp_path / "m.csv").write_text("path,other\na/x.png,1\n,2\n0001.jpg,3\n")
    assert read_manifest(str(tmp_path / "m.csv")) == [str(tmp_path / "a" / "x.png"), str(tmp_path / "0001.jpg")]
    with pytest.raises(ValueError, match="no column 'file'"):
        read_manifest(str(tmp_path / "m.csv"), "file")
    sources, problems = expand_inputs([str(tmp_path / "a"), f"file://{tmp_path}/a", str(tmp_path / "z*.png"),
                                       str(tmp_path / "a" / "." / "x.png")],  # x.png again, spelled otherwise
                                      [str(tmp_path / "m.csv")])
    assert sources == [str(tmp_path / "a" / "x.png"), str(tmp_path / "a" / "y.jpg"),  # in input order
                       f"file://{tmp_path}/a/x.png", f"file://{tmp_path}/a/y.jpg", str(tmp_path / "z*.png"),
                       str(tmp_path / "0001.jpg")]
    assert problems == {str(tmp_path / "z*.png"): NO_MATCH}
    tiny = PreprocessConfig(short_side=8, crop_size=8, max_pixels=10_000)
    cut = load_source(f"file://{tmp_path}/a/x.png", tiny)  # the crops `score` cuts from the local file
    assert cut.dtype == np.uint8 and cut.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(cut, crops_uint8(tmp_path / "a" / "x.png", tiny))
    assert load_source(f"file://{tmp_path}/a/x.png", tiny, crops=5).shape == (5, 8, 8, 3)
    for uri, reason in ((f"file://{tmp_path}/a/none.png", "file not found"),
                        (f"file://{tmp_path}/a", "is a directory, not an image"),
                        (f"file://{tmp_path}/a/notes.txt", "not an image (format not recognised)")):
        with pytest.raises(Exception) as info:
            load_source(uri, tiny)
        assert getattr(info.value, "reason", None) == reason and getattr(info.value, "source", None) == uri


def _row(path: str, score: float = 1.0) -> dict:
    return {"path": path, "score": score, "crops": 1, "status": "ok", "error": "", "model": "m",
            "artifact_sha256": "s", "format": "onnx", "precision": "fp32", "node": "n", "worker_pid": 1}


def test_store_resumes_refuses_and_merges_in_order(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "o.parquet"
    job = {"artifact_sha256": "s", "crops": None}
    store = ResultStore(out, "parquet", job)
    assert store.open() == set()
    store.commit([_row("c"), _row("a")])
    assert ResultStore(out, "parquet", job).open() == {"a", "c"}  # resumed by a new driver
    with pytest.raises(ResumeMismatchError, match="artifact_sha256"):
        ResultStore(out, "parquet", {**job, "artifact_sha256": "other"}).open()
    again = ResultStore(out, "parquet", job)
    again.open()
    with pytest.raises(RuntimeError, match="1 inputs have no committed row"):
        again.finalize(["a", "b", "c"])
    again.commit([_row("b"), _row("a", 9.0)])  # a duplicate row is never kept twice
    table = again.finalize(["a", "b", "c"])
    assert table.column("path").to_pylist() == ["a", "b", "c"] and table.column("score").to_pylist()[0] == 1.0
    assert pq.read_table(out).schema.equals(schema()) and not store.parts_dir.exists()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        ResultStore(out, "parquet", job).open()
    assert ResultStore(out, "parquet", job).open(overwrite=True) == set()


def test_object_store_uris_keep_their_options() -> None:
    """An s3:// prefix's objects keep the URI's query (region, endpoint), so workers reopen the same store."""
    from glia_edge.scale.inputs import _split_uri, _with_path, is_uri

    uri = "s3://bucket/shoot/day1?region=eu-west-1&endpoint_override=127.0.0.1:9&scheme=http"
    filesystem, inner = _split_uri(uri)  # built offline: the region is given, nothing is contacted
    assert type(filesystem).__name__ == "S3FileSystem" and inner == "bucket/shoot/day1"
    assert _with_path(uri, "bucket/shoot/day1/a.jpg") == (
        "s3://bucket/shoot/day1/a.jpg?region=eu-west-1&endpoint_override=127.0.0.1:9&scheme=http")
    assert is_uri("gs://b/k") and not is_uri("C:/photos/a.jpg") and not is_uri("photos/a.jpg")


def test_a_cluster_that_cannot_be_joined_is_one_named_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from glia_edge.scale.cluster import ClusterError, connect

    def no_cluster(**kwargs: object) -> None:  # what ray.init(address="auto") raises with none running
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to\nmore")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    with pytest.raises(ClusterError, match="cannot join the Ray cluster at 'auto': ConnectionError: Could not find") as info:
        connect("auto")
    assert "\n" not in str(info.value)


def test_batch_workers_let_max_pixels_govern_over_pillows_own_limit(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from glia_edge.scale.batch import decode_batch

    Image.new("RGB", (64, 64), "gray").save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses over 2x this: the 4096 px image
    tiny = PreprocessConfig(short_side=8, crop_size=8, max_pixels=10_000)
    out = decode_batch({"path": np.array([str(tmp_path / "a.png")], dtype=object)}, preprocess=tiny.to_dict(), crops=1)
    assert list(out["error"]) == [""] and list(out["n_crops"]) == [1]  # before: "over Pillow's decompression bomb limit"
    assert Image.MAX_IMAGE_PIXELS == 10_000
    small = tiny.replace(max_pixels=100)  # and glia-edge's own guard still refuses what --max-pixels does
    out = decode_batch({"path": np.array([str(tmp_path / "a.png")], dtype=object)}, preprocess=small.to_dict(), crops=1)
    assert "over the limit of 100" in out["error"][0] and Image.MAX_IMAGE_PIXELS == 10_000  # never lowered
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    decode_batch({"path": np.array([str(tmp_path / "a.png")], dtype=object)},
                 preprocess=tiny.replace(max_pixels=1500).to_dict(), crops=1)
    assert Image.MAX_IMAGE_PIXELS == 1000  # under Pillow's refusal point (2x): Pillow's messages stay as score gives them


def test_batch_checks_its_output_before_starting_ray(tmp_path: Path) -> None:
    import ray
    from typer.testing import CliRunner

    from glia_edge.cli import app

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "done.csv").write_text("path,score\n")
    (tmp_path / "folder.csv").mkdir()
    for output, words in [(tmp_path / "folder.csv", "is a directory, not a file path"),
                          (tmp_path / "a.png" / "x.csv", "it is a file"),
                          (tmp_path / "done.csv", "exists; pass --overwrite")]:
        result = CliRunner().invoke(app, ["batch", str(tmp_path / "a.png"), "-o", str(output)])
        assert result.exit_code == 2 and words in result.output, result.output  # before: after scoring everything
    assert not ray.is_initialized()


def test_the_same_bytes_under_another_name_materialize_under_that_name(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(b"same")
    (tmp_path / "b.onnx").write_bytes(b"same")  # a copy of a model: it failed with "artifact not found"
    cache = tmp_path / "cache"
    a = ArtifactBundle.from_path(tmp_path / "a.onnx").materialize(cache)
    b = ArtifactBundle.from_path(tmp_path / "b.onnx").materialize(cache)
    assert a.name == "a.onnx" and b.name == "b.onnx" and a.read_bytes() == b.read_bytes() == b"same"
    assert ArtifactBundle.from_path(tmp_path / "b.onnx").sha256 == hashlib.sha256(b"same").hexdigest()


def test_scale_out_sets_threads_only_where_the_backend_has_them() -> None:
    from glia_edge.runtimes.base import thread_option

    # batch and serve passed threads to every backend; TensorRT's refused it, so no engine could start
    assert thread_option("trt", 2) == {}
    assert thread_option("onnx", 2) == thread_option("openvino", 2) == {"threads": 2}
    assert thread_option("onnx", None) == {}
