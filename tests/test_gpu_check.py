"""The CPU path of ``benchmarks/gpu_check.py`` (the GPU path runs on a GPU machine)."""

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check

    yield gpu_check
    sys.modules.pop("gpu_check", None)


def test_cpu_path_fits_reloads_and_writes_the_table(gpu_check, tmp_path):
    rc = gpu_check.main(["--device", "cpu", "--size", "tiny", "--only", "cmf", "hyperlearn",
                         "dcmf", "--out", str(tmp_path), "--name", "check"])
    assert rc == 0
    out = json.loads((tmp_path / "check.json").read_text())
    rows = {r["work"].split(",")[0]: r for r in out["rows"]}
    assert set(rows) == {"CMF", "HyperLearn ALS", "DCMF"}
    assert rows["CMF"]["value"] < 1.2            # held-out RMSE of a planted rank-10 model
    assert rows["HyperLearn ALS"]["value"] > 0.3  # planted communities recovered
    assert rows["DCMF"]["value"] > 0.5           # digits macro-F1, 10 classes
    assert all(r["cpu_reload_rel_diff"] < 1e-4 for r in out["rows"])
    assert "| CMF, 20,000 ratings" in (tmp_path / "check.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there: no error to raise")
def test_cuda_without_a_gpu_is_a_clear_error(gpu_check, capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cuda", "--size", "tiny"])
    assert "sees no CUDA device" in capsys.readouterr().err
