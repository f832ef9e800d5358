"""``sfd app`` without a browser: the models it offers, the upload rules, one request end to end, the page's
HTML, and the served app's safety rules (127.0.0.1, no call home, byte limit at the server).

A tiny sfd checkpoint (random CLIP, an untrained 1-block generator) serves as the model and as SFD-IQA's
checkpoint: the tests check the machinery, not quality.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import make_tiny_run, start_app, stop
from PIL import Image

from sfd.app.core import Engine, Limits, Rejected, Scorer, check_upload, find_models, load_upload
from sfd.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*RANDOM.*", "ignore:.*randomly initialised.*"),
    pytest.mark.usefixtures("one_thread"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def engine(tiny, tmp_path_factory):
    ckpt = next((tiny / "checkpoints").glob("*.pth"))
    models = find_models([str(ckpt)], [str(tiny.parent)])  # the checkpoint, and its run folder found in runs/
    return Engine(models, Scorer(ckpt, None, "cpu"), Limits(), "cpu", tmp_path_factory.mktemp("work"))


def photo(path: Path, size=(48, 40), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` and whose pixel data is a few bytes: what a
    decompression bomb looks like before it is decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


# ---------------------------------------------------------------- models: from the command line only


def test_models_come_from_the_command_line_and_runs_folders(tiny, tmp_path):
    ckpt = next((tiny / "checkpoints").glob("*.pth"))
    models = find_models([str(ckpt)], [str(tiny.parent.parent)])  # runs/tiny is two levels below
    assert models == {str(ckpt): str(ckpt), str(tiny): str(tiny)}
    with pytest.raises(UsageError, match="no such file"):
        find_models([str(tmp_path / "missing.pth")])
    with pytest.raises(UsageError, match="without checkpoints"):
        find_models([str(tmp_path)])
    with pytest.raises(UsageError, match="no models"):
        find_models([], [str(tmp_path)])


def test_a_model_not_on_the_list_is_refused(engine, tmp_path):
    """The page sends a label; a path (or anything else) typed into a request is not loaded."""
    with pytest.raises(Rejected, match="unknown model"):
        engine.run(photo(tmp_path / "a.png"), [str(REPO / "README.md")])
    with pytest.raises(Rejected, match="unknown model"):
        engine.upscaler("/etc/passwd", "fp32", 0)


# ---------------------------------------------------------------- upload rules


def test_upload_limits_in_bytes_and_pixels(tmp_path):
    ok = photo(tmp_path / "ok.png")
    assert check_upload(ok, Limits()) == (48, 40)
    with pytest.raises(Rejected, match="up to 0.0 MB"):
        check_upload(ok, Limits(max_bytes=100))
    with pytest.raises(Rejected, match="48x40 = 0.0 MP; this page takes up to 0.0 MP"):
        check_upload(ok, Limits(max_pixels=1000))
    big = png_header_only(tmp_path / "big.png", 5000, 5000)  # 25 MP claimed in 100 bytes
    with pytest.raises(Rejected, match="5000x5000 = 25.0 MP"):
        check_upload(big, Limits())


def test_upload_follows_the_decompression_bomb_rule_of_sfd_sr(tmp_path, monkeypatch):
    """The same rule as every read of sfd (sfd/data/io.py): $SFD_MAX_IMAGE_PIXELS, refused from the header."""
    claimed = png_header_only(tmp_path / "bomb.png", 4000, 4000)
    monkeypatch.setenv("SFD_MAX_IMAGE_PIXELS", "1000000")  # Pillow refuses over twice the limit
    with pytest.raises(Rejected, match="SFD_MAX_IMAGE_PIXELS") as err:
        check_upload(claimed, Limits(max_pixels=10**9))
    assert str(tmp_path) not in str(err.value)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"this is not an image", "not an image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "truncated|not an image|unreadable"),
    ],
)
def test_bad_files_get_one_line_not_a_traceback(tmp_path, content, reason):
    bad = tmp_path / "upload.png"
    bad.write_bytes(content)
    with pytest.raises(Rejected, match=reason) as err:
        load_upload(bad, Limits())
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message and str(tmp_path) not in message


def test_a_file_cut_short_after_its_header_is_refused_when_decoded(tmp_path):
    full = photo(tmp_path / "full.png", (64, 64)).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(full[: len(full) // 2])
    assert check_upload(cut, Limits()) == (64, 64)  # the header is fine
    with pytest.raises(Rejected, match="truncated|corrupt|unreadable"):
        load_upload(cut, Limits())


# ---------------------------------------------------------------- one request


def test_one_model_upscales_and_scores_input_and_output(engine, tmp_path):
    from sfd.app.ui import info_html, scores_html

    seen = []
    result = engine.run(photo(tmp_path / "in.png"), [next(iter(engine.models))], progress=lambda f, w: seen.append(f))
    label = next(iter(result.outputs))
    assert result.size(label) == (48 * 4, 40 * 4)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)  # progress only goes forward
    sfd_iqa = engine.scorer.metrics["sfd-iqa"].metric
    for key, img in [("input", result.input), (label, result.outputs[label])]:
        assert result.scores[key]["sfd-iqa"] == pytest.approx(sfd_iqa.components(img)[0]["score"], abs=1e-6)
        assert 0 <= result.scores[key]["clipiqa"] <= 1
        assert result.maps[key].is_file()
    assert isinstance(result.scores["input"]["niqe"], str)  # 48x40 is too small for NIQE: "n/a: ..." not a crash
    with Image.open(result.files[0]) as out:
        assert out.size == (192, 160)
    page = scores_html(result, engine.scorer)
    assert re.search(r"data-image='input' data-metric='sfd-iqa'>0\.\d{4}<", page)
    assert "color:#c00" in page and "RANDOM CLIP" in page  # random CLIP said in red, per metric
    assert "data-width='192' data-height='160'" in info_html(result)


def test_two_models_and_an_output_scale(engine, tmp_path):
    labels = list(engine.models)
    result = engine.run(photo(tmp_path / "in.png"), labels, outscale=2, scores=False)
    assert [result.size(x) for x in labels] == [(96, 80), (96, 80)]
    assert not result.scores and len(result.files) == 2
    # the same weights (a checkpoint and its run folder): the same result, resized from x4 to x2
    assert torch.equal(result.outputs[labels[0]], result.outputs[labels[1]])


def test_each_request_writes_only_into_its_own_folder(engine, tmp_path):
    """No cross-user leakage: two requests share no file, and a result holds nothing of the other's."""
    a = engine.run(photo(tmp_path / "a.png", seed=1), [next(iter(engine.models))], scores=False)
    b = engine.run(photo(tmp_path / "b.png", seed=2), [next(iter(engine.models))], scores=False)
    assert a.folder != b.folder and a.folder.parent == b.folder.parent == engine.workdir
    assert all(p.parent == a.folder for p in a.files) and all(p.parent == b.folder for p in b.files)
    assert not torch.equal(a.input, b.input)
    assert not hasattr(engine, "last") and set(vars(engine)) == {
        "models", "scorer", "limits", "device", "workdir", "_loaded", "_lock"
    }  # fmt: skip  # the engine keeps models, never a request's images


# ---------------------------------------------------------------- the served page


def test_sfd_help_imports_neither_torch_nor_gradio():
    code = (
        "import sys; from sfd.cli import build_parser; build_parser().format_help(); "
        "print([m for m in ('torch', 'gradio') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def listening_addresses(port: int) -> set[str] | None:
    """The local addresses of the sockets listening on ``port`` (Linux: /proc/net/tcp, tcp6), or None."""
    found, tables = set(), [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    for table in (t for t in tables if t.exists()):
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                # /proc prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words))
    return found


def test_served_app_is_local_calls_no_server_and_limits_uploads(tiny, tmp_path):
    pytest.importorskip("gradio", reason="sfd app needs the app extra: pip install 'sfd[app]'")
    proc, url, seconds = start_app(tiny, tmp_path, "--max-upload-mb", "0.01")
    try:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert listening_addresses(port) in ({"127.0.0.1"}, None)  # None: no /proc/net/tcp to read here
        with socket.socket() as other:  # the reading itself sees an address open to the network
            other.bind(("0.0.0.0", 0))
            other.listen()
            assert listening_addresses(other.getsockname()[1]) in ({"0.0.0.0"}, None)
        # the server refuses an upload over --max-upload-mb (10 kB here) before any of it is kept
        body, boundary = b"x" * 20_000, "sfdtestboundary"
        data = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        )
        req = urllib.request.Request(
            url + "gradio_api/upload", data=data, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 413
        page = urllib.request.urlopen(url + "config", timeout=10).read().decode()
        assert "request-" not in page  # no earlier request's files in what every visitor gets
    finally:
        out = stop(proc)
    log = tmp_path / "net.log"
    assert not log.exists(), f"sfd app tried to reach the network: {log.read_text()}"
    assert "gradio.live" not in out and "public" not in out
    assert f"sfd app: open {url}" in out
    # every attempt beyond this machine fails at once here, so time is not what proves it (the log is); this
    # bounds start-up itself: Gradio, two random RN50s and the page, on a busy 2-core machine (25 s at a load of 5)
    assert seconds < 90, f"took {seconds:.0f} s to answer with the network unreachable"


def test_the_page_queues_requests_and_offers_only_the_listed_models(engine):
    """A second request waits (one computes at a time, 16 may wait); the model menus hold the labels only."""
    pytest.importorskip("gradio", reason="sfd app needs the app extra: pip install 'sfd[app]'")
    from sfd.app.ui import NONE, build

    page, _ = build(engine)
    run = [f for f in page.fns.values() if f.name == "run"]
    assert len(run) == 1 and run[0].concurrency_limit == 1 and run[0].queue and run[0].tracks_progress
    assert page._queue.max_size == 16
    menus = [b for b in page.blocks.values() if type(b).__name__ == "Dropdown"]
    assert [sorted(v for _, v in m.choices) for m in menus] == [sorted(engine.models), sorted([NONE, *engine.models])]
    assert all(not m.allow_custom_value for m in menus)  # nothing typed in is accepted as a model


def test_without_gradio_sfd_app_says_what_to_install(tiny, monkeypatch, capsys):
    from sfd.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["app", str(tiny)]) == 2
    assert "pip install 'sfd[app]'" in capsys.readouterr().err
