import os
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for modules of many small CPU ops: on a busy 2-core machine two threads
    spend more on OpenMP hand-offs than they save (up to 40x slower for small RN50 forwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
