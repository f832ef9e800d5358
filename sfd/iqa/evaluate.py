"""``sfd iqa-eval``: how well metrics agree with opinion scores on a dataset.

For each metric: SRCC, KRCC, PLCC and PLCC after the VQEG 4-parameter logistic fit, with the
number of images scored, as a Markdown table and JSON, a CSV of the per-image scores, and one
scatter plot (score vs MOS, with the fitted curve) per metric. Lower-is-better metrics (NIQE) are
correlated as -score, so that for every metric +1 means perfect agreement with the MOS.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sfd.iqa.correlation import correlations, logistic4
from sfd.metrics.base import IQAMetric

__all__ = ["read_mos", "match_images", "score_files", "weights_note", "evaluate", "markdown_table", "scatter_plot"]


# ---------------------------------------------------------------- inputs


def read_mos(path: str | Path, image_col: str = "image", mos_col: str = "mos") -> dict[str, float]:
    """A CSV with a header: image name -> opinion score. Column names by argument."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for col in (image_col, mos_col):
            if col not in columns:
                raise ValueError(
                    f"{path} has no column {col!r} (columns: {', '.join(columns)}); choose with --image-col/--mos-col"
                )
        mos, lines = {}, {}
        for line, row in enumerate(reader, start=2):
            name = (row[image_col] or "").strip()
            try:
                score = float(row[mos_col])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}:{line}: bad score {row.get(mos_col)!r} ({err})") from err
            if not name:
                raise ValueError(f"{path}:{line}: no image name in column {image_col!r}")
            if not math.isfinite(score):
                raise ValueError(f"{path}:{line}: score {row[mos_col]!r} for {name} is not a finite number")
            if name in mos:  # two opinions of one image: which one is meant?
                raise ValueError(f"{path}:{line}: {name} is listed twice (also on line {lines[name]})")
            mos[name], lines[name] = score, line
    if not mos:
        raise ValueError(f"{path} lists no images")
    return mos


def match_images(images_dir: str | Path, names: Iterable[str]) -> tuple[dict[str, Path], list[str]]:
    """MOS names -> files under ``images_dir`` (exact name first, then ignoring case). Also the missing names."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"no such folder: {images_dir}")
    by_lower = {p.name.lower(): p for p in images_dir.iterdir() if p.is_file()}
    found, missing = {}, []
    for name in names:
        path = images_dir / name
        if not path.is_file():
            path = by_lower.get(name.lower())
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    return found, missing


# ---------------------------------------------------------------- scoring


def score_files(
    metric: IQAMetric,
    paths: dict[str, Path],
    progress: bool = True,
    components: bool = False,
    on_map: Callable[[str, torch.Tensor, torch.Tensor], Any] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Score each file alone; files that fail to load or score are reported, not fatal.

    ``on_map(key, image, quality_map)``: SFD-IQA's scores come from ``quality_map`` (the same pass, which
    also gives the map at image size) and each image's map is handed over.
    Returns ({key: {"score": ..., parts...}}, {key: error message}).
    """
    from sfd.data.io import load_rgb, to_tensor

    scores, failed = {}, {}
    for key, path in tqdm(paths.items(), desc=metric.name, disable=not progress, dynamic_ncols=True, leave=False):
        try:
            img = to_tensor(load_rgb(path))
        except Exception as err:  # unreadable or not an image: skip it, say why
            failed[key] = f"cannot read image: {err}"
            continue
        try:
            if on_map is not None:
                scores[key], qmap = metric.quality_map(img)
                on_map(key, img, qmap)
            else:
                scores[key] = metric.components(img)[0] if components else {"score": float(metric(img)[0])}
        except ValueError as err:  # e.g. too small for NIQE's blocks
            failed[key] = str(err)
    return scores, failed


def weights_note(metric) -> str | None:
    """The metric's warning about its weights (random CLIP, a non-MATLAB NIQE model), or None."""
    warning = metric.weights().warning
    return f"{metric.name}: {warning}" if warning else None


# ---------------------------------------------------------------- evaluation


@dataclass
class MetricResult:
    name: str
    stats: dict[str, Any]
    scores: dict[str, float]
    failed: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)


def evaluate(
    images_dir: str | Path,
    mos_csv: str | Path,
    metrics: dict[str, IQAMetric],
    out_dir: str | Path,
    image_col: str = "image",
    mos_col: str = "mos",
    dataset: str | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every image of ``mos_csv`` found in ``images_dir`` with each metric and correlate with the MOS.

    Writes ``table.md``, ``results.json``, ``scores_<metric>.csv`` and ``scatter_<metric>.png`` to
    ``out_dir``; returns what ``results.json`` holds.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mos = read_mos(mos_csv, image_col, mos_col)
    if limit:
        mos = dict(list(mos.items())[:limit])
    paths, missing = match_images(images_dir, mos)
    if missing:
        warnings.warn(
            f"{len(missing)} images of {mos_csv} are not in {images_dir} (e.g. {missing[:3]}): skipped", stacklevel=2
        )
    dataset = dataset or _dataset_name(Path(images_dir))

    results: list[MetricResult] = []
    for name, metric in metrics.items():
        scored, failed = score_files(metric, paths, progress)
        if len(scored) < 3:
            raise ValueError(f"{name} scored only {len(scored)} images; failures: {list(failed.items())[:3]}")
        keys = list(scored)
        raw = np.array([scored[k]["score"] for k in keys])
        sign = -1.0 if metric.lower_better else 1.0
        stats = correlations(sign * raw, [mos[k] for k in keys])
        info = metric.describe() | {"weights": metric.weights().short}
        result = MetricResult(name, stats, {k: scored[k]["score"] for k in keys}, failed, info)
        results.append(result)
        _write_scores(out_dir / f"scores_{name}.csv", result, mos)
        scatter_plot(result, mos, sign, out_dir / f"scatter_{name}.png", dataset, weights_note(metric))

    report = {
        "dataset": dataset,
        "images_dir": str(images_dir),
        "mos_csv": str(mos_csv),
        "images_listed": len(mos),
        "images_missing": missing,
        "orientation": "lower-better metrics are correlated as -score",
        "metrics": {
            r.name: {
                **r.stats,
                "failed": r.failed,
                "info": r.info,
                "mean_score": float(np.mean(list(r.scores.values()))),
            }
            for r in results
        },
        "notes": [n for n in (weights_note(m) for m in metrics.values()) if n],
    }
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (out_dir / "table.md").write_text(markdown_table(report) + "\n")
    return report


def _dataset_name(images_dir: Path) -> str:
    resolved = images_dir.resolve()
    return resolved.parent.name if resolved.name.lower() == "images" else resolved.name


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def _write_scores(path: Path, result: MetricResult, mos: dict[str, float]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", result.name, "mos"])
        for key, score in result.scores.items():
            writer.writerow([key, f"{score:.6g}", mos[key]])


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def markdown_table(report: dict[str, Any]) -> str:
    """The Markdown table of ``evaluate``'s report, with its notes (CLIP weights, orientation)."""
    lines = [
        f"| {report['dataset']} | n | SRCC | KRCC | PLCC | PLCC (logistic) | weights / model |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in report["metrics"].items():
        arrow = " ↓" if m["info"].get("lower_better") else ""
        lines.append(
            f"| {name}{arrow} | {m['n']} | {_fmt(m['srcc'])} | {_fmt(m['krcc'])} | {_fmt(m['plcc'])} "
            f"| {_fmt(m['plcc_fit'])} | {m['info'].get('weights', '—')} |"
        )
    lines.append("")
    lines.append("↓ lower is better: correlated as −score, so +1 is perfect agreement for every row.")
    if report["images_missing"]:
        lines.append(f"{len(report['images_missing'])} images listed in the MOS file were not found and were skipped.")
    for name, m in report["metrics"].items():
        if m["failed"]:
            lines.append(f"{name}: {len(m['failed'])} images could not be scored and were skipped.")
    lines += [f"**Note:** {note}" for note in report["notes"]]
    return "\n".join(lines)


def scatter_plot(
    result: MetricResult, mos: dict[str, float], sign: float, path: Path, dataset: str, note: str | None
) -> None:
    """Score (x, as the metric gives it) vs MOS (y), with the fitted logistic curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array(list(result.scores.values()))
    y = np.array([mos[k] for k in result.scores])
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=120)
    ax.scatter(x, y, s=8, alpha=0.6, edgecolors="none")
    fit = result.stats["fit"]
    if fit["converged"]:
        xs = np.linspace(x.min(), x.max(), 200)
        ax.plot(xs, logistic4(sign * xs, *fit["params"]), color="C3", lw=1.5, label="4-parameter logistic fit")
        ax.legend(loc="best", fontsize=8)
    s = result.stats
    ax.set_title(
        f"{result.name} on {dataset} (n={s['n']})\nSRCC {_fmt(s['srcc'])}  PLCC {_fmt(s['plcc_fit'])} (fitted)",
        fontsize=9,
    )
    ax.set_xlabel(f"{result.name} score" + (" (lower is better)" if sign < 0 else ""))
    ax.set_ylabel("MOS")
    if note:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=6, color="C3", wrap=True)
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)
