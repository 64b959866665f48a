import os
from pathlib import Path

import pytest
import torch

# The tests fit many small models: one intra-op thread avoids OpenMP spin-waiting
# overhead that dominates tiny problems (and keeps parallel CI jobs from oversubscribing).
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

if "MMFACTOR_DATA" not in os.environ and SHARED_DATA.is_dir():
    # the fetch_* loaders read the copies in ../shared/data and never download in tests
    os.environ["MMFACTOR_DATA"] = str(SHARED_DATA)


@pytest.fixture
def data_home():
    """The folder holding the shared copies of the real data sets."""
    home = os.environ.get("MMFACTOR_DATA")
    assert home and Path(home).is_dir(), "set MMFACTOR_DATA to a folder holding the data sets"
    return home
