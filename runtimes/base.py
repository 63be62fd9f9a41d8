"""The runtime contract every backend follows, and ``load(path)`` that picks the backend.

A backend is constructed from an artifact path plus options, reads the artifact's
:class:`ArtifactMeta`, and implements one method: ``_infer`` from a float32 NCHW batch of crops
in [0, 1] to one score per crop. Everything else (decoding, the shared preprocessing, the crop
grid, batching across images, padding for fixed-batch engines, per-image aggregation and error
reporting) lives here once, so every backend gives identical results for identical inputs.
Numpy in, numpy out: nothing in ``runtimes/`` imports torch except the PyTorch backend.
"""
from __future__ import annotations

import importlib
import inspect
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np

from glia_edge.errors import (BackendUnavailableError, GliaError, ImageLoadError, UnsupportedArtifactError, one_line,
                              printable)
from glia_edge.formats import format_of, get_format
from glia_edge.meta import ArtifactMeta
from glia_edge.preprocess import ImageInput, PreprocessConfig, aggregate, check_crops, is_one_image, preprocess
from glia_edge.runtimes.decode_pool import decode_ahead, resolve_workers

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    """One input's outcome: a score, or the reason it could not be scored."""

    source: str
    score: float | None
    error: str | None = None
    crops: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def many_images(images: Iterable[ImageInput], method: str) -> Iterable[ImageInput]:
    """``images`` when it is an iterable of images; one image (which a str, bytes, file or array
    would be iterated into characters, ints, lines or pixel rows, each scored as an image) is a
    ``TypeError``, and so is a mapping (its keys are not known to be the images)."""
    if is_one_image(images):
        raise TypeError(f"{method} takes an iterable of images, got one image ({type(images).__name__}): "
                        "pass [image], or use predict")
    if isinstance(images, Mapping):
        raise TypeError(f"{method} takes an iterable of images, got a mapping ({type(images).__name__}): "
                        "pass list(d.values()) or list(d)")
    if not isinstance(images, Iterable):
        raise TypeError(f"{method} takes an iterable of images, got {type(images).__name__}")
    return images


def check_batch_size(batch_size: object) -> None:
    """Raise ``ValueError`` unless ``batch_size`` is a positive integer (crops per inference call)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


class Backend(ABC):
    """Base of ``TorchBackend``, ``OnnxRuntimeBackend``, ``OpenVinoBackend``, ``TensorRtBackend``."""

    format: ClassVar[str]

    def __init__(self, path: str | Path, meta: ArtifactMeta, *, batch_size: int = 8,
                 fixed_batch: int | None = None) -> None:
        check_batch_size(batch_size)
        self.path = Path(path)
        self.meta = meta
        self.preprocess_config: PreprocessConfig = meta.preprocess_config
        self.batch_size = fixed_batch or batch_size
        #: Set when the artifact only takes one batch size (static engines): batches are padded.
        self.fixed_batch = fixed_batch
        #: Threads decoding images ahead of inference in :meth:`iter_scores` (None: the default,
        #: :data:`DEFAULT_DECODE_WORKERS`; 0: serially, on the calling thread).
        self.decode_workers: int | None = None

    @staticmethod
    def check_precision(meta: ArtifactMeta, precision: str | None) -> None:
        """``precision`` names the artifact's precision, which is fixed at export: refuse another."""
        if precision and precision != meta.precision:
            raise ValueError(f"this {meta.format} artifact is {meta.precision}, not {precision}: its precision is "
                             "fixed at export (choose another artifact; OpenVINO and PyTorch take an "
                             "inference_precision hint)")

    def check_input_shape(self, shape: Sequence[object]) -> None:
        """Refuse a graph whose (N, C, H, W) input disagrees with its metadata's crop size (an edited
        or mismatched artifact), at load rather than at the first image; symbolic dims pass."""
        size = self.preprocess_config.crop_size
        dims = list(shape)[1:]
        if len(dims) != 3 or any(isinstance(d, int) and d != want for d, want in zip(dims, (3, size, size))):
            raise UnsupportedArtifactError(f"{self.path}: the graph takes input {list(shape)}, but its metadata "
                                           f"crops {size}x{size} RGB: metadata and model do not belong together")

    # -- the one method a backend implements -------------------------------------------------
    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, S, S) in [0, 1] -> float scores (N,)."""

    # -- shared behaviour -------------------------------------------------------------------
    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Score pre-cropped float32 NCHW crops in [0, 1]; returns one score per crop (float64)."""
        batch = np.asarray(batch)
        size = self.preprocess_config.crop_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(f"expected a (N, 3, {size}, {size}) batch, got {batch.shape}")
        if not np.issubdtype(batch.dtype, np.floating):
            raise ValueError(f"expected float crops in [0, 1] (crop_batch makes them), got dtype {batch.dtype}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.size:  # 0-255 pixels or NaN would score silently wrong; two reductions cost ~0.1 ms
            lo, hi = batch.min(), batch.max()
            if not (lo >= 0.0 and hi <= 1.0):
                raise ValueError(f"expected float crops in [0, 1] (crop_batch makes them), got values in [{lo:g}, {hi:g}]")
        out = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            n = len(chunk)
            if self.fixed_batch and n < self.fixed_batch:
                pad = np.zeros((self.fixed_batch - n, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            out.append(np.asarray(self._infer(chunk), dtype=np.float64).reshape(-1)[:n])
        return np.concatenate(out) if out else np.zeros(0)

    def crop_batch(self, image: ImageInput, *, crops: int | None = None, bgr: bool = False) -> np.ndarray:
        """The (n, 3, S, S) crops the shared preprocessing cuts from one image (``crops``: 1, 5 or 9)."""
        return preprocess(image, self.preprocess_config, crops=crops, bgr=bgr)

    def iter_scores(self, images: Iterable[ImageInput], *, crops: int | None = None, bgr: bool = False,
                    decode_workers: int | None = None,
                    cut: Callable[[ImageInput], np.ndarray] | None = None) -> Iterator[ScoreResult]:
        """Score images in input order; bad inputs yield a result with ``error`` set.

        Images are decoded and preprocessed on ``decode_workers`` threads (default: the
        backend's :attr:`decode_workers`, else ``decode_pool.DEFAULT_DECODE_WORKERS``) a few batches
        ahead of inference; ``0`` decodes each image on this thread, serially. ``cut`` replaces
        :meth:`crop_batch` as the way one input becomes its crops (evaluation protocols with
        seeded random crops); an image's score is still the mean of its crops' scores.
        """
        images = many_images(images, "iter_scores")
        check_crops(crops)
        workers = resolve_workers(self.decode_workers if decode_workers is None else decode_workers)
        # images in flight: about two batches' worth of crops, and work for every thread
        ahead = max(2 * workers, -(-2 * self.batch_size // (crops or self.preprocess_config.crops)))
        cut = cut or (lambda image: self.crop_batch(image, crops=crops, bgr=bgr))
        decoded = iter(decode_ahead(images, cut, workers=workers, ahead=ahead))
        pending: list[tuple[str, np.ndarray]] = []
        queued = 0
        while True:
            try:
                item = next(decoded)
            except StopIteration:
                break
            except Exception:  # the input iterable or a decoder failed: what came before still gets scored
                yield from self._flush(pending)
                raise
            if item.crops is None:
                yield from self._flush(pending)
                pending, queued = [], 0
                yield ScoreResult(item.source, None, item.error)
                continue
            pending.append((item.source, item.crops))
            queued += len(item.crops)
            if queued >= self.batch_size:
                yield from self._flush(pending)
                pending, queued = [], 0
        yield from self._flush(pending)

    def _flush(self, pending: list[tuple[str, np.ndarray]]) -> Iterator[ScoreResult]:
        if not pending:
            return
        counts = [len(arr) for _, arr in pending]
        scores = aggregate(self.predict_batch(np.concatenate([a for _, a in pending])), counts)
        for (name, _), score, n in zip(pending, scores, counts):
            yield ScoreResult(name, float(score), None, n)

    def score_paths(self, images: Iterable[ImageInput], *, crops: int | None = None,
                    decode_workers: int | None = None) -> np.ndarray:
        """One score per input, NaN (and a logged warning) where an input could not be used."""
        images = list(many_images(images, "score_paths"))
        scores = np.full(len(images), np.nan)
        for i, result in enumerate(self.iter_scores(images, crops=crops, decode_workers=decode_workers)):
            if result.ok:
                scores[i] = result.score
            else:
                log.warning("%s: %s", printable(result.source), result.error)
        return scores

    def predict(self, images: ImageInput | Iterable[ImageInput], *, crops: int | None = None,
                bgr: bool = False) -> np.ndarray:
        """Scores for one image or an iterable of them (paths, bytes, binary file objects, PIL
        images, HWC uint8 arrays; not a dict). A JPEG path, its bytes and its ``Image.open`` not yet
        loaded are decoded at reduced size alike; an array is already decoded at full size, so its
        score can differ slightly from its JPEG file's (preprocess module docstring).

        Returns a float64 array with one score per image. Raises :class:`ImageLoadError` for the
        first unusable input; use :meth:`iter_scores` to carry on past bad inputs. Several images
        are decoded on the worker pool (:meth:`iter_scores`), a single image on this thread.
        """
        if isinstance(images, np.ndarray) and images.ndim == 4:
            raise ValueError("a 4-D array is a batch of crops: use predict_batch, or pass a list of HWC images")
        single = is_one_image(images) or not isinstance(images, Iterable)
        images = [images] if single else list(many_images(images, "predict"))
        results = list(self.iter_scores(images, crops=crops, bgr=bgr,
                                        decode_workers=0 if len(images) < 2 else None))
        for res in results:
            if not res.ok:  # the message on one line, whatever the file's name holds
                raise ImageLoadError(printable(res.source), res.error or "unknown error")
        return np.array([r.score for r in results], dtype=np.float64)

    def close(self) -> None:
        """Release the runtime's resources; the backend is unusable afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """Which artifact runs, on which runtime, at which precision (for outputs and status lines)."""
        from glia_edge.formats import FORMATS

        runs = getattr(self, "inference_precision", None)
        folder = not format_of(self.path).single_file  # e.g. an IR: name its folder too
        name = f"{self.path.parent.name}/{self.path.name}" if folder else self.path.name
        return (f"{name} on {FORMATS[self.format].label}, {self.meta.precision}"
                + (f" (runs {runs})" if runs and runs != self.meta.precision else ""))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, precision={self.meta.precision!r})"


def backend_class(fmt_name: str) -> type[Backend]:
    from glia_edge.formats import FORMATS

    module, cls = FORMATS[fmt_name].backend.split(":")
    return getattr(importlib.import_module(module), cls)


def accepted_options(cls: type[Backend]) -> list[str]:
    """The keyword options a backend class takes."""
    return [name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "path")]


def thread_option(fmt_name: str, threads: int | None) -> dict[str, Any]:
    """``{"threads": threads}`` for a backend that runs on CPU threads; empty for one that takes no
    such option (TensorRT), which ``load`` would refuse."""
    if threads is None or "threads" not in accepted_options(backend_class(fmt_name)):
        return {}
    return {"threads": threads}


def pick_default(runtime: str | None = None, **options: Any) -> tuple[Path, type[Backend]]:
    """The packaged default-model file and the backend to run it, per :data:`glia_edge.weights.PACKAGED`.

    The first entry, in that fixed order, of the precision asked for (``options["precision"]``,
    fp32 by default) whose runtime is installed and whose backend takes every option given
    (``runtime`` restricts the choice to one format-table row's backend).
    """
    from glia_edge.formats import FORMATS
    from glia_edge.weights import DEFAULT_MODEL, PACKAGED, packaged_artifacts

    precision = options.get("precision") or "fp32"
    candidates = [a for a in packaged_artifacts(precision) if runtime is None or a.runtime == runtime]
    if not candidates:
        shipped = ", ".join(sorted({f"{FORMATS[a.runtime].label} {a.precision}" for a in PACKAGED if a.path.exists()}))
        raise UnsupportedArtifactError(f"the default model {DEFAULT_MODEL} is not packaged for "
                                       f"{FORMATS[runtime].label + ' ' if runtime else ''}{precision} (packaged: "
                                       f"{shipped or 'nothing'}); pass a model (--model)")
    refused = []
    for art in candidates:
        label = f"{FORMATS[art.runtime].label} ({art.file})"
        if not art.installed:
            refused.append(f"{label} needs the {art.module} package")
            continue
        cls = backend_class(art.runtime)
        unknown = sorted(set(options) - set(accepted_options(cls)))
        if unknown:
            refused.append(f"{label} takes no option {', '.join(map(repr, unknown))}")
            continue
        return art.path, cls
    raise BackendUnavailableError(f"no installed runtime can run the default model {DEFAULT_MODEL} at {precision}: "
                                  + "; ".join(refused) + ". Install one: pip install 'glia-edge[openvino]' "
                                  "or 'glia-edge[onnxruntime]'")


def _resolve(path: str | Path | None, runtime: str | None, options: dict[str, Any]) -> tuple[Path, type[Backend]]:
    """The artifact ``load`` opens and its backend class: the packaged default model when ``path`` is None."""
    if runtime is not None:
        get_format(runtime)  # an unknown name is a ValueError listing the known ones
    if path is None:
        path, cls = pick_default(runtime, **options)
        log.info("default model: %s on %s", Path(path).name, cls.__name__)
        return path, cls
    if not str(path).strip():
        raise ValueError("empty artifact path")
    if not Path(path).exists():
        raise FileNotFoundError(f"artifact not found: {path}")
    return Path(path), backend_class(runtime or format_of(path).name)


def load(path: str | Path | None = None, *, runtime: str | None = None, **options: Any) -> Backend:
    """Open an artifact with the backend its format needs.

    ``.safetensors`` -> PyTorch, ``.onnx`` -> ONNX Runtime, ``.xml`` or an IR folder -> OpenVINO,
    ``.engine``/``.plan`` -> TensorRT; ``runtime`` (a format name: ``openvino`` ...) picks another
    backend that reads the file (OpenVINO reads ``.onnx`` too). ``None`` opens the packaged default
    model: the first of :data:`glia_edge.weights.PACKAGED` that an installed runtime can run, FP32
    unless ``precision`` asks for another packaged precision (int8).
    Options go to the backend (``threads``, ``batch_size``, ``device``, ``precision``, which must
    match the artifact's, ``inference_precision`` for OpenVINO and PyTorch ...); an option the
    backend does not take is a ``TypeError`` listing the ones it does.
    """
    path, cls = _resolve(path, runtime, options)
    accepted = accepted_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {', '.join(map(repr, unknown))}; "
                        f"it takes: {', '.join(accepted)}")
    if "batch_size" in options:
        check_batch_size(options["batch_size"])
    try:
        return cls(path, **options)
    except (GliaError, TypeError, ValueError, FileNotFoundError):
        raise
    except Exception as exc:  # the runtime's own: a corrupt file, a device without its driver, memory
        raise BackendUnavailableError(f"{path}: {cls.__name__} could not open it: {one_line(exc)}") from exc


def load_batched(path: str | Path | None = None, *, batched: bool = True, **options: Any) -> Backend:
    """:func:`load` for callers whose calls carry several crops or frames (``score``, ``watch``):
    OpenVINO then gets the THROUGHPUT hint, which splits each batch over the device's streams and
    on small CPUs scores more crops per second than one request (``glia-edge bench
    --openvino-modes latency,throughput`` measures both). Other backends load as with :func:`load`."""
    path, cls = _resolve(path, options.pop("runtime", None), options)
    if batched and cls.format == "openvino":
        options["mode"] = "throughput"
    return load(path, runtime=cls.format, **options)
