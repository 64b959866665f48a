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


@pytest.fixture
def made_up_goodreads_files(monkeypatch):
    """Tests that read small files in the UCSD Goodreads format, made by the test rather
    than the published ones: the published MD5s are unpinned (a test that checks them
    pins them again)."""
    import dataclasses

    from mmfactor.datasets import _goodreads

    monkeypatch.setattr(_goodreads, "FILES", {k: dataclasses.replace(v, md5=None)
                                              for k, v in _goodreads.FILES.items()})
