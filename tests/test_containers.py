"""Every container type a view may be, through scikit-learn's model selection.

``cross_val_score`` and ``GridSearchCV`` index a ``MultiModal`` by row positions; every
view must then give the same rows, whatever its container: NumPy, SciPy sparse (matrix
and array, any format), torch, pandas DataFrame (integer or string column labels, an
index that is not 0..n-1) and Series, and a plain list.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mmfactor import CMF, MMEDA, MultiModal

N = 60
RNG = np.random.RandomState(0)
Y = np.repeat([0, 1], N // 2)[RNG.permutation(N)]
# the class lives in the view under test only: a misaligned view loses it
SIGNAL = np.c_[Y * 3.0 + RNG.rand(N), -Y * 2.0 + RNG.rand(N), RNG.rand(N)]
NOISE = RNG.rand(N, 4)
LABELS = RNG.permutation(1000)[:N]  # a pandas index that is not 0..n-1

CONTAINERS = {
    "numpy": lambda a: a,
    "csr_matrix": sp.csr_matrix,
    "csc_matrix": sp.csc_matrix,
    "coo_matrix": sp.coo_matrix,
    "csr_array": sp.csr_array,
    "torch": lambda a: torch.as_tensor(a),
    "DataFrame, int columns": lambda a: pd.DataFrame(a),
    "DataFrame, str columns, shuffled index": lambda a: pd.DataFrame(
        a, columns=list("abc"), index=LABELS),
    "Series, shuffled index": lambda a: pd.Series(list(a), index=LABELS),
    "list": lambda a: list(a),
}


def _dense(view):
    """The rows of a view as a float array, whatever its container."""
    if sp.issparse(view):
        return view.toarray()
    if isinstance(view, pd.Series | list):
        return np.array([np.asarray(r) for r in view], dtype=float).reshape(-1, SIGNAL.shape[1])
    return np.asarray(view, dtype=float)


@pytest.mark.parametrize("kind", list(CONTAINERS))
def test_rows_are_taken_by_position(kind):
    X = MultiModal(noise=NOISE, signal=CONTAINERS[kind](SIGNAL))
    for key in ([5, 0, 59], np.arange(N) % 3 == 0, slice(10, 20), np.array([], dtype=int)):
        for sub in (X[key], X[key, ...]):  # scikit-learn's _safe_indexing passes (key, ...)
            np.testing.assert_array_equal(_dense(sub.signal), SIGNAL[key])
            assert len(sub) == len(SIGNAL[key]) and sub.noise.shape[0] == len(sub)


# the view's rows as numbers for the downstream model, whatever the container
_AS_FEATURES = FunctionTransformer(lambda X: np.hstack([_dense(v) for v in X.views]))


@pytest.mark.parametrize("kind", list(CONTAINERS))
def test_cross_validation_and_grid_search_keep_views_aligned(kind):
    X = MultiModal(noise=NOISE, signal=CONTAINERS[kind](SIGNAL))
    pipe = Pipeline([("rows", _AS_FEATURES), ("clf", LogisticRegression())])
    cv = KFold(3, shuffle=True, random_state=0)
    assert cross_val_score(pipe, X, Y, cv=cv).min() > 0.9  # misaligned: near chance
    search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=cv).fit(X, Y)
    assert search.best_score_ > 0.9 and search.predict(X[:7]).shape == (7,)


@pytest.mark.parametrize("model", ["CMF", "MMEDA"])
def test_embeddings_of_dataframe_and_sparse_views_through_grid_search(model):
    emb = (CMF(2, max_iter=20, random_state=0) if model == "CMF" else
           MMEDA(2, view_components=4, fusion_layer_sizes=(8,), max_iter=20, random_state=0))
    X = MultiModal(noise=sp.csr_matrix(NOISE), signal=pd.DataFrame(SIGNAL, index=LABELS))
    pipe = Pipeline([("emb", emb), ("clf", LogisticRegression())])
    search = GridSearchCV(pipe, {"emb__n_components": [2, 3]},
                          cv=KFold(3, shuffle=True, random_state=0)).fit(X, Y)
    assert search.best_score_ > 0.8


def test_mmeda_reads_a_sparse_view_as_zeros_and_never_asks_for_missing():
    """MMEDA reads unstored entries as zeros: a binary click matrix (every stored value
    1) varies; a view that truly does not vary is refused without a hint at a
    ``missing=`` parameter, which MMEDA does not take."""
    clicks = sp.csr_matrix(RNG.rand(N, 20) < 0.2, dtype=float)
    Z = MMEDA(2, view_components=4, fusion_layer_sizes=(8,), max_iter=2, tol=0,
              random_state=0).fit_transform(MultiModal(noise=NOISE, clicks=clicks))
    assert Z.shape == (N, 2)
    flat = sp.csr_matrix(np.ones((N, 5)))
    with pytest.raises(ValueError, match="has zero variance") as err:
        MMEDA(2, max_iter=2).fit(MultiModal(noise=NOISE, flat=flat))
    assert "missing=" not in str(err.value)
