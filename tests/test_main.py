"""The main job (``mmfactor`` / ``python -m mmfactor``): its table, its files, its messages."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import mmfactor.__main__ as job
from mmfactor.datasets import load_mfeat

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(views=["fou", "kar"], n_components=8)


def test_table_files_and_where_they_are(tmp_path, capsys):
    rows = job.run(["CMF"], output=tmp_path, seeds=[0, 1], jobs=1, **SMALL)
    out = capsys.readouterr().out
    assert [r["model"] for r in rows] == ["PCA (reference)", "CMF"]
    cmf = rows[1]
    assert cmf["macro_f1"] > 0.5 and cmf["n_seeds"] == 2  # ten classes: chance is 0.1
    result = json.loads((tmp_path / "results.json").read_text())
    runs = [r for r in result["runs"] if r["model"] == "CMF"]
    assert [r["seed"] for r in runs] == [0, 1]
    f1 = [r["macro_f1"] for r in runs]
    assert cmf["macro_f1"] == pytest.approx(sum(f1) / 2)
    assert (cmf["macro_f1_min"], cmf["macro_f1_max"]) == (min(f1), max(f1))
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert (tmp_path / "results.csv").read_text().startswith("model,macro_f1,accuracy,fit_s")
    # where the files are, and one line per fit with its elapsed time
    assert f"written to {tmp_path.resolve()}: results.csv, results.json, results.png" in out
    assert "CMF              seed 1: fit " in out


def test_the_table_does_not_depend_on_threads_or_jobs(tmp_path):
    """Each fit runs on one torch thread: the same numbers whatever the caller's thread
    count and however many fits run side by side."""
    def f1(threads, jobs):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            job.run(["DCMF"], output=tmp_path / f"{threads}-{jobs}", seeds=[0], jobs=jobs,
                    verbose=False, **SMALL)
        finally:
            torch.set_num_threads(before)
        runs = json.loads((tmp_path / f"{threads}-{jobs}" / "results.json").read_text())["runs"]
        return [(r["model"], r["macro_f1"], r["accuracy"]) for r in runs]

    assert f1(1, 1) == f1(2, 1) == f1(1, 2)


def test_progress_inside_a_fit(tmp_path, capsys):
    job.run(["DFMF"], output=tmp_path, seeds=[0], jobs=1, **SMALL)
    err = capsys.readouterr().err
    assert "DFMF:" in err and "/50" in err  # the training loop's bar: 50 sweeps at most


def test_views_and_models_are_what_the_job_runs():
    assert list(job.VIEWS) == load_mfeat().X.names
    assert list(job._registry(2, "cpu", 0)) == ["PCA (reference)", *job.MODELS]


@pytest.mark.parametrize("argv, message", [
    (["--views", "fou", "abc"], r"Unknown view\(s\) \['abc'\]; choose among \['pix'"),
    (["--models", "CMF", "SVD"], r"Unknown model\(s\) \['SVD'\]; choose among \['CMF'"),
    (["--device", f"cuda:{torch.cuda.device_count()}"],
     r"device 'cuda:\d+': .* was requested but this machine has \d+ CUDA device"),
    (["--device", "tpu"], r"device 'tpu': "),
    (["--seeds"], r"expected at least one argument"),
])
def test_bad_arguments_are_clear_errors_before_any_model_runs(argv, message, monkeypatch,
                                                               capsys, tmp_path):
    def no_fit(*args, **kwargs):
        raise AssertionError("a model ran")

    monkeypatch.setattr(job, "_fit_score", no_fit)
    with pytest.raises(SystemExit) as exc:
        job.main([*argv, "--output", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mmfactor") and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "out").exists()


def test_help_is_fast_and_lists_the_models():
    """``mmfactor --help`` imports neither torch nor the models."""
    code = ("import sys\nfrom mmfactor.__main__ import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "torch imported: False" in out
    assert "models: CMF, DFMF, DCMF, MMEDA-I, MMEDA-II, HyperLearn" in out
    assert "--seeds" in out and "--jobs" in out


def test_the_readme_quick_start_runs(capsys):
    import re

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1 and "MultiModal(" in blocks[0] and "pd.DataFrame" in blocks[0]
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # the defaults converge: no warning on every fit
        warnings.simplefilter("error", ConvergenceWarning)
        exec(compile(blocks[0], "README.md[quick start]", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "{'emb__n_components': " in out


def test_summary_spread_is_the_sample_sd_of_the_benchmarks():
    import numpy as np

    runs = [{"macro_f1": f, "accuracy": a, "fit_s": 1.0}
            for f, a in [(0.90, 0.91), (0.92, 0.93), (0.97, 0.95)]]
    s = job._summary("m", runs)
    assert s["macro_f1_std"] == pytest.approx(np.std([0.90, 0.92, 0.97], ddof=1))
    assert s["accuracy_std"] == pytest.approx(np.std([0.91, 0.93, 0.95], ddof=1))
    assert (s["macro_f1_min"], s["macro_f1_max"], s["n_seeds"]) == (0.90, 0.97, 3)
    one = job._summary("m", runs[:1])
    assert one["macro_f1_std"] == 0.0 and one["n_seeds"] == 1
