"""Test configuration: threads, and the real data sets (the ``realdata`` marker).

Tests of loader logic (parsing, caching, checksums, offline use) write small files in
the real formats themselves and run everywhere. Tests that need a real copy of a data
set carry ``@pytest.mark.realdata("folder", ...)``, naming the folders of the data home
they read (``dicty``, ``ml-100k``, ``movielens_monti``, as in ``../shared/data/``). The
data home for tests is ``$MMFACTOR_DATA``, else ``../shared/data`` beside the checkout.
Where a test's folders are not there, it is deselected, and one summary line says how to
run it. ``MMFACTOR_REQUIRE_REALDATA=1`` (set by ``.ci/run``) makes a run in which no
``realdata`` test ran fail, so CI cannot lose them silently.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# The tests fit many small models: one intra-op thread avoids OpenMP spin-waiting
# overhead that dominates tiny problems (and keeps parallel CI jobs from oversubscribing).
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _find_data_home():
    """Where the real data copies are: ``$MMFACTOR_DATA``, else ``../shared/data``."""
    if os.environ.get("MMFACTOR_DATA"):
        return Path(os.environ["MMFACTOR_DATA"]).expanduser()
    return SHARED_DATA if SHARED_DATA.is_dir() else None


DATA_HOME = _find_data_home()
_SCRATCH_HOME = None
if DATA_HOME is not None:
    # the fetch_* loaders read the copies there and never download in tests
    os.environ["MMFACTOR_DATA"] = str(DATA_HOME)
else:
    # no copy: a throwaway cache, so that no test run leaves ~/mmfactor_data behind
    _SCRATCH_HOME = tempfile.mkdtemp(prefix="mmfactor-test-data-")
    os.environ["MMFACTOR_DATA"] = _SCRATCH_HOME


def pytest_configure(config):
    config._realdata = {"deselected": 0, "missing": set()}


def _missing_folders(item):
    """The folders a ``realdata`` test names that the data home lacks (empty: runnable)."""
    marker = item.get_closest_marker("realdata")
    if marker is None:
        return set()
    assert marker.args, f"{item.nodeid}: realdata(...) names the data folders it reads"
    return {f for f in marker.args if DATA_HOME is None or not (DATA_HOME / f).is_dir()}


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        missing = _missing_folders(item)
        if missing:
            drop.append(item)
            config._realdata["missing"] |= missing
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
        config._realdata["deselected"] = len(drop)


_REALDATA_RAN = []  # node ids of the realdata tests that ran (their call phase)


def pytest_runtest_logreport(report):
    if report.when == "call" and "realdata" in report.keywords:
        _REALDATA_RAN.append(report.nodeid)


def pytest_terminal_summary(terminalreporter, config):
    info = config._realdata
    if info["deselected"]:
        where = (f"not in {DATA_HOME}" if DATA_HOME is not None
                 else "no MMFACTOR_DATA and no ../shared/data")
        terminalreporter.write_line(
            f"realdata: {info['deselected']} tests deselected: they need copies of the "
            f"data sets {', '.join(sorted(info['missing']))} ({where}). Run them with "
            "MMFACTOR_DATA=/path/to/data python -m pytest -m realdata (docs/data.rst says "
            "how to get the copies).")
    if os.environ.get("MMFACTOR_REQUIRE_REALDATA") == "1" and not _REALDATA_RAN:
        terminalreporter.write_line(
            "realdata: MMFACTOR_REQUIRE_REALDATA=1 but no realdata test ran: failing.",
            red=True)


def pytest_sessionfinish(session, exitstatus):
    if (os.environ.get("MMFACTOR_REQUIRE_REALDATA") == "1" and not _REALDATA_RAN
            and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config):
    if _SCRATCH_HOME is not None:
        shutil.rmtree(_SCRATCH_HOME, ignore_errors=True)


@pytest.fixture
def data_home():
    """The folder holding copies of the real data sets (tests marked ``realdata``)."""
    assert DATA_HOME is not None and DATA_HOME.is_dir(), (
        "this test needs a copy of the real data sets: mark it realdata, and run it "
        "with MMFACTOR_DATA=/path/to/data")
    return DATA_HOME


@pytest.fixture
def adam_step_sizes(monkeypatch):
    """The step size of every ``torch.optim.Adam`` step taken during the test, in order."""
    seen = []
    step = torch.optim.Adam.step

    def recording_step(opt, *args, **kwargs):
        seen.append(opt.param_groups[0]["lr"])
        return step(opt, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    return seen


@pytest.fixture
def made_up_goodreads_files(monkeypatch):
    """Tests that read small files in the UCSD Goodreads format, made by the test rather
    than the published ones: the published MD5s are unpinned (a test that checks them
    pins them again)."""
    import dataclasses

    from mmfactor.datasets import _goodreads

    monkeypatch.setattr(_goodreads, "FILES", {k: dataclasses.replace(v, md5=None)
                                              for k, v in _goodreads.FILES.items()})
