"""Property-based tests (hypothesis): MultiModal indexing, and fit/transform shapes,
dtypes and determinism of every estimator on random small inputs.

The example counts are small (the suite runs on two shared CPU cores) and deadlines are
off (torch's first calls are slow); ``derandomize=True`` makes every run draw the same
examples, so a failure reproduces.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.utils import _safe_indexing
from test_reliability import ESTIMATORS

from mmfactor import MultiModal

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FIT_SETTINGS = settings(max_examples=4, deadline=None, derandomize=True,
                        suppress_health_check=[HealthCheck.too_slow,
                                               HealthCheck.data_too_large])

# ---- MultiModal indexing ------------------------------------------------------------------


@st.composite
def multimodal(draw):
    """A MultiModal of n rows with 1-4 views of mixed kinds, and a dense reference of each."""
    n = draw(st.integers(1, 9))
    kinds = draw(st.lists(st.sampled_from(["dense", "image", "csr", "coo", "torch", "texts"]),
                          min_size=1, max_size=4))
    rng = np.random.RandomState(draw(st.integers(0, 2**16)))
    views, refs = {}, {}
    for i, kind in enumerate(kinds):
        name = f"v{i}"
        if kind == "dense":
            a = rng.rand(n, rng.randint(1, 4))
            views[name], refs[name] = a, a
        elif kind == "image":
            a = rng.rand(n, 1, 2, 3)
            views[name], refs[name] = a, a
        elif kind in ("csr", "coo"):
            a = sp.random(n, 3, density=0.5, random_state=rng, format=kind)
            views[name], refs[name] = a, a.toarray()
        elif kind == "torch":
            t = torch.as_tensor(rng.rand(n, 2))
            views[name], refs[name] = t, t.numpy().copy()
        else:
            texts = [f"text {j}" for j in range(n)]
            views[name], refs[name] = texts, np.array(texts)
    return MultiModal(shared={"graph": np.eye(3)}, **views), refs, n


@st.composite
def row_key(draw, n):
    """A row selection of any kind scikit-learn's splitters use, plus its integer form."""
    kind = draw(st.sampled_from(["slice", "mask", "array", "list", "negative", "torch",
                                 "ellipsis", "empty"]))
    if kind == "slice":
        start = draw(st.integers(-n, n))
        stop = draw(st.integers(-n, n))
        step = draw(st.sampled_from([None, 1, 2, -1]))
        key = slice(start, stop, step)
        return key, np.arange(n)[key]
    if kind == "mask":
        mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        return mask, np.flatnonzero(mask)
    idx = np.array(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2 * n)))
    if kind == "empty":
        return np.array([], dtype=int), np.array([], dtype=int)
    if kind == "list":
        return idx.tolist(), idx
    if kind == "negative":
        return idx - n, idx
    if kind == "torch":
        return torch.as_tensor(idx), idx
    if kind == "ellipsis":
        return (idx, Ellipsis), idx  # how sklearn's _safe_indexing calls it
    return idx, idx


def _dense(view):
    if sp.issparse(view):
        return view.toarray()
    if isinstance(view, torch.Tensor):
        return view.numpy()
    return np.asarray(view)


@SETTINGS
@given(data=st.data())
def test_indexing_takes_the_same_rows_of_every_view(data):
    X, refs, n = data.draw(multimodal())
    key, rows = data.draw(row_key(n))
    snapshot = {k: _dense(v).copy() for k, v in zip(X.names, X.views, strict=True)}
    sub = X[key]  # an empty selection gives a MultiModal of 0 samples
    assert isinstance(sub, MultiModal)
    assert sub.names == X.names and len(sub) == len(rows) and sub.shape == (len(rows),)
    assert sub.shared is X.shared
    for name, view in zip(sub.names, sub.views, strict=True):
        np.testing.assert_array_equal(_dense(view), refs[name][rows])
        assert type(view) is type(X.views[X.names.index(name)]) or sp.issparse(view)
    for k, v in zip(X.names, X.views, strict=True):  # the original is untouched
        np.testing.assert_array_equal(_dense(v), snapshot[k])


@SETTINGS
@given(data=st.data())
def test_indexing_composes_and_matches_sklearn(data):
    X, refs, n = data.draw(multimodal())
    a = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n)))
    b = np.array(data.draw(st.lists(st.integers(0, len(a) - 1), min_size=1, max_size=n)))
    twice, once = X[a][b], X[a[b]]
    via_sklearn = _safe_indexing(X, a[b])
    for v1, v2, v3 in zip(twice.views, once.views, via_sklearn.views, strict=True):
        np.testing.assert_array_equal(_dense(v1), _dense(v2))
        np.testing.assert_array_equal(_dense(v1), _dense(v3))


@SETTINGS
@given(data=st.data())
def test_bad_keys_raise_index_errors(data):
    X, _, n = data.draw(multimodal())
    key = data.draw(st.sampled_from(["scalar", "np-scalar", "oob", "neg-oob", "mask", "float",
                                     "2d"]))
    bad, match = {
        "scalar": (0, "cannot be indexed by a scalar"),
        "np-scalar": (np.int64(0), "cannot be indexed by a scalar"),
        "oob": ([n], f"out of range for {n} samples"),
        "neg-oob": ([-n - 1], f"out of range for {n} samples"),
        "mask": (np.ones(n + 1, bool), f"does not match {n} samples"),
        "float": (np.array([0.5]), "must be integers or booleans"),
        "2d": ((0, 1), "row indexing only"),
    }[key]
    with pytest.raises(IndexError, match=match):
        X[bad]


# ---- fit / transform on random small inputs ----------------------------------------------


@st.composite
def small_views(draw, *, non_negative=False, with_nan=False):
    n = draw(st.integers(4, 10))
    widths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    elements = st.floats(0 if non_negative else -10, 10, allow_nan=False, width=64)
    views = {}
    for i, d in enumerate(widths):
        a = draw(hnp.arrays(np.float64, (n, d), elements=elements))
        # a little noise keeps random draws away from exactly degenerate designs
        a = a + 1e-3 * np.random.RandomState(i).rand(n, d)
        if with_nan and d > 1:
            a[0, 0] = np.nan
        views[f"v{i}"] = a
    return views


def _declared_dtype(est):
    """The output dtype: the ``dtype`` parameter where there is one, else float32."""
    return np.dtype(est.get_params().get("dtype", "float32"))


def _fit_transform(name, views, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = ESTIMATORS[name](**kw)
        Z = est.fit_transform(MultiModal(**views))
    return est, Z


@pytest.mark.parametrize("name", list(ESTIMATORS))
@FIT_SETTINGS
@given(data=st.data())
def test_fit_transform_shapes_dtypes_and_determinism(name, data):
    views = data.draw(small_views(non_negative=name == "DFMF"))
    if name == "HyperLearn":
        views = {"v0": views["v0"]}  # one tensor; feature views are tested elsewhere
    k = data.draw(st.integers(1, 3))
    before = {n: v.copy() for n, v in views.items()}
    est, Z = _fit_transform(name, views, n_components=k)
    n = len(next(iter(views.values())))
    dtype = _declared_dtype(est)
    assert Z.shape == (n, k) and Z.dtype == dtype and np.isfinite(Z).all()
    assert all(np.array_equal(before[v], views[v]) for v in views)  # inputs untouched
    # the same random_state gives the same fit, to the bit (CPU)
    est2, Z2 = _fit_transform(name, views, n_components=k)
    np.testing.assert_array_equal(Z, Z2)
    # transform: one row per sample, any number of new rows, the declared dtype
    m = data.draw(st.integers(1, n))
    new = {v: a[:m] for v, a in views.items()}
    T = est.transform(MultiModal(**new))
    assert T.shape == (m, k) and T.dtype == dtype and np.isfinite(T).all()
    np.testing.assert_array_equal(T, est2.transform(MultiModal(**new)))
    assert list(est.get_feature_names_out()) == [f"{name.lower()}{i}" for i in range(k)]


@pytest.mark.parametrize("name", ["CMF", "DFMF", "DCMF", "HyperLearn"])
@FIT_SETTINGS
@given(data=st.data())
def test_missing_entries_give_finite_embeddings(name, data):
    views = data.draw(small_views(non_negative=name == "DFMF", with_nan=True))
    if name == "HyperLearn":
        views = {"v0": views["v0"]}
    est, Z = _fit_transform(name, views)
    assert np.isfinite(Z).all() and Z.dtype == _declared_dtype(est)


@pytest.mark.parametrize("name", ["CMF", "DFMF", "HyperLearn"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@FIT_SETTINGS
@given(data=st.data())
def test_the_dtype_parameter_is_honoured(name, dtype, data):
    views = data.draw(small_views(non_negative=True))
    if name == "HyperLearn":
        views = {"v0": views["v0"]}
    est, Z = _fit_transform(name, views, dtype=dtype)
    assert Z.dtype == dtype and est.transform(MultiModal(**views)).dtype == dtype


# ---- zero variance: exactly the views whose samples are all the same ----------------------


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.data())
def test_zero_variance_is_detected_exactly(data):
    """check_variation refuses a view iff every sample has the same observed values, in
    every layout (dense with NaN, CSR with unstored = zero or unobserved, torch)."""
    from mmfactor._multimodal import check_variation, check_view

    n = data.draw(st.integers(2, 6))
    d = data.draw(st.integers(1, 4))
    values = st.sampled_from([0.0, 1.0, 2.5, -3.0])  # few values: ties are frequent
    A = data.draw(hnp.arrays(np.float64, (n, d), elements=values))
    if data.draw(st.booleans()):
        A = np.repeat(A[:1], n, axis=0)  # identical rows
    layout = data.draw(st.sampled_from(["dense", "nan", "zero", "unobserved", "torch"]))
    if layout == "nan":
        A = np.where(data.draw(hnp.arrays(np.bool_, (n, d))), np.nan, A)
        if np.isnan(A).all():
            A[0, 0] = 1.0
    view = (sp.csr_matrix(A) if layout in ("zero", "unobserved")
            else torch.as_tensor(A) if layout == "torch" else A)
    v = check_view("v", view, missing="zero" if layout == "zero" else "unobserved")
    # the expected answer from the definition: every column's observed values are equal
    if layout == "unobserved":
        observed = A != 0  # only the stored entries are observations
    else:
        observed = ~np.isnan(A)
    constant = all(len(set(A[observed[:, j], j])) <= 1 for j in range(d))
    if constant:
        with pytest.raises(ValueError, match=r"View 'v' of shape .* has zero variance"):
            check_variation(v)
    else:
        check_variation(v)  # no error


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.data())
def test_negative_entries_are_detected_exactly(data):
    """check_non_negative (DFMF's refusal) fires iff an observed entry is negative."""
    from mmfactor._multimodal import check_non_negative, check_view

    A = data.draw(hnp.arrays(np.float64, (data.draw(st.integers(1, 5)),
                                          data.draw(st.integers(1, 4))),
                             elements=st.sampled_from([0.0, 0.5, -0.0, -1e-300, -2.0])))
    layout = data.draw(st.sampled_from(["dense", "nan", "sparse", "torch"]))
    if layout == "nan":
        A = np.where(A < 0, np.nan, A) if data.draw(st.booleans()) else A
    view = (sp.csr_matrix(A) if layout == "sparse"
            else torch.as_tensor(A) if layout == "torch" else A)
    v = check_view("v", view, min_ndim=2)
    negative = int(np.sum(A < 0))  # NaN < 0 is False: missing entries are not negative
    if negative:
        with pytest.raises(ValueError, match=rf"view 'v' of shape .* has {negative} negative"):
            check_non_negative(v, "DFMF", "hint")
    else:
        check_non_negative(v, "DFMF", "hint")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.data())
def test_zero_variance_of_a_tensor_given_by_its_entries(data):
    """The same definition on coordinates (HyperLearn's tensors): unstored = zero, or
    unstored = unobserved."""
    from mmfactor._multimodal import check_variation

    n, a, b = (data.draw(st.integers(2, 4)) for _ in range(3))
    T = data.draw(hnp.arrays(np.float64, (n, a, b), elements=st.sampled_from([0.0, 1.0, 2.0])))
    if data.draw(st.booleans()):
        T = np.repeat(T[:1], n, axis=0)
    full = data.draw(st.booleans())
    observed = (T != 0) if full else data.draw(hnp.arrays(np.bool_, T.shape))
    idx = np.argwhere(observed)
    vals = T[observed]
    flat, obs = T.reshape(n, -1), observed.reshape(n, -1)
    if full:
        constant = bool((flat == flat[:1]).all())
    else:
        constant = all(len(set(flat[obs[:, j], j])) <= 1 for j in range(flat.shape[1]))
    if constant:
        with pytest.raises(ValueError, match="zero variance"):
            check_variation("t", coords=(idx, vals, T.shape, full))
    else:
        check_variation("t", coords=(idx, vals, T.shape, full))
