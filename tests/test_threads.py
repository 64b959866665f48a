"""``n_jobs``: the threads of torch and of the BLAS/OpenMP pools, set for one call only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from joblib import cpu_count
from sklearn.base import clone
from test_reliability import ESTIMATORS, base_input
from threadpoolctl import threadpool_info

from mmfactor._threads import resolve_n_jobs, thread_limits


def _pools():
    return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info())


def _spy(monkeypatch, cls, method):
    """Record (torch threads, BLAS/OpenMP pool sizes) each time ``cls.method`` runs."""
    seen = []
    inner = getattr(cls, method)

    def spy(self, *args, **kwargs):
        seen.append((torch.get_num_threads(), frozenset(n for _, n in _pools())))
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, spy)
    return seen


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_n_jobs_holds_during_fit_and_transform_and_is_restored(name, monkeypatch):
    before_torch, before_pools = torch.get_num_threads(), _pools()
    want = 2 if before_torch != 2 else 1
    est = ESTIMATORS[name](n_jobs=want)
    cls = type(est)
    seen_fit = _spy(monkeypatch, cls, "_fit")
    X = base_input(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X)
    assert seen_fit == [(want, {want})]
    assert torch.get_num_threads() == before_torch and _pools() == before_pools
    # transform runs under the same limit: seen from a helper that transform calls
    helper = "_fold_in" if hasattr(cls, "_fold_in") else "_check_input_signature"
    seen_tr = _spy(monkeypatch, cls, helper)
    est.transform(X)
    assert seen_tr and set(seen_tr) == {(want, frozenset({want}))}
    assert torch.get_num_threads() == before_torch and _pools() == before_pools


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_n_jobs_none_changes_nothing(name, monkeypatch):
    before = torch.get_num_threads(), _pools()
    est = ESTIMATORS[name]()
    assert est.n_jobs is None and "n_jobs" in est.get_params() and clone(est).n_jobs is None
    seen = _spy(monkeypatch, type(est), "_fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(base_input(name))
    assert seen == [(before[0], {n for _, n in before[1]})]
    assert (torch.get_num_threads(), _pools()) == before


def test_threads_are_restored_when_fit_raises():
    before = torch.get_num_threads(), _pools()
    est = ESTIMATORS["CMF"](n_jobs=2 if before[0] != 2 else 1)
    with pytest.raises(ValueError, match="view"):
        est.fit(np.full((6, 3), np.inf))
    assert (torch.get_num_threads(), _pools()) == before


def test_same_embedding_with_and_without_n_jobs():
    X = base_input("CMF")
    ref = ESTIMATORS["CMF"]().fit_transform(X)
    one = ESTIMATORS["CMF"](n_jobs=1).fit_transform(X)
    np.testing.assert_allclose(one, ref, rtol=1e-5, atol=1e-6)


def test_resolve_n_jobs_follows_scikit_learn():
    assert resolve_n_jobs(None) is None
    assert resolve_n_jobs(3) == 3
    assert resolve_n_jobs(-1) == cpu_count()
    assert resolve_n_jobs(-(cpu_count() + 5)) == 1
    assert resolve_n_jobs(0) is None and resolve_n_jobs(1.5) is None


def test_nested_limits_keep_the_outer_one():
    before = torch.get_num_threads()
    with thread_limits(1) as outer:
        assert outer == 1
        with thread_limits(2) as inner:
            assert inner is None and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_main_job_threads_option_and_warnings(tmp_path, capsys):
    import json

    from sklearn.exceptions import ConvergenceWarning

    from mmfactor.__main__ import main

    before = torch.get_num_threads()
    # DFMF stops at max_iter=50 on these views: its ConvergenceWarning must reach the user
    with pytest.warns(ConvergenceWarning, match="DFMF: maximum number of iterations"):
        assert main(["--models", "DFMF", "--views", "fou", "kar", "--n-components", "10",
                     "--threads", "1", "--jobs", "1", "--seeds", "0",
                     "--output", str(tmp_path)]) == 0
    assert torch.get_num_threads() == before
    protocol = json.loads((tmp_path / "results.json").read_text())["protocol"]
    assert protocol["threads"] == 1
    out, err = capsys.readouterr()
    # the fit's progress bar, ending with how the fit stopped, then one line per fit
    assert "max_iter=50 reached]" in err and "DFMF             seed 0: fit" in out
    with pytest.raises(SystemExit):
        main(["--threads", "0"])
    assert "--threads must be a positive number" in capsys.readouterr().err


def test_every_public_computing_method_runs_under_n_jobs():
    """Each public method of each estimator that computes is wrapped (a method added to
    a model later is caught here: add it to THREADED_METHODS)."""
    from mmfactor._threads import THREADED_METHODS

    computing = {"fit", "fit_transform", "transform", "inverse_transform", "reconstruct",
                 "score", "score_heldout", "predict_entries", "recommend"}
    for name, make in ESTIMATORS.items():
        cls = type(make())
        public = {m for m in dir(cls) if not m.startswith("_") and callable(getattr(cls, m))
                  and getattr(cls, m).__module__.startswith("mmfactor")}
        mine = public - {"save", "to_cptensor"}  # they store or convert, no computing
        assert mine <= computing, f"{name}: {sorted(mine - computing)} not classified"
        for m in mine:
            assert m in THREADED_METHODS
            assert getattr(getattr(cls, m), "_mmfactor_threaded", False), (name, m)
