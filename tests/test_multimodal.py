import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.model_selection import KFold, train_test_split
from sklearn.utils import _safe_indexing

from mmfactor import MultiModal
from mmfactor._multimodal import as_multimodal, check_view, check_views, resolve_relations


def _mm(n=6):
    rng = np.random.RandomState(0)
    return MultiModal(
        rng.rand(n, 3),
        sparse=sp.random(n, 4, density=0.5, format="csr", random_state=0),
        image=torch.arange(n * 2 * 3 * 3, dtype=torch.float32).reshape(n, 2, 3, 3),
        shared={"graph": sp.eye(4)},
    )


def test_basic_attributes():
    X = _mm()
    assert len(X) == 6 and X.shape == (6,)
    assert X.names == ["view0", "sparse", "image"]
    assert X.image is X.views[2]
    assert "graph" in X.shared


@pytest.mark.parametrize(
    "key",
    [slice(1, 4), np.array([True, False, True, False, True, False]), [0, 2, 5],
     np.array([5, 0]), (np.array([1, 3]), Ellipsis), torch.tensor([0, 1])],
)
def test_row_indexing_slices_every_view_the_same_way(key):
    X = _mm()
    sub = X[key]
    k = key[0] if isinstance(key, tuple) else key
    k = k.numpy() if isinstance(k, torch.Tensor) else k
    expected_rows = np.arange(6)[k]
    assert isinstance(sub, MultiModal)
    assert len(sub) == len(expected_rows)
    np.testing.assert_array_equal(sub.views[0], X.views[0][expected_rows])
    np.testing.assert_array_equal(sub.views[1].toarray(), X.views[1].toarray()[expected_rows])
    np.testing.assert_array_equal(sub.views[2].numpy(), X.views[2].numpy()[expected_rows])
    assert sub.shared is X.shared  # the context is never sliced


def test_sklearn_splitters_and_safe_indexing():
    X = _mm(10)
    y = np.arange(10)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
    assert isinstance(Xtr, MultiModal) and len(Xtr) == 7 and len(Xte) == 3
    np.testing.assert_array_equal(Xtr.views[0], X.views[0][ytr])
    for _train, test in KFold(3).split(X):
        np.testing.assert_array_equal(_safe_indexing(X, test).views[0], X.views[0][test])


def test_errors():
    with pytest.raises(ValueError, match="mismatched numbers of rows.*'view1' has 4"):
        MultiModal(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="View 'a' is empty"):
        MultiModal(a=np.ones((0, 2)))
    with pytest.raises(ValueError, match="at least one view"):
        MultiModal()
    with pytest.raises(IndexError, match="cannot be indexed by a scalar"):
        _mm()[0]
    with pytest.raises(IndexError, match="Boolean mask of shape"):
        _mm()[np.array([True, False])]
    with pytest.raises(IndexError, match="out of range"):
        _mm()[[0, 10]]
    with pytest.raises(TypeError, match="not iterable"):
        list(_mm())
    with pytest.raises(TypeError, match="must be an array"):
        MultiModal("text")


def test_plain_list_and_single_array():
    a, b = np.ones((4, 2)), np.zeros((4, 3))
    assert as_multimodal([a, b]).names == ["view0", "view1"]
    assert as_multimodal(a).views[0] is a
    nested = as_multimodal([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert len(nested) == 3 and nested.views[0].shape == (3, 2)


@pytest.mark.parametrize(
    "view, err, match",
    [
        (np.array([[1.0, np.inf]]), ValueError, "View 'v' of shape \\(1, 2\\) has infinite"),
        (np.array([[1 + 2j]]), ValueError, "Complex data not supported: view 'v'"),
        (np.array([["a", "b"]], dtype=object), TypeError, "View 'v' has dtype object"),
        (np.ones(3), ValueError, "View 'v' has shape \\(3,\\).*Reshape your data"),
        (np.ones((3, 0)), ValueError, "0 feature\\(s\\)"),
        (sp.csr_matrix(np.array([[np.nan, 1.0]])), ValueError, "Sparse view 'v'.*NaN"),
        (torch.tensor([[float("inf")]]), ValueError, "View 'v'.*infinite"),
        (["some text", "more"], TypeError, "Word2VecMean"),
    ],
)
def test_check_view_errors(view, err, match):
    with pytest.raises(err, match=match):
        check_view("v", view)


def test_an_all_nan_view_is_refused_at_fit_only():
    """check_view (fit and transform) accepts it: at transform a sample may have nothing
    observed in a view; check_variation (fit only) refuses a view with nothing observed."""
    from mmfactor._multimodal import check_variation

    v = check_view("v", np.array([[np.nan, np.nan]]))
    with pytest.raises(ValueError, match=r"View 'v' of shape \(1, 2\) has no observed entry"):
        check_variation(v)


def test_check_view_never_copies_or_modifies():
    a = np.random.RandomState(0).rand(5, 3)
    a[0, 0] = np.nan
    before = a.copy()
    v = check_view("v", a)
    assert v.data is a and v.has_nan
    np.testing.assert_array_equal(a, before)
    s = sp.random(5, 3, density=0.5, format="csr", random_state=0)
    out = check_view("s", s).data
    # a float CSR is used as it is (its arrays shared, never copied or densified)
    assert sp.issparse(out) and np.shares_memory(out.data, s.data)


def test_check_view_nan_policy_and_ndim():
    with pytest.raises(ValueError, match="has NaN values; this model needs complete views"):
        check_view("v", np.array([[np.nan, 1.0]]), allow_nan=False)
    with pytest.raises(ValueError, match="at most 2 dimensions"):
        check_view("v", np.ones((2, 2, 2)), max_ndim=2)
    with pytest.raises(ValueError, match="at least 2 are required"):
        check_views(np.ones((1, 3)), min_samples=2)


def test_resolve_relations_default_and_schema():
    X = MultiModal(r=np.ones((4, 5)), s=np.ones((4, 2)), shared={"g": np.ones((5, 3))})
    specs, sample, ents = resolve_relations(
        {"r": ("user", "movie"), "s": ("user", "occ"), "g": ("movie", "genre")}, X
    )
    assert sample == "user" and ents == ["user", "movie", "occ", "genre"]
    assert [(s.name, s.source) for s in specs] == [("r", "view"), ("s", "view"), ("g", "shared")]
    specs, sample, _ = resolve_relations(None, MultiModal(np.ones((4, 5))))
    assert (specs[0].row, specs[0].col) == ("sample", "view0_col")


def test_resolve_relations_errors():
    X = MultiModal(r=np.ones((4, 5)), s=np.ones((4, 2)), shared={"g": np.ones((5, 3))})
    with pytest.raises(ValueError, match="does not say which entity types"):
        resolve_relations(None, X)
    with pytest.raises(ValueError, match="names \\['zz'\\]"):
        resolve_relations({"r": ("u", "m"), "s": ("u", "o"), "zz": ("a", "b")}, X)
    with pytest.raises(ValueError, match="same row entity"):
        resolve_relations({"r": ("u", "m"), "s": ("x", "o")}, X)
    with pytest.raises(ValueError, match="has 1 entries"):
        resolve_relations([("u", "m")], X)
    with pytest.raises(ValueError, match="sample_entity='item'"):
        resolve_relations({"r": ("u", "m"), "s": ("u", "o")}, X, sample_entity="item")
    with pytest.raises(ValueError, match="pair of strings"):
        resolve_relations({"r": ("u",), "s": ("u", "o")}, X)
    with pytest.raises(TypeError, match="relations must be"):
        resolve_relations("u,m", X)


@pytest.mark.parametrize("make", [np.asarray, sp.csr_matrix, torch.as_tensor])
def test_values_beyond_float32_range_are_refused(make):
    with pytest.raises(ValueError, match="View 'v' of shape \\(2, 2\\) has values up to 1e\\+300"):
        check_view("v", make(np.array([[1.0, 1e300], [0.0, 2.0]])))
