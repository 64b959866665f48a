import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import tensorly as tl
import torch
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from mmfactor import HyperLearn, MultiModal, SparseTensor
from mmfactor.datasets import make_hypergraph
from mmfactor.factorization._cp import (
    TensorData,
    cp_entries,
    cp_norm_sq,
    data_loss,
    mode_loss_grad,
    mttkrp,
)

FAST = dict(diffusion_steps=0, max_iter=30, tol=0, random_state=0)


def _dense_cp(factors):
    return tl.cp_to_tensor((np.ones(factors[0].shape[1]), [f.numpy() for f in factors]))


def _random_problem(shape=(6, 5, 4), rank=3, density=0.3, seed=0):
    rng = np.random.RandomState(seed)
    dense = rng.rand(*shape) * (rng.rand(*shape) < density)
    X = SparseTensor.from_dense(dense)
    factors = [torch.as_tensor(rng.randn(n, rank)) for n in shape]
    return dense, X, factors


# ---- the sparse kernels -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 4), (4, 3, 5, 2)])
def test_loss_identity_matches_dense(shape):
    dense, X, factors = _random_problem(shape)
    data = TensorData(X.indices, X.values, X.shape, "full", "cpu", torch.float64)
    expected = ((dense - _dense_cp(factors)) ** 2).sum()
    np.testing.assert_allclose(data_loss(factors, data), expected, rtol=1e-10)
    np.testing.assert_allclose(float(cp_norm_sq(factors)), (_dense_cp(factors) ** 2).sum(),
                               rtol=1e-10)
    for t in range(len(shape)):
        loss, _ = mode_loss_grad(t, factors, data)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-10)


def test_observed_loss_matches_masked_dense():
    dense, X, factors = _random_problem((6, 5, 4))
    data = TensorData(X.indices, X.values, X.shape, "observed", "cpu", torch.float64)
    mask = dense != 0
    expected = (((dense - _dense_cp(factors)) ** 2) * mask).sum()
    np.testing.assert_allclose(data_loss(factors, data), expected, rtol=1e-10)
    np.testing.assert_allclose(cp_entries(torch.as_tensor(X.indices), factors).numpy(),
                               _dense_cp(factors)[mask], rtol=1e-10)


@pytest.mark.parametrize("kind", ["full", "observed"])
@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 4), (4, 3, 5, 2)])
def test_sparse_gradient_matches_autograd_on_dense(kind, shape):
    dense, X, factors = _random_problem(shape, seed=1)
    data = TensorData(X.indices, X.values, X.shape, kind, "cpu", torch.float64)
    D = torch.as_tensor(dense)
    mask = torch.ones_like(D) if kind == "full" else (D != 0).double()
    for t in range(len(shape)):
        leaf = [f.clone().requires_grad_(s == t) for s, f in enumerate(factors)]
        letters = "abcdefg"[: len(shape)]
        rec = torch.einsum(",".join(f"{c}r" for c in letters) + "->" + letters, *leaf)
        (((D - rec) ** 2) * mask).sum().backward()
        _, grad = mode_loss_grad(t, factors, data)
        np.testing.assert_allclose(grad.numpy(), leaf[t].grad.numpy(), rtol=1e-8, atol=1e-10)
        # the copy sorted by mode t (CSR scatter, in chunks) gives the same gradient
        fast = TensorData(X.indices, X.values, X.shape, kind, "cpu", torch.float64,
                          sort_mode=t, chunk=7)
        loss_fast, grad_fast = mode_loss_grad(t, factors, fast)
        np.testing.assert_allclose(grad_fast.numpy(), leaf[t].grad.numpy(), rtol=1e-8,
                                   atol=1e-10)
        np.testing.assert_allclose(float(loss_fast), float(_), rtol=1e-10)


def test_mttkrp_matches_unfolding_times_khatri_rao():
    dense, X, factors = _random_problem((6, 5, 4), seed=2)
    idx, vals = torch.as_tensor(X.indices), torch.as_tensor(X.values)
    np_f = [f.numpy() for f in factors]
    for t in range(3):
        expected = tl.unfold(dense, t) @ tl.tenalg.khatri_rao(np_f, skip_matrix=t)
        np.testing.assert_allclose(mttkrp(idx, vals, factors, t, chunk=7).numpy(), expected,
                                   rtol=1e-10)


# ---- SparseTensor -----------------------------------------------------------------------


def test_sparse_tensor_canonical_form_and_row_indexing():
    T = SparseTensor([[1, 0, 2], [0, 1, 1], [1, 0, 2]], [1.0, 2.0, 3.0], shape=(3, 2, 3))
    assert T.nnz == 2 and T.to_dense()[1, 0, 2] == 4.0  # duplicates summed
    dense = np.random.RandomState(0).rand(5, 3, 2) * (np.random.RandomState(1).rand(5, 3, 2)
                                                      > 0.5)
    S = SparseTensor.from_dense(dense)
    for key in ([3, 0, 3], slice(1, 4), np.array([True, False, True, False, True])):
        np.testing.assert_array_equal(S[key].to_dense(), dense[key])
    np.testing.assert_array_equal(S[2].to_dense(), dense[[2]])
    stacked = SparseTensor.concatenate([S[i] for i in [4, 1]])
    np.testing.assert_array_equal(stacked.to_dense(), dense[[4, 1]])
    assert len(S) == 5 and S.ndim == 3


def test_sparse_tensor_errors():
    with pytest.raises(ValueError, match=r"indices must have shape \(nnz, K\) with K >= 2"):
        SparseTensor(np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match=r"values have shape \(2,\); expected \(3,\)"):
        SparseTensor(np.zeros((3, 2), dtype=int), np.ones(2))
    with pytest.raises(ValueError, match="index 5 in mode 1 is out of range"):
        SparseTensor([[0, 5]], [1.0], shape=(2, 3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        SparseTensor([[0, 1]], [np.nan], shape=(2, 3))
    with pytest.raises(ValueError, match="must be >= 0"):
        SparseTensor([[0, -1]], [1.0], shape=(2, 3))
    with pytest.raises(ValueError, match="has 3 modes but indices have 2"):
        SparseTensor([[0, 1]], [1.0], shape=(2, 3, 4))
    with pytest.raises(TypeError, match="must be integers"):
        SparseTensor([[0, 1.5]], [1.0], shape=(2, 3))
    with pytest.raises(IndexError, match="mode-0 indexing only"):
        SparseTensor([[0, 1]], [1.0], shape=(2, 3))[0, 1]


# ---- the estimator ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hyper():
    return make_hypergraph((40, 30, 20), n_communities=3, n_hyperedges=1500, p_in=0.9,
                           graph_degree=4, random_state=0)


@pytest.mark.parametrize("net", [dict(diffusion_steps=0, update="gauss-seidel", solver="als",
                                      max_iter=8),
                                 dict(diffusion_steps=2, hidden_size=8, n_inner_iter=3,
                                      max_iter=60)])
def test_recovers_planted_communities(hyper, net):
    model = HyperLearn(n_components=3, graphs=hyper.graphs, tol=0,
                       learning_rate_init=0.05, random_state=0, **net)
    model.fit(hyper.X)
    for f, lab in zip(model.factors_, hyper.labels, strict=True):
        assert adjusted_rand_score(lab, np.abs(f).argmax(1)) > 0.9
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    assert {"data", "graph", "penalty", "mode0", "mode1", "mode2"} <= set(model.loss_terms_)


def test_als_solver_matches_exact_least_squares_and_descends(hyper):
    # without a graph, one ALS update of a mode is the exact ridge least-squares solution
    from mmfactor.factorization._cp import mode_normal_equations

    model = HyperLearn(n_components=3, solver="als", update="gauss-seidel", alpha=0.5,
                       diffusion_steps=0, max_iter=8, tol=0, random_state=0).fit(hyper.X)
    assert all(np.diff(model.loss_curve_) <= 1e-6 * model.loss_curve_[0])
    facs = [torch.as_tensor(f, dtype=torch.float64) for f in model.factors_]
    data = TensorData(hyper.X.indices, hyper.X.values, hyper.X.shape, "full", "cpu",
                      torch.float64)
    G, b = mode_normal_equations(2, facs, data, [0, 1, 2], torch.zeros(0, dtype=torch.float64))
    exact = torch.linalg.solve(2 * G + 0.5 * torch.eye(3, dtype=torch.float64), 2 * b.T).T
    np.testing.assert_allclose(model.factors_[2], exact.numpy(), rtol=1e-3, atol=1e-4)
    # with graphs it recovers the communities in a few sweeps
    graph = HyperLearn(n_components=3, graphs=hyper.graphs, solver="als",
                       update="gauss-seidel", diffusion_steps=0, max_iter=10, tol=0,
                       random_state=0).fit(hyper.X)
    for f, lab in zip(graph.factors_, hyper.labels, strict=True):
        assert adjusted_rand_score(lab, np.abs(f).argmax(1)) > 0.9


def test_als_normal_equations_observed_match_dense():
    from mmfactor.factorization._cp import mode_normal_equations

    dense, X, factors = _random_problem((6, 5, 4), rank=3, seed=4)
    factors = [torch.cat([f, torch.ones(f.shape[0], 1, dtype=torch.float64)], 1)
               for f in factors]  # a fixed column of ones, like an intercept
    for sort_mode in (None, 1):
        data = TensorData(X.indices, X.values, X.shape, "observed", "cpu", torch.float64,
                          sort_mode=sort_mode, chunk=5)
        G, b = mode_normal_equations(1, factors, data, [0, 1, 2],
                                     torch.ones(1, dtype=torch.float64))
        # the gradient of the data term in the free columns is 2 (G a - b)
        _, grad = mode_loss_grad(1, factors, data)
        a = factors[1][:, :3]
        np.testing.assert_allclose((2 * (torch.bmm(G, a[..., None])[..., 0] - b)).numpy(),
                                   grad[:, :3].numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", ["full", "observed"])
@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 4), (4, 3, 5, 2)])
def test_unfolding_kernels_match_the_chunked_ones(kind, layout, shape, monkeypatch):
    """A small tensor's copies hold each mode's unfolding (Khatri-Rao rows per distinct
    tuple of the other modes, matrix products): the normal equations, their data term
    at a new factor and the data loss agree with the per-entry chunked kernels and with
    a direct dense computation."""
    from mmfactor.factorization import _cp
    from mmfactor.factorization._cp import mode_normal_equations

    if layout == "csr":
        monkeypatch.setattr(_cp, "DENSE_UNFOLDING", 0)
    dense, X, factors = _random_problem(shape, rank=3, density=0.6, seed=5)
    factors = [torch.cat([f, torch.ones(f.shape[0], 1, dtype=torch.float64)], 1)
               for f in factors]  # a fixed column of ones, like an intercept
    one = torch.ones(1, dtype=torch.float64)
    mask = np.ones(shape) if kind == "full" else dense != 0
    rng = np.random.RandomState(6)
    for mode in range(len(shape)):
        unf = TensorData(X.indices, X.values, X.shape, kind, "cpu", torch.float64,
                         sort_mode=mode)
        ref = TensorData(X.indices, X.values, X.shape, kind, "cpu", torch.float64,
                         sort_mode=mode, chunk=1)
        assert unf.unfolding is not None and ref.unfolding is None
        assert unf.unfolding.dense == (layout == "dense")
        G, b, data_term = mode_normal_equations(mode, factors, unf, [0, 1, 2], one,
                                                with_loss=True)
        G_ref, b_ref, _ = mode_normal_equations(mode, factors, ref, [0, 1, 2], one,
                                                with_loss=True)
        np.testing.assert_allclose(G.numpy(), G_ref.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b.numpy(), b_ref.numpy(), rtol=1e-10, atol=1e-12)
        new = factors[mode].clone()
        new[:, :3] = torch.as_tensor(rng.randn(shape[mode], 3))
        facs = list(factors)
        facs[mode] = new
        expected = (((dense - _dense_cp(facs)) ** 2) * mask).sum()
        np.testing.assert_allclose(float(data_term(new)), expected, rtol=1e-9)
        np.testing.assert_allclose(data_loss(facs, unf), expected, rtol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("missing", ["zero", "unobserved"])
def test_als_data_terms_without_a_pass_equal_a_direct_computation(hyper, missing, dtype):
    """ALS takes each mode's loss from its normal equations, and (float64, Gauss-Seidel)
    the sweep's data term from the last mode's: both equal a direct float64 sum."""
    X = SparseTensor(hyper.X.indices, 1 + np.random.RandomState(0).rand(hyper.X.nnz),
                     hyper.X.shape)  # weighted: the stored values vary
    model = HyperLearn(n_components=3, solver="als", update="gauss-seidel", dtype=dtype,
                       missing=missing, fit_intercept=missing == "unobserved",
                       **{**FAST, "max_iter": 5}).fit(X)
    dense = X.to_dense()
    mask = np.ones(dense.shape) if missing == "zero" else dense != 0
    rec = tl.cp_to_tensor(model.to_cptensor())
    direct = (((dense - rec) ** 2) * mask).sum()
    assert model.loss_terms_["data"][-1] == pytest.approx(direct, rel=1e-9)
    # no graph, no penalty: the last mode's loss is the data term after the sweep
    rel = 1e-9 if dtype == "float64" else 1e-4
    assert model.loss_terms_["mode2"][-1] == pytest.approx(direct, rel=rel)
    assert np.all(np.diff(model.loss_curve_) <= 1e-9 * model.loss_curve_[0])


def _neighbour_spread(F, W):
    """Mean squared distance between graph neighbours over that between random pairs."""
    F = F / np.linalg.norm(F, axis=1, keepdims=True).clip(1e-12)
    r, c = W.nonzero()
    near = ((F[r] - F[c]) ** 2).sum(1).mean()
    allp = ((F[:, None] - F[None]) ** 2).sum(-1).mean()
    return near / allp


def test_laplacian_term_pulls_neighbours_together():
    # no community signal in the tensor (p_in=0): only the graph can align neighbours
    data = make_hypergraph((40, 30, 20), n_communities=4, n_hyperedges=800, p_in=0.0,
                           graph_degree=4, graph_p_in=1.0, random_state=1)
    kw = dict(n_components=4, diffusion_steps=0, solver="als", update="gauss-seidel",
              max_iter=10, tol=0, random_state=0, init="random")
    plain = HyperLearn(**kw).fit(data.X)
    graphs = [data.graphs[0], None, None]
    smooth = HyperLearn(lam=0.01, graphs=graphs, **kw).fit(data.X)
    before = _neighbour_spread(plain.factors_[0], data.graphs[0])
    after = _neighbour_spread(smooth.factors_[0], data.graphs[0])
    assert after < 0.3 * before


@pytest.mark.parametrize("update", ["jacobi", "gauss-seidel"])
def test_update_orders_run_and_differ(hyper, update):
    a = HyperLearn(n_components=3, update=update, **FAST).fit(hyper.X)
    b = HyperLearn(n_components=3, update="jacobi", **FAST).fit(hyper.X)
    assert (update == "jacobi") == all(np.array_equal(x, y) for x, y in
                                       zip(a.factors_, b.factors_, strict=True))


def test_same_random_state_is_bit_identical(hyper):
    kw = dict(n_components=3, graphs=hyper.graphs, diffusion_steps=1, hidden_size=4,
              max_iter=5, tol=0)
    a = HyperLearn(random_state=3, **kw).fit(hyper.X)
    b = HyperLearn(random_state=3, **kw).fit(hyper.X)
    c = HyperLearn(random_state=4, **kw).fit(hyper.X)
    for x, y in zip(a.factors_, b.factors_, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.factors_[0], c.factors_[0])
    assert a.loss_curve_ == b.loss_curve_


def test_dense_input_and_fold_in_of_new_rows():
    rng = np.random.RandomState(0)
    true = [rng.rand(n, 2) for n in (30, 6, 5)]
    dense = tl.cp_to_tensor((np.ones(2), true))
    model = HyperLearn(n_components=2, diffusion_steps=0, solver="als", update="gauss-seidel",
                       max_iter=60, tol=0, random_state=0)
    emb = model.fit_transform(dense[:20])
    assert emb.shape == (20, 2) and emb.dtype == np.float32
    new = model.transform(dense[20:])
    assert new.shape == (10, 2) and new.dtype == np.float32
    # the folded-in rows reconstruct the unseen slices far better than zeros do
    assert -model.score(dense[20:]) < 0.01 * (dense[20:] ** 2).mean()
    assert model.score(dense[:20]) > -0.01 * (dense[:20] ** 2).mean()


def test_matrix_completion_with_nan_and_intercept():
    rng = np.random.RandomState(0)
    full = rng.rand(60, 2) @ rng.rand(2, 40) + 3.0
    mask = rng.rand(*full.shape) < 0.5
    X = np.where(mask, full, np.nan)
    model = HyperLearn(n_components=2, fit_intercept=True, diffusion_steps=0, solver="als",
                       update="gauss-seidel", max_iter=40, tol=0, random_state=0).fit(X)
    held = np.argwhere(~mask)
    pred = model.predict_entries(held)
    rmse = np.sqrt(((pred - full[~mask]) ** 2).mean())
    base = np.sqrt(((full[mask].mean() - full[~mask]) ** 2).mean())
    assert rmse < 0.3 * base
    assert model.biases_["mean"] == pytest.approx(full[mask].mean(), rel=1e-6)
    assert [b.shape for b in model.biases_["modes"]] == [(60,), (40,)]


def test_sparse_matrix_unobserved_vs_zero():
    rng = np.random.RandomState(0)
    M = sp.random(30, 20, density=0.3, random_state=0, format="csr") * 4 + 0
    M.data += 1
    unobs = HyperLearn(n_components=2, missing="unobserved", **FAST).fit(M)
    zero = HyperLearn(n_components=2, missing="zero", **FAST).fit(M)
    coords = np.argwhere(M.toarray() == 0)[:50]
    # the zero model predicts the unstored entries near 0, the completion model does not
    assert np.abs(zero.predict_entries(coords)).mean() < np.abs(
        unobs.predict_entries(coords)).mean()
    assert rng is not None


def test_early_stopping_keeps_best_sweep():
    rng = np.random.RandomState(0)
    full = rng.rand(50, 3) @ rng.rand(3, 40)
    X = np.where(rng.rand(*full.shape) < 0.3, full, np.nan)
    model = HyperLearn(n_components=8, diffusion_steps=0, max_iter=100, tol=1e-3,
                       n_iter_no_change=5, early_stopping=True, learning_rate_init=0.05,
                       random_state=0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    val = model.loss_terms_["validation"]
    assert len(val) == model.n_iter_


def test_input_not_modified(hyper):
    rng = np.random.RandomState(0)
    weighted = SparseTensor(hyper.X.indices, 1 + rng.rand(len(hyper.X.values)),
                            shape=hyper.X.shape)  # observed weights that vary
    before_idx, before_val = weighted.indices.copy(), weighted.values.copy()
    dense = np.where(rng.rand(8, 6) < 0.5, rng.rand(8, 6), np.nan)
    copy = dense.copy()
    HyperLearn(n_components=2, missing="unobserved", **FAST).fit(weighted)
    HyperLearn(n_components=2, **FAST).fit(dense)
    np.testing.assert_array_equal(weighted.indices, before_idx)
    np.testing.assert_array_equal(weighted.values, before_val)
    np.testing.assert_array_equal(dense, copy)


def test_binary_tensor_with_unobserved_zeros_is_refused(hyper):
    """All stored entries 1 and the rest unobserved: every sample looks the same."""
    with pytest.raises(ValueError, match=r"View 'view0' of shape \(40, 30, 20\) has zero "
                                         r"variance.*pass missing='zero'"):
        HyperLearn(n_components=2, missing="unobserved", **FAST).fit(hyper.X)
    assert HyperLearn(n_components=2, **FAST).fit(hyper.X).n_iter_ >= 1  # missing="zero"


def test_predict_entries_any_order(hyper):
    model = HyperLearn(n_components=3, **FAST).fit(hyper.X)
    coords = hyper.X.indices[:7]
    expected = sum(np.prod([f[coords[:, t], r] for t, f in enumerate(model.factors_)], 0)
                   for r in range(3))
    np.testing.assert_allclose(model.predict_entries(coords), expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"integer array of shape \(n_entries, 3\)"):
        model.predict_entries(np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match=r"integer array of shape"):
        model.predict_entries(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"out of range for the fitted tensor of shape"):
        model.predict_entries([[0, 0, 20]])


def test_pipeline_and_grid_search_over_mode0_items(hyper):
    from sklearn.linear_model import LogisticRegression

    X = MultiModal(hyper.X, shared={"graphs": [None, hyper.graphs[1], hyper.graphs[2]]})
    pipe = Pipeline([("emb", HyperLearn(n_components=3, diffusion_steps=0, solver="als",
                                        update="gauss-seidel", max_iter=8, tol=0,
                                        random_state=0)),
                     ("clf", LogisticRegression())])
    search = GridSearchCV(pipe, {"emb__n_components": [2, 3]}, cv=3).fit(X, hyper.labels[0])
    assert search.best_score_ > 0.8
    # mode 0's graph from features given as a further, row-aligned view
    feats = np.eye(3)[hyper.labels[0]] + 0.1 * np.random.RandomState(0).randn(40, 3)
    X2 = MultiModal(hyper.X, feats)
    model = HyperLearn(n_components=3, **FAST).fit(X2[np.arange(30)])
    assert model.factors_[0].shape == (30, 3)
    assert model.transform(X2[np.arange(30, 40)]).shape == (10, 3)


def test_persistence(hyper):
    model = HyperLearn(n_components=3, graphs=hyper.graphs, diffusion_steps=1, hidden_size=4,
                       max_iter=3, tol=0, random_state=0).fit(hyper.X)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.transform(hyper.X), model.transform(hyper.X))
    np.testing.assert_array_equal(clone.predict_entries(hyper.X.indices[:5]),
                                  model.predict_entries(hyper.X.indices[:5]))
    assert list(clone.get_feature_names_out()) == ["hyperlearn0", "hyperlearn1", "hyperlearn2"]


def test_convergence_warning_and_tol(hyper):
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        HyperLearn(n_components=2, diffusion_steps=0, max_iter=2, random_state=0).fit(hyper.X)


# ---- errors ---------------------------------------------------------------------------------


def test_errors(hyper):
    X = hyper.X
    with pytest.raises(ValueError, match=r"graphs has 2 entries; expected one per mode of the "
                                         r"tensor of shape \(40, 30, 20\) \(3\)"):
        HyperLearn(graphs=[None, None], **FAST).fit(X)
    with pytest.raises(ValueError, match=r"graphs\[1\] has shape \(20, 20\) but its mode has "
                                         "30 items"):
        HyperLearn(graphs=[None, hyper.graphs[2], None], **FAST).fit(X)
    with pytest.raises(ValueError, match=r"graphs\[0\] has shape \(30, 30\) but mode 0 has 40 "
                                         "items"):
        HyperLearn(graphs=[hyper.graphs[1], None, None], **FAST).fit(X)
    asym = sp.triu(hyper.graphs[2]).tocsr()
    with pytest.raises(ValueError, match=r"graphs\[2\] of shape \(20, 20\) is not symmetric"):
        HyperLearn(graphs=[None, None, asym], **FAST).fit(X)
    with pytest.raises(TypeError, match="must be a list with one graph"):
        HyperLearn(**FAST).fit(MultiModal(X, shared={"graphs": "knn"}))
    with pytest.raises(ValueError, match=r"features of mode 1 have shape \(5, 2\); expected "
                                         r"\(30, n_features\)"):
        HyperLearn(**FAST).fit(MultiModal(X, shared={"features": [None, np.ones((5, 2)),
                                                                  None]}))
    with pytest.raises(ValueError, match="expected at least 2 dimensions"):
        HyperLearn(**FAST).fit(np.ones(5))
    with pytest.raises(ValueError, match=r"n_samples = 1; at least 2 items in mode 0"):
        HyperLearn(**FAST).fit(np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"shape \(6, 4\) is all zeros"):
        HyperLearn(**FAST).fit(np.zeros((6, 4)))
    with pytest.raises(ValueError, match="has no observed entry"):
        HyperLearn(missing="unobserved", **FAST).fit(SparseTensor(np.zeros((0, 2), int),
                                                                  shape=(4, 3)))
    with pytest.raises(ValueError, match="early_stopping=True needs observed entries"):
        HyperLearn(early_stopping=True, **FAST).fit(X)
    with pytest.raises(ValueError, match="devices has 2 entries; expected one per modality"):
        HyperLearn(devices=["cpu", "cpu"], **FAST).fit(X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:0' was requested but this machine has 0"):
            HyperLearn(devices=["cpu", "cuda:0", "cpu"], **FAST).fit(X)
    with pytest.raises(ValueError, match="solver='als' solves for the factors directly and "
                                         "needs diffusion_steps=0; got diffusion_steps=2"):
        HyperLearn(solver="als", diffusion_steps=2).fit(X)
    with pytest.raises(InvalidParameterError, match="update"):
        HyperLearn(update="random").fit(X)
    model = HyperLearn(n_components=2, **FAST).fit(X)
    with pytest.raises(ValueError, match=r"has shape \(4, 30, 21\) and the model was fitted on "
                                         r"a tensor of shape \(40, 30, 20\), so expected "
                                         r"\(n_samples, 30, 20\)"):
        model.transform(SparseTensor([[0, 0, 0]], [1.0], shape=(4, 30, 21)))
    with pytest.raises(ValueError, match=r"X has 2 view\(s\)"):
        model.transform(MultiModal(X, np.ones((40, 2))))
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        HyperLearn().transform(X)


@pytest.mark.cuda
def test_cuda_devices_per_mode(hyper):
    devices = ["cuda:0", "cpu", "cuda:0"]
    model = HyperLearn(n_components=3, graphs=hyper.graphs, diffusion_steps=1, hidden_size=4,
                       max_iter=5, tol=0, random_state=0, devices=devices).fit(hyper.X)
    cpu = HyperLearn(n_components=3, graphs=hyper.graphs, diffusion_steps=1, hidden_size=4,
                     max_iter=5, tol=0, random_state=0).fit(hyper.X)
    for a, b in zip(model.factors_, cpu.factors_, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert [d.type for d in model.devices_] == ["cuda", "cpu", "cuda"]
    clone = pickle.loads(pickle.dumps(model))
    assert clone.transform(hyper.X).shape == (40, 3)


@parametrize_with_checks(
    [HyperLearn(n_components=2, diffusion_steps=0, solver="als", update="gauss-seidel",
                max_iter=5, tol=0, random_state=0)])
def test_sklearn_common_checks(estimator, check):
    check(estimator)


def test_svd_init_starts_closer(hyper):
    kw = dict(n_components=3, diffusion_steps=0, solver="als", update="gauss-seidel",
              max_iter=1, tol=0, random_state=0)
    svd = HyperLearn(init="svd", **kw).fit(hyper.X)
    rnd = HyperLearn(init="random", **kw).fit(hyper.X)
    assert svd.loss_curve_[0] < rnd.loss_curve_[0]


# ---- pairwise terms, confidence weighting, the ranking loss, failures not silent ----------


def _direct_model(model, coords):
    """``mu + sum_t b_t + sum_{s<t} <P_st, P_ts> + [[A]]`` at ``coords``, in float64."""
    K = len(model.factors_)
    out = np.ones(len(coords))
    prod = np.ones((len(coords), model.n_components))
    for t in range(K):
        prod = prod * model.factors_[t][coords[:, t]].astype(np.float64)
    out = prod.sum(1)
    pairs = [(s, t) for s in range(K) for t in range(s + 1, K)]
    for (s, t), (Ps, Pt) in zip(pairs, model.interaction_factors_, strict=True):
        out += (Ps[coords[:, s]].astype(np.float64) * Pt[coords[:, t]]).sum(1)
    if model.biases_ is not None:
        out += model.biases_["mean"] + sum(b[coords[:, t]]
                                           for t, b in enumerate(model.biases_["modes"]))
    return out


@pytest.mark.parametrize("intercept", [False, True])
def test_pairwise_terms_are_the_pitf_model(hyper, intercept):
    model = HyperLearn(n_components=2, pairwise_components=3, fit_intercept=intercept,
                       solver="als", update="gauss-seidel", **{**FAST, "max_iter": 5})
    emb = model.fit_transform(hyper.X)
    assert len(model.interaction_factors_) == 3  # (0, 1), (0, 2), (1, 2)
    for (s, t), (Ps, Pt) in zip([(0, 1), (0, 2), (1, 2)], model.interaction_factors_,
                                strict=True):
        assert Ps.shape == (hyper.X.shape[s], 3) and Pt.shape == (hyper.X.shape[t], 3)
        assert np.abs(Ps).max() > 0 and np.abs(Pt).max() > 0
    coords = hyper.X.indices[::7]
    np.testing.assert_allclose(model.predict_entries(coords), _direct_model(model, coords),
                               rtol=1e-5, atol=1e-6)
    # mode 0's embedding: its K-way factor and its two pairwise factors
    assert emb.shape == (40, 2 + 2 * 3)
    assert len(model.get_feature_names_out()) == 8
    # the data term is that of the full model, in float64
    dense = hyper.X.to_dense()
    grid = np.argwhere(np.ones(hyper.X.shape, dtype=bool))
    direct = float(((dense.ravel() - _direct_model(model, grid)) ** 2).sum())
    assert model.loss_terms_["data"][-1] == pytest.approx(direct, rel=1e-6)


def test_pairwise_terms_fit_what_the_k_way_term_cannot():
    # a tensor that is a sum of two matrices broadcast along the third mode: exactly
    # a pairwise model, of CP rank far above 2
    rng = np.random.RandomState(0)
    U, T1, A, T2 = (rng.rand(n, 2) for n in (12, 8, 10, 8))
    dense = (U @ T1.T)[:, None, :] + (A @ T2.T)[None, :, :]
    X = SparseTensor.from_dense(dense)
    kw = dict(solver="als", update="gauss-seidel", diffusion_steps=0, tol=0, max_iter=60,
              random_state=0)
    cp = HyperLearn(n_components=2, **kw).fit(X)
    pitf = HyperLearn(n_components=1, pairwise_components=2, **kw).fit(X)
    assert pitf.loss_terms_["data"][-1] < 1e-3 * np.square(dense).sum()
    assert pitf.loss_terms_["data"][-1] < 0.01 * cp.loss_terms_["data"][-1]


def test_confidence_weighting_matches_direct_weighted_loss(hyper):
    c = 5.0
    model = HyperLearn(n_components=3, confidence=c, pairwise_components=1, solver="als",
                       update="gauss-seidel", **{**FAST, "max_iter": 6}).fit(hyper.X)
    dense = hyper.X.to_dense()
    pred = _direct_model(model, np.argwhere(np.ones(dense.shape, dtype=bool)))
    w = 1 + c * (dense != 0).ravel()
    direct = float((w * (dense.ravel() - pred) ** 2).sum())
    assert model.loss_terms_["data"][-1] == pytest.approx(direct, rel=1e-6)
    # ALS descends on the weighted objective
    assert all(b <= a * (1 + 1e-9) for a, b in zip(model.loss_curve_, model.loss_curve_[1:],
                                                   strict=False))
    # the weighting raises the model's values at the stored entries
    plain = HyperLearn(n_components=3, pairwise_components=1, solver="als",
                       update="gauss-seidel", **{**FAST, "max_iter": 6}).fit(hyper.X)
    assert (model.predict_entries(hyper.X.indices).mean()
            > plain.predict_entries(hyper.X.indices).mean() + 0.05)


def _ranking_auc(model, X, held, rng):
    neg = held.copy()
    neg[:, 2] = rng.randint(X.shape[2], size=len(held))
    pos_s, neg_s = model.predict_entries(held), model.predict_entries(neg)
    return float((pos_s > neg_s).mean() + 0.5 * (pos_s == neg_s).mean())


def test_bpr_ranks_held_out_hyperedges():
    data = make_hypergraph((60, 50, 40), n_communities=4, n_hyperedges=4000, p_in=0.9,
                           graph_degree=0, random_state=1)
    X = data.X
    rng = np.random.RandomState(0)
    held = rng.rand(X.nnz) < 0.1
    train = SparseTensor(X.indices[~held], X.values[~held], X.shape)
    model = HyperLearn(n_components=4, pairwise_components=4, loss="bpr", ranking_mode=2,
                       batch_size=256, learning_rate_init=0.02, max_iter=15,
                       **{k: v for k, v in FAST.items() if k != "max_iter"}).fit(train)
    # with 4 planted communities and p_in=0.9, the community oracle's AUC is about 0.84
    auc = _ranking_auc(model, X, X.indices[held], rng)
    assert auc > 0.75
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    assert model.loss_terms_["data"][-1] < np.log(2) * train.nnz  # better than chance
    # early stopping on held-out hyperedges keeps the best sweep
    es = HyperLearn(n_components=4, pairwise_components=4, loss="bpr", ranking_mode=2,
                    batch_size=256, learning_rate_init=0.02, max_iter=15,
                    early_stopping=True, n_iter_no_change=3,
                    **{k: v for k, v in FAST.items() if k not in ("max_iter", "tol")})
    es.fit(train)
    val = es.loss_terms_["validation"]
    assert min(val) < val[0]
    assert _ranking_auc(es, X, X.indices[held], rng) > 0.7


def test_bpr_corrupts_the_ranking_mode_only():
    from mmfactor.factorization._hyperlearn import _corrupt

    gen = torch.Generator().manual_seed(0)
    edges = torch.as_tensor(np.random.RandomState(0).randint(5, size=(500, 3)))
    out = _corrupt(edges, 2, (5, 6, 7), gen)
    assert torch.equal(out[:, :2], edges[:, :2]) and int(out[:, 2].max()) < 7
    assert bool((out[:, 2] != edges[:, 2]).any())
    anymode = _corrupt(edges, None, (5, 6, 7), gen)
    changed = (anymode != edges).sum(1)
    assert int(changed.max()) == 1  # one node replaced per hyperedge
    assert set(torch.nonzero(anymode != edges)[:, 1].tolist()) == {0, 1, 2}


def test_collapse_to_zero_is_not_silent(hyper):
    # strong ridge from a random start: every factor goes to exactly 0 (the data term is
    # then ||X||^2); the fit says so instead of returning quietly
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="learned nothing: the factors of mode") as w:
        model = HyperLearn(n_components=3, alpha=50.0, solver="als", update="gauss-seidel",
                           init="random", **FAST).fit(hyper.X)
    assert w[0].filename == __file__  # points at the user's call
    assert any(not np.any(f) for f in model.factors_)


def test_data_term_above_norm_is_not_silent(hyper):
    # Adam with a far too large step: the data term ends above ||X||^2
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match=r"no better than predicting zeros"):
        model = HyperLearn(n_components=3, learning_rate_init=5.0, n_inner_iter=1,
                           **{**FAST, "max_iter": 3}).fit(hyper.X)
    assert model.loss_terms_["data"][-1] >= np.square(hyper.X.values).sum()


def test_good_fit_raises_no_warning(hyper):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HyperLearn(n_components=3, solver="als", update="gauss-seidel", **FAST).fit(hyper.X)


def test_float32_reported_loss_matches_float64():
    # an offset matrix fitted well: ||X||^2 - 2<X,P> + ||P||^2 cancels to a small number
    rng = np.random.RandomState(0)
    M = 10 + rng.rand(150, 3) @ rng.rand(3, 100) + 0.01 * rng.randn(150, 100)
    model = HyperLearn(n_components=4, solver="als", update="gauss-seidel", dtype="float32",
                       **FAST).fit(M)
    P = model.factors_[0].astype(np.float64) @ model.factors_[1].astype(np.float64).T
    direct = float(((M - P) ** 2).sum())
    assert direct < 1e-3 * np.square(M).sum()
    assert model.loss_terms_["data"][-1] == pytest.approx(direct, rel=1e-6)


def test_new_options_survive_save_and_load(hyper, tmp_path):
    import mmfactor

    model = HyperLearn(n_components=2, pairwise_components=2, loss="bpr", ranking_mode=1,
                       batch_size=128, fit_intercept=True,
                       **{**FAST, "max_iter": 2}).fit(hyper.X)
    path = tmp_path / "m.mmf"
    mmfactor.save(model, path)
    clone = mmfactor.load(path)
    assert clone.get_params()["loss"] == "bpr" and clone.pairwise_components == 2
    np.testing.assert_array_equal(clone.predict_entries(hyper.X.indices[:20]),
                                  model.predict_entries(hyper.X.indices[:20]))
    np.testing.assert_array_equal(clone.transform(hyper.X), model.transform(hyper.X))
    for a, b in zip(clone.interaction_factors_, model.interaction_factors_, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    # a user-given start, fixed modes and restarts are stored with the model
    init = [np.ones((n, 2)) for n in hyper.X.shape]
    model = HyperLearn(n_components=2, init=init, fixed_modes=[2], n_init=2,
                       **{**FAST, "max_iter": 2}).fit(hyper.X)
    mmfactor.save(model, path)
    clone = mmfactor.load(path)
    assert clone.fixed_modes == [2] and clone.n_init == 2
    np.testing.assert_array_equal(clone.init[1], init[1])
    np.testing.assert_array_equal(clone.predict_entries(hyper.X.indices[:20]),
                                  model.predict_entries(hyper.X.indices[:20]))


def test_new_option_errors(hyper):
    X = hyper.X
    with pytest.raises(ValueError, match=r"ranking_mode=3 but the tensor of shape \(40, 30, "
                                         r"20\) has 3 modes"):
        HyperLearn(loss="bpr", ranking_mode=3, diffusion_steps=0).fit(X)
    with pytest.raises(ValueError, match=r"loss='bpr' is trained by Adam.*solver='als'"):
        HyperLearn(loss="bpr", solver="als", diffusion_steps=0).fit(X)
    with pytest.raises(ValueError, match=r"confidence=2.0 weighs stored entries.*observed "
                                         r"entries only"):
        HyperLearn(confidence=2.0, missing="unobserved", diffusion_steps=0).fit(X)
    with pytest.raises(InvalidParameterError, match="'pairwise_components' parameter"):
        HyperLearn(pairwise_components=-1).fit(X)
    with pytest.raises(InvalidParameterError, match="'loss' parameter"):
        HyperLearn(loss="hinge").fit(X)


@pytest.mark.parametrize("graphs", [False, True])
def test_defaults_learn_the_documented_example(graphs):
    # the user guide's hypergraph, HyperLearn's defaults (tol included): no plateau stop
    import warnings

    data = make_hypergraph((40, 30, 20), n_communities=3, n_hyperedges=800, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = HyperLearn(n_components=3, graphs=data.graphs if graphs else None,
                           random_state=0).fit(data.X)
    assert model.n_iter_ < model.max_iter  # stopped by tol, having learned
    for f, lab in zip(model.factors_, data.labels, strict=True):
        assert adjusted_rand_score(lab, np.abs(f).argmax(1)) > 0.9


# ---- user-given starts, fixed modes, restarts, tensorly interoperation ----------------------


def test_user_init_and_fixed_modes(hyper):
    rng = np.random.RandomState(3)
    init = [rng.rand(n, 3) for n in hyper.X.shape]
    model = HyperLearn(n_components=3, init=init, fixed_modes=[1, 2], solver="als",
                       update="gauss-seidel", dtype="float64", **{**FAST, "max_iter": 4})
    model.fit(hyper.X)
    np.testing.assert_array_equal(model.factors_[1], init[1])
    np.testing.assert_array_equal(model.factors_[2], init[2])
    assert not np.allclose(model.factors_[0], init[0])
    # mode 0 is then the exact least-squares solution against the fixed modes
    dense = hyper.X.to_dense().reshape(40, -1)
    KR = np.einsum("jr,kr->jkr", init[1], init[2]).reshape(-1, 3)
    exact = np.linalg.lstsq(KR, dense.T, rcond=None)[0].T
    np.testing.assert_allclose(model.factors_[0], exact, rtol=1e-6, atol=1e-8)
    assert model.get_params()["init"] is init  # the parameter is not touched
    # a start is a start: one ALS sweep from a good fit keeps it good
    good = HyperLearn(n_components=3, solver="als", update="gauss-seidel", **FAST).fit(hyper.X)
    again = HyperLearn(n_components=3, init=good.factors_, solver="als",
                       update="gauss-seidel", **{**FAST, "max_iter": 1}).fit(hyper.X)
    assert again.loss_curve_[0] <= good.loss_curve_[-1] * (1 + 1e-5)


def test_init_from_a_tensorly_cp_tensor_and_cp_tensor_input():
    from tensorly.decomposition import parafac

    rng = np.random.RandomState(0)
    dense = tl.cp_to_tensor((np.ones(2), [rng.rand(n, 2) for n in (8, 7, 6)]))
    cp = parafac(tl.tensor(dense), rank=2, n_iter_max=50, init="random", random_state=0)
    model = HyperLearn(n_components=2, init=cp, solver="als", update="gauss-seidel",
                       dtype="float64", **{**FAST, "max_iter": 1}).fit(dense)
    cp_err = float(((tl.cp_to_tensor(cp) - dense) ** 2).sum())
    assert model.loss_terms_["data"][0] <= cp_err * (1 + 1e-6) + 1e-12
    # a CPTensor as the input: the dense tensor it stands for
    a = HyperLearn(n_components=2, solver="als", update="gauss-seidel", **FAST).fit(cp)
    b = HyperLearn(n_components=2, solver="als", update="gauss-seidel", **FAST).fit(
        tl.cp_to_tensor(cp))
    np.testing.assert_array_equal(a.factors_[0], b.factors_[0])


@pytest.mark.parametrize("extra", [{}, {"pairwise_components": 2, "fit_intercept": True}])
def test_to_cptensor_reconstruct_and_inverse_transform(hyper, extra):
    model = HyperLearn(n_components=3, solver="als", update="gauss-seidel",
                       **{**FAST, "max_iter": 5}, **extra).fit(hyper.X)
    cp = model.to_cptensor()
    full = tl.cp_to_tensor(cp)
    grid = np.argwhere(np.ones(hyper.X.shape, dtype=bool))
    np.testing.assert_allclose(full.ravel(), model.predict_entries(grid), rtol=1e-10)
    if not extra:
        np.testing.assert_array_equal(cp.factors[0], model.factors_[0].astype(np.float64))
    # inverse_transform of the fitted mode-0 embedding gives the model's rows back (the
    # mode-0 bias, not part of an embedding, aside)
    K = 3
    emb = np.hstack([model.factors_[0]] + [p[0] for p in model.interaction_factors_[: K - 1]])
    rows = model.inverse_transform(emb)
    expect = full - (model.biases_["modes"][0][:, None, None] if model.biases_ else 0)
    np.testing.assert_allclose(rows, expect, rtol=1e-5, atol=1e-6)
    # reconstruct: the fold-in of rows, then the model's values for them
    facs, _, _ = model._fold_in(hyper.X[:4])
    rec = model.reconstruct(hyper.X[:4])
    assert rec.shape == (4, 30, 20)
    np.testing.assert_allclose(rec, tl.cp_to_tensor((np.ones(facs[0].shape[1]),
                                                     [f.numpy() for f in facs])))
    assert np.mean((rec - hyper.X[:4].to_dense()) ** 2) <= np.mean(hyper.X[:4].to_dense() ** 2)
    with pytest.raises(ValueError, match=r"more than max_entries=10"):
        model.reconstruct(hyper.X[:4], max_entries=10)
    with pytest.raises(ValueError, match=r"X has shape \(2, 1\); expected \(n_samples, "):
        model.inverse_transform(np.ones((2, 1)))


def test_n_init_keeps_the_best_restart(hyper):
    from sklearn.utils import check_random_state

    kw = dict(n_components=3, init="random", **{**FAST, "max_iter": 3})
    best = HyperLearn(n_init=3, **{**kw, "random_state": 5}).fit(hyper.X)
    seeds = check_random_state(5).randint(np.iinfo(np.int32).max, size=3)
    finals = [HyperLearn(**{**kw, "random_state": int(s)}).fit(hyper.X).loss_curve_[-1]
              for s in seeds]
    assert best.loss_curve_[-1] == min(finals)
    assert len(set(finals)) == 3  # the restarts differ


def test_init_and_fixed_modes_errors(hyper):
    X = hyper.X
    with pytest.raises(ValueError, match=r"init\[1\] has shape \(30, 2\); expected \(30, 3\)"):
        HyperLearn(n_components=3, init=[np.ones((40, 3)), np.ones((30, 2)),
                                         np.ones((20, 3))]).fit(X)
    with pytest.raises(ValueError, match=r"init has 2 factors; expected one per mode"):
        HyperLearn(n_components=3, init=[np.ones((40, 3)), np.ones((30, 3))]).fit(X)
    with pytest.raises(TypeError, match=r"init must be 'svd', 'random', a list of 3"):
        HyperLearn(n_components=3, init={"a": 1}).fit(X)
    with pytest.raises(ValueError, match=r"fixed_modes=\[3\] must list distinct modes"):
        HyperLearn(fixed_modes=[3]).fit(X)
    with pytest.raises(ValueError, match=r"fixed_modes=\[0, 1, 2\] fixes every mode"):
        HyperLearn(fixed_modes=[0, 1, 2]).fit(X)
    with pytest.raises(InvalidParameterError, match="'n_init' parameter"):
        HyperLearn(n_init=0).fit(X)


@pytest.mark.parametrize("solver", ["als", "adam"])
def test_nonnegative_cp(solver):
    from tensorly.decomposition import non_negative_parafac

    rng = np.random.RandomState(0)
    dense = tl.cp_to_tensor((np.ones(3), [rng.rand(n, 3) for n in (10, 9, 8)]))
    dense = dense + 0.01 * rng.rand(*dense.shape)
    kw = dict(n_components=3, nonnegative=True, solver=solver, update="gauss-seidel",
              dtype="float64", diffusion_steps=0, tol=0, random_state=0,
              max_iter=40 if solver == "als" else 300, learning_rate_init=0.02,
              n_inner_iter=1)
    model = HyperLearn(**kw).fit(dense)
    assert all((f >= 0).all() for f in model.factors_)
    assert not all((f > 0).all() for f in HyperLearn(
        **{**kw, "nonnegative": False, "init": "random"}).fit(dense).factors_)
    err = model.loss_terms_["data"][-1] / np.square(dense).sum()
    ref = non_negative_parafac(tl.tensor(dense), rank=3, n_iter_max=200, init="random",
                               random_state=0)
    ref_err = float(((tl.cp_to_tensor(ref) - dense) ** 2).sum()) / np.square(dense).sum()
    assert err < (max(3 * ref_err, 1e-3) if solver == "als" else 5e-3)  # Adam: slower
    if solver == "als":  # coordinate descent never increases the objective (no graph)
        curve = model.loss_curve_
        assert all(b <= a * (1 + 1e-9) for a, b in zip(curve, curve[1:], strict=False))
    with pytest.raises(ValueError, match="nonnegative=True constrains the factors"):
        HyperLearn(nonnegative=True, diffusion_steps=2).fit(dense)


def test_confidence_operator_is_the_explicit_system(hyper):
    # the entry-by-entry operator of the confidence-weighted normal equations equals the
    # per-row F x F systems it never forms
    from mmfactor.factorization._cp import mode_normal_equations
    from mmfactor.factorization._hyperlearn import _implicit_operator

    rng = np.random.RandomState(0)
    X = hyper.X
    facs = [torch.as_tensor(rng.randn(n, 4)) for n in X.shape]
    data = TensorData(X.indices, X.values, X.shape, "full", "cpu", torch.float64,
                      confidence=3.0)
    none = torch.zeros(0, dtype=torch.float64)
    for mode in range(3):
        G, b = mode_normal_equations(mode, facs, data, list(range(4)), none)
        Gs, bs, stored = mode_normal_equations(mode, facs, data, list(range(4)), none,
                                               implicit=True)
        torch.testing.assert_close(bs, b)
        A = 2 * G + 0.5 * torch.eye(4, dtype=torch.float64)
        exact = torch.linalg.solve(A, (2 * b)[..., None])[..., 0]
        op, solve = _implicit_operator(Gs, stored, 2.0, 0.5, 3.0, None, None, 4,
                                       X.shape[mode])
        torch.testing.assert_close(op(exact), 2 * b)
        assert bool((solve(torch.ones_like(b)) > 0).all())


# --------------------------------------------------------------------------------------
# Coupled matrix-tensor factorization (coupling=)
# --------------------------------------------------------------------------------------


def _planted_cmtf(seed=0, shape=(40, 12, 10), n_cols=30, rank=3, observed=0.03, noise=0.3):
    """A rank-``rank`` tensor seen at a few noisy entries and a clean matrix sharing mode 0."""
    rng = np.random.RandomState(seed)
    A, B, C = (rng.rand(n, rank) for n in shape)
    V = rng.rand(n_cols, rank)
    T = np.einsum("ir,jr,kr->ijk", A, B, C)
    T = T + noise * T.std() * rng.randn(*shape)
    T[rng.rand(*shape) > observed] = np.nan  # very sparse
    Y = A @ V.T + 0.05 * rng.randn(shape[0], n_cols)
    return A, T, Y


def _factor_match(F, G):
    """Mean |cosine| of the best one-to-one pairing of the columns of F and G."""
    from scipy.optimize import linear_sum_assignment

    Fn = F / np.linalg.norm(F, axis=0)
    Gn = G / np.linalg.norm(G, axis=0)
    S = np.abs(Fn.T @ Gn)
    r, c = linear_sum_assignment(-S)
    return float(S[r, c].mean())


def _cmtf(**kw):
    return HyperLearn(**{"n_components": 3, "solver": "als", "diffusion_steps": 0,
                         "update": "gauss-seidel", "dtype": "float64", "max_iter": 100,
                         "alpha": 1e-3, "random_state": 0, **kw})


def test_coupled_matrix_recovers_the_shared_factor_better_than_the_tensor_alone():
    from scipy.linalg import subspace_angles

    match, span = {"alone": [], "coupled": []}, {"alone": [], "coupled": []}
    for seed in range(3):
        A, T, Y = _planted_cmtf(seed)  # 3% of the tensor seen, with noise
        fits = {"alone": _cmtf(missing="unobserved").fit(MultiModal(t=T)),
                "coupled": _cmtf(missing="unobserved", coupling={"y": 0}).fit(
                    MultiModal(t=T, y=Y))}
        for key, model in fits.items():
            match[key].append(_factor_match(model.factors_[0], A))
            span[key].append(np.mean(np.cos(subspace_angles(model.factors_[0], A)) ** 2))
        assert fits["coupled"].coupled_factors_["y"].shape == (Y.shape[1], 3)
        assert fits["alone"].coupled_factors_ == {}
    assert min(span["coupled"]) > 0.95 > 0.6 > max(span["alone"]), span
    assert np.mean(match["coupled"]) > np.mean(match["alone"]) + 0.2, match


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_coupled_loss_equals_a_direct_float64_computation(dtype):
    rng = np.random.RandomState(1)
    T = rng.rand(15, 6, 5) + 3.0
    Y = rng.rand(15, 7)
    Z = sp.random(6, 9, density=0.4, random_state=1, format="csr")  # coupled to mode 1
    X = MultiModal(t=T, y=Y, shared={"z": Z})
    model = _cmtf(dtype=dtype, alpha=0.1, lam=0.7, coupling={"y": 0, "z": 1},
                  max_iter=8).fit(X)
    F = [f.astype(np.float64) for f in model.factors_]
    V = {k: v.astype(np.float64) for k, v in model.coupled_factors_.items()}
    data = ((T - np.einsum("ir,jr,kr->ijk", *F)) ** 2).sum()
    coupled = ((Y - F[0] @ V["y"].T) ** 2).sum() + ((Z.toarray() - F[1] @ V["z"].T) ** 2).sum()
    pen = 0.05 * (sum((f**2).sum() for f in F) + sum((v**2).sum() for v in V.values()))
    terms = model.loss_terms_
    assert terms["data"][-1] == pytest.approx(data, rel=1e-9)
    assert terms["coupled"][-1] == pytest.approx(coupled, rel=1e-9)
    assert terms["penalty"][-1] == pytest.approx(pen, rel=1e-6 if dtype == "float32" else 1e-9)
    assert model.loss_curve_[-1] == pytest.approx(0.7 * (data + coupled) + pen, rel=1e-6)
    assert np.all(np.diff(model.loss_curve_) <= 1e-9 * model.loss_curve_[0])  # descends


def test_coupled_fit_agrees_with_tensorly_cmtf():
    from tensorly.decomposition import coupled_matrix_tensor_3d_factorization

    rng = np.random.RandomState(2)
    A, B, C, V = rng.rand(20, 3), rng.rand(8, 3), rng.rand(7, 3), rng.rand(11, 3)
    T = np.einsum("ir,jr,kr->ijk", A, B, C) + 0.05 * rng.randn(20, 8, 7)
    Y = A @ V.T + 0.05 * rng.randn(20, 11)
    cp, mat, _ = coupled_matrix_tensor_3d_factorization(tl.tensor(T), tl.tensor(Y), rank=3,
                                                        n_iter_max=200)
    norm = np.sqrt((T**2).sum() + (Y**2).sum())
    tl_err = np.sqrt(((T - tl.cp_to_tensor(cp)) ** 2).sum()
                     + ((Y - tl.cp_to_tensor(mat)) ** 2).sum()) / norm
    model = _cmtf(alpha=0.0, coupling={"y": 0}, max_iter=200, tol=1e-8).fit(
        MultiModal(t=T, y=Y))
    ours = np.sqrt(model.loss_curve_[-1]) / norm
    assert ours == pytest.approx(tl_err, rel=0.05)
    assert _factor_match(model.factors_[0], tl.to_numpy(cp.factors[0])) > 0.99


def test_coupled_fold_in_uses_the_matrix_and_round_trips_through_save(tmp_path):
    import mmfactor

    A, T, Y = _planted_cmtf(0, observed=0.2)
    X = MultiModal(t=T, y=Y)
    model = _cmtf(missing="unobserved", coupling={"y": 0}, alpha=0.2).fit(X)
    # the fold-in solves the rows' normal equations with the matrix term: check one row
    emb = model.transform(X[:5])
    _, B, C = model.factors_
    row = T[2]
    keep = ~np.isnan(row)
    KR = np.einsum("jr,kr->jkr", B, C)[keep]
    Vy = model.coupled_factors_["y"]
    G = KR.T @ KR + Vy.T @ Vy + 0.1 * np.eye(3)
    direct = np.linalg.solve(G, KR.T @ row[keep] + Vy.T @ Y[2])
    np.testing.assert_allclose(emb[2], direct, rtol=1e-6, atol=1e-8)
    moved = model.transform(MultiModal(t=T[:5], y=Y[:5] + 1.0))
    assert not np.allclose(moved, emb)  # the matrix's rows count
    path = tmp_path / "cmtf.mmf"
    mmfactor.save(model, path)
    back = mmfactor.load(path)
    assert back.coupling == {"y": 0}
    np.testing.assert_array_equal(back.coupled_factors_["y"], Vy)
    np.testing.assert_array_equal(back.transform(X[:5]), emb)


def test_coupled_fold_in_refuses_a_matrix_of_another_width_and_keeps_the_model():
    A, T, Y = _planted_cmtf(1, observed=0.2)
    model = _cmtf(missing="unobserved", coupling={"y": 0}, max_iter=5).fit(
        MultiModal(t=T, y=Y))
    before = {k: v.copy() for k, v in model.coupled_factors_.items()}
    with pytest.raises(ValueError, match=r"View 'y' has shape \(4, 29\); expected "
                                         r"\(n_samples, 30\), as in the fit"):
        model.transform(MultiModal(t=T[:4], y=Y[:4, :29]))
    with pytest.raises(ValueError, match=r"couples view 'y' to mode 0"):
        model.transform(MultiModal(t=T[:4], z=Y[:4]))
    np.testing.assert_array_equal(model.coupled_factors_["y"], before["y"])


def test_rank_one_gain_is_the_best_rank_one_reduction():
    from mmfactor.factorization._hyperlearn import _rank_one_gain

    rng = np.random.RandomState(0)
    a, b, c = rng.rand(6), rng.rand(5), rng.rand(4)
    T = np.einsum("i,j,k->ijk", a, b, c)
    idx = np.argwhere(T != 0)
    # an exact rank-one tensor: the best rank-one model removes all of ||X||^2
    assert _rank_one_gain(idx, T[tuple(idx.T)], T.shape) == pytest.approx(
        np.square(T).sum(), rel=1e-9)
    # in general sigma_1^2 of the tensor, at most ||X||^2 and at least the rank-one
    # start's projection
    N = rng.rand(6, 5, 4)
    gain = _rank_one_gain(np.argwhere(N != 0), N[N != 0], N.shape)
    u = [N.sum((1, 2)), N.sum((0, 2)), N.sum((0, 1))]
    u = [x / np.linalg.norm(x) for x in u]
    start = np.einsum("ijk,i,j,k->", N, *u) ** 2
    assert start <= gain <= np.square(N).sum()


def test_adam_that_barely_trains_is_not_silent(hyper):
    # the Last.fm failure in small: from a random start near the zero saddle, 30
    # Adam sweeps leave the data term barely below ||X||^2 (1243 of 1257), worse than the
    # best rank-one model (135 below); 200 sweeps train (865, no warning)
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match=r"less than the best rank-one model"):
        model = HyperLearn(n_components=3, init="random", **FAST).fit(hyper.X)
    assert model.loss_terms_["data"][-1] < np.square(hyper.X.values).sum()
