"""MultiModalNetClassifier / MultiModalNetRegressor: skorch trains a network over the
views, from a fitted MMEDA's encoders (fine-tuning) or from scratch (the MLP baseline)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import KFold, cross_val_score
from skorch.callbacks import Callback

from mmfactor import MMEDA, MultiModal
from mmfactor.neural import MultiModalNetClassifier, MultiModalNetRegressor

RNG = np.random.RandomState(0)
N = 240
Y = RNG.randint(0, 3, N)
CENTERS = RNG.randn(3, 8) * 2


def _views():
    a = CENTERS[Y] + RNG.randn(N, 8)
    b = RNG.rand(N, 5)
    clicks = sp.random(N, 30, density=0.1, random_state=0, format="csr")
    profile = pd.DataFrame({"age": 30 + 10 * Y + RNG.randn(N), "x": RNG.rand(N)},
                           index=RNG.permutation(N) + 1000)
    return MultiModal(a=a, b=b, clicks=clicks, profile=profile)


X = _views()
FAST = dict(max_epochs=40, hidden_layer_sizes=(16,), random_state=0)


@pytest.fixture(scope="module")
def mmeda():
    return MMEDA(4, view_components=4, fusion_layer_sizes=(8,), max_iter=10, tol=0,
                 random_state=0).fit(X)


def test_the_mlp_baseline_cross_validates_on_numpy_sparse_and_dataframe_views():
    scores = cross_val_score(MultiModalNetClassifier(**FAST), X, Y,
                             cv=KFold(3, shuffle=True, random_state=0))
    assert scores.min() > 0.8  # three classes: chance is 1/3


def test_fine_tuning_starts_from_the_mmeda_encoders(mmeda):
    before = {k: v.clone() for k, v in mmeda.module_.state_dict().items()}
    frozen = MultiModalNetClassifier(mmeda, freeze_encoder=True, **FAST).fit(X, Y)
    tuned = MultiModalNetClassifier(mmeda, **FAST).fit(X, Y)
    for k, v in mmeda.module_.state_dict().items():  # the user's MMEDA is left as it is
        torch.testing.assert_close(v, before[k])
    net = frozen.net_.module_
    # frozen: the network's encoders and fusion are MMEDA's, and its representation is
    # MMEDA's representation before its rotation
    for i, ae in enumerate(mmeda.module_.view_aes):
        for p, q in zip(ae.parameters(), net.encoders[i].parameters(), strict=True):
            torch.testing.assert_close(p, q)
    batch = [torch.as_tensor(np.asarray(v.toarray() if sp.issparse(v) else v, np.float32))
             for v in X[:10].views]
    with torch.no_grad():
        std = [(b - getattr(net, f"mean{i}")) / getattr(net, f"scale{i}")
               for i, b in enumerate(batch)]
        z_net = net.fusion(torch.cat([e.encode(x) for e, x in zip(net.encoders, std,
                                                                  strict=True)], 1))
    Z = mmeda.transform(X[:10]) @ np.linalg.inv(mmeda.rotation_)
    np.testing.assert_allclose(z_net.numpy(), Z, rtol=1e-3, atol=1e-4)
    pairs = zip(mmeda.module_.fusion.parameters(), tuned.net_.module_.fusion.parameters(),
                strict=True)
    moved = [not torch.equal(p, q) for p, q in pairs]
    assert any(moved)  # fine-tuned: the fusion network learned from the labels
    assert tuned.score(X, Y) > 0.8 and frozen.score(X, Y) > 0.6


def test_a_fitted_encoder_survives_clone_and_cross_validation(mmeda):
    from sklearn.base import clone

    clf = MultiModalNetClassifier(mmeda, **FAST)
    assert clone(clf).encoder is mmeda and clone(clf).get_params()["max_epochs"] == 40
    scores = cross_val_score(clf, X, Y, cv=KFold(3, shuffle=True, random_state=0))
    assert scores.min() > 0.8


def test_skorch_history_callbacks_and_early_stopping():
    seen = []

    class Count(Callback):
        def on_epoch_end(self, net, **kwargs):
            seen.append(len(net.history))

    # a quarter of the labels shuffled: the held-out loss reaches its best, then rises
    noisy = np.where(RNG.rand(N) < 0.25, RNG.randint(0, 3, N), Y)
    clf = MultiModalNetClassifier(max_epochs=300, n_iter_no_change=3, lr=0.01,
                                  callbacks=[Count()], hidden_layer_sizes=(64,),
                                  random_state=0).fit(X, noisy)
    assert clf.n_iter_ == len(clf.history_) == len(seen) < 300  # stopped early
    assert {"train_loss", "valid_loss", "valid_acc", "dur"} <= set(clf.history_[-1])
    best = int(np.argmin(clf.history_[:, "valid_loss"]))
    assert clf.n_iter_ - 1 - best == 3  # patience 3 after the best epoch
    assert set(clf.predict(X[:5])) <= set(np.unique(Y))
    np.testing.assert_allclose(clf.predict_proba(X[:5]).sum(1), 1, rtol=1e-5)


def test_seeded_fits_repeat_and_labels_keep_their_type():
    y = np.array(["cat", "dog", "eel"])[Y]
    a = MultiModalNetClassifier(**FAST).fit(X, y)
    b = MultiModalNetClassifier(**FAST).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert list(a.classes_) == ["cat", "dog", "eel"] and a.predict(X[:2]).dtype == y.dtype


def test_regressor_one_and_several_targets():
    target = X.a @ np.arange(8.0) / 10
    reg = MultiModalNetRegressor(max_epochs=100, random_state=0).fit(X, target)
    assert reg.predict(X).shape == (N,) and reg.score(X, target) > 0.8
    two = MultiModalNetRegressor(max_epochs=5, random_state=0).fit(X, np.c_[target, target])
    assert two.predict(X[:3]).shape == (3, 2)


def test_bad_input_is_a_clear_error(mmeda):
    with pytest.raises(TypeError, match="encoder must be a fitted mmfactor.MMEDA"):
        MultiModalNetClassifier("mmeda").fit(X, Y)
    with pytest.raises(NotFittedError):
        MultiModalNetClassifier(MMEDA(2)).fit(X, Y)
    with pytest.raises(ValueError, match=r"X has the views \['a', 'b'\]; the encoder MMEDA "
                                         r"was fitted on \['a', 'b', 'clicks', 'profile'\]"):
        MultiModalNetClassifier(mmeda).fit(MultiModal(a=X.a, b=X.b), Y)
    with pytest.raises(ValueError, match="a classifier needs two"):
        MultiModalNetClassifier().fit(X, np.zeros(N))
    with pytest.raises(ValueError, match="max_epochs must be a positive integer"):
        MultiModalNetClassifier(max_epochs=0).fit(X, Y)
    clf = MultiModalNetClassifier(max_epochs=2, random_state=0).fit(X, Y)
    with pytest.raises(ValueError, match="the network was fitted on"):
        clf.predict(MultiModal(b=X.b, a=X.a, clicks=X.clicks, profile=X.profile))
    with pytest.raises(NotFittedError):
        MultiModalNetClassifier().predict(X)
