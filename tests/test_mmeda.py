import pickle

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from mmfactor import MMEDA, MultiModal
from mmfactor.datasets import load_mfeat
from mmfactor.neural import ConvAutoencoder, DenseAutoencoder

TINY = dict(n_components=4, encoder="neural", conv_channels=(4,), hidden_layer_sizes=(16,),
            view_components=6, contrastive=0.0, view_dropout=0.0, input_dropout=0.0,
            fusion_layer_sizes=(12,), batch_size=16, max_iter=4, tol=0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these models are tiny: one thread is faster than two fighting over a busy CPU
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(n=48, seed=0):
    rng = np.random.RandomState(seed)
    img = rng.rand(n, 1, 8, 7)
    vec = rng.randn(n, 10)
    return MultiModal(img=img, vec=vec)


@pytest.mark.parametrize("variant", ["I", "II"])
def test_fit_transform_shapes_terms_and_new_rows(variant):
    X = _data()
    model = MMEDA(variant=variant, random_state=0, **TINY)
    Z = model.fit_transform(X[:40])
    assert Z.shape == (40, 4) and Z.dtype == np.float32
    # transform on unseen rows, deterministic (eval mode), equal to fit_transform's output
    Znew = model.transform(X[40:])
    assert Znew.shape == (8, 4) and np.isfinite(Znew).all()
    np.testing.assert_array_equal(model.transform(X[40:]), Znew)
    np.testing.assert_array_equal(model.transform(X[:40]), Z)
    expected = {"img", "vec"} if variant == "I" else {"img", "vec", "vec.T", "vec.ZV"}
    assert set(model.loss_terms_) == expected
    assert len(model.loss_curve_) == model.n_iter_ == 4
    for term in expected:
        assert len(model.loss_terms_[term]) == 4
    # the total is the sum of the (unit-weight) terms, averaged over the same batches
    total = sum(np.array(model.loss_terms_[t]) for t in expected)
    np.testing.assert_allclose(model.loss_curve_, total, rtol=1e-4)
    assert model.column_embeddings_["vec"].shape == (10, 4)
    assert model.n_features_in_ == 56 + 10
    assert list(model.get_feature_names_out()) == [f"mmeda{i}" for i in range(4)]


def test_training_reduces_the_loss_and_learns_the_digits():
    X, y = load_mfeat(views=["pix", "fou"], return_X_y=True)
    idx = np.arange(len(y))[::4]
    tr, te = train_test_split(idx, test_size=0.25, stratify=y[idx], random_state=0)
    model = MMEDA(n_components=10, variant="I", encoder="neural", conv_channels=(8,),
                  hidden_layer_sizes=(64,),
                  view_components=16, fusion_layer_sizes=(32,), max_iter=15, tol=0,
                  batch_size=32, input_map=None, random_state=0)
    Z = model.fit(X[tr]).transform(X)
    assert model.loss_curve_[-1] < 0.7 * model.loss_curve_[0]
    acc = LogisticRegression(max_iter=500).fit(Z[tr], y[tr]).score(Z[te], y[te])
    assert acc > 0.7  # ten classes: chance is 0.1


def test_same_random_state_same_bits_and_global_rng_untouched():
    X = _data()
    state = torch.get_rng_state()
    a = MMEDA(random_state=3, **TINY).fit_transform(X)
    assert torch.equal(torch.get_rng_state(), state)
    b = MMEDA(random_state=3, **TINY).fit_transform(X)
    c = MMEDA(random_state=4, **TINY).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_conv_views_of_any_order_and_size():
    rng = np.random.RandomState(0)
    n = 20
    X = MultiModal(seq=rng.rand(n, 2, 11), img=rng.rand(n, 3, 9, 13),
                   vol=rng.rand(n, 1, 5, 6, 7), a=rng.rand(n, 5), b=rng.rand(n, 3))
    model = MMEDA(variant="I", random_state=0, **dict(TINY, conv_channels=(2, 3)))
    Z = model.fit_transform(X)
    assert Z.shape == (n, 4)
    assert model.view_kinds_ == ["conv", "conv", "conv", "dense", "dense"]
    rec = model.reconstruct(X)
    assert [r.shape for r in rec] == [v.shape for v in X.views]
    inv = model.inverse_transform(Z)
    assert [r.shape for r in inv] == [v.shape for v in X.views]
    np.testing.assert_allclose(inv[0], rec[0], rtol=1e-4, atol=1e-5)  # I decodes from Z


def test_inverse_transform_is_z_times_column_embeddings():
    X = _data()
    model = MMEDA(random_state=0, **TINY).fit(X)
    Z = model.transform(X)
    inv = model.inverse_transform(Z)
    V = model.column_embeddings_["vec"]
    expect = (Z.astype(np.float64) @ V.T) * model.view_scales_[1] + model.view_means_[1]
    np.testing.assert_allclose(inv[1], expect, rtol=1e-4, atol=1e-4)
    rec = model.reconstruct(X)
    # the image is decoded from Z; in II the matrix's X' is its own autoencoder's output
    np.testing.assert_allclose(rec[0], inv[0], rtol=1e-4, atol=1e-5)
    assert rec[1].shape == X.vec.shape and not np.allclose(rec[1], inv[1], atol=1e-3)


def test_score_is_minus_mean_standardised_error():
    X = _data()
    model = MMEDA(random_state=0, **TINY).fit(X)
    rec = model.reconstruct(X)
    mses = [np.mean(((r - v) / s) ** 2) for r, v, s in
            zip(rec, X.views, model.view_scales_, strict=True)]
    assert model.score(X) == pytest.approx(-np.mean(mses), rel=1e-4)
    longer = MMEDA(random_state=0, **dict(TINY, max_iter=40)).fit(X)
    assert longer.score(X) > model.score(X)


def test_column_encoder_width_is_bounded():
    X = _data(n=60)
    model = MMEDA(random_state=0, max_column_rows=16, **TINY).fit(X)
    col_ae = model.module_.col_aes["1"]
    assert col_ae.n_features == 16
    assert model.column_embeddings_["vec"].shape == (10, 4)
    # the column blocks: more columns than batch_size are cycled through
    wide = MultiModal(img=X.img, vec=np.random.RandomState(1).randn(60, 40))
    MMEDA(random_state=0, max_column_rows=16, **TINY).fit(wide)


def test_sparse_and_torch_views_match_dense():
    X = _data()
    vec = X.vec.copy()
    vec[np.abs(vec) < 0.8] = 0
    dense = MMEDA(random_state=0, **TINY).fit_transform(MultiModal(img=X.img, vec=vec))
    sparse = MMEDA(random_state=0, **TINY).fit_transform(
        MultiModal(img=X.img, vec=sp.csr_matrix(vec)))
    tensor = MMEDA(random_state=0, **TINY).fit_transform(
        MultiModal(img=torch.as_tensor(X.img), vec=torch.as_tensor(vec)))
    np.testing.assert_allclose(sparse, dense, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tensor, dense, rtol=1e-4, atol=1e-5)


def test_standardize_option_and_input_untouched():
    X = _data()
    before = [v.copy() for v in X.views]
    model = MMEDA(random_state=0, **TINY).fit(X)
    model.transform(X)
    for a, b in zip(before, X.views, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(model.view_means_[1], X.vec.mean(0))
    np.testing.assert_allclose(model.view_scales_[1], X.vec.std(0))
    assert model.view_means_[0].shape == (1, 1, 1)  # per channel for images
    raw = MMEDA(random_state=0, standardize=False, **TINY).fit(X)
    assert np.all(raw.view_means_[1] == 0) and np.all(raw.view_scales_[1] == 1)


def test_loss_weights():
    X = _data()
    m = MMEDA(random_state=0, loss_weights={"column": 0.0, "cross": 2.0, "img": 3.0},
              **TINY).fit(X)
    total = (3 * np.array(m.loss_terms_["img"]) + np.array(m.loss_terms_["vec"])
             + 2 * np.array(m.loss_terms_["vec.ZV"]))
    np.testing.assert_allclose(m.loss_curve_, total, rtol=1e-4)


def test_warm_start_continues_and_early_stopping():
    X = _data()
    m = MMEDA(random_state=0, warm_start=True, **TINY).fit(X)
    first = m.transform(X)
    m.fit(X)
    assert m.n_iter_ == 8 and len(m.loss_curve_) == 8
    assert not np.array_equal(first, m.transform(X))
    cold = MMEDA(random_state=0, **TINY).fit(X).fit(X)
    assert cold.n_iter_ == 4
    with pytest.raises(ValueError, match="column encoders read 48 rows"):
        m.fit(X[:10])
    es = MMEDA(random_state=0, early_stopping=True, **dict(TINY, max_iter=200, tol=0.5,
                                                          n_iter_no_change=2)).fit(X)
    assert es.n_iter_ < 200 and len(es.loss_terms_["validation"]) == es.n_iter_


def test_pipeline_and_gridsearch_on_multimodal():
    X, y = load_mfeat(views=["pix", "fou"], return_X_y=True)
    X, y = X[::20], y[::20]
    pipe = Pipeline([("emb", MMEDA(random_state=0, **TINY)),
                     ("clf", LogisticRegression(max_iter=200))])
    search = GridSearchCV(pipe, {"emb__n_components": [2, 4]}, cv=2).fit(X, y)
    assert search.predict(X).shape == y.shape
    # an unsupervised grid search maximises score()
    GridSearchCV(MMEDA(random_state=0, **TINY), {"variant": ["I", "II"]}, cv=2).fit(X)


def test_pickle_joblib_and_clone(tmp_path):
    X = _data()
    model = MMEDA(random_state=0, **TINY).fit(X)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.transform(X), model.transform(X))
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").transform(X),
                                  model.transform(X))
    assert "module_" not in clone(model).__dict__


def test_devices_per_view_on_cpu():
    X = _data()
    a = MMEDA(random_state=0, devices=["cpu", "cpu"], **TINY).fit_transform(X)
    b = MMEDA(random_state=0, devices={"vec": "cpu"}, **TINY).fit_transform(X)
    np.testing.assert_array_equal(a, b)


def test_missing_cuda_device_is_a_clear_error():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"cuda:{n}' was requested"):
        MMEDA(random_state=0, devices=["cpu", f"cuda:{n}"], **TINY).fit(_data())


@pytest.mark.cuda
def test_mixed_cpu_cuda_and_load_on_cpu(tmp_path):
    X = _data()
    cpu = MMEDA(random_state=0, **TINY).fit(X)
    mixed = MMEDA(random_state=0, devices=["cuda:0", "cpu"], **TINY).fit(X)
    assert next(mixed.module_.view_aes[0].parameters()).device.type == "cuda"
    assert next(mixed.module_.view_aes[1].parameters()).device.type == "cpu"
    np.testing.assert_allclose(mixed.transform(X), cpu.transform(X), atol=1e-3)
    state = pickle.dumps(mixed)
    assert next(mixed.module_.view_aes[0].parameters()).device.type == "cuda"
    loaded = pickle.loads(state)
    np.testing.assert_allclose(loaded.transform(X), mixed.transform(X), atol=1e-5)


def test_modules_public_api():
    ae = ConvAutoencoder((2, 16, 15), (4, 8), (16,), 5)
    code, rec = ae(torch.zeros(3, 2, 16, 15))
    assert code.shape == (3, 5) and rec.shape == (3, 2, 16, 15)
    dense = DenseAutoencoder(7, (5,), 3)
    assert dense.decode(dense.encode(torch.zeros(2, 7))).shape == (2, 7)


@pytest.mark.parametrize(
    "X, params, err, match",
    [
        (MultiModal(img=np.zeros((10, 1, 1, 8)), v=np.zeros((10, 2))), {}, ValueError,
         r"View 'img' has spatial shape \(1, 8\), too small .* at least 2 entries"),
        (MultiModal(img=np.zeros((10, 1, 8, 8)), v=np.zeros((10, 2))),
         {"conv_channels": (4, 4, 4, 4)}, ValueError, "at least 16 entries"),
        (MultiModal(img=np.zeros((10, 1, 8, 8)), v=np.where(np.eye(10, 2), np.nan, 0)), {},
         ValueError, r"View 'v' of shape \(10, 2\) has NaN"),
        ([np.zeros((10, 1, 8, 8)), np.zeros((9, 2))], {}, ValueError,
         "view 'view1' has 9"),
        (np.zeros((10, 1, 2, 2, 2, 2)), {}, ValueError, "at most 5 dimensions"),
        (_data(), {"loss_weights": {"views": 1.0}}, ValueError, "unknown keys"),
        (_data(), {"loss_weights": {"view": -1.0}}, ValueError, "non-negative"),
        (_data(), {"hidden_layer_sizes": (16, 0)}, ValueError, "hidden_layer_sizes must"),
        (_data(), {"conv_channels": ()}, ValueError, "conv_channels must"),
        (_data(), {"variant": "III"}, ValueError, "'variant' parameter"),
        (_data(), {"early_stopping": True, "validation_fraction": 0.99}, ValueError,
         "leaves 0 training row"),
    ],
)
def test_bad_input_errors(X, params, err, match):
    kw = dict(TINY, conv_channels=(4,))
    kw.update(params)
    with pytest.raises(err, match=match):
        MMEDA(random_state=0, **kw).fit(X)


def test_transform_errors():
    X = _data()
    model = MMEDA(random_state=0, **TINY).fit(X)
    with pytest.raises(ValueError, match=r"view 'vec' has shape \(n_samples, 9\)"):
        model.transform(MultiModal(img=X.img, vec=X.vec[:, :9]))
    with pytest.raises(ValueError, match=r"got 1 view\(s\)"):
        model.transform(MultiModal(img=X.img))
    with pytest.raises(ValueError, match="has NaN"):
        model.transform(MultiModal(img=X.img, vec=np.full_like(X.vec, np.nan)))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 4\); got \(3, 2\)"):
        model.inverse_transform(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        model.inverse_transform(np.full((3, 4), np.nan))


def test_pca_rotation_turns_z_and_keeps_every_reconstruction():
    X = _data()
    plain = MMEDA(random_state=0, rotation=None, **TINY).fit(X)
    turned = MMEDA(random_state=0, **TINY).fit(X)
    assert plain.rotation_ is None
    R = turned.rotation_
    np.testing.assert_allclose(R.T @ R, np.eye(4), atol=1e-10)
    Z0, Z1 = plain.transform(X), turned.transform(X)
    np.testing.assert_allclose(Z1, Z0 @ R, rtol=1e-4, atol=1e-5)
    cov = np.cov(Z1.T.astype(np.float64))
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-4)
    assert np.all(np.diff(np.diag(cov)) <= 1e-6)
    for a, b in zip(plain.reconstruct(X), turned.reconstruct(X), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(plain.inverse_transform(Z0), turned.inverse_transform(Z1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert plain.score(X) == pytest.approx(turned.score(X), rel=1e-5)


@pytest.mark.parametrize("rotation", ["varimax", "ica"])
def test_varimax_and_ica_rotations_map_z_and_keep_every_reconstruction(rotation):
    X = _data()
    plain = MMEDA(random_state=0, rotation=None, **TINY).fit(X)
    turned = MMEDA(random_state=0, rotation=rotation, **TINY).fit(X)
    W = turned.rotation_
    assert W.shape == (4, 4) and np.isfinite(W).all()
    Z0, Z1 = plain.transform(X), turned.transform(X)
    np.testing.assert_allclose(Z1, Z0 @ W, rtol=1e-4, atol=1e-4)
    if rotation == "varimax":  # orthogonal
        np.testing.assert_allclose(W.T @ W, np.eye(4), atol=1e-10)
    else:  # whitened: unit-variance, uncorrelated coordinates on the training rows
        np.testing.assert_allclose(np.cov(Z1.T.astype(np.float64)), np.eye(4), atol=1e-3)
    for a, b in zip(plain.reconstruct(X), turned.reconstruct(X), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(plain.inverse_transform(Z0), turned.inverse_transform(Z1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert plain.score(X) == pytest.approx(turned.score(X), rel=1e-5)
    # deterministic, and the pickled model decodes the same
    again = MMEDA(random_state=0, rotation=rotation, **TINY).fit(X)
    np.testing.assert_array_equal(again.rotation_, W)
    back = pickle.loads(pickle.dumps(turned))
    for a, b in zip(back.inverse_transform(Z1), turned.inverse_transform(Z1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@parametrize_with_checks(
    [MMEDA(n_components=2, hidden_layer_sizes=(8,), view_components=4,
           fusion_layer_sizes=(8,), max_iter=3, tol=0, random_state=0),
     MMEDA(n_components=2, encoder="neural", hidden_layer_sizes=(8,), view_components=4,
           fusion_layer_sizes=(8,), max_iter=3, tol=0, view_dropout=0.3, input_dropout=0.2,
           lr_schedule="cosine", random_state=0)]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---- issue 14: the contrastive term and the small-data path -------------------------


def test_info_nce_matches_a_direct_float64_computation():
    from mmfactor.neural._mmeda import contrastive_loss, info_nce

    rng = np.random.RandomState(0)
    a, b, c = (torch.as_tensor(rng.randn(7, 5), dtype=torch.float64) for _ in range(3))
    an = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True)
    bn = b.numpy() / np.linalg.norm(b.numpy(), axis=1, keepdims=True)
    logits = an @ bn.T / 0.3

    def ce(lg):  # mean over rows of -log softmax at the diagonal
        lg = lg - lg.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(lg).sum(1)) - np.diag(lg)))

    expected = 0.5 * (ce(logits) + ce(logits.T))
    assert float(info_nce(a, b, 0.3)) == pytest.approx(expected, rel=1e-12)
    # codes that carry no information cost log(batch size)
    same = torch.ones(7, 5, dtype=torch.float64)
    assert float(info_nce(same, same, 0.3)) == pytest.approx(np.log(7))
    pairs = [info_nce(a, b, 0.3), info_nce(a, c, 0.3), info_nce(b, c, 0.3)]
    assert float(contrastive_loss([a, b, c], 0.3)) == pytest.approx(float(sum(pairs)) / 3)


def _two_views_of_one_latent(n=200, seed=0):
    """Two views, each a different nonlinear function of the same latent, plus noise."""
    rng = np.random.RandomState(seed)
    s = rng.randn(n, 3)
    a = np.tanh(s @ rng.randn(3, 12)) + 0.3 * rng.randn(n, 12)
    b = (s @ rng.randn(3, 9)) ** 2 / 3 + s @ rng.randn(3, 9) + 0.3 * rng.randn(n, 9)
    return MultiModal(a=a, b=b)


def _view_codes(model, X):
    """Each view's code (the view encoders' output) of ``X``, in eval mode."""
    from mmfactor.neural._mmeda import _as_float32

    with torch.no_grad():
        return [ae.encode((_as_float32(v, "cpu") - torch.as_tensor(m, dtype=torch.float32))
                          / torch.as_tensor(sd, dtype=torch.float32)).numpy()
                for ae, v, m, sd in zip(model.module_.view_aes, X.views, model.view_means_,
                                        model.view_scales_, strict=True)]


def test_contrastive_term_pulls_the_two_views_of_a_sample_together():
    X = _two_views_of_one_latent()
    kw = dict(n_components=4, encoder="neural", hidden_layer_sizes=(32,), view_components=8,
              fusion_layer_sizes=(16,), batch_size=32, max_iter=40, tol=0,
              temperature=0.5, view_dropout=0.0, input_dropout=0.0, random_state=0)
    plain = MMEDA(contrastive=0.0, **kw).fit(X)
    pulled = MMEDA(contrastive=1.0, **kw).fit(X)
    assert "contrastive" in pulled.loss_terms_ and "contrastive" not in plain.loss_terms_
    assert pulled.loss_terms_["contrastive"][-1] < 0.7 * pulled.loss_terms_["contrastive"][0]

    def matched(model):
        """Share of samples whose code in view a is most similar to its own code in b."""
        ca, cb = _view_codes(model, X)
        ca /= np.linalg.norm(ca, axis=1, keepdims=True)
        cb /= np.linalg.norm(cb, axis=1, keepdims=True)
        return np.mean((ca @ cb.T).argmax(1) == np.arange(len(ca)))

    # with the term, a sample's two view codes find each other among 200 (chance: 0.005)
    assert matched(pulled) > 0.1 and matched(pulled) > 5 * matched(plain)


def test_small_data_default_is_the_linear_closed_form_and_not_worse_than_pca():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.RandomState(0)
    s = rng.randn(40, 3)
    X = MultiModal(a=s @ rng.randn(3, 15) + 0.1 * rng.randn(40, 15),
                   b=s @ rng.randn(3, 6) + 0.1 * rng.randn(40, 6))
    model = MMEDA(n_components=3, random_state=0).fit(X)
    assert model.encoder_ == "linear" and model.n_iter_ == 1
    Z = model.transform(X)
    F = StandardScaler().fit_transform(np.hstack(X.views))
    P = PCA(3).fit_transform(F)
    # the same subspace as PCA of the standardised views side by side
    assert LinearRegression().fit(Z, P).score(Z, P) > 1 - 1e-6
    # the planted latent is recovered as well as PCA recovers it
    r2 = LinearRegression().fit(Z, s).score(Z, s)
    assert r2 >= LinearRegression().fit(P, s).score(P, s) - 1e-6 and r2 > 0.99
    # the reported loss is the reconstruction error, from a direct float64 computation
    rec = model.inverse_transform(Z)
    mse = [np.mean(((r - v) / sd) ** 2) for r, v, sd in zip(rec, X.views, model.view_scales_,
                                                               strict=True)]
    assert model.loss_terms_["a"][0] == pytest.approx(mse[0], rel=1e-4)
    assert model.loss_curve_[0] == pytest.approx((15 * mse[0] + 6 * mse[1]) / 21, rel=1e-4)
    # the neural networks trained on the same 40 rows recover less of it
    neural = MMEDA(n_components=3, encoder="neural", random_state=0).fit(X)
    Zn = neural.transform(X)
    assert LinearRegression().fit(Zn, s).score(Zn, s) < r2


def test_linear_model_with_an_image_view_round_trips(tmp_path):
    import mmfactor

    X = _data()
    model = MMEDA(n_components=4, encoder="linear", random_state=0).fit(X)
    assert model.encoder_ == "linear" and set(model.column_embeddings_) == {"vec"}
    recon = model.reconstruct(X)
    assert recon[0].shape == X.views[0].shape
    path = tmp_path / "linear.mmf"
    mmfactor.save(model, path)
    loaded = mmfactor.load(path)
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).transform(X),
                                  model.transform(X))


# ---- issue 18: warm starts ----------------------------------------------------------


def test_interrupted_warm_refit_keeps_the_previous_model(monkeypatch):
    import mmfactor.neural._mmeda as mmeda_module

    X = _data()
    model = MMEDA(random_state=0, warm_start=True, **TINY).fit(X)
    before = model.transform(X)
    state = {k: v.clone() for k, v in model.module_.state_dict().items()}
    real_loop = mmeda_module.fit_loop
    calls = []

    def interrupted(step, **kw):
        def step_then_interrupt(epoch):
            calls.append(epoch)
            step(epoch)  # the weights move in place before the interrupt arrives
            raise KeyboardInterrupt

        return real_loop(step_then_interrupt, **kw)

    monkeypatch.setattr(mmeda_module, "fit_loop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    assert calls == [0]
    np.testing.assert_array_equal(model.transform(X), before)
    assert model.n_iter_ == 4 and len(model.loss_curve_) == 4
    assert all(torch.equal(v, state[k]) for k, v in model.module_.state_dict().items())
    # a refit that fails on its input keeps it too
    with pytest.raises(ValueError):
        model.fit(MultiModal(img=X.views[0], vec=X.views[1][:, :5]))
    np.testing.assert_array_equal(model.transform(X), before)


@pytest.mark.parametrize("params", [{"n_components": 3}, {"hidden_layer_sizes": (8,)},
                                    {"activation": "tanh"}, {"view_components": 5}])
def test_warm_start_rebuilds_the_network_when_the_architecture_changes(params):
    X = _data()
    model = MMEDA(random_state=0, warm_start=True, **TINY).fit(X)
    old = model.module_
    model.set_params(**params).fit(X)
    assert model.module_ is not old and model.n_iter_ == 4  # a new network, trained afresh
    fresh = MMEDA(random_state=0, **dict(TINY, **params)).fit(X)
    np.testing.assert_array_equal(model.transform(X), fresh.transform(X))
    assert model.transform(X).shape == (len(X), params.get("n_components", 4))
    if "activation" in params:
        assert any(isinstance(m, torch.nn.Tanh) for m in model.module_.modules())
    # unchanged architecture: the next fit continues
    model.fit(X)
    assert model.n_iter_ == 8


# ---- issue 14: view dropout (cross-view prediction), denoising, learning-rate schedule --


def _standardised(model, X):
    return [(v - m) / sd for v, m, sd in zip(X.views, model.view_means_, model.view_scales_,
                                             strict=True)]


def test_view_dropout_trains_z_to_predict_a_hidden_view_from_the_other():
    from mmfactor.neural._mmeda import _as_float32

    X = _two_views_of_one_latent(n=300)
    kw = dict(n_components=4, variant="I", encoder="neural", hidden_layer_sizes=(32,),
              view_components=8, fusion_layer_sizes=(16,), batch_size=32, max_iter=40,
              tol=0, contrastive=0.0, input_dropout=0.0, input_map=None, random_state=0,
              devices=["cpu", "cpu"])
    plain = MMEDA(view_dropout=0.0, **kw).fit(X)
    masked = MMEDA(view_dropout=0.5, **kw).fit(X)

    def b_from_a(model):
        """MSE of view b (standardised) decoded from Z when b's code is hidden."""
        a, b = _standardised(model, X)
        keep = [torch.ones(len(a), 1), torch.zeros(len(a), 1)]
        with torch.no_grad():
            Z, _ = model._encode([_as_float32(a, "cpu"), _as_float32(b, "cpu")], keep=keep)
            rec = model._decode_from_z(Z, 1).numpy()
        return np.mean((rec - b) ** 2)

    # Z of view a alone reconstructs view b: the model trained with hidden views learned
    # it (both views are functions of one latent), the plain one did not
    assert b_from_a(masked) < 0.6 * b_from_a(plain)
    # with every view present, both reconstruct b; transform is deterministic (eval mode)
    assert np.array_equal(masked.transform(X), masked.transform(X))


def test_input_dropout_denoises_a_view_with_masked_entries():
    rng = np.random.RandomState(0)
    s = rng.randn(300, 3)
    X = MultiModal(a=s @ rng.randn(3, 20) + 0.1 * rng.randn(300, 20),
                   b=s @ rng.randn(3, 8) + 0.1 * rng.randn(300, 8))
    kw = dict(n_components=3, variant="II", encoder="neural", hidden_layer_sizes=(32,),
              view_components=6, fusion_layer_sizes=(16,), batch_size=32, max_iter=40,
              tol=0, contrastive=0.0, view_dropout=0.0, input_map=None, random_state=0)
    plain = MMEDA(input_dropout=0.0, **kw).fit(X)
    denoising = MMEDA(input_dropout=0.5, **kw).fit(X)
    # half of view a's entries replaced by the column mean (0 once standardised)
    hide = np.random.RandomState(1).rand(*X.views[0].shape) < 0.5
    a_masked = np.where(hide, X.views[0].mean(0), X.views[0])
    Xm = MultiModal(a=a_masked, b=X.views[1])

    def error(model):
        """MSE of the reconstruction of the clean view a (standardised, II: a's own AE)."""
        rec = model.reconstruct(Xm)[0]
        return np.mean(((rec - X.views[0]) / model.view_scales_[0]) ** 2)

    assert error(denoising) < 0.7 * error(plain)


def test_cosine_schedule_decays_the_learning_rate_per_epoch(adam_step_sizes):
    seen = adam_step_sizes
    X = _data()
    MMEDA(**dict(TINY, max_iter=4, batch_size=48, learning_rate_init=0.01),
          lr_schedule="cosine", random_state=0).fit(X)
    expected = [0.01 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)]
    assert seen == pytest.approx(expected)
    seen.clear()
    MMEDA(**dict(TINY, max_iter=4, batch_size=48, learning_rate_init=0.01),
          random_state=0).fit(X)
    assert seen == pytest.approx([0.01] * 4)


@pytest.mark.parametrize("params", [dict(view_dropout=0.3), dict(input_dropout=0.2),
                                    dict(lr_schedule="cosine"),
                                    dict(input_map="rbf", n_landmarks=8)])
def test_new_training_options_are_seeded_persist_and_clone(params, tmp_path):
    import mmfactor

    X = _data()
    a = MMEDA(**dict(TINY, **params), random_state=0).fit(X)
    b = MMEDA(**dict(TINY, **params), random_state=0).fit(X)
    assert np.array_equal(a.transform(X), b.transform(X))
    assert clone(a).get_params() == a.get_params()
    mmfactor.save(a, tmp_path / "m.joblib")
    assert np.array_equal(mmfactor.load(tmp_path / "m.joblib").transform(X), a.transform(X))


def test_auto_encoder_compares_both_on_held_out_rows_between_500_and_1000_rows():
    from mmfactor.neural._mmeda import LINEAR_BELOW, NEURAL_FROM

    rng = np.random.RandomState(0)
    kw = dict(n_components=3, hidden_layer_sizes=(4,), view_components=2,
              fusion_layer_sizes=(4,), max_iter=1, max_column_rows=8, random_state=0)

    def fitted(n):
        s = rng.randn(n, 3)  # a planted linear latent: the closed form reconstructs it
        X = MultiModal(a=s @ rng.randn(3, 20) + 0.05 * rng.randn(n, 20),
                       b=s @ rng.randn(3, 6) + 0.05 * rng.randn(n, 6))
        return MMEDA(**kw).fit(X)

    assert fitted(40).encoder_ == "linear"  # tens of samples: always linear
    below = fitted(NEURAL_FROM - 1)
    assert below.encoder_ == "linear" and below.encoder_scores_ is None
    above = fitted(LINEAR_BELOW)
    assert above.encoder_ == "neural" and above.encoder_scores_ is None
    between = fitted(NEURAL_FROM)
    scores = between.encoder_scores_
    assert set(scores) == {"linear", "neural"}
    assert between.encoder_ == max(scores, key=scores.get) == "linear"
    assert scores["linear"] > scores["neural"]  # the one-epoch network reconstructs worse


# ---- issue 14, session 3: the RBF input map ---------------------------------------------


def test_rbf_input_map_reads_nystroem_features_and_decodes_the_view_itself():
    from mmfactor.neural._mmeda import _MappedAutoencoder

    X = _data(n=40)
    vec = np.asarray(X.views[1].data)
    model = MMEDA(**dict(TINY, input_map="rbf", n_landmarks=12), random_state=0,
                  devices=["cpu", "cpu"]).fit(X)
    ae = model.module_.view_aes[1]  # the matrix view; the image keeps its conv encoder
    assert isinstance(ae, _MappedAutoencoder)
    assert isinstance(model.module_.view_aes[0], ConvAutoencoder)
    feats = ae.features
    L = feats.landmarks.double().numpy()
    assert L.shape == (12, 10)
    # the landmarks are standardised training rows
    std = (vec - model.view_means_[1]) / model.view_scales_[1]
    assert all(np.abs(std - row).max(1).min() < 1e-5 for row in L)
    # gamma: the median heuristic, computed directly in float64
    d2 = ((L[:, None] - L[None]) ** 2).sum(-1)
    gamma = 1.0 / np.median(d2[~np.eye(12, dtype=bool)])
    assert model.input_gammas_ == {"vec": pytest.approx(gamma, rel=1e-5)}
    # Nystroem: the features reproduce the kernel exactly between landmarks
    with torch.no_grad():
        phi = feats(feats.landmarks).double().numpy()
    np.testing.assert_allclose(phi @ phi.T, np.exp(-gamma * d2), atol=2e-3)
    assert ae.encoder[0].in_features == 12 and ae.decoder[-1].out_features == 10
    assert [r.shape for r in model.inverse_transform(model.transform(X))] == [
        (40, 1, 8, 7), (40, 10)]
    plain = MMEDA(**dict(TINY, input_map=None), random_state=0).fit(X)
    assert isinstance(plain.module_.view_aes[1], DenseAutoencoder)
    assert plain.input_gammas_ == {}


def test_rbf_input_map_separates_rings_that_no_linear_map_of_the_view_separates():
    # a planted nonlinear view: the class is the radius of a ring (x, y), which no linear
    # function of the view separates; the features the encoder reads do
    rng = np.random.RandomState(0)
    n = 600
    y = rng.randint(0, 2, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.where(y == 1, 3.0, 1.0) + 0.1 * rng.randn(n)
    ring = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
    view = ring @ rng.randn(2, 6)
    X = MultiModal(ring=view, noise=rng.randn(n, 4))
    tr, te = np.arange(400), np.arange(400, n)

    def accuracy(Z):
        return LogisticRegression(max_iter=2000).fit(Z[tr], y[tr]).score(Z[te], y[te])

    kw = dict(TINY, n_components=2, max_iter=1, random_state=0)
    mapped = MMEDA(**kw, input_map="rbf", n_landmarks=50).fit(X[tr])
    with torch.no_grad():
        std = (view - mapped.view_means_[0]) / mapped.view_scales_[0]
        phi = mapped.module_.view_aes[0].features(torch.as_tensor(std, dtype=torch.float32))
    assert accuracy(view) < 0.7  # linear in the view: about chance
    assert accuracy(phi.numpy()) > 0.95  # linear in the features: separated
