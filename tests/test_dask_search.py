"""Hyper-parameter search past one machine: GridSearchCV under joblib's Dask backend.

A ``distributed.LocalCluster`` on 127.0.0.1 stands in for a real cluster: the search
sends its fits to the scheduler over TCP and the workers run them. The result must be the
one of the same search run in this process.
"""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from mmfactor import CMF
from mmfactor.datasets import load_mfeat

distributed = pytest.importorskip("distributed")

CLUSTER = {"host": "127.0.0.1", "dashboard_address": None, "threads_per_worker": 1,
           "n_workers": 2}


@pytest.fixture(scope="module")
def problem():
    X, y = load_mfeat(views=["fou", "kar"], return_X_y=True)
    X, y = X[::8], y[::8]  # 250 samples, every class
    pipe = Pipeline([("emb", CMF(random_state=0, max_iter=10, tol=0)),
                     ("clf", RandomForestClassifier(max_depth=2, n_estimators=20,
                                                    random_state=0))])
    grid = {"emb__n_components": [4, 8], "emb__alpha": [0.1, 1.0]}
    local = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    return pipe, grid, X, y, local


def run_on_cluster(pipe, grid, X, y, **cluster):
    with distributed.LocalCluster(**{**CLUSTER, **cluster}) as lc, \
            distributed.Client(lc) as client:
        assert lc.scheduler_address.startswith(("tcp://127.0.0.1", "inproc://"))
        with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
        return search, stream.data


def test_grid_search_on_a_loopback_cluster(problem):
    """Worker threads behind a TCP scheduler on 127.0.0.1 (fast: no worker processes)."""
    pipe, grid, X, y, local = problem
    search, stream = run_on_cluster(pipe, grid, X, y, processes=False, protocol="tcp")
    assert len(stream) >= 12
    assert search.best_params_ == local.best_params_
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(search.predict(X), local.predict(X))
    emb = search.best_estimator_.named_steps["emb"]
    assert emb.factors_[emb.sample_entity_].shape == (len(X), emb.n_components)


@pytest.mark.slow
def test_grid_search_on_worker_processes(problem):
    """Worker processes (the estimators and the MultiModal are pickled across)."""
    pipe, grid, X, y, local = problem
    search, stream = run_on_cluster(pipe, grid, X, y, processes=True)
    assert len(stream) >= 12
    assert search.best_params_ == local.best_params_
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(search.predict(X), local.predict(X))
