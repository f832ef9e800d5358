"""The page of ``sfd app`` (Gradio): upload, models, settings, before/after slider, scores, maps, download.

Imported only when ``sfd app`` runs. Gradio's analytics and update check are switched off before Gradio is
imported (``quiet_environment``); the page's fonts are the browser's own, so the browser fetches nothing from
another server either.
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path

from sfd.app.core import METRICS, Engine, Rejected, Result, fmt, resized_for_view
from sfd.iqa.quality_map import to_uint8

NONE = "(none)"
QUIET_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # no telemetry, and no version check (Gradio ties it to analytics)
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SSR_MODE": "False",  # no Node server beside Python
}


def quiet_environment() -> None:
    """Before ``import gradio``: nothing may call home (an operator's own setting of these is overridden)."""
    os.environ.update(QUIET_ENV)


def examples() -> list[Path]:
    """Bundled example photos (scikit-image's, already a dependency): none of them a training photo of the demo."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return [p for p in (folder / "chelsea.png", folder / "coffee.png") if p.is_file()]


# ---------------------------------------------------------------- HTML the page shows (plain functions, tested)


def scores_html(result: Result, scorer) -> str:
    """The score table: one row per image (input, A, B), one column per metric, with the weights each used
    under the table (random CLIP in red). Cells carry ``data-image``/``data-metric`` for tools and tests."""
    if scorer is None or not result.scores:
        return "<p>No scores (not asked for).</p>"
    head = "".join(f"<th>{html.escape(scorer.metrics[m].label)}</th>" for m in METRICS)
    rows = []
    for key, values in result.scores.items():
        cells = "".join(
            f"<td data-image='{html.escape(key)}' data-metric='{m}'>"
            f"{html.escape(fmt(values[m], scorer.metrics[m].decimals))}</td>"
            for m in METRICS
        )
        name = "input" if key == "input" else f"{'AB'[list(result.outputs).index(key)]}: {key}"
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    notes = []
    for m in METRICS:
        info = scorer.metrics[m]
        text = info.weights if info.metric is not None else f"not available: {info.error}"
        style = " style='color:#c00;font-weight:bold'" if info.random else ""
        warn = " RANDOM CLIP weights: these scores measure nothing about quality." if info.random else ""
        notes.append(f"<li{style} data-weights='{m}'>{html.escape(info.label)}: {html.escape(text + warn)}</li>")
    arrows = "↑ higher is better, ↓ lower is better."
    return (
        f"<table id='sfd-scores'><tr><th>image</th>{head}</tr>{''.join(rows)}</table>"
        f"<p>{arrows} Weights:</p><ul>{''.join(notes)}</ul>"
    )


def info_html(result: Result) -> str:
    h, w = result.input.shape[-2:]
    lines = [f"<li id='size-input'>input: {w}x{h}</li>"]
    for i, label in enumerate(result.outputs):
        ow, oh = result.size(label)
        ab = "AB"[i]
        lines.append(
            f"<li id='size-{ab}' data-width='{ow}' data-height='{oh}'>{ab}: {ow}x{oh} "
            f"({html.escape(result.described[label])})</li>"
        )
    return f"<ul id='sfd-info'>{''.join(lines)}</ul>"


# ---------------------------------------------------------------- the page


def build(engine: Engine, title: str = "SFD: super-resolution and SFD-IQA"):
    quiet_environment()
    import gradio as gr

    labels = list(engine.models)
    limits = engine.limits

    def preview(path):
        if not path:
            return None, ""
        try:
            from sfd.app.core import load_upload

            return to_uint8(load_upload(path, limits)), ""
        except Rejected as err:
            return None, f"<p id='sfd-error' style='color:#c00'>{html.escape(str(err))}</p>"

    def run(path, model_a, model_b, outscale, tile, precision, with_scores, progress=gr.Progress()):  # noqa: B008
        if not path:
            raise gr.Error("upload an image first (or pick an example)")
        chosen = [model_a] + ([model_b] if model_b and model_b != NONE else [])
        try:
            result = engine.run(
                path,
                chosen,
                float(outscale or 0),
                int(tile or 0),
                precision,
                bool(with_scores),
                progress=lambda f, what: progress(f, desc=what),
            )
        except Rejected as err:
            raise gr.Error(str(err)) from None
        except Exception as err:  # never a traceback on the page: one line there, one on the server's stderr
            print(f"sfd app: error: {type(err).__name__}: {err}", file=sys.stderr)
            raise gr.Error(f"could not process this image ({type(err).__name__}: {str(err)[:200]})") from None
        outs = list(result.outputs.values())
        if len(outs) == 2:  # B at A's size when their scales differ (display only; the download is B's own)
            pair = (to_uint8(outs[0]), resized_for_view(outs[1], result.size(chosen[0])))
        else:
            pair = (resized_for_view(result.input, result.size(chosen[0])), to_uint8(outs[0]))
        maps = [(str(p), f"SFD-IQA map: {key}") for key, p in result.maps.items()]
        return (
            pair,
            info_html(result),
            scores_html(result, engine.scorer),
            maps,
            [str(p) for p in result.files],
            "",
        )

    local_fonts = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    # delete_cache: Gradio's copies of uploads and results go after an hour (all of them when the app restarts)
    with gr.Blocks(title="sfd app", analytics_enabled=False, delete_cache=(600, 3600)) as page:
        gr.Markdown(
            f"## {title}\nUpload a photo (up to {limits.max_bytes / 2**20:.0f} MB and "
            f"{limits.max_pixels / 1e6:.1f} MP) or pick an example, choose one model (or two to compare), run. "
            "The slider compares the input (bicubic) with A, or A with B."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label="image",
                    file_types=[".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"],
                    type="filepath",
                    elem_id="sfd-upload",
                )
                gr.Examples([[str(p)] for p in examples()], inputs=[upload], label="examples")
                status = gr.HTML(elem_id="sfd-status")
                shown = gr.Image(label="input", interactive=False, height=200, elem_id="sfd-input")
                model_a = gr.Dropdown(labels, value=labels[0], label="model A", elem_id="sfd-model-a")
                model_b = gr.Dropdown([NONE, *labels], value=NONE, label="model B (to compare)")
                with gr.Row():
                    outscale = gr.Number(0, label="output scale (0: the model's)", minimum=0, maximum=8)
                    tile = gr.Number(0, label="tile (input px, 0: whole)", precision=0, minimum=0)
                precision = gr.Radio(["fp32", "bf16", "fp16"], value="fp32", label="precision")
                with_scores = gr.Checkbox(True, label="scores and SFD-IQA maps (input and outputs)")
                go = gr.Button("Upscale", variant="primary", elem_id="sfd-run")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="before / after", elem_id="sfd-slider", format="png")
                info = gr.HTML(elem_id="sfd-sizes")
                table = gr.HTML(elem_id="sfd-table")
                maps = gr.Gallery(label="SFD-IQA maps (Feat-D's real probability per pixel)", columns=1)
                files = gr.File(label="download", file_count="multiple", elem_id="sfd-download")
        upload.change(preview, upload, [shown, status])
        go.click(
            run,
            [upload, model_a, model_b, outscale, tile, precision, with_scores],
            [slider, info, table, maps, files, status],
            concurrency_limit=1,  # one request computes at a time; the next waits in the queue
        )
    page.queue(max_size=16, default_concurrency_limit=1)
    return page, local_fonts


def launch(engine: Engine, host: str, port: int, block: bool = True):
    """Serve the page on ``host:port``; no share link, no analytics. Returns (page, local url)."""
    page, theme = build(engine)
    _, url, _ = page.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        show_error=False,  # Gradio's own errors stay generic; ours (gr.Error) are one line
        max_file_size=engine.limits.max_bytes,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        footer_links=[],
        allowed_paths=[str(engine.workdir)],
        prevent_thread_lock=True,
        quiet=True,  # Gradio's own lines suggest share=True, which this page never uses
        theme=theme,
    )
    print(f"sfd app: open {url} (this machine only; --host to listen elsewhere; Ctrl-C stops)", file=sys.stderr)
    if block:
        page.block_thread()
    return page, url
