"""Supervised networks over a MultiModal, trained by skorch: MMEDA fine-tuning and the
mmeda paper's MLP baseline.

After unsupervised MMEDA, the natural next step with labels is to fine-tune its encoders:
:class:`MultiModalNetClassifier` and :class:`MultiModalNetRegressor` put a small
prediction head on the representation of a fitted :class:`~mmfactor.MMEDA` (its view
encoders, its fusion network and its standardisation, copied) and train the whole
network, or the head alone (``freeze_encoder=True``), on the labels. Without an
``encoder`` they are the paper's first baseline: a supervised MLP on the concatenated,
standardised views.

The training is skorch's: a :class:`skorch.NeuralNetClassifier` /
:class:`skorch.NeuralNetRegressor` over the views as a :class:`skorch.helper.SliceDict`
(one entry per view, sliced by rows together; the module's ``forward`` takes one keyword
per view), with skorch's history, callbacks, validation split and early stopping. The
fitted skorch net is ``net_``; ``history_`` is its history. mmfactor's own training loop
(:mod:`mmfactor._training`) stays with the unsupervised models, whose steps draw row and
column blocks of several views on several devices, which a skorch step does not.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._multimodal import check_views
from ._modules import mlp

__all__ = ["MultiModalNetClassifier", "MultiModalNetRegressor"]


class _MultiModalNet(nn.Module):
    """Views (keyword arguments) -> standardised -> encoders -> fusion -> head.

    ``encoders`` None: each view is flattened and the concatenation feeds the head (the
    MLP baseline); otherwise one encoder per view and a ``fusion`` network (MMEDA's).
    """

    def __init__(self, names, means, scales, head, encoders=None, fusion=None):
        super().__init__()
        self.names = list(names)
        for i, (m, s) in enumerate(zip(means, scales, strict=True)):
            self.register_buffer(f"mean{i}", torch.as_tensor(m, dtype=torch.float32))
            self.register_buffer(f"scale{i}", torch.as_tensor(s, dtype=torch.float32))
        self.encoders = None if encoders is None else nn.ModuleList(encoders)
        self.fusion = fusion
        self.head = head

    def forward(self, **views):
        xs = [(views[name] - getattr(self, f"mean{i}")) / getattr(self, f"scale{i}")
              for i, name in enumerate(self.names)]
        if self.encoders is None:
            z = torch.cat([x.reshape(len(x), -1) for x in xs], 1)
        else:
            z = self.fusion(torch.cat([e.encode(x) for e, x in zip(self.encoders, xs,
                                                                    strict=True)], 1))
        return self.head(z)


def _views_as_slicedict(X, names=None):
    """The views of ``X`` as a skorch SliceDict of float32 arrays (sparse views dense)."""
    from skorch.helper import SliceDict

    mm, views = check_views(X, allow_nan=False, min_samples=1, max_ndim=5)
    if names is not None and list(mm.names) != list(names):
        raise ValueError(f"X has the views {mm.names}; the network was fitted on {names}.")
    arrays = {}
    for v in views:
        data = v.data
        if sp.issparse(data):
            data = data.toarray()
        elif isinstance(data, torch.Tensor):
            data = data.detach().cpu().numpy()
        arrays[v.name] = np.asarray(data, dtype=np.float32)
    return SliceDict(**arrays), mm, views


def _standardisation(views):
    """Per-feature mean and scale of each view on the training rows (scale 1 where a
    feature is constant)."""
    out = []
    for v in views:
        data = v.data.toarray() if sp.issparse(v.data) else np.asarray(
            v.data.cpu() if isinstance(v.data, torch.Tensor) else v.data, dtype=np.float64)
        mean, scale = data.mean(0), data.std(0)
        out.append((mean, np.where(scale > 1e-12, scale, 1.0)))
    return out


_PARAMETERS = """    Parameters
    ----------
    encoder : MMEDA or None, default=None
        A fitted MMEDA whose encoders start the network; None: the MLP baseline.
    hidden_layer_sizes : tuple of int, default=(100,)
        Hidden layers of the head (ReLU).
    freeze_encoder : bool, default=False
        Train the head only, keeping the MMEDA encoders and fusion as they are.
    max_epochs : int, default=100
        Epochs at most.
    lr : float, default=1e-3
        Adam's learning rate.
    batch_size : int, default=64
        Rows per step.
    alpha : float, default=0.0
        Weight decay (L2).
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the rows (stratified for a classifier) and
        stop, keeping the best epoch, when their loss has not improved by ``tol`` for
        ``n_iter_no_change`` epochs (skorch's ``EarlyStopping``).
    validation_fraction : float, default=0.1
        The held-out fraction.
    n_iter_no_change : int, default=10
        Patience of early stopping.
    tol : float, default=1e-4
        Relative improvement that counts.
    callbacks : list, default=None
        More skorch callbacks (e.g. ``skorch.callbacks.Checkpoint``).
    device : str, default="cpu"
        The torch device of the network.
    random_state : int or None, default=None
        Seeds the initialisation, the shuffling and the validation split.
    verbose : int, default=0
        The per-epoch table of skorch (0: none).

"""


class _MultiModalNetBase(BaseEstimator):
    """What the classifier and the regressor share: the module, the skorch net."""

    _parameter_constraints: dict = {}

    def __init__(self, encoder=None, *, hidden_layer_sizes=(100,), freeze_encoder=False,
                 max_epochs=100, lr=1e-3, batch_size=64, alpha=0.0, early_stopping=True,
                 validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, callbacks=None,
                 device="cpu", random_state=None, verbose=0):
        self.encoder = encoder
        self.hidden_layer_sizes = hidden_layer_sizes
        self.freeze_encoder = freeze_encoder
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.callbacks = callbacks
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_clone__(self):
        # the encoder is a fitted model to start from, not a hyper-parameter: sklearn's
        # clone would return it unfitted (and cross_val_score would fail), so the clone
        # shares it. It is never modified: fit copies its network.
        from sklearn.base import clone

        params = self.get_params(deep=False)
        encoder = params.pop("encoder")
        return type(self)(encoder, **{k: clone(v, safe=False) for k, v in params.items()})

    def _check_params(self):
        for name in ("max_epochs", "batch_size", "n_iter_no_change"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in (0, 1); got "
                             f"{self.validation_fraction!r}.")
        sizes = tuple(self.hidden_layer_sizes)
        if not all(isinstance(s, numbers.Integral) and s > 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers; got {sizes}.")
        if self.encoder is not None:
            from ._mmeda import MMEDA

            if not isinstance(self.encoder, MMEDA):
                raise TypeError("encoder must be a fitted mmfactor.MMEDA or None; got "
                                f"{type(self.encoder).__name__}.")
            check_is_fitted(self.encoder)
        return sizes

    def _module(self, names, views, n_outputs):
        sizes = self._check_params()
        if self.encoder is None:
            stats = _standardisation(views)
            width = sum(int(np.prod(v.shape[1:])) for v in views)
            return _MultiModalNet(names, *zip(*stats, strict=True),
                                  mlp([width, *sizes, n_outputs], "relu"))
        enc = self.encoder
        if list(enc.view_names_) != list(names):
            raise ValueError(f"X has the views {names}; the encoder MMEDA was fitted on "
                             f"{list(enc.view_names_)}.")
        net = copy.deepcopy(enc.module_).to("cpu")  # the user's MMEDA is left as it is
        encoders, fusion = list(net.view_aes), net.fusion
        for p in (*fusion.parameters(), *(q for e in encoders for q in e.parameters())):
            p.requires_grad_(not self.freeze_encoder)
        return _MultiModalNet(names, enc.view_means_, enc.view_scales_,
                              mlp([enc.n_components, *sizes, n_outputs], "relu"),
                              encoders, fusion)

    def _fit_net(self, X, y, net_class, criterion, n_outputs):
        from skorch.callbacks import EarlyStopping
        from skorch.dataset import ValidSplit

        if self.random_state is not None:
            torch.manual_seed(int(np.random.RandomState(self.random_state).randint(2**31)))
        Xd, mm, views = _views_as_slicedict(X)
        module = self._module(mm.names, views, n_outputs)
        callbacks = list(self.callbacks or [])
        if self.early_stopping:
            callbacks.append(("early_stopping", EarlyStopping(
                patience=self.n_iter_no_change, threshold=self.tol,
                threshold_mode="rel", load_best=True)))
        stratified = net_class.__name__ == "NeuralNetClassifier"
        self.net_ = net_class(
            module, criterion=criterion, optimizer=torch.optim.Adam, lr=self.lr,
            optimizer__weight_decay=self.alpha, max_epochs=self.max_epochs,
            batch_size=self.batch_size, iterator_train__shuffle=True,
            train_split=ValidSplit(self.validation_fraction, stratified=stratified,
                                   random_state=self.random_state)
            if self.early_stopping else None,
            callbacks=callbacks, device=self.device, verbose=self.verbose)
        self.net_.fit(Xd, y)
        self.view_names_ = list(mm.names)
        self.n_features_in_ = len(views)
        self.history_ = self.net_.history
        self.n_iter_ = len(self.history_)
        return self

    def _forward(self, X):
        check_is_fitted(self)
        Xd, _, _ = _views_as_slicedict(X, self.view_names_)
        return self.net_.forward(Xd).detach().cpu()


class MultiModalNetClassifier(ClassifierMixin, _MultiModalNetBase):
    """A classifier over the views, trained by skorch: MMEDA fine-tuned, or an MLP.

    With ``encoder`` a fitted :class:`~mmfactor.MMEDA`, the network is a copy of its view
    encoders, fusion network and standardisation with a classification head on the
    representation, fine-tuned on the labels (or only the head: ``freeze_encoder``).
    With ``encoder=None``, an MLP on the concatenated, standardised views (the mmeda
    paper's supervised baseline). The training is a :class:`skorch.NeuralNetClassifier`
    over the views as a :class:`skorch.helper.SliceDict`, with its early stopping on a
    stratified validation split; sparse views are densified (float32).

{parameters}    Attributes
    ----------
    net_ : skorch.NeuralNetClassifier
        The fitted skorch net (module, optimizer, history).
    history_ : skorch.History
        Its history: per epoch ``train_loss``, ``valid_loss``, ``valid_acc``, ``dur``.
    classes_ : ndarray
        The class labels.
    n_iter_ : int
        Epochs run.
    view_names_ : list of str
        The views, as in fit.
    n_features_in_ : int
        The number of views.

    Examples
    --------
    >>> import numpy as np
    >>> from mmfactor import MMEDA, MultiModal
    >>> from mmfactor.neural import MultiModalNetClassifier
    >>> rng = np.random.RandomState(0)
    >>> y = rng.randint(0, 2, 120)
    >>> X = MultiModal(a=rng.rand(120, 6) + y[:, None], b=rng.rand(120, 4))
    >>> mmeda = MMEDA(4, max_iter=5, tol=0, random_state=0).fit(X)
    >>> clf = MultiModalNetClassifier(mmeda, max_epochs=20, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape, len(clf.history_) <= 20
    ((3,), True)
    """

    def fit(self, X, y):
        """Train the network on the views ``X`` and the labels ``y``.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : object
            The fitted classifier.
        """
        from skorch import NeuralNetClassifier

        self._labels = LabelEncoder().fit(np.asarray(y))
        self.classes_ = self._labels.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"y has {len(self.classes_)} class; a classifier needs two.")
        codes = self._labels.transform(np.asarray(y)).astype(np.int64)
        return self._fit_net(X, codes, NeuralNetClassifier, nn.CrossEntropyLoss,
                             len(self.classes_))

    def predict_proba(self, X):
        """Class probabilities of the rows of ``X``.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views, as in fit.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            The probabilities, in the order of ``classes_``.
        """
        return torch.softmax(self._forward(X), 1).numpy()

    def predict(self, X):
        """The most probable class of each row of ``X``.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views, as in fit.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Class labels.
        """
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of ``predict(X)`` against ``y`` (scikit-learn's classifier score).

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views, as in fit.
        y : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            The accuracy.
        """
        return super().score(X, y, sample_weight=sample_weight)


class MultiModalNetRegressor(RegressorMixin, _MultiModalNetBase):
    """A regressor over the views, trained by skorch: MMEDA fine-tuned, or an MLP.

    The regression twin of :class:`MultiModalNetClassifier` (same parameters; a
    :class:`skorch.NeuralNetRegressor` with the mean squared error, one output per
    target column).

{parameters}    Attributes
    ----------
    net_ : skorch.NeuralNetRegressor
        The fitted skorch net.
    history_ : skorch.History
        Its history: per epoch ``train_loss``, ``valid_loss``, ``dur``.
    n_iter_ : int
        Epochs run.
    view_names_ : list of str
        The views, as in fit.
    n_features_in_ : int
        The number of views.

    Examples
    --------
    >>> import numpy as np
    >>> from mmfactor import MultiModal
    >>> from mmfactor.neural import MultiModalNetRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = MultiModal(a=rng.rand(100, 5), b=rng.rand(100, 3))
    >>> y = X.a.sum(1)
    >>> reg = MultiModalNetRegressor(max_epochs=30, random_state=0).fit(X, y)
    >>> reg.predict(X[:4]).shape
    (4,)
    """

    def fit(self, X, y):
        """Train the network on the views ``X`` and the targets ``y``.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.

        Returns
        -------
        self : object
            The fitted regressor.
        """
        from skorch import NeuralNetRegressor

        y = np.asarray(y, dtype=np.float32)
        self._one_target = y.ndim == 1
        y2 = y.reshape(len(y), -1)
        return self._fit_net(X, y2, NeuralNetRegressor, nn.MSELoss, y2.shape[1])

    def predict(self, X):
        """Predicted targets of the rows of ``X``.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views, as in fit.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predictions (float32).
        """
        out = self._forward(X).numpy()
        return out[:, 0] if self._one_target else out

    def score(self, X, y, sample_weight=None):
        """R^2 of ``predict(X)`` against ``y`` (scikit-learn's regressor score).

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views, as in fit.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            True targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            R^2 (1 is perfect).
        """
        return super().score(X, y, sample_weight=sample_weight)


# one Parameters section for the two (the same parameters, the same meaning)
for _cls in (MultiModalNetClassifier, MultiModalNetRegressor):
    _cls.__doc__ = _cls.__doc__.replace("{parameters}", _PARAMETERS)
