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
         "solver='als' needs identity links"),
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
