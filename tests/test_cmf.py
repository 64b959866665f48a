import pickle
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline

from mmfactor import CMF, MultiModal
from mmfactor.datasets import make_collective

warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def _subspace_error(A, B):
    """Largest principal-angle sine between the column spaces of A and B (0 = same)."""
    qa, _ = np.linalg.qr(A)
    qb, _ = np.linalg.qr(B)
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.sqrt(max(0.0, 1 - s.min() ** 2)))


def _labelled(n=120, seed=0):
    """Two views whose planted sample factor carries the class."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, n)
    U = np.eye(3)[y] * 3 + 0.3 * rng.randn(n, 3)
    views = [U @ rng.randn(3, m) + 0.1 * rng.randn(n, m) for m in (12, 8)]
    return MultiModal(*views), y


def test_recovers_planted_factors_with_missing_entries():
    data = make_collective(150, (40, 30), 4, missing_rate=0.3, random_state=0)
    model = CMF(4, alpha=1e-3, fit_intercept=False, max_iter=100, tol=1e-7, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        U = model.fit_transform(data.X)
    assert _subspace_error(U, data.factors["sample"]) < 1e-2
    assert _subspace_error(model.factors_["view0_col"], data.factors["view0_col"]) < 1e-2
    # the missing entries are predicted from the observed ones
    nan_r, nan_c = np.nonzero(np.isnan(data.X.views[0]))
    pred = model.predict_entries(np.c_[nan_r, nan_c], relation="view0")
    truth = data.complete[0][nan_r, nan_c]
    assert np.sqrt(np.mean((pred - truth) ** 2)) < 0.05 * truth.std()


def test_als_objective_never_increases():
    data = make_collective(80, (20, 15), 3, missing_rate=0.2, noise=0.5, random_state=1)
    m = CMF(3, alpha=0.5, max_iter=25, tol=0, random_state=0).fit(data.X)
    curve = np.array(m.loss_curve_)
    assert np.all(np.diff(curve) <= 1e-6 * np.abs(curve[:-1]))
    assert set(m.loss_terms_) == {"view0", "view1", "penalty"}
    assert m.n_iter_ == 25


def test_transform_folds_in_unseen_rows():
    data = make_collective(200, (30, 25), 4, noise=0.01, random_state=0)
    X = data.X
    m = CMF(4, alpha=1e-2, max_iter=50, random_state=0, fit_intercept=False).fit(X[:150])
    new = m.transform(X[150:])
    assert new.shape == (50, 4) and new.dtype == np.float32
    # the folded-in factors reconstruct the unseen rows
    recon = new @ m.factors_["view0_col"].T
    err = np.linalg.norm(recon - data.complete[0][150:]) / np.linalg.norm(data.complete[0][150:])
    assert err < 0.05
    # folding in the training rows gives back their fitted factors
    np.testing.assert_allclose(m.transform(X[:150]), m.factors_["sample"], atol=1e-3)
    assert m.score(X[150:]) > -0.01
    assert m.score(X[150:]) > CMF(4, max_iter=1, random_state=0).fit(X[:150]).score(X[150:])


def test_sparse_views_unobserved_and_zero_without_densifying(monkeypatch):
    rng = np.random.RandomState(0)
    U, V = rng.rand(100, 3), rng.rand(60, 3)
    full = U @ V.T
    mask = rng.rand(100, 60) < 0.3
    S = sp.csr_matrix(np.where(mask, full, 0))

    def boom(*a, **k):
        raise AssertionError("a sparse view was densified")

    monkeypatch.setattr(sp.csr_matrix, "toarray", boom)
    monkeypatch.setattr(sp.csr_matrix, "todense", boom)
    m = CMF(3, alpha=1e-3, fit_intercept=False, max_iter=80, random_state=0, tol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit([S])
    r, c = np.nonzero(~mask)
    pred = m.predict_entries(np.c_[r, c])
    assert np.sqrt(np.mean((pred - full[r, c]) ** 2)) < 0.1 * full.std()
    # missing="zero": unstored entries are zeros, so the unobserved entries go to ~0
    mz = CMF(3, missing="zero", fit_intercept=False, alpha=1e-3, max_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mz.fit([S])
    assert np.abs(mz.predict_entries(np.c_[r, c])).mean() < 0.5 * np.abs(full[r, c]).mean()


def test_zero_mode_loss_equals_dense_computation():
    rng = np.random.RandomState(0)
    S = sp.random(30, 20, density=0.2, format="csr", random_state=0)
    m = CMF(3, missing="zero", max_iter=3, tol=0, random_state=0, dtype="float64").fit([S])
    D = S.toarray()
    b = m.biases_["view0"]
    P = m.factors_["sample"] @ m.factors_["view0_col"].T + b["mean"] + b["row"][:, None] + b[
        "col"][None, :]
    assert np.isclose(m.loss_terms_["view0"][-1], ((D - P) ** 2).sum(), rtol=1e-8)
    del rng


def test_collective_schema_with_shared_relation_helps_cold_columns():
    rng = np.random.RandomState(0)
    Uu, Um, Ug = rng.randn(120, 3), rng.randn(80, 3), rng.randn(10, 3)
    R = Uu @ Um.T
    G = Um @ Ug.T
    R_obs = R.copy()
    R_obs[:, :20] = np.nan  # 20 movies nobody rated: only the movie x genre relation helps
    X = MultiModal(ratings=R_obs, shared={"genre": G})
    rel = {"ratings": ("user", "movie"), "genre": ("movie", "genre")}
    m = CMF(3, relations=rel, alpha=1e-3, fit_intercept=False, max_iter=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(X)
    assert set(m.factors_) == {"user", "movie", "genre"} and m.sample_entity_ == "user"
    r, c = np.nonzero(np.isnan(R_obs))
    pred = m.predict_entries(np.c_[r, c], relation="ratings")
    assert np.sqrt(np.mean((pred - R[r, c]) ** 2)) < 0.2 * R.std()


def test_sigmoid_link_for_binary_relations():
    rng = np.random.RandomState(0)
    U, V = rng.randn(100, 3), rng.randn(40, 3)
    P = 1 / (1 + np.exp(-2 * U @ V.T))
    B = (rng.rand(100, 40) < P).astype(float)
    m = CMF(3, link="sigmoid", alpha=0.1, max_iter=15, random_state=0).fit([B])
    assert m._solver == "lbfgs"
    r, c = np.nonzero(np.ones_like(B))
    p = m.predict_entries(np.c_[r, c])
    assert (p >= 0).all() and (p <= 1).all()
    assert np.mean((p > 0.5) == (P[r, c] > 0.5)) > 0.8
    assert m.transform([B[:7]]).shape == (7, 3)
    assert m.loss_curve_[-1] < m.loss_curve_[0]


def test_pipeline_gridsearch_and_cross_val_score_on_multimodal():
    X, y = _labelled()
    pipe = Pipeline([("emb", CMF(3, max_iter=10, random_state=0)),
                     ("clf", RandomForestClassifier(n_estimators=20, random_state=0))])
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.8
    search = GridSearchCV(pipe, {"emb__n_components": [2, 3]}, cv=3).fit(X, y)
    assert search.best_score_ > 0.8
    assert search.predict(X[:5]).shape == (5,)
    # an unsupervised search maximises score (minus the reconstruction error)
    s = GridSearchCV(CMF(max_iter=10, random_state=0), {"n_components": [1, 3]}, cv=3).fit(X)
    assert s.best_params_ == {"n_components": 3}


def test_same_random_state_same_bits_and_feature_names():
    X, _ = _labelled()
    a = CMF(3, max_iter=5, tol=0, random_state=7).fit_transform(X)
    b = CMF(3, max_iter=5, tol=0, random_state=7).fit_transform(X)
    c = CMF(3, max_iter=5, tol=0, random_state=8).fit_transform(X)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    m = CMF(3, max_iter=2, tol=0).fit(X)
    assert list(m.get_feature_names_out()) == ["cmf0", "cmf1", "cmf2"]


def test_pickle_and_joblib_round_trip(tmp_path):
    X, _ = _labelled()
    m = CMF(3, max_iter=5, tol=0, random_state=0).fit(X)
    for loaded in (pickle.loads(pickle.dumps(m)),
                   joblib.load(joblib.dump(m, tmp_path / "m.joblib")[0])):
        np.testing.assert_array_equal(loaded.transform(X), m.transform(X))
        assert loaded.devices_ == [torch.device("cpu")] * 2


def test_input_not_modified():
    X, _ = _labelled()
    X.views[0][0, 0] = np.nan
    before = [v.copy() for v in X.views]
    CMF(3, max_iter=3, tol=0).fit(X).transform(X)
    for a, b in zip(X.views, before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "params, X, err, match",
    [
        ({}, [np.ones((5, 3)), np.ones((4, 3))], ValueError, "mismatched numbers of rows"),
        ({}, [np.ones((5, 3, 2))], ValueError, "at most 2 dimensions"),
        ({"link": "sigmoid"}, [np.arange(15.0).reshape(5, 3)], ValueError,
         "link='sigmoid' but values other than 0 and 1"),
        ({"link": "sigmoid", "solver": "als"}, [np.ones((5, 3))], ValueError,
         "solver='als' needs identity or implicit links"),
        ({"weights": [1.0, 2.0]}, [np.ones((5, 3))], ValueError,
         "weights has 2 entries; expected one per relation"),
        ({"weights": {"nope": 1.0}}, [np.ones((5, 3))], ValueError,
         "weights names unknown relations \\['nope'\\]"),
        ({"weights": [-1.0]}, [np.ones((5, 3))], ValueError, "weight of relation 'view0'"),
        ({"relations": {"a": ("u", "m"), "genre": ("m", "g")}},
         MultiModal(a=np.ones((5, 3)), shared={"genre": np.ones((4, 2))}), ValueError,
         "Entity type 'm' has 3 members in relation 'a' but 4"),
        ({"n_components": 0}, [np.ones((5, 3))], ValueError, "n_components"),
        ({"alpha": -1}, [np.ones((5, 3))], ValueError, "alpha"),
        # an index past this machine's device count: absent on every machine
        ({"devices": f"cuda:{torch.cuda.device_count()}"}, [np.arange(15.0).reshape(5, 3)],
         ValueError, f"'cuda:{torch.cuda.device_count()}' was requested"),
        ({}, [np.ones((1, 3))], ValueError, "at least 2 are required"),
    ],
)
def test_bad_input_errors(params, X, err, match):
    with pytest.raises(err, match=match):
        CMF(max_iter=2, **params).fit(X)


def test_transform_and_predict_entries_errors():
    X, _ = _labelled()
    m = CMF(3, max_iter=2, tol=0).fit(X)
    with pytest.raises(ValueError, match="X has 17 features, but CMF is expecting 20.*'view1'"):
        m.transform([X.views[0], X.views[1][:, :5]])
    with pytest.raises(ValueError, match="got 1 view\\(s\\)"):
        m.transform([X.views[0]])
    with pytest.raises(ValueError, match="coords out of range"):
        m.predict_entries([[0, 99]])
    with pytest.raises(ValueError, match="integer array of shape \\(n_entries, 2\\)"):
        m.predict_entries([[0.5, 1]])
    with pytest.raises(ValueError, match="relation='zz' is neither the name nor the position"):
        m.predict_entries([[0, 0]], relation="zz")
    with pytest.raises(ValueError, match="relation=5 is neither"):
        m.predict_entries([[0, 0]], relation=5)


def test_jacobi_updates_converge_to_the_same_fit():
    data = make_collective(60, (12, 10), 2, missing_rate=0.2, noise=0.05, random_state=0)
    gs = CMF(2, alpha=1.0, max_iter=300, tol=1e-7, random_state=0, dtype="float64")
    ja = CMF(2, alpha=1.0, max_iter=600, tol=1e-7, random_state=0, dtype="float64",
             update="jacobi")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # both must converge
        gs.fit(data.X)
        ja.fit(data.X)
    # damped Jacobi reaches the Gauss-Seidel optimum, with the same predictions
    assert np.isclose(ja.loss_curve_[-1], gs.loss_curve_[-1], rtol=1e-4)
    coords = np.c_[np.repeat(np.arange(60), 12), np.tile(np.arange(12), 60)]
    np.testing.assert_allclose(ja.predict_entries(coords), gs.predict_entries(coords),
                               atol=1e-2)


def test_torch_tensor_views_with_nan():
    data = make_collective(40, (8, 5), 2, missing_rate=0.1, random_state=0)
    t = torch.as_tensor(data.X.views[0])
    arr = CMF(2, max_iter=5, tol=0, random_state=0).fit_transform([data.X.views[0],
                                                                     data.X.views[1]])
    ten = CMF(2, max_iter=5, tol=0, random_state=0).fit_transform([t, data.X.views[1]])
    np.testing.assert_allclose(ten, arr, rtol=1e-5, atol=1e-6)
    assert torch.isnan(t).any()  # the user's tensor keeps its NaN


@pytest.mark.parametrize("missing", ["unobserved", "zero"])
def test_objective_from_normal_equations_matches_direct_evaluation(missing):
    rng = np.random.RandomState(1)
    S = sp.random(40, 25, density=0.3, format="csr", random_state=1)
    D = rng.randn(40, 6)
    D[rng.rand(40, 6) < 0.2] = np.nan
    G = rng.rand(25, 4)
    X = MultiModal(r=S, d=D, shared={"g": G})
    rel = {"r": ("u", "m"), "d": ("u", "f"), "g": ("m", "t")}
    m = CMF(3, relations=rel, weights={"d": 0.5, "g": 2.0}, alpha=0.3, alpha_bias=0.1,
            missing=missing, max_iter=4, tol=0, random_state=0, dtype="float64").fit(X)
    # every relation's squared error, recomputed directly from the fitted model
    for name, M in (("r", S.toarray() if missing == "zero" else S), ("d", D), ("g", G)):
        if sp.issparse(M):
            r, c = M.nonzero()
            vals = np.asarray(M[r, c]).ravel()
        else:
            r, c = np.nonzero(~np.isnan(M))
            vals = M[r, c]
        direct = ((m.predict_entries(np.c_[r, c], relation=name) - vals) ** 2).sum()
        assert np.isclose(m.loss_terms_[name][-1], direct, rtol=1e-6), name


# ---- issue 16: exact losses, one output dtype, the peers' features ------------------------


def _offset_fit(data, dtype, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return CMF(5, alpha=1e-6, max_iter=40, tol=0, random_state=0, dtype=dtype,
                   **kw).fit(MultiModal(a=data))


def _direct_sse(m, data):
    """The relation's squared error from the fitted factors, in float64 (NaN = missing)."""
    F = {e: f.astype(np.float64) for e, f in m.factors_.items()}
    P = F["sample"] @ F["a_col"].T
    if "a" in m.biases_:
        b = m.biases_["a"]
        P = P + b["mean"] + b["row"].astype(np.float64)[:, None] + b["col"][None, :]
    D = data.toarray() if sp.issparse(data) else data
    return float(np.nansum((D - P) ** 2)), D


@pytest.mark.parametrize("layout", ["dense", "nan", "sparse-zero"])
def test_float32_reported_loss_matches_a_direct_float64_computation(layout):
    # offset data fitted well: the loss is ~1e-8 of ||X||^2, below float32's rounding of
    # the expansion ||X||^2 - 2<X,P> + ||P||^2 (which gave negative losses before)
    rng = np.random.RandomState(0)
    X = rng.rand(150, 5) @ rng.rand(5, 100) + 10 + 1e-3 * rng.randn(150, 100)
    if layout == "nan":
        X[rng.rand(*X.shape) < 0.3] = np.nan
    data = sp.csr_matrix(X) if layout == "sparse-zero" else X
    m = _offset_fit(data, "float32", missing="zero")
    direct, D = _direct_sse(m, data)
    assert direct < 1e-6 * np.nansum(D**2)  # the regime where float32 sums fail
    reported = m.loss_terms_["a"][-1]
    assert reported >= 0 and abs(reported - direct) <= 0.02 * direct
    assert all(v >= 0 for v in m.loss_terms_["a"])
    s = m.score(MultiModal(a=data))
    assert s <= 0 and np.isfinite(s)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_entries_is_float64_and_sigmoid_probabilities_stay_inside_0_1(dtype):
    data = make_collective(60, (10, 8), 2, random_state=0)
    m = CMF(2, max_iter=5, random_state=0, dtype=dtype).fit(data.X)
    assert m.predict_entries(np.array([[0, 0], [1, 2]])).dtype == np.float64
    # a perfectly separable binary relation drives the logits far out
    rng = np.random.RandomState(0)
    u = rng.randn(40, 1)
    B = (u @ rng.randn(1, 6) > 0).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mb = CMF(2, link="sigmoid", alpha=0.0, alpha_bias=0.0, max_iter=100, random_state=0,
                 dtype=dtype).fit([B])
    r, c = np.indices(B.shape).reshape(2, -1)
    p = mb.predict_entries(np.c_[r, c])
    assert p.dtype == np.float64 and (p > 0).all() and (p < 1).all()
    assert np.isfinite(-np.log(np.where(B.ravel() > 0, p, 1 - p))).all()


def test_cold_start_recommend_and_warm_fold_in():
    rng = np.random.RandomState(0)
    U = rng.rand(80, 3)
    R_true, S = U @ rng.rand(3, 20), U @ rng.rand(3, 8)
    R = np.where(rng.rand(80, 20) < 0.5, np.nan, R_true)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = CMF(3, alpha=1e-3, max_iter=60, random_state=0).fit(MultiModal(ratings=R, side=S))
    # warm: top-N of the folded-in scores, seen entries left out
    items, scores = m.recommend(MultiModal(ratings=R[:5], side=S[:5]), 4)
    assert items.shape == scores.shape == (5, 4) and items.dtype == np.int64
    full = m.reconstruct(MultiModal(ratings=R[:5], side=S[:5]))["ratings"]
    for i in range(5):
        unseen = np.flatnonzero(np.isnan(R[i]))
        assert set(items[i]) <= set(unseen)
        best = unseen[np.argsort(-full[i, unseen], kind="stable")[:4]]
        np.testing.assert_allclose(np.sort(full[i, best]), np.sort(scores[i]), rtol=1e-6)
    # exclude_seen=False ranks every column
    items_all, _ = m.recommend(MultiModal(ratings=R[:5], side=S[:5]), 20, exclude_seen=False)
    assert all(sorted(row) == list(range(20)) for row in items_all)
    # cold: no rating at all, dense (all NaN) or sparse (empty) alike, from the side view
    cold_dense = MultiModal(ratings=np.full((3, 20), np.nan), side=S[:3])
    cold_sparse = MultiModal(ratings=sp.csr_matrix((3, 20)), side=S[:3])
    np.testing.assert_array_equal(m.transform(cold_dense), m.transform(cold_sparse))
    i_d, s_d = m.recommend(cold_dense, 5)
    i_s, _ = m.recommend(cold_sparse, 5)
    np.testing.assert_array_equal(i_d, i_s)
    # from side information alone, the scores follow the planted preferences
    cold_scores = m.reconstruct(cold_dense)["ratings"]
    corr = [np.corrcoef(cold_scores[i], R_true[i])[0, 1] for i in range(3)]
    assert min(corr) > 0.9, corr
    assert np.isfinite(s_d).all()
    with pytest.raises(ValueError, match=r"n_items=0; expected an integer in \[1, 20\]"):
        m.recommend(cold_dense, 0)
    with pytest.raises(ValueError, match=r"relation='zz' is not a view of the samples"):
        m.recommend(cold_dense, 3, relation="zz")


def test_default_intercept_keeps_a_class_carrying_row_shift_in_the_embedding():
    """Issue 21: a per-sample shift that carries the class went into the row bias with
    fit_intercept=True, which transform does not return (accuracy at chance)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.RandomState(0)
    n = 200
    y = rng.randint(0, 2, n)
    U = rng.randn(n, 3)
    views = [U @ rng.randn(3, m) + 0.2 * (2.0 * y - 1)[:, None] + 0.3 * rng.randn(n, m)
             for m in (30, 20)]
    X = MultiModal(*views)
    acc = {fi: cross_val_score(make_pipeline(CMF(5, fit_intercept=fi, random_state=0),
                                             LogisticRegression()), X, y, cv=5).mean()
           for fi in (True, "columns")}
    assert CMF().fit_intercept == "columns"
    assert acc["columns"] > 0.95 and acc[True] < 0.7, acc
    m = CMF(5, random_state=0).fit(X)
    assert all(np.all(b["row"] == 0) for b in m.biases_.values())


def test_nonneg_factors_are_exact_nonnegative_least_squares_solutions():
    import scipy.optimize as so

    rng = np.random.RandomState(0)
    A, B = rng.rand(50, 3) @ rng.rand(3, 12), rng.rand(50, 3) @ rng.rand(3, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = CMF(3, nonneg=True, fit_intercept=False, alpha=0.1, max_iter=20,
                random_state=0).fit(MultiModal(a=A, b=B))
    assert all((f >= 0).all() for f in m.factors_.values())
    # transform: each row is the NNLS solution of its ridge problem (stacked design)
    V = np.vstack([m.factors_["a_col"], m.factors_["b_col"]]).astype(np.float64)
    design = np.vstack([V, np.sqrt(0.1) * np.eye(3)])
    Z = m.transform(MultiModal(a=A[:6], b=B[:6]))
    for i in range(6):
        ref = so.nnls(design, np.r_[A[i], B[i], np.zeros(3)])[0]
        np.testing.assert_allclose(Z[i], ref, atol=1e-4)
    with pytest.raises(ValueError, match=r"nonneg=True needs solver='als'"):
        CMF(2, nonneg=True, link="sigmoid").fit([(A > 1).astype(float)])


def test_n_init_keeps_the_best_of_several_restarts():
    data = make_collective(60, (12, 9), 3, noise=0.3, random_state=0)
    kw = dict(max_iter=4, tol=0, random_state=0)
    one = CMF(3, **kw).fit(data.X)
    three = CMF(3, n_init=3, **kw).fit(data.X)
    # the first restart is the single fit; the one kept is never worse
    assert three.loss_curve_[-1] <= one.loss_curve_[-1]
    assert np.array_equal(CMF(3, n_init=3, **kw).fit(data.X).factors_["sample"],
                          three.factors_["sample"])


def test_implicit_feedback_als_is_the_hu_koren_volinsky_solution():
    rng = np.random.RandomState(0)
    C = sp.random(60, 40, density=0.1, random_state=0, format="csr")
    C.data = np.ceil(C.data * 5)
    m = CMF(4, link="implicit", confidence_scale=2.0, alpha=0.5, max_iter=15, tol=0,
            random_state=0, dtype="float64").fit([C])
    assert np.all(np.diff(m.loss_curve_) <= 1e-9 * np.abs(m.loss_curve_[:-1]))
    D = C.toarray()
    conf, pref = 1 + 2.0 * D, (D > 0).astype(float)
    U, V = m.factors_["sample"], m.factors_["view0_col"]
    assert m.biases_ == {}
    np.testing.assert_allclose(m.loss_terms_["view0"][-1], (conf * (pref - U @ V.T) ** 2).sum(),
                               rtol=1e-9)
    # the fold-in of each row is its closed form (V' C_u V + alpha I)^-1 V' C_u p_u
    Z = m.transform([C[:5]])
    for u in range(5):
        Cu = np.diag(conf[u])
        ref = np.linalg.solve(V.T @ Cu @ V + 0.5 * np.eye(4), V.T @ Cu @ pref[u])
        np.testing.assert_allclose(Z[u], ref, rtol=1e-8, atol=1e-10)
    # recommend leaves the rows' interactions out
    items, _ = m.recommend([C[:5]], 5)
    assert not any(D[u, items[u]].any() for u in range(5))
    with pytest.raises(ValueError, match=r"link='implicit' but NaN or negative values"):
        CMF(2, link="implicit").fit([-C])
    del rng


def test_inverse_transform_and_reconstruct():
    data = make_collective(60, (12, 9), 3, noise=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = CMF(3, alpha=1e-3, max_iter=50, random_state=0).fit(data.X)
    Z = m.transform(data.X)
    views = m.inverse_transform(Z)
    rec = m.reconstruct(data.X)
    assert [v.shape for v in views] == [(60, 12), (60, 9)]
    for v, name in zip(views, ["view0", "view1"], strict=True):
        assert v.dtype == np.float64
        np.testing.assert_allclose(v, rec[name], rtol=1e-4, atol=1e-4)
    err = np.linalg.norm(views[0] - data.complete[0]) / np.linalg.norm(data.complete[0])
    assert err < 0.05
    with pytest.raises(ValueError, match=r"inverse_transform expects an array of shape"):
        m.inverse_transform(Z[:, :2])


def test_balanced_weights_give_each_view_the_same_total_weight():
    rng = np.random.RandomState(0)
    A, B = rng.rand(40, 30), rng.rand(40, 5)
    A[rng.rand(40, 30) < 0.5] = np.nan
    m = CMF(2, weights="balanced", max_iter=3, tol=0, random_state=0).fit(MultiModal(a=A, b=B))
    n_a, n_b = np.count_nonzero(~np.isnan(A)), B.size
    w_a, w_b = (n_a + n_b) / (2 * n_a), (n_a + n_b) / (2 * n_b)
    t = m.loss_terms_
    np.testing.assert_allclose(m.loss_curve_[-1],
                               w_a * t["a"][-1] + w_b * t["b"][-1] + t["penalty"][-1], rtol=1e-9)
    np.testing.assert_allclose(w_a * n_a, w_b * n_b)


def test_new_options_survive_save_and_load(tmp_path):
    import mmfactor

    rng = np.random.RandomState(0)
    C = sp.random(30, 12, density=0.3, random_state=0, format="csr")
    X = MultiModal(c=C, side=rng.rand(30, 5))
    m = CMF(3, link=["implicit", "identity"], nonneg=True, n_init=2, weights="balanced",
            fit_intercept=True, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(X)
    back = mmfactor.load(mmfactor.save(m, tmp_path / "m.mmf"))
    np.testing.assert_array_equal(back.transform(X), m.transform(X))
    np.testing.assert_array_equal(back.recommend(X[:3], 4)[0], m.recommend(X[:3], 4)[0])
    assert back.get_params() == m.get_params()


def test_score_heldout_selects_the_planted_rank_where_score_cannot():
    """Issue 22: score improves with every component; held-out entries do not."""
    data = make_collective(150, (30, 20), 4, noise=0.5, missing_rate=0.2, random_state=0)
    grid = {"n_components": [2, 4, 8]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = GridSearchCV(CMF(random_state=0), grid, cv=3).fit(data.X)
        held = GridSearchCV(CMF(random_state=0), grid, cv=3,
                            scoring=lambda est, X, y=None: est.score_heldout(X)).fit(data.X)
    assert plain.best_params_ == {"n_components": 8}
    assert held.best_params_ == {"n_components": 4}
    m = held.best_estimator_
    assert m.score_heldout(data.X) == m.score_heldout(data.X) < 0  # repeatable
    with pytest.raises(ValueError, match=r"fraction=1.5; expected a number strictly between"):
        m.score_heldout(data.X, fraction=1.5)
    zero = CMF(2, missing="zero", max_iter=2).fit([sp.random(20, 8, density=0.5,
                                                            random_state=0, format="csr")])
    with pytest.raises(ValueError, match=r"missing='zero'.*no entry can be held out"):
        zero.score_heldout([sp.random(5, 8, density=0.5, random_state=1, format="csr")])


# ---- per-entry weights (cmfrec's W) ----------------------------------------------------


def _weighted_case(seed=0):
    rng = np.random.RandomState(seed)
    U = rng.rand(40, 3)
    R = U @ rng.rand(3, 15) + 0.1 * rng.randn(40, 15)
    R[rng.rand(40, 15) < 0.3] = np.nan
    S = U @ rng.rand(3, 6)
    Wr = rng.randint(0, 4, size=R.shape).astype(float)
    C = sp.random(40, 12, density=0.4, random_state=seed, format="csr")
    Wc = C.copy()
    Wc.data = rng.rand(C.nnz) * 3
    return MultiModal(r=R, s=S, c=C), {"r": Wr, "c": Wc}


def _direct_weighted_sse(m, X, name, W):
    """sum_ij w_ij (x_ij - prediction_ij)^2 over the observed entries, in float64."""
    f, b = m.factors_, m.biases_[name]
    P = f["sample"].astype(np.float64) @ f[f"{name}_col"].T.astype(np.float64)
    P = P + b["mean"] + b["row"][:, None] + b["col"][None, :]
    V = X[name] if isinstance(X, dict) else X.views[X.names.index(name)]
    if sp.issparse(V):
        coo = sp.csr_matrix(V).tocoo()
        w = sp.csr_matrix(W)[coo.row, coo.col].A1 if W is not None else 1.0
        return float((w * (coo.data - P[coo.row, coo.col]) ** 2).sum())
    obs = ~np.isnan(V)
    w = W if W is not None else np.ones_like(V)
    return float((w[obs] * (V[obs] - P[obs]) ** 2).sum())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_entry_weights_reported_loss_is_the_weighted_float64_sum(dtype):
    X, W = _weighted_case()
    before = {k: (v.copy() if not sp.issparse(v) else v.copy()) for k, v in W.items()}
    m = CMF(3, dtype=dtype, fit_intercept=True, max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(X, entry_weights=W)
    # float32: factors_ are the fitted factors rotated and rounded to float32 again (a
    # relative change of ~1e-8 in the loss); the loss itself is the float64 sum
    rtol = 1e-9 if dtype == "float64" else 1e-6
    for name in ("r", "c"):
        direct = _direct_weighted_sse(m, X, name, W[name])
        np.testing.assert_allclose(m.loss_terms_[name][-1], direct, rtol=rtol)
        assert abs(_direct_weighted_sse(m, X, name, None) - direct) > 1e-2 * direct
    np.testing.assert_allclose(m.loss_terms_["s"][-1],
                               _direct_weighted_sse(m, X, "s", None), rtol=rtol)
    np.testing.assert_array_equal(W["r"], before["r"])  # inputs untouched
    np.testing.assert_array_equal(W["c"].toarray(), before["c"].toarray())
    # the unweighted fit is a different fit: the weights really enter the solves
    plain = CMF(3, dtype=dtype, fit_intercept=True, max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain.fit(X)
    assert np.abs(plain.factors_["sample"] - m.factors_["sample"]).max() > 1e-2


def test_entry_weights_of_ones_reproduce_the_unweighted_fit():
    X, W = _weighted_case()
    ones = {"r": np.ones_like(W["r"]), "c": W["c"].copy(), "s": np.ones((40, 6))}
    ones["c"].data[:] = 1.0
    kw = dict(dtype="float64", fit_intercept=True, max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = CMF(3, **kw).fit(X)
        b = CMF(3, **kw).fit(X, entry_weights=ones)
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(b.factors_["sample"], a.factors_["sample"], atol=1e-7)
    np.testing.assert_allclose(b.transform(X, entry_weights=ones), a.transform(X), atol=1e-7)


def test_entry_weight_zero_is_a_missing_entry_and_integer_weights_scale_the_relation():
    X, W = _weighted_case()
    R = X.views[X.names.index("r")]
    Wr = np.where(np.isnan(R), 1.0, W["r"] > 0).astype(float)  # 0/1 weights
    hidden = np.where(Wr == 0, np.nan, R)
    kw = dict(dtype="float64", fit_intercept=True, max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        zero = CMF(3, **kw).fit(X, entry_weights={"r": Wr})
        nan = CMF(3, **kw).fit(MultiModal(r=hidden, s=X.views[1], c=X.views[2]))
        # weight 2 on every entry of a view = that view counted twice (relation weight 2)
        two = CMF(3, **kw).fit(X, entry_weights={"r": np.full(R.shape, 2.0)})
        double = CMF(3, weights={"r": 2.0}, **kw).fit(X)
    np.testing.assert_allclose(zero.loss_curve_, nan.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(zero.factors_["sample"], nan.factors_["sample"], atol=1e-7)
    np.testing.assert_allclose(two.loss_curve_, double.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(two.factors_["sample"], double.factors_["sample"], atol=1e-7)


def test_transform_with_entry_weights_is_the_weighted_least_squares_solution():
    rng = np.random.RandomState(1)
    R = rng.rand(30, 10)
    m = CMF(3, fit_intercept=False, dtype="float64", alpha=0.5, max_iter=20,
            random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit([R])
    new = rng.rand(4, 10)
    new[0, :3] = np.nan
    w = rng.rand(4, 10) * 2
    Z = m.transform([new], entry_weights={"view0": w})
    V = m.factors_["view0_col"]
    for i in range(4):
        o = ~np.isnan(new[i])
        G = (V[o] * w[i, o, None]).T @ V[o] + 0.5 * np.eye(3)
        np.testing.assert_allclose(Z[i], np.linalg.solve(G, V[o].T @ (w[i, o] * new[i, o])),
                                   atol=1e-10)
    assert np.abs(Z - m.transform([new])).max() > 1e-3  # without weights: another solution


def test_entry_weights_survive_save_and_load(tmp_path):
    import mmfactor

    X, W = _weighted_case()
    m = CMF(3, fit_intercept=True, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(X, entry_weights=W)
    back = mmfactor.load(mmfactor.save(m, tmp_path / "m.mmf"))
    np.testing.assert_array_equal(back.transform(X, entry_weights=W),
                                  m.transform(X, entry_weights=W))
    np.testing.assert_array_equal(back.factors_["sample"], m.factors_["sample"])


# ---- issue 19: conjugate-gradient ALS (als_solver="cg") ----------------------------------


def _cg_case(seed=0, graph=True):
    """A collective fit with every kind of relation the CG path meets: a sparse view with
    unobserved entries, a dense view with NaN, a complete dense view and a graph-like
    relation of the column entity with itself; per-entry weights on two views."""
    rng = np.random.RandomState(seed)
    U = rng.rand(50, 3)
    R = sp.random(50, 20, density=0.3, random_state=seed, format="csr")
    R.data = 1 + 4 * rng.rand(R.nnz)
    D = U @ rng.rand(3, 7) + 0.1 * rng.randn(50, 7)
    D[rng.rand(50, 7) < 0.25] = np.nan
    S = rng.rand(50, 4)
    G = sp.random(20, 20, density=0.2, random_state=seed + 1, format="csr")
    X = MultiModal(r=R, d=D, s=S, shared={"g": G} if graph else {})
    rel = {"r": ("u", "m"), "d": ("u", "f"), "s": ("u", "t")}
    if graph:  # (an entity type with itself: ALS is then not a monotone descent)
        rel["g"] = ("m", "m")
    Wr = R.copy()
    Wr.data = 0.5 + rng.rand(R.nnz)
    W = {"r": Wr, "d": rng.randint(0, 3, size=D.shape).astype(float)}
    return X, rel, W


@pytest.mark.parametrize("fit_intercept", [True, "columns", False])
def test_cg_with_enough_steps_is_the_exact_cholesky_solve(fit_intercept):
    X, rel, W = _cg_case()
    kw = dict(relations=rel, alpha=0.5, alpha_bias=0.2, fit_intercept=fit_intercept,
              max_iter=6, tol=0, random_state=0, dtype="float64")
    chol = CMF(3, als_solver="cholesky", **kw).fit(X, entry_weights=W)
    # D <= 5 unknowns per row: CG is exact after D steps (up to rounding)
    cg = CMF(3, als_solver="cg", cg_steps=12, **kw).fit(X, entry_weights=W)
    np.testing.assert_allclose(cg.loss_curve_, chol.loss_curve_, rtol=1e-9)
    for e in chol.factors_:
        np.testing.assert_allclose(cg.factors_[e], chol.factors_[e], atol=1e-7)
    few = CMF(3, als_solver="cg", cg_steps=1, **kw).fit(X, entry_weights=W)
    assert not np.allclose(few.loss_curve_, chol.loss_curve_, rtol=1e-6)  # really CG


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cg_descends_converges_and_reports_the_exact_loss(dtype):
    X, rel, W = _cg_case(1, graph=False)
    kw = dict(relations=rel, alpha=0.5, fit_intercept=True, random_state=0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cg = CMF(3, als_solver="cg", max_iter=150, tol=0, **kw).fit(X, entry_weights=W)
        chol = CMF(3, als_solver="cholesky", max_iter=150, tol=0, **kw).fit(
            X, entry_weights=W)
    curve = np.asarray(cg.loss_curve_)
    # each row's CG steps never raise its objective: Gauss-Seidel ALS stays monotone
    # (in float64; float32 rounding of the solves, CG's and Cholesky's alike, is noisier)
    if dtype == "float64":
        assert np.all(np.diff(curve) <= 1e-9 * curve[:-1])
    assert abs(curve[-1] - chol.loss_curve_[-1]) <= 1e-3 * chol.loss_curve_[-1]
    # the reported loss is the float64 weighted sum at the fitted factors
    rtol = 1e-9 if dtype == "float64" else 1e-6
    coo = X.views[0].tocoo()
    pred = cg.predict_entries(np.c_[coo.row, coo.col], relation="r")
    direct = float((W["r"].tocoo().data * (coo.data - pred) ** 2).sum())
    np.testing.assert_allclose(cg.loss_terms_["r"][-1], direct, rtol=rtol)


def test_cg_implicit_feedback_and_nonneg_rules():
    C = sp.random(60, 40, density=0.1, random_state=0, format="csr")
    C.data = np.ceil(C.data * 5)
    kw = dict(link="implicit", confidence_scale=2.0, alpha=0.5, max_iter=5, tol=0,
              random_state=0, dtype="float64")
    chol = CMF(4, als_solver="cholesky", **kw).fit([C])
    cg = CMF(4, als_solver="cg", cg_steps=10, **kw).fit([C])
    np.testing.assert_allclose(cg.loss_curve_, chol.loss_curve_, rtol=1e-9)
    assert CMF(4, als_solver="cg", **kw).fit([C])._als_solve == "cg"
    # "auto": Cholesky for small ranks and with nonneg, CG from 32 components on
    assert chol._als_solve == "cholesky" and CMF(4, **kw).fit([C])._als_solve == "cholesky"
    assert CMF(32, **kw).fit([C])._als_solve == "cg"
    assert CMF(32, nonneg=True, **kw).fit([C])._als_solve == "cholesky"
    with pytest.raises(ValueError, match=r"nonneg=True needs als_solver='cholesky'"):
        CMF(4, nonneg=True, als_solver="cg").fit([C])


def test_cg_fit_transform_folds_in_exactly_and_survives_save_and_load(tmp_path):
    import mmfactor

    X, rel, W = _cg_case(2)
    m = CMF(3, relations=rel, als_solver="cg", max_iter=10, tol=0, random_state=0,
            dtype="float64").fit(X)
    # transform is the exact ridge solve against the frozen factors (never a few CG steps)
    Z = m.transform(X[:6])
    V = m.factors_["m"]
    b = m.biases_["r"]
    R = X.views[0][:6].tocsr()
    for i in range(6):
        cols = R.indices[R.indptr[i] : R.indptr[i + 1]]
        y = R.data[R.indptr[i] : R.indptr[i + 1]] - b["mean"] - b["col"][cols]
        Dv = X.views[1][i]
        obs = ~np.isnan(Dv)
        F, bd = m.factors_["f"][obs], m.biases_["d"]
        yd = Dv[obs] - bd["mean"] - bd["col"][obs]
        Fs, bs = m.factors_["t"], m.biases_["s"]
        ys = X.views[2][i] - bs["mean"] - bs["col"]
        A = V[cols].T @ V[cols] + F.T @ F + Fs.T @ Fs + m.alpha * np.eye(3)
        ref = np.linalg.solve(A, V[cols].T @ y + F.T @ yd + Fs.T @ ys)
        np.testing.assert_allclose(Z[i], ref, rtol=1e-7, atol=1e-9)
    back = mmfactor.load(mmfactor.save(m, tmp_path / "m.mmf"))
    np.testing.assert_array_equal(back.transform(X), m.transform(X))
    assert back.get_params()["als_solver"] == "cg"


def test_cg_jacobi_updates_reach_the_cholesky_objective():
    X, rel, W = _cg_case(3, graph=False)
    kw = dict(relations=rel, alpha=0.5, update="jacobi", max_iter=120, tol=0,
              random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cg = CMF(3, als_solver="cg", **kw).fit(X, entry_weights=W)
        chol = CMF(3, als_solver="cholesky", **kw).fit(X, entry_weights=W)
    assert cg._als_solve == "cg"
    assert abs(cg.loss_curve_[-1] - chol.loss_curve_[-1]) <= 1e-3 * chol.loss_curve_[-1]
    assert cg.loss_curve_[-1] < 0.5 * cg.loss_curve_[0]
