"""DCMF: deep collective matrix factorization on the common contract."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import mmfactor.neural._dcmf as dcmf_module
from mmfactor import CMF, DCMF, MultiModal
from mmfactor._training import DeviceCSR, NonFiniteLossError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# the trained networks (encoder="auto" gives tens of samples the linear closed form)
FAST = dict(encoder="neural", hidden_layer_sizes=(8,), max_iter=3, tol=0, random_state=0)


def _views(n=30, seed=0, nan=0.0):
    rng = np.random.RandomState(seed)
    A = rng.rand(n, 6)
    if nan:
        A[rng.rand(n, 6) < nan] = np.nan
    return MultiModal(a=A, b=rng.rand(n, 4))


def _collective(seed=0):
    """users x items (sparse, 'ratings'), users x tags (dense), items x genres (shared)."""
    rng = np.random.RandomState(seed)
    R = sp.random(40, 25, density=0.3, random_state=rng, format="csr")
    R.data = 1 + 4 * R.data
    X = MultiModal(ratings=R, tags=rng.rand(40, 5), shared={"genres": rng.rand(25, 3)})
    rel = [("user", "item"), ("user", "tag"), ("item", "genre")]
    return X, rel


def _planted_nonlinear(n, seed):
    """Two views that are non-linear functions of a 2-d latent variable."""
    z = np.random.RandomState(seed).uniform(-1, 1, (n, 2))
    A = 2 * np.random.RandomState(1).randn(2, 30)
    B = 2 * np.random.RandomState(2).randn(2, 20)
    return np.sin(z @ A), np.tanh(z @ B) ** 2


# ---- the scikit-learn contract ------------------------------------------------------


@parametrize_with_checks([DCMF(n_components=2, hidden_layer_sizes=(4,), max_iter=2, tol=0,
                               random_state=0)])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_fit_transform_shapes_dtype_and_attributes():
    X = _views()
    model = DCMF(n_components=3, **FAST)
    emb = model.fit_transform(X)
    assert emb.shape == (30, 3) and emb.dtype == np.float32
    assert model.entities_ == ["sample", "a_col", "b_col"]
    assert model.factors_["a_col"].shape == (6, 3) and model.factors_["b_col"].shape == (4, 3)
    assert set(model.biases_) == {"a", "b"} and model.biases_["a"]["col"].shape == (6,)
    assert len(model.loss_curve_) == model.n_iter_ == 3
    assert {"ae[sample]", "ae[a_col]", "a", "b", "penalty"} <= set(model.loss_terms_)
    assert list(model.get_feature_names_out()) == ["dcmf0", "dcmf1", "dcmf2"]
    # the training rows through the encoder give the fitted factor
    np.testing.assert_allclose(model.transform(X), emb, rtol=1e-5, atol=1e-5)
    # canonical rotation: uncorrelated sample components, by decreasing variance
    cov = np.cov(emb.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-5)
    assert np.all(np.diff(np.diag(cov)) <= 1e-7)
    assert model.transform(X[:7]).shape == (7, 3)


def test_same_random_state_is_bit_identical_and_global_seed_untouched():
    X, rel = _collective()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = DCMF(n_components=3, relations=rel, **FAST).fit(X)
    assert torch.rand(1) == before  # fitting drew nothing from torch's global generator
    b = DCMF(n_components=3, relations=rel, **FAST).fit(X)
    for e in a.factors_:
        np.testing.assert_array_equal(a.factors_[e], b.factors_[e])
    assert a.loss_curve_ == b.loss_curve_
    c = DCMF(n_components=3, relations=rel, **{**FAST, "random_state": 1}).fit(X)
    assert not np.array_equal(a.factors_["user"], c.factors_["user"])


def test_input_not_modified():
    X, rel = _collective()
    X.views[1][0, 0] = np.nan
    copies = [X.views[0].copy(), X.views[1].copy(), X.shared["genres"].copy()]
    model = DCMF(n_components=2, relations=rel, early_stopping=True, **FAST).fit(X)
    model.transform(X)
    assert (X.views[0] != copies[0]).nnz == 0
    np.testing.assert_array_equal(X.views[1], copies[1])
    np.testing.assert_array_equal(X.shared["genres"], copies[2])


# ---- the model --------------------------------------------------------------------------


def test_loss_decreases_and_beats_linear_cmf_on_planted_nonlinear_structure():
    X1, X2 = _planted_nonlinear(400, 0)
    T1, T2 = _planted_nonlinear(200, 5)
    mu1, mu2 = X1.mean(0), X2.mean(0)  # centred columns: no bias helps either model
    train = MultiModal(X1 - mu1, X2 - mu2)
    test = [T1 - mu1, T2 - mu2]
    dcmf = DCMF(n_components=2, encoder="neural", hidden_layer_sizes=(64,), max_iter=40, tol=0,
                learning_rate_init=1e-2, batch_size=100, random_state=0).fit(train)
    curve = dcmf.loss_curve_
    assert curve[-1] < 0.5 * curve[0]
    assert np.mean(np.diff(curve) < 0) > 0.8  # it goes down nearly every epoch
    recon = dcmf.reconstruct(MultiModal(*test))
    dcmf_err = np.mean([((r - t) ** 2).mean() for r, t in zip(recon, test, strict=True)])
    cmf = CMF(n_components=2, fit_intercept=False, max_iter=100, random_state=0).fit(train)
    U = cmf.transform(MultiModal(*test))
    cmf_err = np.mean([((U @ cmf.factors_[f"view{i}_col"].T - t) ** 2).mean()
                       for i, t in enumerate(test)])
    # held-out rows reconstructed through a 2-d representation: the non-linear
    # autoencoder must beat the best linear rank-2 model by a wide margin
    assert dcmf_err < 0.6 * cmf_err, (dcmf_err, cmf_err)


@pytest.mark.parametrize("dense_batch", [1 << 22, 0])
def test_every_block_of_every_matrix_is_visited_each_epoch(monkeypatch, dense_batch):
    """Each epoch, every observed entry enters the factorization loss from both sides."""
    monkeypatch.setattr(dcmf_module, "_DENSE_BATCH", dense_batch)
    X, rel = _collective()
    seen = {}  # id(part) -> (block, idx)
    covered = {}  # (relation, side) -> set of (row, col)
    batch, bilinear = dcmf_module._Block.batch, dcmf_module._bilinear

    def spy_batch(block, rows):
        part = batch(block, rows)
        seen[id(part)] = (block, rows.host)
        return part

    def spy_bilinear(code, other, part, k, slots):
        block, idx = seen[id(part)]
        if part.rows is None:
            M = np.ones(part.X.shape, bool) if part.M is None else part.M.numpy() > 0
            r, c = np.nonzero(M)
        else:
            r, c = part.rows.numpy(), part.cols.numpy()
        pairs = zip(idx[r], c, strict=True) if block.side == "row" else zip(c, idx[r], strict=True)
        covered.setdefault((block.rel, block.side), set()).update(pairs)
        return bilinear(code, other, part, k, slots)

    monkeypatch.setattr(dcmf_module._Block, "batch", spy_batch)
    monkeypatch.setattr(dcmf_module, "_bilinear", spy_bilinear)
    DCMF(n_components=2, relations=rel, batch_size=7, hidden_layer_sizes=(4,), max_iter=1,
         tol=0, random_state=0).fit(X)
    R = X.views[0].tocoo()
    observed = {
        0: set(zip(R.row.tolist(), R.col.tolist(), strict=True)),
        1: {(i, j) for i in range(40) for j in range(5)},
        2: {(i, j) for i in range(25) for j in range(3)},
    }
    for m in range(3):
        for side in ("row", "col"):
            got = {(int(i), int(j)) for i, j in covered[(m, side)]}
            assert got == observed[m], (m, side)
    # several batches per entity: the diagonal-blocks-only schedule would miss entries
    assert 40 // 7 > 1 and 25 // 7 > 1


def test_sparse_layout_matches_dense_layout(monkeypatch):
    X, rel = _collective()
    dense = DCMF(n_components=3, relations=rel, **FAST).fit(X)
    monkeypatch.setattr(dcmf_module, "_DENSE_BATCH", 0)
    sparse = DCMF(n_components=3, relations=rel, **FAST).fit(X)
    for e in dense.factors_:
        np.testing.assert_allclose(sparse.factors_[e], dense.factors_[e], rtol=1e-3, atol=1e-4)


def test_sparse_matrix_never_densified_whole(monkeypatch):
    X, rel = _collective()
    shapes = []
    dense = DeviceCSR.dense

    def spy(self, batch, **kwargs):
        out = dense(self, batch, **kwargs)
        shapes.append(tuple((out[0] if isinstance(out, tuple) else out).shape))
        return out

    toarray = sp.csr_matrix.toarray

    def spy_host(self, *args, **kwargs):  # nor on the host
        shapes.append(self.shape)
        return toarray(self, *args, **kwargs)

    monkeypatch.setattr(DeviceCSR, "dense", spy)
    monkeypatch.setattr(sp.csr_matrix, "toarray", spy_host)
    monkeypatch.setattr(dcmf_module, "_ENCODE_ROWS", 8)  # the chunks of gradient-free passes
    model = DCMF(n_components=2, relations=rel, batch_size=8, **FAST).fit(X)
    model.transform(X)
    assert shapes and all(s[0] <= 8 for s in shapes)


def test_missing_zero_differs_from_unobserved():
    X, rel = _collective()
    a = DCMF(n_components=2, relations=rel, missing="unobserved", **FAST).fit(X)
    b = DCMF(n_components=2, relations=rel, missing="zero", **FAST).fit(X)
    R = X.views[0]
    # unobserved: the stored entries' statistics; zero: every cell's (unstored ones as 0)
    assert np.isclose(a.scaling_["ratings"][0], R.data.mean())
    assert np.allclose(b.scaling_["ratings"], (R.toarray().mean(), R.toarray().std()))
    assert not np.allclose(a.factors_["user"], b.factors_["user"])


def test_sparse_zero_view_agrees_with_the_same_dense_view():
    # issue 16: a complete dense view and the same matrix as a sparse view with
    # missing="zero" are standardised alike (the sparse one centred implicitly), so the
    # fits agree to float32 rounding
    rng = np.random.RandomState(0)
    A = rng.rand(40, 12) * (rng.rand(40, 12) < 0.5)
    B = rng.rand(40, 6)
    kw = dict(n_components=3, missing="zero", hidden_layer_sizes=(8,), max_iter=10, tol=0,
              random_state=0)
    dense = DCMF(**kw).fit(MultiModal(a=A, b=B))
    sparse = DCMF(**kw).fit(MultiModal(a=sp.csr_matrix(A), b=B))
    assert np.allclose(dense.scaling_["a"], (A.mean(), A.std()))
    assert np.allclose(sparse.scaling_["a"], dense.scaling_["a"])
    Zd = dense.transform(MultiModal(a=A, b=B))
    Zs = sparse.transform(MultiModal(a=sp.csr_matrix(A), b=B))
    np.testing.assert_allclose(Zs, Zd, atol=1e-5)
    np.testing.assert_allclose(sparse.score(MultiModal(a=sp.csr_matrix(A), b=B)),
                               dense.score(MultiModal(a=A, b=B)), rtol=1e-5)


def test_nan_entries_are_masked():
    X = _views(nan=0.3)
    model = DCMF(n_components=2, **FAST).fit(X)
    assert np.isfinite(model.transform(X)).all() and np.isfinite(model.score(X))
    rows, cols = np.nonzero(~np.isnan(X.views[0]))
    assert np.isclose(model.scaling_["a"][0], X.views[0][rows, cols].mean())


def test_predict_entries_score_and_reconstruct():
    X, rel = _collective()
    model = DCMF(n_components=3, relations=rel, **FAST).fit(X)
    coords = np.array([[0, 0], [39, 24], [5, 3]])
    pred = model.predict_entries(coords, relation="ratings")
    mean, std = model.scaling_["ratings"]
    b = model.biases_["ratings"]
    U, V = model.factors_["user"], model.factors_["item"]
    expected = [(U[i] @ V[j] + b["row"][i] + b["col"][j]) * std + mean for i, j in coords]
    np.testing.assert_allclose(pred, expected, rtol=1e-5)
    np.testing.assert_allclose(model.predict_entries([[1, 2]], relation=2),
                               model.predict_entries([[1, 2]], relation="genres"))
    recon = model.reconstruct(X)
    assert [r.shape for r in recon] == [(40, 25), (40, 5)]
    assert model.score(X) < 0 and model.score(X[:10]) != model.score(X[10:])


def test_square_relation_on_the_samples():
    rng = np.random.RandomState(0)
    G = rng.rand(20, 20)
    X = MultiModal(graph=G, feats=rng.rand(20, 3))
    model = DCMF(n_components=2, relations=[("s", "s"), ("s", "f")], **FAST).fit(X)
    assert model.autoencoders_["s"].inp.in_features == 23  # the square one enters once
    assert model.transform(X[:5]).shape == (5, 2)


def test_early_stopping_keeps_the_best_networks():
    X, rel = _collective()
    model = DCMF(n_components=2, relations=rel, early_stopping=True, n_iter_no_change=2,
                 hidden_layer_sizes=(8,), max_iter=50, learning_rate_init=0.05,
                 random_state=0).fit(X)
    val = model.loss_terms_["validation"]
    assert model.n_iter_ < 50 and len(val) == model.n_iter_
    assert model.best_validation_score_ == min(val)


def test_convergence_warning_names_max_iter():
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        DCMF(n_components=2, hidden_layer_sizes=(4,), max_iter=2, tol=1e-12,
             random_state=0).fit(_views())


def test_non_finite_loss_is_an_error():
    X = _views()
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        DCMF(n_components=2, learning_rate_init=1e12, alpha=0, max_iter=20, tol=0,
             random_state=0).fit(MultiModal(X.a * 1e18, X.b))


# ---- model selection and persistence ----------------------------------------------------


def test_pipeline_and_grid_search_on_multimodal():
    X = _views(60)
    y = (np.nan_to_num(X.a[:, 0]) > 0.5).astype(int)
    pipe = Pipeline([("emb", DCMF(**FAST)), ("clf", LogisticRegression())])
    search = GridSearchCV(pipe, {"emb__n_components": [2, 3]}, cv=2).fit(X, y)
    assert search.best_params_["emb__n_components"] in (2, 3)
    assert search.predict(X[:5]).shape == (5,)
    # unsupervised search on DCMF's own score
    GridSearchCV(DCMF(**FAST), {"n_components": [1, 2]}, cv=2).fit(X)


def test_pickle_round_trip():
    X, rel = _collective()
    model = DCMF(n_components=2, relations=rel, **FAST).fit(X)
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))


def test_devices_per_entity_type(tmp_path):
    X, rel = _collective()
    model = DCMF(n_components=2, relations=rel, devices={"item": "cpu"}, **FAST).fit(X)
    assert [d.type for d in model.devices_] == ["cpu"] * 4
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").transform(X),
                                  model.transform(X))


@pytest.mark.cuda
@cuda
def test_cuda_fit_loads_on_cpu(tmp_path):
    X, rel = _collective()
    model = DCMF(n_components=2, relations=rel, devices={"user": "cuda:0", "item": "cpu"},
                 **FAST).fit(X)
    assert next(model.autoencoders_["user"].parameters()).device.type == "cuda"
    joblib.dump(model, tmp_path / "m.joblib")
    assert next(model.autoencoders_["user"].parameters()).device.type == "cuda"
    loaded = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_allclose(loaded.transform(X), model.transform(X), rtol=1e-4, atol=1e-5)
    assert loaded.transform(X).dtype == np.float32


def test_missing_cuda_device_is_an_error():
    absent = f"cuda:{torch.cuda.device_count()}"  # past the last device on every machine
    with pytest.raises(ValueError, match=f"'{absent}' was requested"):
        DCMF(devices=absent, **FAST).fit(_views())


# ---- errors -----------------------------------------------------------------------------


def test_not_fitted():
    with pytest.raises(NotFittedError):
        DCMF().transform(_views())


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_components": 0}, "n_components"),
        ({"activation": "softplus"}, "activation"),
        ({"batch_size": 0}, "batch_size"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"encoder": "deep"}, "encoder"),
    ],
)
def test_invalid_parameters(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        DCMF(**params).fit(_views())


def test_hidden_layer_sizes_int_and_empty():
    X = _views()
    one = DCMF(**{**FAST, "hidden_layer_sizes": 5}).fit(X)
    assert one.autoencoders_["sample"].inp.out_features == 5
    linear = DCMF(**{**FAST, "hidden_layer_sizes": ()}).fit(X)
    assert linear.transform(X).shape == (30, 10)


@pytest.mark.parametrize("sizes", [(0,), (4, -1), ("a",), (2.5,)])
def test_bad_hidden_layer_sizes(sizes):
    with pytest.raises(ValueError, match="hidden_layer_sizes must be positive integers"):
        DCMF(hidden_layer_sizes=sizes).fit(_views())


def test_shared_matrix_on_the_sample_entity_is_an_error():
    X, _ = _collective()
    X.shared["friends"] = np.ones((40, 40))
    rel = {"ratings": ("user", "item"), "tags": ("user", "tag"), "friends": ("user", "user")}
    with pytest.raises(ValueError, match="Shared matrix 'friends' relates the sample entity"):
        DCMF(relations=rel, **FAST).fit(X)


def test_entity_sizes_must_agree():
    X, rel = _collective()
    X.shared["genres"] = np.ones((24, 3))
    with pytest.raises(ValueError, match=r"'item' has 25 members in relation 'ratings' but 24"):
        DCMF(relations=rel, **FAST).fit(X)


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"nope": 1.0}, r"weights names unknown relations \['nope'\]"),
        ([1.0], "weights has 1 entries; expected one per relation"),
        ({"a": -1.0}, "weight of relation 'a' is -1.0"),
    ],
)
def test_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        DCMF(weights=weights, **FAST).fit(_views())


def test_early_stopping_without_entries_to_hold_out():
    X = MultiModal(sp.random(30, 10, density=0.3, format="csr", random_state=0))
    with pytest.raises(ValueError, match="no relation has any to hold out"):
        DCMF(missing="zero", early_stopping=True, **FAST).fit(X)


def test_transform_checks_the_views():
    model = DCMF(**FAST).fit(_views())
    rng = np.random.RandomState(0)
    with pytest.raises(ValueError, match=r"view 'b' has shape \(n_samples, 3\) but the model "
                                         r"was fitted on \(n_samples, 4\)"):
        model.transform(MultiModal(a=rng.rand(5, 6), b=rng.rand(5, 3)))
    with pytest.raises(ValueError, match="fitted on 2 view"):
        model.transform(MultiModal(a=rng.rand(5, 6)))
    with pytest.raises(ValueError, match="has shape"):
        model.transform(MultiModal(a=rng.rand(5), b=rng.rand(5, 4)))


def test_fit_rejects_bad_views():
    with pytest.raises(ValueError, match="infinite"):
        DCMF(**FAST).fit(MultiModal(a=np.full((5, 2), np.inf)))
    with pytest.raises(TypeError, match="dtype object"):
        DCMF(**FAST).fit(MultiModal(a=np.array([[object()] * 2] * 5)))


@pytest.mark.parametrize(
    "coords, relation, match",
    [
        ([[0, 0]], "nope", r"relation='nope' is neither the name nor the position"),
        ([[0, 0]], 5, "relation=5 is neither"),
        ([0, 0], 0, r"coords must be an integer array of shape \(n_entries, 2\)"),
        ([[0.5, 0]], 0, "coords must be an integer array"),
        ([[30, 0]], 0, r"coords out of range for relation 'a' of shape \(30, 6\)"),
        ([[-1, 0]], 0, "coords out of range"),
    ],
)
def test_predict_entries_errors(coords, relation, match):
    model = DCMF(**FAST).fit(_views())
    with pytest.raises(ValueError, match=match):
        model.predict_entries(coords, relation=relation)


# ---- regularisers against overfitting the ratings (issue 14) ---------------------------


def _planted_completion(seed=0):
    """A rank-3 matrix plus noise, 20% observed; held-out entries of the rest."""
    rng = np.random.RandomState(seed)
    U, V = rng.randn(150, 3), rng.randn(80, 3)
    R = U @ V.T + 0.7 * rng.randn(150, 80)
    obs = rng.rand(*R.shape) < 0.2
    held = (~obs) & (rng.rand(*R.shape) < 0.2)
    rows, cols = obs.nonzero()
    X = sp.csr_matrix((R[rows, cols], (rows, cols)), shape=R.shape)
    return X, R, np.c_[rows, cols], np.c_[held.nonzero()]


def _gap(seed=0, **params):
    """(train mse, held-out mse, mean squared norm of the codes) of an over-sized DCMF."""
    X, R, train, held = _planted_completion(seed)
    params = {"alpha_code": 0.0, **params}  # the paper's loss unless asked
    est = DCMF(8, encoder="neural", hidden_layer_sizes=(32,), max_iter=60, tol=0,
               learning_rate_init=1e-2,
               batch_size=50, random_state=0, **params).fit(X)
    mse = [np.mean((est.predict_entries(c) - R[c[:, 0], c[:, 1]]) ** 2) for c in (train, held)]
    return mse[0], mse[1], float((est.factors_["sample"] ** 2).sum(1).mean())


def test_alpha_code_shrinks_the_codes_and_narrows_the_train_validation_gap():
    train0, held0, norm0 = _gap()
    train1, held1, norm1 = _gap(alpha_code=0.1)
    assert norm1 < 0.9 * norm0
    assert held1 - train1 < 0.8 * (held0 - train0), ((train0, held0), (train1, held1))


def test_input_dropout_narrows_the_train_validation_gap():
    train0, held0, _ = _gap()
    train1, held1, _ = _gap(input_dropout=0.3)
    assert held1 - train1 < 0.85 * (held0 - train0), ((train0, held0), (train1, held1))


def test_input_dropout_corrupts_only_the_encoders_training_input(monkeypatch):
    X, rel = _collective()
    dropped, encoded = dcmf_module._Part.dropped, []

    def spy(part, rate, gen):
        out = dropped(part, rate, gen)
        if part.rows is None:
            x, y = part.X.numpy(), out.X.numpy()
            nz = x != 0
            kept = y[nz] != 0
            encoded.append((nz.sum(), (~kept).sum()))
            np.testing.assert_allclose(y[nz][kept], x[nz][kept] / (1 - rate), rtol=1e-6)
        return out

    monkeypatch.setattr(dcmf_module._Part, "dropped", spy)
    model = DCMF(n_components=2, relations=rel, input_dropout=0.4, **FAST).fit(X)
    total, zeroed = np.sum(encoded, axis=0)
    assert abs(zeroed / total - 0.4) < 0.05, zeroed / total
    # transform reads full rows: deterministic, and the training rows' codes are factors_
    np.testing.assert_array_equal(model.transform(X), model.transform(X))
    np.testing.assert_allclose(model.transform(X), model.factors_["user"], rtol=1e-5,
                               atol=1e-6)
    # the same seed gives the same fit; another seed other corruptions
    again = DCMF(n_components=2, relations=rel, input_dropout=0.4, **FAST).fit(X)
    np.testing.assert_array_equal(again.factors_["user"], model.factors_["user"])


def test_regularisers_survive_persistence_clone_and_devices(tmp_path):
    from sklearn.base import clone

    import mmfactor

    X, rel = _collective()
    params = dict(n_components=2, relations=rel, input_dropout=0.2, alpha_code=0.1,
                  row_scaling="count", lr_schedule="cosine",
                  devices={"user": "cpu", "item": "cpu"}, **FAST)
    model = DCMF(**params).fit(X)
    assert clone(model).get_params()["alpha_code"] == 0.1
    np.testing.assert_array_equal(clone(model).fit(X).factors_["user"], model.factors_["user"])
    mmfactor.save(model, tmp_path / "m.mmf")
    loaded = mmfactor.load(tmp_path / "m.mmf")
    assert loaded.get_params()["input_dropout"] == 0.2
    assert loaded.get_params()["lr_schedule"] == "cosine"
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    # transform scales new rows with the fitted scales: the training rows' codes
    np.testing.assert_allclose(loaded.transform(X), model.factors_["user"], rtol=1e-5,
                               atol=1e-6)
    assert model.loss_terms_["penalty"][-1] > 0


@pytest.mark.parametrize("sparse_layout", [False, True])
def test_row_scaling_feeds_the_encoder_each_rows_mean(monkeypatch, sparse_layout):
    """row_scaling="count": a row enters the encoder as x * (mean count / its count)."""
    if sparse_layout:
        monkeypatch.setattr(dcmf_module, "_DENSE_BATCH", 0)
    X, rel = _collective()
    model = DCMF(n_components=2, relations=rel, row_scaling="count", **FAST).fit(X)
    R = X.views[0].tocsr()
    counts = np.diff(R.indptr)
    # the fitted scale of the ratings' row block is its mean count of entries per row
    assert model._row_scales["0:row"] == pytest.approx(R.nnz / R.shape[0])
    # the encoder's codes equal those of the rows scaled by hand (scale / the row's count)
    net = model.autoencoders_["user"]
    blocks, *_ = model._sample_blocks(X)
    rows = dcmf_module.row_batches(len(counts), 40, ["cpu"])[0]
    parts = [b.batch(rows) for b in blocks]
    with torch.no_grad():
        got = net.encode(parts, blocks)
    manual = []
    for part, b in zip(parts, blocks, strict=True):
        x = (torch.zeros(40, b.width).index_put_((part.rows, part.cols), part.vals)
             if part.rows is not None else part.X)
        if b.kind == "observed":
            n = np.maximum(counts, 1)[:, None] if b.rel == 0 else None
            x = x * torch.as_tensor(model._row_scales[f"{b.rel}:{b.side}"] / n,
                                    dtype=torch.float32)
        manual.append(dcmf_module._Part(X=x))
    for b in blocks:
        b.row_scale = None
    with torch.no_grad():
        want = net.encode(manual, blocks)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


# ---- small data: the samples' linear closed form (encoder="linear", "auto") ------------


def _forty_digits():
    """40 stratified training digits of mfeat (pix+fou), the rest held out; each view
    standardised with the training digits' statistics."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from mmfactor.datasets import load_mfeat

    X, y = load_mfeat(views=["pix", "fou"], return_X_y=True)
    tr, te = train_test_split(np.arange(len(y)), train_size=40, stratify=y, random_state=0)
    views = [np.asarray(v, dtype=np.float64).reshape(len(y), -1) for v in X.views]
    views = [StandardScaler().fit(v[tr]).transform(v) for v in views]
    return MultiModal(pix=views[0], fou=views[1]), y, tr, te


def _probe_scores(Ztr, ytr, Zte, yte):
    """Held-out macro-F1 of a logistic regression (standardised input) and of 5-NN."""
    from sklearn.metrics import f1_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probes = [make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
              KNeighborsClassifier(5)]
    return np.array([f1_score(yte, p.fit(Ztr, ytr).predict(Zte), average="macro")
                     for p in probes])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("k", [10, 39])
def test_defaults_on_forty_samples_are_no_worse_than_pca(k):
    """Issue 14: the defaults must not overfit 40 samples into a worse embedding than PCA.

    The trained network does (its encoder keeps random weights in the directions that
    40 rows do not span, which map new samples far from the training codes); the
    defaults fall back to the linear closed form below ``NEURAL_FROM`` samples.
    """
    from sklearn.decomposition import PCA

    X, y, tr, te = _forty_digits()
    Z = np.hstack(X.views)
    pca = PCA(k, random_state=0).fit(Z[tr])
    want = _probe_scores(pca.transform(Z[tr]), y[tr], pca.transform(Z[te]), y[te])
    scores = {}
    for encoder in ("auto", "neural"):
        model = DCMF(k, encoder=encoder, random_state=0)
        scores[encoder] = _probe_scores(model.fit_transform(X[tr]), y[tr],
                                        model.transform(X[te]), y[te])
    # float32 codes may move a digit or two: 0.01 macro-F1 is about 4 of the 1,960
    assert np.all(scores["auto"] >= want - 0.01), (scores, want)
    assert np.any(scores["neural"] < want - 0.05), (scores, want)  # the failure it fixes


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_linear_encoder_gives_the_principal_components_of_the_views():
    from sklearn.decomposition import PCA

    X = _views(40, seed=3)
    # each view standardized by the mean and standard deviation of its training entries
    stats = [(v[:30].mean(), v[:30].std()) for v in X.views]
    Z = np.hstack([(v - m) / s for v, (m, s) in zip(X.views, stats, strict=True)])
    model = DCMF(4, encoder="linear", random_state=0).fit(X[:30])
    assert model.encoder_ == "linear"
    pca = PCA(4).fit(Z[:30])
    for rows in (slice(0, 30), slice(30, 40)):  # training and new rows
        got, want = model.transform(X[rows]), pca.transform(Z[rows])
        np.testing.assert_allclose(np.abs(got), np.abs(want), rtol=1e-4, atol=1e-4)
    # the decoder maps a code back to the rows' projection on the axes (Eckart-Young)
    recon = np.hstack(model.reconstruct(X[30:]))
    want = pca.inverse_transform(pca.transform(Z[30:]))
    scale = np.concatenate([np.full(v.shape[1], s) for v, (_, s) in zip(X.views, stats,
                                                                        strict=True)])
    shift = np.concatenate([np.full(v.shape[1], m) for v, (m, _) in zip(X.views, stats,
                                                                        strict=True)])
    np.testing.assert_allclose(recon, want * scale + shift, rtol=1e-4, atol=1e-4)
    # the samples' encoder stays as set; the column entities are trained against it
    assert not any(p.requires_grad for p in model.autoencoders_["sample"].parameters())
    assert model.loss_terms_["a"][-1] < model.loss_terms_["a"][0]


def test_auto_encoder_is_linear_below_neural_from(monkeypatch):
    X = _views(30)
    params = {k: v for k, v in FAST.items() if k != "encoder"}
    assert DCMF(2, **params).fit(X).encoder_ == "linear"
    monkeypatch.setattr(dcmf_module, "NEURAL_FROM", 30)
    model = DCMF(2, **params).fit(X)
    assert model.encoder_ == "neural"
    np.testing.assert_array_equal(model.factors_["sample"],
                                  DCMF(2, **FAST).fit(X).factors_["sample"])


@pytest.mark.parametrize("row_scaling", ["none", "count"])
def test_linear_encoder_reads_the_rows_as_the_network_does(monkeypatch, row_scaling):
    """The closed form sees missing entries at 0 and row_scaling, in either batch layout."""
    X, rel = _collective()
    params = dict(n_components=3, relations=rel, encoder="linear", row_scaling=row_scaling,
                  max_iter=3, tol=0, random_state=0)
    dense = DCMF(**params).fit(X)
    monkeypatch.setattr(dcmf_module, "_DENSE_BATCH", 0)
    sparse = DCMF(**params).fit(X)
    np.testing.assert_allclose(sparse.factors_["user"], dense.factors_["user"], atol=1e-5)
    # the training rows' codes: the top principal components of what the encoder reads
    blocks, *_ = dense._sample_blocks(X)
    rows = dcmf_module.row_batches(40, 40, ["cpu"])[0]
    A = torch.cat([dcmf_module._dense_rows(b.batch(rows), b) for b in blocks], 1).double()
    A = A - A.mean(0)
    S = torch.linalg.svdvals(A)[:3].numpy()
    np.testing.assert_allclose(np.sqrt(40 - 1) * dense.factors_["user"].std(0, ddof=1), S,
                               rtol=1e-4)


def test_linear_encoder_survives_persistence_clone_and_devices(tmp_path):
    from sklearn.base import clone

    import mmfactor

    X, rel = _collective()
    model = DCMF(n_components=2, relations=rel, encoder="linear",
                 devices={"user": "cpu", "item": "cpu"}, max_iter=3, tol=0,
                 random_state=0).fit(X)
    assert clone(model).get_params()["encoder"] == "linear"
    np.testing.assert_array_equal(clone(model).fit(X).factors_["user"], model.factors_["user"])
    mmfactor.save(model, tmp_path / "m.mmf")
    loaded = mmfactor.load(tmp_path / "m.mmf")
    assert loaded.encoder_ == "linear"
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    np.testing.assert_allclose(loaded.transform(X), model.factors_["user"], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_schedule_sets_every_optimizers_step_size(adam_step_sizes, schedule):
    X, rel = _collective()
    seen = adam_step_sizes
    model = DCMF(n_components=2, relations=rel, lr_schedule=schedule, batch_size=40,
                 learning_rate_init=0.01, **{**FAST, "max_iter": 4}).fit(X)
    # one step per entity type and epoch (every type fits in one batch of 40)
    per_epoch = np.array(seen).reshape(4, len(model.entities_))
    want = (0.01 * 0.5 * (1 + np.cos(np.pi * np.arange(4) / 4)) if schedule == "cosine"
            else np.full(4, 0.01))
    np.testing.assert_allclose(per_epoch, np.repeat(want[:, None], len(model.entities_), 1))


def test_unsupported_columns_are_the_collapsed_ones():
    rng = np.random.RandomState(0)
    Z = rng.randn(50, 5).astype(np.float32)
    Z[:, 3] = 0.7 + 1e-8 * rng.randn(50)  # collapsed at float32 round-off
    dead, values = dcmf_module._unsupported_columns(Z)
    np.testing.assert_array_equal(dead, [3])
    np.testing.assert_allclose(values, [Z[:, 3].astype(np.float64).mean()], rtol=1e-6)
    assert len(dcmf_module._unsupported_columns(rng.randn(50, 5))[0]) == 0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_transform_gives_collapsed_columns_their_training_value():
    # training views of rank 2: the linear code's columns past the second have no spread;
    # new rows off that plane must not reach the embedding through them
    rng = np.random.RandomState(0)
    T = rng.randn(40, 2)
    X = [T @ rng.randn(2, 9), T @ rng.randn(2, 7)]
    est = DCMF(5, encoder="linear", random_state=0).fit(X)
    Ztr = est.transform(X)
    dead, values = est._unsupported
    np.testing.assert_array_equal(dead, [2, 3, 4])
    new = [rng.randn(10, 9), rng.randn(10, 7)]
    Z = est.transform(new)
    np.testing.assert_array_equal(Z[:, dead], np.broadcast_to(values, (10, 3)))
    raw = np.concatenate([dcmf_module.as_numpy(c[:, : est._k])
                          for _, c, *_ in est._chunks(new)]) @ est._rotation
    assert np.abs(raw[:, dead]).max() > 1e3 * np.abs(Ztr[:, dead] - values).max()
    np.testing.assert_array_equal(Z[:, :2], raw[:, :2])  # the supported ones untouched
