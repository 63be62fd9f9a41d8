"""Benchmark results: one row per configuration, written as Markdown, CSV, JSON and a PNG plot.

Columns: backend, precision, artifact size (MiB), status, load time, latency p50/p90/p99 at
batch 1, throughput at each batch N (images/s and crops/s), peak RSS (MiB) of a process running
only that backend, speed-up over PyTorch FP32 eager, Spearman with the PyTorch FP32 scores and the
largest |score delta| as a share of the score range, SRCC/PLCC on labels when given, and on a
Jetson average power and images per joule. The Markdown and JSON reports carry the machine line,
the exact command that reproduces them and the recommendation line (:func:`recommendation`); the
CSV is the rows alone. A row that could not be measured keeps its status text and empty cells: no
number is ever filled in for it.

The JSON keys ``artifact_mb`` and ``peak_rss_mb`` keep their names; their values are MiB (2**20 bytes).
"""
from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glia_edge.atomic import atomic_write
from glia_edge.meta import dumps_json, json_safe

OK = "ok"


@dataclass
class BenchRow:
    """One configuration's measurements; ``None`` means not measured (see ``status``)."""

    name: str  # e.g. "openvino int8"
    target: str  # torch | onnx | openvino | trt
    precision: str
    backend: str = ""  # e.g. "PyTorch eager", "OpenVINO (f32 pinned)"
    status: str = OK
    artifact: str | None = None
    artifact_mb: float | None = None  # MiB (2**20 bytes); the key keeps its name
    load_s: float | None = None
    latency: dict[str, float] | None = None  # LatencyStats at batch 1 (ms)
    throughput: dict[int, dict[str, float]] = field(default_factory=dict)  # batch -> Throughput
    peak_rss_mb: float | None = None  # MiB (2**20 bytes); the key keeps its name
    speedup: float | None = None
    spearman: float | None = None
    max_abs_diff: float | None = None
    max_delta_share: float | None = None  # max_abs_diff as a share of the model's score range
    # The same agreement on the selection set (not the reported test set): what the recommendation judges.
    selection_spearman: float | None = None
    selection_max_abs_diff: float | None = None
    selection_max_delta_share: float | None = None
    srcc: float | None = None
    plcc: float | None = None
    power_w: float | None = None
    images_per_joule: float | None = None
    gpu_load: float | None = None  # Jetson (tegrastats), while the power was measured: mean %
    cpu_load: float | None = None
    max_temp_c: float | None = None
    timer: str = "wall"
    top_ops: str | None = None  # --profile: the operator types that take the most kernel time
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def crops_per_s(self, batch: int) -> float | None:
        entry = self.throughput.get(batch)
        return entry["crops_per_s"] if entry else None


@dataclass
class BenchReport:
    rows: list[BenchRow]
    machine: dict[str, Any]
    machine_line: str
    command: str
    settings: dict[str, Any]
    checks: list[str] = field(default_factory=list)  # regression-check failures
    created: str = ""

    @property
    def batches(self) -> list[int]:
        return sorted({b for r in self.rows for b in r.throughput})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = [{**asdict(r), "throughput": {str(b): t for b, t in r.throughput.items()}} for r in self.rows]
        data["recommendation"] = recommendation(self)
        return data


def delta_share(max_abs_diff: float | None, score_range: float | None) -> float | None:
    """``max_abs_diff`` as a share of the score range (None when either is unknown)."""
    if max_abs_diff is None or not score_range or not math.isfinite(max_abs_diff):
        return None
    return max_abs_diff / float(score_range)


def recommendation(report: BenchReport) -> str:
    """The fastest row at the largest batch whose agreement with PyTorch FP32 passes the bound of
    ``glia-edge export --precision auto`` (:mod:`glia_edge.export.auto`), judged as that command
    judges it: on a selection set (``settings["selection_set"]``), never on the reported test set."""
    from glia_edge.export.auto import bound_text, passes

    batch = max(report.batches, default=1)
    where = report.settings.get("selection_set") or "the selection set"
    ok = [r for r in report.rows if r.ok and r.crops_per_s(batch)]
    within = [r for r in ok if (r.target == "torch" and r.precision == "fp32")  # the reference itself
              or passes(r.selection_spearman, r.selection_max_delta_share)]
    if not within:
        return f"recommendation: none of the measured rows met {bound_text()} on {where}"
    best = max(within, key=lambda r: r.crops_per_s(batch) or 0.0)
    agree = (f", Spearman {best.selection_spearman:.4f}, max |delta| {best.selection_max_delta_share:.2%} of the range"
             if best.selection_spearman is not None and best.selection_max_delta_share is not None else "")
    return (f"recommendation: {best.name} ({best.backend}): {best.crops_per_s(batch):.1f} crops/s at batch {batch}"
            f"{agree}; the fastest measured here within {bound_text()}, judged on {where}")


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def table_columns(report: BenchReport) -> list[tuple[str, Any]]:
    """(header, row -> cell text) for the Markdown table."""
    cols: list[tuple[str, Any]] = [
        ("backend", lambda r: r.backend or r.target), ("precision", lambda r: r.precision),
        ("artifact MiB", lambda r: _fmt(r.artifact_mb)), ("status", lambda r: r.status),
        ("load s", lambda r: _fmt(r.load_s, 2)),
        ("p50 / p90 / p99 ms (b1)", lambda r: " / ".join(_fmt(r.latency[k]) for k in ("p50_ms", "p90_ms", "p99_ms"))
         if r.latency else ""),
    ]
    for b in report.batches:
        cols.append((f"img/s b{b}", lambda r, b=b: _fmt(r.throughput[b]["images_per_s"]) if b in r.throughput else ""))
        cols.append((f"crops/s b{b}", lambda r, b=b: _fmt(r.throughput[b]["crops_per_s"]) if b in r.throughput else ""))
    cols += [("peak RSS MiB", lambda r: _fmt(r.peak_rss_mb, 0)), ("speed-up", lambda r: _fmt(r.speedup, 2) + "x"
                                                                  if r.speedup is not None else ""),
             ("Spearman vs PyTorch", lambda r: _fmt(r.spearman, 4)),
             ("max abs delta, % of range", lambda r: _fmt(100 * r.max_delta_share, 2)
              if r.max_delta_share is not None else "")]
    if any(r.srcc is not None for r in report.rows):
        cols += [("SRCC", lambda r: _fmt(r.srcc, 4)), ("PLCC", lambda r: _fmt(r.plcc, 4))]
    if any(r.images_per_joule is not None for r in report.rows):
        cols += [("power W", lambda r: _fmt(r.power_w, 2)), ("img/J", lambda r: _fmt(r.images_per_joule, 2)),
                 ("GPU %", lambda r: _fmt(r.gpu_load, 0)), ("CPU %", lambda r: _fmt(r.cpu_load, 0)),
                 ("max °C", lambda r: _fmt(r.max_temp_c, 1))]
    return cols


def markdown_table(report: BenchReport) -> str:
    cols = table_columns(report)
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for row in report.rows:
        lines.append("| " + " | ".join(str(fn(row)).replace("|", "/") for _, fn in cols) + " |")
    return "\n".join(lines)


def to_markdown(report: BenchReport) -> str:
    s = report.settings
    parts = [f"# glia-edge benchmark: {s.get('model', '')}", "",
             f"Machine: {report.machine_line}", "",
             f"Reproduce: `{report.command}`", "", markdown_table(report), "", recommendation(report), ""]
    notes = [f"- {n}" for n in s.get("notes", [])]
    notes += [f"- {r.name}: {n}" for r in report.rows for n in r.notes]
    if notes:
        parts += ["Notes:", *notes, ""]
    profiled = [r for r in report.rows if r.top_ops]
    if profiled:
        parts += [f"Top operators (share of kernel time, batch {max(report.batches or [1])}):",
                  *[f"- {r.backend} {r.precision}: {r.top_ops}" for r in profiled], ""]
    if report.checks:
        parts += ["Regression check FAILED:", *[f"- {c}" for c in report.checks], ""]
    elif s.get("checked"):
        parts += ["Regression check passed.", ""]
    return "\n".join(parts)


def csv_rows(report: BenchReport) -> list[dict[str, Any]]:
    """Flat rows: one column per latency percentile and per batch size."""
    out = []
    for r in report.rows:
        flat: dict[str, Any] = {"name": r.name, "backend": r.backend, "target": r.target, "precision": r.precision,
                                "status": r.status, "artifact": r.artifact, "artifact_mb": r.artifact_mb,
                                "load_s": r.load_s}
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            flat[f"b1_{key}"] = r.latency.get(key) if r.latency else None
        for b in report.batches:
            entry = r.throughput.get(b) or {}
            flat[f"b{b}_images_per_s"] = entry.get("images_per_s")
            flat[f"b{b}_crops_per_s"] = entry.get("crops_per_s")
        flat.update(peak_rss_mb=r.peak_rss_mb, speedup=r.speedup, spearman=r.spearman, max_abs_diff=r.max_abs_diff,
                    max_delta_share=r.max_delta_share, selection_spearman=r.selection_spearman,
                    selection_max_abs_diff=r.selection_max_abs_diff,
                    selection_max_delta_share=r.selection_max_delta_share, srcc=r.srcc, plcc=r.plcc, power_w=r.power_w,
                    images_per_joule=r.images_per_joule, gpu_load=r.gpu_load,
                    cpu_load=r.cpu_load, max_temp_c=r.max_temp_c, timer=r.timer)
        out.append(json_safe(flat))  # NaN/inf -> None: an empty CSV cell
    return out


def write_csv(report: BenchReport, path: Path) -> Path:
    rows = csv_rows(report)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["name"])
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
    return path


def write_json(report: BenchReport, path: Path) -> Path:
    text = dumps_json(report.to_dict(), indent=2, default=str)
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def write_markdown(report: BenchReport, path: Path) -> Path:
    text = to_markdown(report)
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def plot_points(report: BenchReport) -> list[tuple[str, float, float]]:
    """(label, accuracy delta = 1 - Spearman, crops/s at the largest batch) of measured rows."""
    if not report.batches:
        return []
    batch = max(report.batches)
    points = []
    for r in report.rows:
        cps = r.crops_per_s(batch)
        if r.ok and cps is not None and r.spearman is not None and not math.isnan(r.spearman):
            points.append((f"{r.backend or r.target} {r.precision}", max(0.0, 1.0 - r.spearman), cps))
    return points


def write_plot(report: BenchReport, path: Path) -> Path | None:
    """PNG scatter of throughput against accuracy delta; None when nothing was measured."""
    points = plot_points(report)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for label, delta, cps in points:
        ax.scatter(delta, cps, s=36)
        ax.annotate(label, (delta, cps), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("symlog", linthresh=1e-4)
    ax.set_xlim(left=-1e-5)
    ax.set_xlabel("accuracy delta: 1 - Spearman with PyTorch FP32 scores")
    ax.set_ylabel(f"crops/s at batch {max(report.batches)}")
    ax.set_title(f"{report.settings.get('model', '')}: throughput vs accuracy", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def write_all(report: BenchReport, out_dir: str | Path, stem: str = "bench") -> dict[str, Path]:
    """Write ``stem.md``, ``stem.csv``, ``stem.json`` and ``stem.png`` under ``out_dir``."""
    out = Path(out_dir)
    paths = {"markdown": write_markdown(report, out / f"{stem}.md"), "csv": write_csv(report, out / f"{stem}.csv"),
             "json": write_json(report, out / f"{stem}.json")}
    plot = write_plot(report, out / f"{stem}.png")
    if plot is not None:
        paths["png"] = plot
    else:  # a plot from an earlier run into this folder must not pass for this run's
        (out / f"{stem}.png").unlink(missing_ok=True)
    return paths
