"""BasicSR's own modules, loaded by file path as test references (never copied into this repository).

``python tests/basicsr_reference.py`` (``make install`` runs it, non-fatal) downloads BasicSR 1.4.2's
sdist from PyPI with pip and extracts the single files below into ``$SFD_CACHE`` or ``~/.cache/sfd``
(``basicsr-1.4.2/``). Tests load them with ``load(name)`` and skip with the reason when absent.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REQUIREMENT = "basicsr==1.4.2"
# module name -> its path inside the sdist's basicsr-1.4.2/ folder (Apache-2.0)
FILES = {"diffjpeg": "basicsr/utils/diffjpeg.py"}


def cache_dir() -> Path:
    root = os.environ.get("SFD_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "sfd") / "basicsr-1.4.2"


def load(name: str):
    """BasicSR's module ``name`` (a key of FILES), or None when it has not been fetched."""
    path = cache_dir() / FILES[name]
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"basicsr_reference_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def missing_reason(name: str) -> str:
    return f"BasicSR's {FILES[name]} is absent from {cache_dir()}: run `python tests/basicsr_reference.py`"


def fetch() -> None:
    with tempfile.TemporaryDirectory(prefix="sfd-basicsr-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", REQUIREMENT, "--no-deps", "--no-build-isolation"]
        subprocess.run([*cmd, "--disable-pip-version-check", "-q", "-d", tmp], check=True)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist, "r:gz") as tar:
            members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
            for member in FILES.values():
                dest = cache_dir() / member
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(members[member]).read())
                print(f"{dest}: from the {REQUIREMENT} sdist")


if __name__ == "__main__":
    fetch()
