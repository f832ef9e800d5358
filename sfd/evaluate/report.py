"""HTML comparison report: the same zoomed crop from every method, and a perception-distortion plot."""

from __future__ import annotations

import html
import math
from pathlib import Path

import torch
from PIL import Image

from sfd.evaluate.run import EvalResult

__all__ = ["write_report", "write_crop_sheet", "perception_distortion_plot"]

ZOOM_TO = 192  # crops are shown at about this many pixels, enlarged with nearest neighbour


def _save_crop(crop: torch.Tensor, path: Path) -> None:
    img = Image.fromarray(crop.permute(1, 2, 0).numpy())
    zoom = max(1, ZOOM_TO // max(img.size))
    img.resize((img.width * zoom, img.height * zoom), Image.Resampling.NEAREST).save(path)


def write_crop_sheet(result: EvalResult, path: str | Path, max_images: int = 8) -> Path | None:
    """One PNG: a row per image (the first ``max_images``), a column per system (LR enlarged by nearest
    neighbour, every method, HR), the same region in each, zoomed to about ``ZOOM_TO`` pixels and labelled.
    None when the result kept no crops."""
    from PIL import ImageDraw

    keys = list(result.crops)[:max_images]
    if not keys:
        return None
    columns = ["LR"] if any("LR" in result.crops[k] for k in keys) else []
    columns += [m.name for m in result.methods] + (["HR"] if any("HR" in result.crops[k] for k in keys) else [])
    size = max(max(c.shape[-2:]) for k in keys for c in result.crops[k].values())
    zoom = max(1, ZOOM_TO // size)
    cell, label_w, head_h, pad = size * zoom, 170, 22, 4
    sheet = Image.new("RGB", (label_w + len(columns) * (cell + pad), head_h + len(keys) * (cell + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        draw.text((label_w + j * (cell + pad) + 2, 4), name[: cell // 6], fill="black")
    for i, (dataset, image) in enumerate(keys):
        y0 = head_h + i * (cell + pad)
        y, x, s = result.crop_boxes[(dataset, image)]
        draw.text((4, y0 + 4), f"{dataset}/{image}"[:27], fill="black")
        draw.text((4, y0 + 20), f"y={y} x={x} {s}x{s}", fill="black")
        for j, name in enumerate(columns):
            crop = result.crops[(dataset, image)].get(name)
            if crop is None:
                continue
            img = Image.fromarray(crop.permute(1, 2, 0).numpy())
            sheet.paste(img.resize((cell, cell), Image.Resampling.NEAREST), (label_w + j * (cell + pad), y0))
    path = Path(path)
    sheet.save(path)
    return path


def perception_distortion_plot(result: EvalResult, path: str | Path) -> str | None:
    """PSNR (y) against LPIPS, or NIQE when no LPIPS was measured (x): one point per method and
    dataset. Returns the perceptual metric used, or None when the result lacks PSNR or both."""
    names = {m.name for m in result.metrics}
    x_metric = next((n for n in ("lpips", "lpips-alex", "lpips-vgg", "niqe") if n in names), None)
    if "psnr" not in names or x_metric is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = result.means()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    markers = "osD^v<>ph*"
    for di, dataset in enumerate(result.datasets):
        for mi, method in enumerate(result.methods):
            x, y = means[dataset][method.name][x_metric], means[dataset][method.name]["psnr"]
            if x is None or y is None:
                continue
            ax.scatter(
                x, y, marker=markers[di % len(markers)], color=f"C{mi % 10}", label=method.name if di == 0 else None
            )
            ax.annotate(f"{method.name} ({dataset})", (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    label = next(m.label for m in result.metrics if m.name == x_metric)
    ax.set_xlabel(f"{label} (perception; lower is better)")
    ax.set_ylabel("PSNR↑ (dB, distortion; higher is better)")
    title = "Perception-distortion" + (f", x{result.scale}" if result.scale else "")
    ax.set_title(
        title
        + (
            "\nmarkers: " + ", ".join(f"{markers[i % len(markers)]}={d}" for i, d in enumerate(result.datasets))
            if len(result.datasets) > 1
            else ""
        ),
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return x_metric


def _table_html(result: EvalResult) -> str:
    rows = result.markdown_table().splitlines()
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"]
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        out.append(
            "<tr>"
            + "".join(
                f"<td><b>{html.escape(c.strip('*'))}</b></td>" if c.startswith("**") else f"<td>{html.escape(c)}</td>"
                for c in cells
            )
            + "</tr>"
        )
    return "\n".join(out + ["</table>"])


def _value_line(result: EvalResult, dataset: str, method: str, image: str) -> str:
    record = next(
        (r for r in result.records if r["dataset"] == dataset and r["method"] == method and r["image"] == image), None
    )
    if record is None:
        return ""
    parts = []
    for m in result.metrics:
        v = record[m.name]
        parts.append(f"{m.label} {'n/a' if isinstance(v, float) and math.isnan(v) else f'{v:.{m.decimals}f}'}")
    return html.escape(" · ".join(parts))


def write_report(result: EvalResult, out_dir: str | Path, intro_html: str = "") -> Path:
    """``report.html`` (+ ``perception_distortion.png`` and ``crops/``) in ``out_dir``; ``intro_html``
    (e.g. a paper table) goes above the results table."""
    out = Path(out_dir)
    crop_dir = out / "crops"
    crop_dir.mkdir(parents=True, exist_ok=True)
    plot_metric = perception_distortion_plot(result, out / "perception_distortion.png")
    # The LR (enlarged by nearest neighbour), each method, then the HR where there is one: all the same region.
    columns = (["LR"] if any("LR" in c for c in result.crops.values()) else []) + [m.name for m in result.methods]
    columns += ["HR"] if any("HR" in c for c in result.crops.values()) else []
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sfd eval report</title><style>",
        "body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
        "padding:3px 7px;text-align:right} .crops td{text-align:center;vertical-align:top;font-size:11px}"
        " img.crop{image-rendering:pixelated}",
        "</style></head><body>",
        f"<h1>sfd eval{f' x{result.scale}' if result.scale else ''}</h1>",
        intro_html,
        _table_html(result),
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result.notes) + "</ul>",
        "<h2>Methods</h2><ul>"
        + "".join(f"<li><b>{html.escape(m.name)}</b>: {html.escape(m.source)}</li>" for m in result.methods)
        + "</ul>",
    ]
    if plot_metric:
        parts.append(
            f"<h2>Perception-distortion (PSNR vs {plot_metric.upper()})</h2>"
            "<img src='perception_distortion.png' alt='perception-distortion plot'>"
        )
    else:
        parts.append("<p>No perception-distortion plot: it needs PSNR and LPIPS or NIQE.</p>")
    if result.errors:
        parts.append("<h2>Errors</h2><ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in result.errors) + "</ul>")
    parts.append("<h2>Zoomed crops (the same region in every column; LR enlarged by nearest neighbour)</h2>")
    for dataset in result.datasets:
        parts.append(
            f"<h3>{html.escape(dataset)}</h3><table class='crops'><tr><th>image</th>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            + "</tr>"
        )
        for (d, image), crops in result.crops.items():
            if d != dataset:
                continue
            y, x, size = result.crop_boxes[(d, image)]
            cells = [f"<td>{html.escape(image)}<br>crop y={y} x={x}<br>{size}x{size} px</td>"]
            for column in columns:
                if column not in crops:
                    cells.append("<td>-</td>")
                    continue
                name = f"{_safe(dataset)}_{_safe(image)}_{_safe(column)}.png"
                _save_crop(crops[column], crop_dir / name)
                cells.append(
                    f"<td><img class='crop' src='crops/{name}' loading='lazy'><br>"
                    f"{_value_line(result, dataset, column, image)}</td>"
                )
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
