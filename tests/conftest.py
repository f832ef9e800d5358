import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$SFD_DATA_DIR`` or ``../shared/data`` beside the repository (absent on users' machines)."""
    return Path(os.environ.get("SFD_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data():
    def get(sub: str) -> Path:
        path = shared_data_dir() / sub
        if not path.exists():
            pytest.skip(f"shared data folder {path} is absent (set SFD_DATA_DIR to run this test)")
        return path

    return get
