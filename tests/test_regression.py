"""The regression task of the MMEDA paper, end to end: Pipeline(embedding, LinearRegression).

A small synthetic collection whose continuous target is a known linear function of the
planted sample factor: an embedding that recovers the factor's span lets
``LinearRegression`` predict the target of samples the embedding never saw in ``fit``
(their embedding comes from ``transform``).
"""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline

from mmfactor import CMF, MultiModal
from mmfactor.datasets import make_collective

warnings.filterwarnings("ignore", category=UserWarning, module="torch")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _regression_task(n=240, k=4, missing_rate=0.2, noise=0.1, seed=0):
    """Two views of a planted factor U (with missing entries) and y = U beta + noise."""
    data = make_collective(n, (30, 20), k, missing_rate=missing_rate, noise=noise,
                           random_state=seed)
    rng = np.random.RandomState(seed + 1)
    U = data.factors["sample"]
    beta = rng.randn(k)
    y = U @ beta + 0.05 * (U @ beta).std() * rng.randn(n)
    return data.X, y, U


def _split(n, n_test=60):
    return np.arange(n - n_test), np.arange(n - n_test, n)


def test_cmf_linear_regression_pipeline_predicts_target_of_unseen_samples():
    X, y, _ = _regression_task()
    tr, te = _split(len(y))
    pipe = Pipeline([("emb", CMF(4, alpha=0.1, max_iter=50, random_state=0)),
                     ("reg", LinearRegression())])
    pipe.fit(X[tr], y[tr])
    r2 = pipe.score(X[te], y[te])
    assert r2 > 0.95
    # the test rows' embedding is their fold-in: the pipeline's prediction is exactly the
    # regression of the transformed rows
    Z = pipe.named_steps["emb"].transform(X[te])
    np.testing.assert_allclose(pipe.predict(X[te]), pipe.named_steps["reg"].predict(Z))
    # the regression is only as good as the embedding: one component cannot carry a
    # target spread over four planted components
    low = Pipeline([("emb", CMF(1, alpha=0.1, max_iter=50, random_state=0)),
                    ("reg", LinearRegression())]).fit(X[tr], y[tr])
    assert low.score(X[te], y[te]) < r2 - 0.2


def test_cmf_regression_does_not_use_test_rows_in_fit():
    """Changing the held-out rows' views does not change the fitted model."""
    X, y, _ = _regression_task(n=160)
    tr, te = _split(len(y), 40)
    pipe = Pipeline([("emb", CMF(4, alpha=0.1, max_iter=20, random_state=0)),
                     ("reg", LinearRegression())]).fit(X[tr], y[tr])
    emb = pipe.named_steps["emb"]
    assert emb.factors_["sample"].shape[0] == len(tr)
    Z1 = emb.transform(X[te])
    # folding in one row does not depend on the other rows folded in with it
    Z2 = np.vstack([emb.transform(X[te[i : i + 1]]) for i in range(len(te))])
    np.testing.assert_allclose(Z1, Z2, rtol=1e-4, atol=1e-5)


def test_grid_search_over_n_components_picks_the_planted_rank():
    X, y, _ = _regression_task(n=200, k=3, noise=0.05)
    tr, te = _split(len(y), 50)
    pipe = Pipeline([("emb", CMF(alpha=0.1, max_iter=30, random_state=0)),
                     ("reg", LinearRegression())])
    search = GridSearchCV(pipe, {"emb__n_components": [1, 3]},
                          cv=KFold(3, shuffle=True, random_state=0)).fit(X[tr], y[tr])
    assert search.best_params_ == {"emb__n_components": 3}
    assert r2_score(y[te], search.predict(X[te])) > 0.9


@pytest.mark.parametrize("n_test", [1, 7])
def test_pipeline_predicts_few_new_rows_with_sparse_ratings(n_test):
    """Sparse ratings with unstored = unobserved, plus a dense side view and a shared
    relation between two other entity types, as in the MovieLens benchmark."""
    import scipy.sparse as sp

    rng = np.random.RandomState(0)
    n, m, k = 150, 40, 3
    U, V = rng.randn(n, k), rng.randn(m, k)
    R = U @ V.T + 0.05 * rng.randn(n, m)
    mask = rng.rand(n, m) < 0.4
    ratings = sp.csr_matrix(np.where(mask, R, 0.0))
    # the stored zeros-free pattern: R is continuous, so no observed entry is exactly 0
    side = U @ rng.randn(k, 5)
    genre = V @ rng.randn(k, 4)
    X = MultiModal(ratings=ratings, side=side, shared={"genre": genre})
    rel = {"ratings": ("user", "movie"), "side": ("user", "side"),
           "genre": ("movie", "genre")}
    y = U @ rng.randn(k)
    tr, te = np.arange(n - n_test), np.arange(n - n_test, n)
    pipe = Pipeline([("emb", CMF(k, relations=rel, alpha=0.1, max_iter=30, random_state=0)),
                     ("reg", LinearRegression())]).fit(X[tr], y[tr])
    pred = pipe.predict(X[te])
    assert pred.shape == (n_test,)
    assert np.abs(pred - y[te]).max() < 0.3 * y.std()
