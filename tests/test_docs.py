"""The commands in README.md and docs/ run as written: docs that cannot drift.

A fenced block runs when the line before it is an HTML comment (invisible on GitHub)::

    <!-- doctest: run [needs=photos,sr-data] [creates=PATH,...] [output] [slow] -->

Every line of the block that starts with ``sfd `` or ``$ sfd `` is a command (continuation lines
ending in ``\\`` are joined; a trailing ``# comment`` is dropped); it runs as ``python -m sfd`` in a
fresh folder (forked from tests/forkserver.py's server), and must exit 0. ``needs=photos`` puts photos in ``photos/``;
``needs=sr-data`` points ``$SFD_DATA`` at the shared SR test sets (skipped when absent).
``creates=`` lists files or folders the command must leave. ``output`` compares every non-command
line of the block (and of a table right after it) with what the commands printed: the docs'
numbers are reproduced, not copied. ``slow`` (a benchmark at its documented size) runs with
``-m slow`` only. Blocks that need a GPU or pretrained weights say
``<!-- doctest: skip REASON -->`` and are listed as skipped with that reason.

The table after a block is matched row by row (``|`` to the end of the line, not across lines:
with ``re.S`` a bare ``.*`` would swallow the rest of the document).

Tiny settings reach ``sfd train`` through ``$SFD_SET`` (extra ``--set`` overrides, documented in
docs/training.md), never by editing the text.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
from conftest import REPO, shared_data_dir
from helpers import bundled_photo_dir

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARK = re.compile(r"<!-- doctest: (run|skip)([^>]*)-->\s*\n```[^\n]*\n(.*?)```(\n\n(?:\|[^\n]*\n)+)?", re.S)

# Tiny settings for every documented `sfd train`: seconds, not hours, on a CPU.
TINY_SET = " ".join([
    "generator.num_feat=8", "generator.num_blocks=1", "generator.embed_dim=12", "generator.depths=[1]",
    "generator.num_heads=[2]", "clip.weights=random", "feat_d.widths=[16,8,8,8]", "tg_d.length=4",
    "loss.vgg_weights=random", "data.patch_size=64", "data.batch_size=2", "data.num_workers=0",
    "image_d.input_size=64", "train.iterations=2", "train.save_every=2", "train.log_every=1", "train.val_every=2",
    "train.device=cpu",
])  # fmt: skip


def _blocks():
    for doc in DOCS:
        text = doc.read_text()
        for m in MARK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            slow = [pytest.mark.slow] if "slow" in m.group(2).split() else []  # benchmarks: -m slow
            yield pytest.param(m.group(1), m.group(2).strip(), m.group(3), m.group(4) or "",
                               id=f"{doc.name}:{line}", marks=slow)  # fmt: skip


def _commands(body: str) -> tuple[list[str], list[str]]:
    """(commands, expected output lines) of a block."""
    joined = re.sub(r"\\\n\s*", " ", body)
    commands, output = [], []
    for raw in joined.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if line.startswith("sfd "):
            commands.append(re.sub(r"\s+#.*$", "", line))
        elif line:
            output.append(line)
    return commands, output


def _options(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) if "=" in part else (part, "") for part in text.split())


def _norm(line: str) -> str:
    return " ".join(line.replace("**", "").split())


@pytest.mark.parametrize("mode,opts,body,table", list(_blocks()))
def test_documented_commands_run(mode, opts, body, table, tmp_path, sfd_python):
    if mode == "skip":
        pytest.skip(opts or "marked skip in the docs")
    options = _options(opts)
    env = dict(os.environ, SFD_SET=TINY_SET, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    needs = options.get("needs", "").split(",")
    if "photos" in needs:
        bundled_photo_dir(tmp_path / "photos", max_side=256)  # `sfd sr` on full-size photos: minutes
    if "sr-data" in needs:
        if not (shared_data_dir() / "sr").is_dir():
            pytest.skip(f"shared SR test sets absent ({shared_data_dir() / 'sr'})")
        env["SFD_DATA"] = str(shared_data_dir() / "sr")
    commands, expected = _commands(body)
    assert commands, "a runnable block without an sfd command"
    printed = ""
    for command in commands:
        argv = [sfd_python, "-m", "sfd", *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        printed += done.stdout
    for path in filter(None, options.get("creates", "").split(",")):
        assert (tmp_path / path).exists(), f"the docs promise {path}; not there after {commands}"
    if "output" in options:
        got = {_norm(line) for line in printed.splitlines()}
        wanted = [_norm(line) for line in expected + table.strip().splitlines() if line.strip()]
        missing = [line for line in wanted if line not in got]
        assert not missing, f"lines the docs show but the commands did not print: {missing[:5]}"


def test_every_shell_block_is_marked():
    """A new documented command is either run by this test or says why not."""
    unmarked = []
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(r"```[^\n]*\n(.*?)```", text, re.S):
            if re.search(r"^\s*(\$ )?sfd ", m.group(1), re.M):
                before = text[: m.start()].rstrip().splitlines()[-1:] or [""]
                if not before[0].startswith("<!-- doctest:"):
                    unmarked.append(f"{doc.name}:{text[: m.start()].count(chr(10)) + 1}")
    assert not unmarked, f"blocks with sfd commands but no <!-- doctest: --> mark: {unmarked}"
