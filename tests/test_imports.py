"""Imports flow one way: cli -> train/evaluate/iqa -> metrics/inference -> models/losses/data -> config.

The lower layers (``sfd.data``, ``sfd.models``, ``sfd.config``, ``sfd.checkpoint``) never import the upper
ones, at module level or inside a function (an import inside a function is how a cycle hides). The
source is scanned with ``ast``, so every import statement counts, whether or not it ever runs.
Command modules (``*/commands.py``) are the CLI layer wherever they sit.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SFD = REPO / "sfd"
LOWER = [*sorted((SFD / "data").glob("*.py")), *sorted((SFD / "models").glob("*.py")), SFD / "config.py"]
LOWER += [SFD / "checkpoint.py"]
LOWER = [p for p in LOWER if p.name != "commands.py"]
UPPER = ("sfd.metrics", "sfd.inference", "sfd.evaluate", "sfd.iqa", "sfd.train", "sfd.cli", "sfd.commands")
UPPER += ("sfd.bench", "sfd.bench_commands", "sfd.demo", "sfd.app")


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source`` (of module ``module``), relative ones resolved;
    ``from sfd import metrics`` counts as ``sfd.metrics``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _forbidden(name: str) -> bool:
    return name.endswith(".commands") or any(name == u or name.startswith(u + ".") for u in UPPER)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_scan_sees_imports_inside_functions():
    source = "import torch\n\ndef f():\n    from sfd.evaluate import run\n    from . import commands\n"
    names = [name for _, name in imported_modules(source, "sfd.data.io")]
    assert "sfd.evaluate.run" in names and "sfd.data.commands" in names
    assert [n for n in names if _forbidden(n)] == ["sfd.evaluate", "sfd.evaluate.run", "sfd.data.commands"]
    assert _forbidden("sfd.evaluate.run") and _forbidden("sfd.data.commands") and not _forbidden("sfd.data.io")
    assert not _forbidden("sfd.metricsx") and _forbidden("sfd.metrics")


@pytest.mark.parametrize("path", LOWER, ids=lambda p: str(p.relative_to(SFD)))
def test_lower_layers_import_no_upper_layer(path):
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for line, name in imported_modules(path.read_text(), _module_name(path))
        if _forbidden(name)
    ]
    assert not bad, "\n".join(bad)


MIDDLE = [
    p for p in sorted([*(SFD / "metrics").glob("*.py"), *(SFD / "inference").glob("*.py")]) if p.name != "commands.py"
]
ABOVE_MIDDLE = ("sfd.evaluate", "sfd.iqa", "sfd.train", "sfd.cli", "sfd.commands", "sfd.bench", "sfd.demo", "sfd.app")


@pytest.mark.parametrize("path", MIDDLE, ids=lambda p: str(p.relative_to(SFD)))
def test_metrics_and_inference_import_no_command_layer(path):
    """The middle floor (metrics, inference) serves eval, iqa, training and the CLI, never the reverse."""
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for line, name in imported_modules(path.read_text(), _module_name(path))
        if name.endswith(".commands") or any(name == u or name.startswith(u + ".") for u in ABOVE_MIDDLE)
    ]
    assert not bad, "\n".join(bad)


def test_config_imports_without_torch():
    code = "import sys, sfd.config; print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the sfd modules it imports (anywhere in it); ``from a import b`` counts as ``a.b`` when
    that is a module, else as ``a``."""
    modules = {_module_name(p): p for p in SFD.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for _, imported in imported_modules(path.read_text(), name):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.add(imported)
        graph[name] = edges
    return graph


def test_no_module_imports_one_that_imports_it_back():
    """No cycles at all, through imports inside functions too (the lazy ones that hid the last circles)."""
    graph = _import_graph()
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)
