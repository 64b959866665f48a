"""DFMF: the tri-factorization, its constraints, completion, folding-in and the contract."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from mmfactor import DFMF, MultiModal

SCHEMA = {"a": ("s", "x"), "b": ("s", "y")}


def planted(seed=0, n=120, m1=30, m2=25, k=3, missing=0.2):
    """Two relations sharing a planted non-negative sample factor, with missing entries."""
    rng = np.random.RandomState(seed)
    G, H1, H2 = rng.rand(n, k) ** 2, rng.rand(m1, k) ** 2, rng.rand(m2, k) ** 2
    S1, S2 = rng.rand(k, k) + 2 * np.eye(k), rng.rand(k, k) + 2 * np.eye(k)
    R1, R2 = G @ S1 @ H1.T, G @ S2 @ H2.T
    R1m = R1.copy()
    R1m[rng.rand(*R1.shape) < missing] = np.nan
    return G, R1, R2, R1m


def fit_quiet(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def fitted(data):
    _, _, R2, R1m = data
    X = MultiModal(a=R1m, b=R2)
    return fit_quiet(DFMF(3, relations=SCHEMA, max_iter=300, tol=0, random_state=0,
                          dtype="float64"), X), X


# ---- the math ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["laplacian", "raw"])
def test_objective_non_increasing_with_missing_entries_and_constraints(data, form):
    _, _, R2, R1m = data
    rng = np.random.RandomState(1)
    W = sp.random(120, 120, density=0.05, random_state=rng) * 0.05
    theta = -(W + W.T)  # must-links
    theta = theta + sp.diags(rng.rand(120) * 0.01)
    model = fit_quiet(DFMF({"s": 4, "x": 3, "y": 2}, relations=SCHEMA,
                           constraints={"s": theta}, constraint_form=form, max_iter=60,
                           tol=0, random_state=0, dtype="float64", init="random"),
                      MultiModal(a=R1m, b=R2))
    curve = np.array(model.loss_curve_)
    assert len(curve) == 60
    assert (np.diff(curve) <= 1e-9 * np.abs(curve[:-1])).all()
    # the recorded terms add up to the objective
    total = sum(np.array(v) for v in model.loss_terms_.values())
    np.testing.assert_allclose(total, curve, rtol=1e-10)
    assert set(model.loss_terms_) == {"a", "b", "constraint:s"}


def test_objective_matches_its_definition():
    _, R1, R2, R1m = planted()
    model = fit_quiet(DFMF(3, relations=SCHEMA, max_iter=5, tol=0, random_state=0),
                      MultiModal(a=R1m, b=R2))
    G, S = model.factors_, model.backbones_
    obs = ~np.isnan(R1m)
    err_a = (((R1m - G["s"] @ S["a"] @ G["x"].T)[obs]) ** 2).sum()
    err_b = ((R2 - G["s"] @ S["b"] @ G["y"].T) ** 2).sum()
    np.testing.assert_allclose(model.loss_terms_["a"][-1], err_a, rtol=1e-8)
    np.testing.assert_allclose(model.loss_terms_["b"][-1], err_b, rtol=1e-8)
    np.testing.assert_allclose(model.loss_curve_[-1], err_a + err_b, rtol=1e-8)


def test_recovers_planted_non_negative_factors(data, fitted):
    G_true, R1, _, R1m = data
    model, _ = fitted
    G = model.factors_["s"]
    assert (G >= 0).all() and (model.factors_["x"] >= 0).all()
    # the fitted factor spans the planted one ...
    proj = G @ np.linalg.lstsq(G, G_true, rcond=None)[0]
    assert np.linalg.norm(proj - G_true) / np.linalg.norm(G_true) < 1e-3
    # ... and the held-out entries are completed
    miss = np.argwhere(np.isnan(R1m))
    pred = model.predict_entries(miss, relation="a")
    truth = R1[miss[:, 0], miss[:, 1]]
    assert np.linalg.norm(pred - truth) / np.linalg.norm(truth) < 1e-3


def _normalized_rows(X, constraints):
    model = fit_quiet(DFMF(4, relations=SCHEMA, constraints=constraints, max_iter=100, tol=0,
                           random_state=0, init="random", dtype="float64"), X)
    G = model.factors_["s"]
    return G / np.linalg.norm(G, axis=1, keepdims=True)


def _pair_graph(n, n_pairs):
    pairs = np.c_[np.arange(n_pairs), np.arange(n_pairs) + n_pairs]
    W = sp.coo_matrix((np.ones(n_pairs), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return pairs, W + W.T


def test_must_link_constraints_pull_rows_together():
    rng = np.random.RandomState(0)
    X = MultiModal(a=rng.rand(60, 20), b=rng.rand(60, 15))
    pairs, W = _pair_graph(60, 30)

    def distances(G):
        linked = np.linalg.norm(G[pairs[:, 0]] - G[pairs[:, 1]], axis=1).mean()
        other = np.linalg.norm(G[pairs[:, 0]] - G[np.roll(pairs[:, 1], 7)], axis=1).mean()
        return linked, other

    free_linked, free_other = distances(_normalized_rows(X, None))
    linked, other = distances(_normalized_rows(X, {"s": -5.0 * W}))
    # without constraints, linked pairs are no closer than others (the data is noise)
    assert free_linked > 0.5 * free_other
    # with them, linked rows end up much closer than they were, and than unlinked rows
    assert linked < 0.5 * free_linked
    assert linked < 0.5 * other


def test_cannot_link_constraints_push_rows_apart():
    rng = np.random.RandomState(0)
    X = MultiModal(a=rng.rand(40, 20), b=rng.rand(40, 15))
    pairs, W = _pair_graph(40, 20)

    def cosine(G):
        return (G[pairs[:, 0]] * G[pairs[:, 1]]).sum(1).mean()

    assert cosine(_normalized_rows(X, {"s": 5.0 * W})) < 0.7 * cosine(_normalized_rows(X, None))


def test_negative_relation_entries_are_fitted_with_non_negative_factors():
    # only G is constrained: S is free, so with allow_negative=True real-valued relations
    # (log expression) are fitted as a semi-NMF
    rng = np.random.RandomState(0)
    G = rng.rand(50, 3)
    R = G @ (rng.randn(3, 3)) @ rng.rand(40, 3).T
    assert (R < 0).any()
    model = fit_quiet(DFMF(3, init="svd", max_iter=300, tol=0, random_state=0,
                           dtype="float64", allow_negative=True), [R])
    G_hat = model.factors_["sample"]
    assert (G_hat >= 0).all()
    rel_err = np.sqrt(model.loss_curve_[-1]) / np.linalg.norm(R)
    assert rel_err < 0.05


def test_negative_entries_are_refused_by_default_in_fit_and_transform():
    rng = np.random.RandomState(0)
    R, T = rng.rand(20, 6), rng.rand(20, 5)
    R_neg = R.copy()
    R_neg[[1, 4], 2] = [-0.5, -2.0]
    R_nan = R_neg.copy()
    R_nan[0, 0] = np.nan
    msg = (r"Negative values in data passed to DFMF: view 'a' of shape \(20, 6\) has 2 "
           r"negative entries \(min -2\)\. DFMF models relations as non-negative .* "
           "allow_negative=True")
    for a in (R_neg, R_nan, sp.csr_matrix(R_neg), torch.as_tensor(R_nan)):
        before = a.toarray() if sp.issparse(a) else np.array(np.asarray(a), copy=True)
        with pytest.raises(ValueError, match=msg):
            DFMF(2, max_iter=5).fit(MultiModal(a=a, b=T))
        assert np.array_equal(a.toarray() if sp.issparse(a) else np.asarray(a), before,
                              equal_nan=True)
    model = fit_quiet(DFMF(2, max_iter=5, random_state=0), MultiModal(a=R, b=T))
    with pytest.raises(ValueError, match=msg):
        model.transform(MultiModal(a=R_neg, b=T))
    T_neg = -T
    with pytest.raises(ValueError, match="view 'b' of shape"):
        model.transform(MultiModal(a=R, b=T_neg))
    assert np.isfinite(fit_quiet(DFMF(2, max_iter=5, random_state=0, allow_negative=True),
                                 MultiModal(a=R_neg, b=T)).transform(
                                     MultiModal(a=R_neg, b=T))).all()


# ---- inputs: sparse, masks, ranks ------------------------------------------------------


def test_sparse_inputs_match_dense_ones(data):
    _, R1, R2, R1m = data
    kw = dict(relations=SCHEMA, max_iter=20, tol=0, random_state=0, dtype="float64")
    # unstored = missing  <->  NaN
    R1_obs = np.where(np.isnan(R1m), 0.0, R1m)
    sparse_obs = sp.csr_matrix(R1_obs)
    assert sparse_obs.nnz == (~np.isnan(R1m)).sum()  # no observed entry is 0
    dense = fit_quiet(DFMF(3, **kw), MultiModal(a=R1m, b=R2))
    sparse = fit_quiet(DFMF(3, missing="unobserved", **kw), MultiModal(a=sparse_obs, b=R2))
    np.testing.assert_allclose(sparse.loss_curve_, dense.loss_curve_, rtol=1e-7)
    # unstored = zero  <->  a dense matrix with those zeros
    zero = fit_quiet(DFMF(3, missing="zero", **kw), MultiModal(a=sparse_obs, b=R2))
    dense0 = fit_quiet(DFMF(3, **kw), MultiModal(a=R1_obs, b=R2))
    np.testing.assert_allclose(zero.loss_curve_, dense0.loss_curve_, rtol=1e-7)


def test_ranks_per_entity_type_and_backbones(fitted):
    model, _ = fitted
    assert model.n_components_ == {"s": 3, "x": 3, "y": 3}
    m = fit_quiet(DFMF({"s": 4, "x": 2, "y": 5}, relations=SCHEMA, max_iter=5,
                       random_state=0), MultiModal(a=planted()[3], b=planted()[2]))
    assert m.factors_["s"].shape == (120, 4) and m.factors_["y"].shape == (25, 5)
    assert m.backbones_["a"].shape == (4, 2) and m.backbones_["b"].shape == (4, 5)
    assert m.relations_ == [("a", "s", "x"), ("b", "s", "y")]
    assert m.get_feature_names_out().tolist() == [f"dfmf{i}" for i in range(4)]


@pytest.mark.parametrize("init", ["random_c", "random", "svd"])
def test_inits_give_non_negative_factors_and_a_decreasing_objective(data, init):
    _, _, R2, R1m = data
    model = fit_quiet(DFMF(3, relations=SCHEMA, init=init, max_iter=15, tol=0,
                           random_state=0, dtype="float64"), MultiModal(a=R1m, b=R2))
    assert all((g >= 0).all() for g in model.factors_.values())
    assert model.loss_curve_[-1] < model.loss_curve_[0]


def test_shared_relation_and_constraint_given_by_name():
    rng = np.random.RandomState(0)
    n, n_go = 40, 12
    ann = (rng.rand(n, n_go) < 0.3).astype(float)
    go_go = rng.rand(n_go, 6)
    ppi = -sp.random(n, n, density=0.1, random_state=0)
    X = MultiModal(ann=ann, ppi=ppi, shared={"go_cat": go_go})
    model = fit_quiet(DFMF({"gene": 4, "go": 3, "cat": 2},
                           relations={"ann": ("gene", "go"), "go_cat": ("go", "cat")},
                           constraints={"gene": "ppi"}, max_iter=10, random_state=0), X)
    assert model.constraints_ == ["gene"]
    assert model.relations_ == [("ann", "gene", "go"), ("go_cat", "go", "cat")]
    assert model.factors_["cat"].shape == (6, 2)
    # transform uses the constraints among the new rows (a square view of those rows)
    X_new = MultiModal(ann=ann[:10], ppi=ppi.tocsr()[:10][:, :10])
    Z = model.transform(X_new)
    assert Z.shape == (10, 4) and (Z >= 0).all()


# ---- out of sample, completion, the estimator contract -------------------------------------


def test_transform_folds_in_new_rows(data, fitted):
    model, X = fitted
    Z = model.transform(X[:20])
    assert Z.shape == (20, 3) and Z.dtype == np.float64 and (Z >= 0).all()
    # folding in the training rows gives back (nearly) their fitted factors
    np.testing.assert_allclose(
        Z @ model.backbones_["b"], model.factors_["s"][:20] @ model.backbones_["b"],
        rtol=0.05, atol=1e-3)
    # rows never seen in fit: their reconstruction is as good as the training rows'
    G_true = data[0]
    rng = np.random.RandomState(5)
    G_new = rng.rand(15, 3) ** 2
    R_new = (G_new @ np.linalg.lstsq(G_true, data[2], rcond=None)[0])
    X_new = MultiModal(a=np.full((15, 30), np.nan), b=R_new)
    # nothing observed in view 'a': the rows are embedded from 'b' (issue 18: as one row
    # inside a batch is; an all-missing view is refused at fit only)
    Z_b = model.transform(X_new)
    assert Z_b.shape == (15, 3) and np.isfinite(Z_b).all() and (Z_b >= 0).all()
    # cold start, folded in from view b alone, reconstructs b (issue 16)
    rec = model.reconstruct(X_new)
    assert np.linalg.norm(rec["b"] - R_new) / np.linalg.norm(R_new) < 1e-3
    X_new = MultiModal(a=G_new @ np.linalg.lstsq(G_true, data[1], rcond=None)[0], b=R_new)
    rec = model.reconstruct(X_new)
    assert np.linalg.norm(rec["b"] - R_new) / np.linalg.norm(R_new) < 1e-3
    assert model.score(X_new) > -1e-6


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_output_dtype_and_score(dtype):
    _, R1, R2, _ = planted()
    X = MultiModal(a=R1, b=R2)
    model = DFMF(3, relations=SCHEMA, max_iter=30, random_state=0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        Z = model.fit_transform(X)
    assert Z.dtype == np.dtype(dtype) and Z.shape == (120, 3)
    assert model.transform(X[:4]).dtype == np.dtype(dtype)
    s = model.score(MultiModal(a=R1[:30], b=R2[:30]))
    assert np.isfinite(s) and s <= 0
    assert DFMF().dtype == "float64"


def test_same_random_state_same_bits_and_no_input_modification(data):
    _, _, R2, R1m = data
    R1c, R2c = R1m.copy(), R2.copy()
    X = MultiModal(a=R1m, b=R2)
    kw = dict(relations=SCHEMA, max_iter=10, tol=0, random_state=3)
    a = fit_quiet(DFMF(3, **kw), X)
    b = fit_quiet(DFMF(3, **kw), X)
    for e in a.factors_:
        assert np.array_equal(a.factors_[e], b.factors_[e])
    assert np.array_equal(a.transform(X[:7]), b.transform(X[:7]))
    np.testing.assert_array_equal(R1m, R1c)
    np.testing.assert_array_equal(R2, R2c)
    c = fit_quiet(DFMF(3, relations=SCHEMA, max_iter=10, tol=0, random_state=4), X)
    assert not np.array_equal(a.factors_["s"], c.factors_["s"])


def test_pickle_and_joblib_round_trip(fitted, tmp_path):
    model, X = fitted
    Z = model.transform(X[:5])
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.transform(X[:5]), Z)
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").transform(X[:5]), Z)


def test_pipeline_and_grid_search_on_multimodal():
    rng = np.random.RandomState(0)
    n = 80
    y = np.repeat([0, 1], n // 2)
    G = rng.rand(n, 3) * 0.2
    G[y == 1, 0] += 1.0
    X = MultiModal(a=G @ rng.rand(3, 15), b=G @ rng.rand(3, 10))
    pipe = Pipeline([("dfmf", DFMF(2, max_iter=30, random_state=0)),
                     ("clf", LogisticRegression())])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(pipe, {"dfmf__n_components": [2, 3]}, cv=3).fit(X, y)
        assert search.best_score_ > 0.9
        unsup = GridSearchCV(DFMF(max_iter=10, init="svd", random_state=0),
                             {"n_components": [1, 3]}, cv=2).fit(X)
    assert unsup.best_params_ == {"n_components": 3}


def test_convergence_warning_names_max_iter_and_tol_stops(data):
    _, _, R2, R1m = data
    X = MultiModal(a=R1m, b=R2)
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        DFMF(3, relations=SCHEMA, max_iter=3, random_state=0).fit(X)
    # on noise the objective levels off, and tol stops the fit (exactly planted data would
    # keep decreasing by a constant ratio towards zero)
    rng = np.random.RandomState(0)
    noise = MultiModal(a=rng.rand(50, 10), b=rng.rand(50, 8))
    model = DFMF(3, relations=SCHEMA, max_iter=500, tol=1e-3, random_state=0).fit(noise)
    assert model.n_iter_ < 500


def test_predict_entries_on_missing_entries_beats_the_mean(data, fitted):
    _, R1, _, R1m = data
    model, _ = fitted
    miss = np.argwhere(np.isnan(R1m))
    truth = R1[miss[:, 0], miss[:, 1]]
    pred = model.predict_entries(miss, relation=0)
    assert ((pred - truth) ** 2).mean() < 0.01 * ((np.nanmean(R1m) - truth) ** 2).mean()


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, X_kind, match",
    [
        ({"n_components": {"s": 2, "x": 2}}, "plain", r"no rank for entity types \['y'\]"),
        ({"n_components": {"s": 2, "x": 2, "y": 2, "z": 1}}, "plain",
         r"n_components names entity types \['z'\]"),
        ({"n_components": {"s": 2, "x": 0, "y": 2}}, "plain", r"n_components\['x'\] = 0"),
        ({"constraints": {"q": np.eye(3)}}, "plain", r"constraints names entity type 'q'"),
        ({"constraints": {"s": np.eye(7)}}, "plain",
         r"Constraint matrix constraints\['s'\] has shape \(7, 7\); entity type 's' has 20 "
         r"members, so it must be \(20, 20\)"),
        ({"constraints": {"x": "nope"}}, "plain", r"constraints\['x'\] = 'nope' names neither"),
        ({"constraints": {"x": np.full((6, 6), np.nan)}}, "plain", r"has NaN values"),
        ({"relations": {"a": ("s", "x"), "b": ("s", "s")}}, "square",
         r"Relation 'b' relates entity type 's' to itself.*constraints="),
        ({"relations": {"a": ("s", "x"), "b": ("s", "x")}}, "plain",
         r"Entity type 'x' has 6 members in relation 'a' but 4 in relation 'b'"),
        ({"relations": {"a": ("s", "x"), "c": ("s", "y")}}, "plain", r"relations names \['c'\]"),
        ({"constraints": {"s": ["a", "b"]}}, "plain", r"Every view of X .* is a constraint"),
        ({"devices": "cuda:7"}, "plain", r"cuda:7.*CUDA device"),
    ],
)
def test_bad_input_errors(params, X_kind, match):
    rng = np.random.RandomState(0)
    a = rng.rand(20, 6)
    b = rng.rand(20, 20) if X_kind == "square" else rng.rand(20, 4)
    kw = {"relations": SCHEMA, "max_iter": 2}
    kw.update(params)
    with pytest.raises(ValueError, match=match):
        DFMF(**kw).fit(MultiModal(a=a, b=b))


def test_bad_parameter_values_and_types():
    X = MultiModal(a=np.ones((5, 3)))
    with pytest.raises(ValueError, match="'init' parameter of DFMF must be"):
        DFMF(init="nndsvd").fit(X)
    with pytest.raises(ValueError, match="'constraint_form' parameter of DFMF"):
        DFMF(constraint_form="soft").fit(X)
    with pytest.raises(TypeError, match="dtype object"):
        DFMF().fit([np.array([["a", "b"], ["c", "d"]], dtype=object)])
    with pytest.raises(ValueError, match="at least 2 are required"):
        DFMF().fit([np.ones((1, 3))])


def test_transform_and_predict_entries_errors(fitted):
    model, X = fitted
    with pytest.raises(ValueError, match=r"X has 54 features, but DFMF is expecting 55 "
                                         r"features as input: view 'a' has shape \(n_samples, "
                                         r"29\) but the model was fitted on \(n_samples, 30\)"):
        model.transform(MultiModal(a=np.ones((4, 29)), b=np.ones((4, 25))))
    with pytest.raises(ValueError, match=r"X has 1 view\(s\) \['a'\] but the model was "
                                         r"fitted on 2 view\(s\) \['a', 'b'\]"):
        model.transform(MultiModal(a=np.ones((4, 30))))
    with pytest.raises(ValueError, match="relation='zz' is neither the name nor the position"):
        model.predict_entries([[0, 0]], relation="zz")
    with pytest.raises(ValueError, match="relation=5 is neither"):
        model.predict_entries([[0, 0]], relation=5)
    with pytest.raises(ValueError, match=r"coords must be an integer array of shape"):
        model.predict_entries([0.5, 1.0])
    with pytest.raises(ValueError, match=r"coords out of range for relation 'a' of shape"):
        model.predict_entries([[120, 0]])
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        DFMF().transform(X)


def test_constraint_view_must_be_square_under_row_slicing():
    rng = np.random.RandomState(0)
    ppi = -sp.random(30, 30, density=0.2, random_state=0)
    X = MultiModal(a=rng.rand(30, 5), ppi=ppi)
    model = DFMF(2, constraints={"sample": "ppi"}, max_iter=3)
    with pytest.raises(ValueError, match=r"constraints\['sample'\] has shape \(10, 30\)"):
        model.fit(X[:10])


# ---- devices ------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_matches_cpu_and_unpickles(data):
    _, _, R2, R1m = data
    X = MultiModal(a=R1m, b=R2)
    kw = dict(relations=SCHEMA, max_iter=30, tol=0, random_state=0, dtype="float64")
    cpu = fit_quiet(DFMF(3, **kw), X)
    gpu = fit_quiet(DFMF(3, devices="cuda", **kw), X)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-6)
    assert gpu.devices_[0].type == "cuda"
    Z = pickle.loads(pickle.dumps(gpu)).transform(X[:5])
    np.testing.assert_allclose(Z, cpu.transform(X[:5]), rtol=1e-5, atol=1e-8)


EXPECTED_FAILED = {}  # every scikit-learn check passes


@parametrize_with_checks([DFMF(n_components=2, max_iter=5, tol=0, random_state=0)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rank_above_the_number_of_members_stays_finite(dtype):
    # a column entity with 4 members and rank 6: its Gram matrix is singular
    rng = np.random.RandomState(0)
    X = MultiModal(a=rng.rand(80, 4), b=rng.rand(80, 30))
    model = fit_quiet(DFMF(6, max_iter=60, random_state=0, dtype=dtype), X)
    assert np.isfinite(model.loss_curve_).all()
    assert all(np.isfinite(s).all() for s in model.backbones_.values())
    Z = model.transform(MultiModal(a=rng.rand(10, 4), b=rng.rand(10, 30)))
    assert np.isfinite(Z).all() and (Z >= 0).all()


def test_raw_must_links_make_the_objective_unbounded_and_laplacian_ones_do_not():
    rng = np.random.RandomState(0)
    X = MultiModal(a=rng.rand(40, 10), b=rng.rand(40, 8))
    _, W = _pair_graph(40, 20)
    kw = dict(relations=SCHEMA, constraints={"s": -50.0 * W}, max_iter=300, tol=0,
              random_state=0)
    with pytest.raises(FloatingPointError, match=r"DFMF: the loss became non-finite at "
                                                 r"iteration \d+ .*constraint:s="):
        DFMF(3, constraint_form="raw", **kw).fit(X)
    model = DFMF(3, **kw).fit(X)
    assert np.isfinite(model.loss_curve_).all() and min(model.loss_curve_) >= 0
    assert min(model.loss_terms_["constraint:s"]) >= 0


# ---- the fast paths of a sweep ------------------------------------------------------------


def test_products_in_either_order_and_caches_agree_with_the_plain_formulas():
    from mmfactor.factorization._dfmf import _approx, _Factors, _Theta

    rng = np.random.RandomState(0)
    for (n_r, k_r), (n_c, k_c) in [((40, 8), (30, 2)), ((40, 2), (30, 8)), ((5, 3), (60, 3))]:
        Gr, Gc = torch.rand(n_r, k_r, dtype=torch.float64), torch.rand(n_c, k_c,
                                                                       dtype=torch.float64)
        S = torch.randn(k_r, k_c, dtype=torch.float64)
        out = torch.empty(n_r, n_c, dtype=torch.float64)
        torch.testing.assert_close(_approx(Gr, S, Gc), Gr @ S @ Gc.T)
        assert _approx(Gr, S, Gc, out=out) is out
        torch.testing.assert_close(out, Gr @ S @ Gc.T)
    G = _Factors(a=torch.rand(20, 3, dtype=torch.float64))
    first = G.gram("a")
    assert G.gram("a") is first  # cached while the factor is the same tensor
    G["a"] = G["a"] * 2
    torch.testing.assert_close(G.gram("a"), 4 * first)  # recomputed once it is replaced
    W = sp.random(20, 20, density=0.3, random_state=0)
    theta = sp.csr_matrix(W + W.T - sp.diags(rng.rand(20)))
    T = _Theta(theta, "cpu", torch.float64)
    pos, neg = T.products(G["a"])
    assert T.products(G["a"])[0] is pos
    np.testing.assert_allclose((pos - neg).numpy(), theta @ G["a"].numpy())


# ---- issue 16: exact fold-in, exact losses, weights, restarts; issue 22: hints -----------


def _exact_planted():
    rng = np.random.RandomState(0)
    G = rng.rand(80, 4)
    return MultiModal(a=G @ rng.rand(4, 30), b=G @ rng.rand(4, 20))


def test_fold_in_is_the_exact_nonnegative_least_squares_solution():
    """Issue 16 item 3: an exact fit's fold-in was 31% away from factors_."""
    import scipy.optimize as so

    X = _exact_planted()
    m = fit_quiet(DFMF(4, max_iter=500, random_state=0), X)
    Z = m.fit_transform(X)
    F = m.factors_["sample"]
    assert np.abs(Z - F).max() <= 1e-4 * np.abs(F).max()
    assert -1e-9 < m.score(X) <= 0
    # each row: NNLS against the stacked W_r = G_c S_r^T of the relations
    W = np.vstack([m.factors_[f"{n}_col"] @ m.backbones_[n].T for n in ("a", "b")])
    for i in range(5):
        ref = so.nnls(W, np.r_[X.views[0][i], X.views[1][i]])[0]
        np.testing.assert_allclose(Z[i], ref, rtol=1e-6, atol=1e-9)
    # with missing entries (dense NaN and sparse unobserved), per-row masks
    Xm = X.views[0].copy()
    Xm[np.random.RandomState(1).rand(*Xm.shape) < 0.4] = np.nan
    Xs = sp.csr_matrix(np.where(np.random.RandomState(2).rand(80, 20) < 0.5, X.views[1], 0))
    Zm = m.transform(MultiModal(a=Xm[:5], b=Xs[:5]))
    for i in range(5):
        obs_a, obs_b = ~np.isnan(Xm[i]), Xs[i].toarray().ravel() != 0
        Wi = np.vstack([W[:30][obs_a], W[30:][obs_b]])
        ref = so.nnls(Wi, np.r_[Xm[i][obs_a], Xs[i].toarray().ravel()[obs_b]])[0]
        np.testing.assert_allclose(Zm[i], ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("layout", ["dense", "masked", "sparse-zero", "observed"])
def test_float32_reported_loss_matches_a_direct_float64_computation(layout):
    rng = np.random.RandomState(0)
    G = rng.rand(60, 3)
    R = G @ rng.rand(3, 25) + 10 * (layout != "observed") + 1e-3 * rng.rand(60, 25)
    if layout == "masked":
        R[rng.rand(*R.shape) < 0.3] = np.nan
    data = sp.csr_matrix(R) if layout in ("sparse-zero", "observed") else R
    missing = "zero" if layout == "sparse-zero" else "unobserved"
    m = fit_quiet(DFMF(3, max_iter=60, tol=0, random_state=0, dtype="float32",
                       missing=missing), MultiModal(a=data))
    P = m.factors_["sample"].astype(np.float64) @ m.backbones_["a"] @ m.factors_["a_col"].T
    direct = float(np.nansum((R - P) ** 2))
    reported = m.loss_terms_["a"][-1]
    assert reported >= 0 and abs(reported - direct) <= 1e-6 * direct + 1e-9, (reported, direct)
    assert m.score(MultiModal(a=data)) <= 0


def test_weights_scale_each_relation_and_balanced_equalises_them():
    X = _exact_planted()
    m = fit_quiet(DFMF(3, weights="balanced", max_iter=5, tol=0, random_state=0), X)
    n_a, n_b = X.views[0].size, X.views[1].size
    w = {"a": (n_a + n_b) / (2 * n_a), "b": (n_a + n_b) / (2 * n_b)}
    t = m.loss_terms_
    np.testing.assert_allclose(m.loss_curve_[-1], w["a"] * t["a"][-1] + w["b"] * t["b"][-1],
                               rtol=1e-12)
    # a weight of 0 on one relation: the other is fitted as if alone
    alone = fit_quiet(DFMF({"sample": 3, "b_col": 3}, max_iter=30, tol=0, random_state=0,
                           init="random"), MultiModal(b=X.views[1]))
    zero = fit_quiet(DFMF({"sample": 3, "a_col": 3, "b_col": 3}, weights={"a": 0.0},
                          max_iter=30, tol=0, random_state=0, init="random"), X)
    assert zero.loss_terms_["b"][-1] <= 1.5 * alone.loss_terms_["b"][-1]
    assert zero.loss_curve_[-1] == pytest.approx(zero.loss_terms_["b"][-1])


def test_n_init_keeps_the_best_restart_and_inverse_transform():
    X = _exact_planted()
    one = fit_quiet(DFMF(3, max_iter=5, tol=0, random_state=0, init="random"), X)
    three = fit_quiet(DFMF(3, n_init=3, max_iter=5, tol=0, random_state=0, init="random"), X)
    assert three.loss_curve_[-1] <= one.loss_curve_[-1]
    Z = three.transform(X)
    views = three.inverse_transform(Z)
    rec = three.reconstruct(X)
    np.testing.assert_allclose(views[0], rec["a"], rtol=1e-10)
    np.testing.assert_allclose(views[1], rec["b"], rtol=1e-10)
    with pytest.raises(ValueError, match=r"inverse_transform expects an array of shape"):
        three.inverse_transform(Z[:, :2])


def test_divergence_hint_names_the_fix_and_the_fix_works():
    rng = np.random.RandomState(0)
    R = rng.rand(30, 10)
    W = np.triu((rng.rand(30, 30) < 0.2).astype(float), 1)
    must_link = -10 * (W + W.T)
    with pytest.raises(ValueError, match=r"non-finite.*use constraint_form='laplacian'"):
        DFMF(3, constraints={"sample": must_link}, constraint_form="raw", max_iter=200,
             tol=0, random_state=0).fit(MultiModal(a=R))
    m = DFMF(3, constraints={"sample": must_link}, constraint_form="laplacian", max_iter=200,
             tol=0, random_state=0).fit(MultiModal(a=R))
    assert np.isfinite(m.loss_curve_).all()


def test_negative_value_hint_minmaxscaler_clip_works_on_new_rows():
    from sklearn.preprocessing import MinMaxScaler

    rng = np.random.RandomState(0)
    A = rng.randn(60, 8) @ rng.randn(8, 12)
    train, test = A[:40], A[40:] * 3  # the new rows go beyond the training range
    with pytest.raises(ValueError, match=r"MinMaxScaler\(clip=True\)"):
        DFMF(3).fit([train])
    plain = MinMaxScaler().fit(train)
    m = fit_quiet(DFMF(3, max_iter=50, random_state=0), [plain.transform(train)])
    with pytest.raises(ValueError, match=r"Negative values.*MinMaxScaler\(clip=True\)"):
        m.transform([plain.transform(test)])
    clip = MinMaxScaler(clip=True).fit(train)
    m = fit_quiet(DFMF(3, max_iter=50, random_state=0), [clip.transform(train)])
    Z = m.transform([clip.transform(test)])
    assert Z.shape == (20, 3) and (Z >= 0).all()


def test_new_options_survive_save_and_load(tmp_path):
    import mmfactor

    X = _exact_planted()
    m = fit_quiet(DFMF(3, weights={"a": 2.0}, n_init=2, max_iter=5, random_state=0), X)
    back = mmfactor.load(mmfactor.save(m, tmp_path / "m.mmf"))
    np.testing.assert_array_equal(back.transform(X), m.transform(X))
    assert back.score(X) == m.score(X) and back.get_params() == m.get_params()


def test_score_heldout_selects_the_planted_rank_where_score_cannot():
    rng = np.random.RandomState(0)
    G = rng.rand(150, 4)
    X = MultiModal(a=G @ rng.rand(4, 30) + 0.3 * rng.rand(150, 30),
                   b=G @ rng.rand(4, 20) + 0.3 * rng.rand(150, 20))
    grid = {"n_components": [2, 4, 8]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = GridSearchCV(DFMF(random_state=0, max_iter=60), grid, cv=3).fit(X)
        held = GridSearchCV(DFMF(random_state=0, max_iter=60), grid, cv=3,
                            scoring=lambda est, X, y=None: est.score_heldout(X)).fit(X)
    assert plain.best_params_ == {"n_components": 8}
    assert held.best_params_ == {"n_components": 4}



def test_batched_nnls_is_exact_and_repeatable_on_a_singular_gram():
    """A rank-deficient Gram (the fitted column factors of a tiny collection at k = 3):
    the fold-in gives the same answer every call, and it meets the KKT conditions
    (lstsq's gelsy driver answered the same singular system differently call to call)."""
    import mmfactor.factorization._dfmf as dfmf_module
    from mmfactor.factorization._nnls import batched_nnls

    rng = np.random.RandomState(12)
    n = rng.randint(3, 12)
    X = MultiModal(v0=rng.rand(n, rng.randint(1, 6)), v1=rng.rand(n, rng.randint(1, 6)))
    k = rng.randint(1, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = DFMF(n_components=k, max_iter=3, random_state=0).fit(X)
    X = X[: rng.randint(1, n + 1)]
    seen = []

    def spy(A, b, *args, **kwargs):
        seen.append((A, b))
        return batched_nnls(A, b, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(dfmf_module, "batched_nnls", spy)
        Z = [est.transform(X) for _ in range(10)]
    assert all(np.array_equal(Z[0], z) for z in Z[1:])
    A, b = seen[0]
    assert torch.linalg.matrix_rank(A) < A.shape[-1]  # the singular case
    x = batched_nnls(A, b).numpy()
    grad = x @ A.numpy() - b.numpy()
    assert (x >= 0).all()
    assert np.abs(grad[x > 1e-9]).max() < 1e-8    # stationary on the passive set
    assert (grad[x <= 1e-9] > -1e-8).all()        # no descent direction off it


# ---- issue 19: the faster sweep keeps the reported objective exact ------------------------


def _direct_terms(model, views, thetas=None):
    """Every relation's squared error over its observed entries, and every constraint
    term, computed directly in float64 from the fitted factors."""
    G, S = model.factors_, model.backbones_
    out = {}
    for name, row, col in model.relations_:
        R = views[name]
        R = R.toarray() if sp.issparse(R) else np.asarray(R, dtype=np.float64)
        P = G[row].astype(np.float64) @ S[name].astype(np.float64) @ G[col].T.astype(np.float64)
        if sp.issparse(views[name]) and model.missing == "unobserved":
            mask = views[name].toarray() != 0
            out[name] = float((((R - P) * mask) ** 2).sum())
        else:
            out[name] = float(np.nansum((R - P) ** 2))
    for e, theta in (thetas or {}).items():
        out[f"constraint:{e}"] = float((G[e] * (theta @ G[e])).sum())
    return out


@pytest.mark.parametrize("layout", ["dense", "masked", "sparse-zero", "observed"])
@pytest.mark.parametrize("n_iter", [1, 2, 7])
def test_reported_terms_match_a_direct_float64_computation_after_every_sweep(layout, n_iter):
    # the loss of a complete relation comes from ||R||^2 - 2 <R, P> + ||P||^2 with <R, P>
    # taken from the sweep's last factor update: it must agree with the direct residuals
    # after any number of sweeps
    rng = np.random.RandomState(1)
    G = rng.rand(50, 3)
    R1 = G @ rng.rand(3, 20) + 0.3 * rng.rand(50, 20)
    R2 = G @ rng.rand(3, 12) + 0.3 * rng.rand(50, 12)
    if layout == "masked":
        R1[rng.rand(*R1.shape) < 0.3] = np.nan
    if layout in ("sparse-zero", "observed"):
        R1[rng.rand(*R1.shape) < 0.6] = 0
        R1 = sp.csr_matrix(R1)
    W = sp.random(50, 50, density=0.1, random_state=0).tolil()
    W.setdiag(0)
    W = sp.csr_matrix(W)
    theta = -(W + W.T)  # must-links
    views = {"a": R1, "b": R2}
    m = fit_quiet(DFMF({"s": 3, "x": 4, "y": 2}, relations=SCHEMA, constraints={"s": theta},
                       missing="zero" if layout == "sparse-zero" else "unobserved",
                       max_iter=n_iter, tol=0, random_state=0),
                  MultiModal(a=R1, b=R2))
    lap = sp.csr_matrix(sp.diags(np.asarray((W + W.T).sum(1)).ravel()) - (W + W.T))
    direct = _direct_terms(m, views, {"s": lap})
    for name, value in direct.items():
        assert m.loss_terms_[name][-1] == pytest.approx(value, rel=1e-10), name
    assert m.loss_curve_[-1] == pytest.approx(sum(direct.values()), rel=1e-10)


@pytest.mark.parametrize("scale", [0.0, 1e-9, 1e-3, 1.0])
def test_dense_loss_falls_back_to_direct_residuals_on_an_almost_exact_fit(scale):
    # ||R||^2 - 2 <R, P> + ||P||^2 cancels when the residual is tiny: the refresh then
    # computes the residuals directly, so the loss stays exact down to an exact fit
    from mmfactor._multimodal import check_view
    from mmfactor.factorization._dfmf import _Relation

    rng = np.random.RandomState(0)
    Gr, S, Gc = rng.rand(40, 3), rng.rand(3, 2) + 1, rng.rand(15, 2)
    P = Gr @ S @ Gc.T
    R = P + scale * rng.randn(*P.shape)
    rel = _Relation("a", "s", "x", check_view("a", R), missing="unobserved",
                    device=torch.device("cpu"), dtype=torch.float64)
    t = [torch.as_tensor(x) for x in (Gr, S, Gc)]
    direct = float(((torch.as_tensor(R) - t[0] @ t[1] @ t[2].T) ** 2).sum())
    assert rel.refresh(*t) == pytest.approx(direct, rel=1e-9, abs=1e-300)


def test_gram_pinv_is_the_pseudo_inverse_on_regular_and_singular_grams():
    from mmfactor.factorization._dfmf import _gram_pinv

    g = torch.Generator().manual_seed(0)
    for G in (torch.rand(40, 5, generator=g, dtype=torch.float64),
              torch.rand(40, 5, generator=g, dtype=torch.float64) @ torch.tensor(
                  [[1.0, 1, 0, 0, 0]] * 5, dtype=torch.float64).T[:5]):  # rank 1
        A = G.T @ G
        rtol = torch.finfo(torch.float64).eps * 40
        torch.testing.assert_close(_gram_pinv(A, rtol),
                                   torch.linalg.pinv(A, hermitian=True, rtol=rtol),
                                   rtol=1e-8, atol=1e-10)


def test_kept_products_are_dropped_when_the_fill_changes():
    from mmfactor._multimodal import check_view
    from mmfactor.factorization._dfmf import _Relation

    rng = np.random.RandomState(0)
    R = rng.rand(12, 7)
    R[0, 0] = np.nan
    rel = _Relation("a", "s", "x", check_view("a", R), missing="unobserved",
                    device=torch.device("cpu"), dtype=torch.float64)
    Gr, S, Gc = (torch.rand(12, 2, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64),
                 torch.rand(7, 3, dtype=torch.float64))
    rel.refresh(Gr, S, Gc)
    first = rel.apply("row", Gc, Gr, S, Gc)
    assert rel.cached("row", Gc) and rel.apply("row", Gc, Gr, S, Gc) is first
    filled = np.where(np.isnan(R), (Gr @ S @ Gc.T).numpy(), R)
    np.testing.assert_allclose(first.numpy(), filled @ Gc.numpy(), rtol=1e-12)
    rel.refresh(2 * Gr, S, Gc)  # a new fill: R~ changes, so must R~ G_c
    assert not rel.cached("row", Gc)
    filled = np.where(np.isnan(R), (2 * Gr @ S @ Gc.T).numpy(), R)
    np.testing.assert_allclose(rel.apply("row", Gc, Gr, S, Gc).numpy(), filled @ Gc.numpy(),
                               rtol=1e-12)
