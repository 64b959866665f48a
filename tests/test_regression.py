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


def _other_estimators():
    from mmfactor import DCMF, DFMF, MMEDA, HyperLearn

    return {
        # name: (estimator, non-negative data, R^2 it must reach on the held-out rows)
        "DFMF": (DFMF(4, max_iter=200, random_state=0), True, 0.8),
        "DCMF": (DCMF(4, hidden_layer_sizes=(), max_iter=60, random_state=0), False, 0.8),
        "MMEDA": (MMEDA(4, hidden_layer_sizes=(32,), view_components=8,
                        fusion_layer_sizes=(16,), max_iter=60, random_state=0), False, 0.8),
        "HyperLearn": (HyperLearn(4, missing="unobserved", diffusion_steps=0, solver="als",
                                  max_iter=30, random_state=0), False, 0.8),
    }


@pytest.mark.parametrize("name", [
    "DFMF",
    pytest.param("DCMF", marks=pytest.mark.slow),  # 107 s on 2 busy cores
    pytest.param("MMEDA", marks=pytest.mark.slow),  # 53 s on 2 busy cores
    "HyperLearn",
])
def test_every_estimator_in_a_regression_pipeline(name):
    """Each estimator's embedding of unseen rows (transform) predicts a linear target."""
    est, nonneg, r2_min = _other_estimators()[name]
    rng = np.random.RandomState(0)
    n, k = 240, 4
    U = rng.rand(n, k) if nonneg else rng.randn(n, k)
    views = [U @ (rng.rand(k, m) if nonneg else rng.randn(k, m)) for m in (30, 20)]
    if name == "HyperLearn":
        views = views[:1]  # one K=2 tensor (a matrix)
    X = MultiModal(*views)
    y = U @ rng.randn(k)
    tr, te = _split(n)
    pipe = Pipeline([("emb", est), ("reg", LinearRegression())]).fit(X[tr], y[tr])
    assert pipe.predict(X[te]).shape == (len(te),)
    assert pipe.score(X[te], y[te]) > r2_min


def test_hyperlearn_transform_of_training_rows_matches_fit_transform():
    """What a Pipeline needs: the training rows' embedding from fit_transform and the
    embedding transform gives the same rows agree (they do for CMF)."""
    from mmfactor import HyperLearn

    rng = np.random.RandomState(0)
    X = rng.randn(120, 4) @ rng.randn(4, 30)
    cmf = CMF(4, alpha=0.1, max_iter=30, random_state=0)
    np.testing.assert_allclose(cmf.fit_transform(X), cmf.transform(X), rtol=1e-3, atol=1e-3)
    hl = HyperLearn(4, missing="unobserved", diffusion_steps=0, solver="als", max_iter=30,
                    random_state=0)
    F = hl.fit_transform(X)
    np.testing.assert_allclose(F, hl.transform(X), rtol=1e-5, atol=1e-6)
