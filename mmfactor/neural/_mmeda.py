"""MMEDA I and II: multimodal encoder-decoder architectures (Kumar et al., CS5260 project)."""

from __future__ import annotations

import copy
import numbers

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._base import N_JOBS_CONSTRAINT, MultiModalTransformer
from .._device import as_numpy, resolve_devices, torch_generator
from .._multimodal import check_variation, check_views
from .._training import DeviceCSR, Rows, fit_loop, row_batches, schedule_lr
from ._modules import (
    ACTIVATIONS,
    ConvAutoencoder,
    DenseAutoencoder,
    LinearAutoencoder,
    build_module,
    conv_stack_shapes,
    mlp,
)

__all__ = ["MMEDA"]

_CHUNK = 2048  # rows per forward pass at transform/score time

#: ``encoder="auto"``: the linear closed form below ``NEURAL_FROM`` training rows, the
#: network from ``LINEAR_BELOW``; in between, whichever reconstructs held-out training
#: rows better (measured: benchmarks/results/representations_log.md)
NEURAL_FROM = 500
LINEAR_BELOW = 1000


def _auto_encoder(n_train):
    """``"linear"``, ``"neural"`` or ``"compare"``: what ``encoder="auto"`` does."""
    if n_train < NEURAL_FROM:
        return "linear"
    return "neural" if n_train >= LINEAR_BELOW else "compare"


#: the parameters that shape the network: a warm start with any of them changed rebuilds
_ARCHITECTURE = ("n_components", "variant", "encoder", "conv_channels", "hidden_layer_sizes",
                 "view_components", "fusion_layer_sizes", "activation", "code_activation",
                 "standardize", "max_column_rows", "input_map", "n_landmarks")


class _ViewData:
    """One training view on its device, standardised, served by rows (and columns)."""

    def __init__(self, data, mean, scale, device):
        self.device = device
        self.sparse = sp.issparse(data)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.scale = torch.as_tensor(scale, dtype=torch.float32, device=device)
        if self.sparse:  # moved once; batches are gathered on the device
            self.data = DeviceCSR(data, device)
        else:
            # one float32 copy on the device, standardised; the user's array is untouched
            self.data = (_as_float32(data, device) - self.mean) / self.scale

    def rows(self, idx):
        """Standardised rows ``idx`` as a float32 tensor on the device.

        ``idx``: a batch's :class:`Rows` (indices already on the device), or a CPU int64
        tensor (outside the batch loop: moved once).
        """
        if not isinstance(idx, Rows):
            idx = Rows(idx.numpy(), {})
        if self.sparse:
            return (self.data.dense(idx) - self.mean) / self.scale
        return self.data[idx.on(self.device)]


def _as_float32(data, device):
    """A float32 tensor on ``device`` from an array or tensor (a copy when it converts)."""
    if isinstance(data, torch.Tensor):
        return data.to(device=device, dtype=torch.float32)
    return torch.from_numpy(np.array(data, dtype=np.float32)).to(device)


def _stats(view, kind, standardize):
    """Per-feature (matrices) or per-channel (tensors) mean and scale of one view."""
    shape = view.shape[1:]
    bshape = (shape[0],) + (1,) * (len(shape) - 1)
    if not standardize:
        return np.zeros(bshape if kind == "conv" else shape), np.ones(
            bshape if kind == "conv" else shape)
    data = view.data
    if sp.issparse(data):
        mean = np.asarray(data.mean(0)).ravel()
        sq = np.asarray(data.multiply(data).mean(0)).ravel()
        var = np.maximum(sq - mean**2, 0.0)
    else:
        arr = as_numpy(data).astype(np.float64, copy=False)
        axes = (0,) + tuple(range(2, arr.ndim)) if kind == "conv" else (0,)
        mean = arr.mean(axis=axes)
        var = arr.var(axis=axes)
    scale = np.sqrt(var)
    scale[scale < 1e-12 * max(1.0, float(np.abs(mean).max(initial=0)))] = 1.0
    if kind == "conv":
        return mean.reshape(bshape), scale.reshape(bshape)
    return mean, scale


class _Net(nn.Module):
    """The MMEDA network: a conv or dense autoencoder per view, a column autoencoder per
    matrix view (its transpose), and the fusion network."""

    def __init__(self, view_aes, col_aes, fusion):
        super().__init__()
        self.view_aes = nn.ModuleList(view_aes)
        self.col_aes = nn.ModuleDict(col_aes)
        self.fusion = fusion


class _RBFFeatures(nn.Module):
    """Nystroem features of a Gaussian kernel: ``k(x, L) N`` with ``N = K_LL^(-1/2)``.

    The landmarks ``L``, ``gamma`` and ``N`` are buffers: fixed, saved with the module
    and moved with it between devices.
    """

    def __init__(self, landmarks, gamma, normaliser):
        super().__init__()
        self.register_buffer("landmarks", landmarks)
        self.register_buffer("gamma", gamma)
        self.register_buffer("normaliser", normaliser)

    def forward(self, x):
        L = self.landmarks
        d2 = (x * x).sum(1, keepdim=True) - 2 * x @ L.T + (L * L).sum(1)
        return torch.exp(-self.gamma * d2.clamp_min(0)) @ self.normaliser


def rbf_features(landmarks):
    """:class:`_RBFFeatures` on ``landmarks`` (m x d, standardised rows), on their device.

    ``gamma`` is one over the median squared distance between two distinct landmarks
    (the median heuristic; 1 when they all coincide); ``N`` the inverse square root of
    their kernel matrix (eigenvalues floored at 1e-12, as scikit-learn's Nystroem does).
    """
    L = landmarks.double().cpu()
    d2 = torch.cdist(L, L).pow(2)
    off = d2[~torch.eye(len(L), dtype=torch.bool)]
    med = float(np.median(off.numpy())) if len(off) else 0.0
    gamma = 1.0 / med if med > 0 else 1.0
    w, U = torch.linalg.eigh(torch.exp(-gamma * d2))
    N = (U / w.clamp_min(1e-12).sqrt()) @ U.T
    dev = landmarks.device
    return _RBFFeatures(landmarks.to(torch.float32).clone(),
                        torch.tensor(gamma, dtype=torch.float32, device=dev),
                        N.to(device=dev, dtype=torch.float32))


class _MappedAutoencoder(nn.Module):
    """A dense autoencoder whose encoder is a linear read of ``features(x)``
    (``input_map``) and whose decoder (``hidden_layer_sizes``) reconstructs ``x`` itself;
    ``features`` is set after construction."""

    def __init__(self, n_mapped, n_features, hidden_layer_sizes, n_components, *,
                 activation="relu"):
        super().__init__()
        hidden = [int(h) for h in hidden_layer_sizes]
        self.features = None
        self.encoder = mlp([n_mapped, n_components], activation)
        self.decoder = mlp([n_components, *hidden[::-1], n_features], activation)

    def encode(self, x):
        return self.encoder(self.features(x))

    def decode(self, code):
        return self.decoder(code)

    def forward(self, x):
        code = self.encode(x)
        return code, self.decode(code)


class MMEDA(MultiModalTransformer):
    r"""Multimodal encoder-decoder architecture (MMEDA-I and MMEDA-II).

    Learns one ``n_components``-dimensional vector per sample from any number of views
    of any order. Every tensor view -- ``(n, C, L)``, ``(n, C, H, W)`` or
    ``(n, C, D, H, W)`` -- goes through a convolutional autoencoder whose shapes are
    derived from the input (any spatial size), every matrix view ``X_m`` (n x d) through a
    dense autoencoder (the row encoder ``E_m``), and its transpose through another dense
    autoencoder, the column encoder ``E_m^T``, whose codes ``V_m = E_m^T(X_m^T)``
    (d x n_components) represent the column entity (e.g. the words' dimensions, the
    Fourier coefficients). The views' codes are concatenated and fused by a feed-forward
    network into the representation ``Z``.

    * ``variant="I"`` (section 6.4, eq. 2): the tensor decoders reconstruct each tensor
      view from ``Z``, and each matrix view is reconstructed as ``Z V_m^T``:

      .. math::

          L = \sum_{t} \operatorname{MSE}\big(D_t(Z), X_t\big)
          + \sum_{m} \operatorname{MSE}\big(Z V_m^\top, X_m\big)

    * ``variant="II"`` (section 3, eq. 1; "an extension of MMEDA-I", 6.5): the same,
      plus each matrix view's own autoencoder output ``X_m'`` and its transpose's
      ``X_m^T'``, while ``X_m'' = Z V_m^T`` ties the representation to the matrix:

      .. math::

          L = \sum_t \operatorname{MSE}\big(D_t(Z), X_t\big)
          + \sum_m \Big[\operatorname{MSE}\big(D_m(E_m(X_m)), X_m\big)
          + \operatorname{MSE}\big(D_m^\top(E_m^\top(X_m^\top)), X_m^\top\big)
          + \operatorname{MSE}\big(Z V_m^\top, X_m\big)\Big]

      Section 3 does not say whether ``X_0'`` (the image) is decoded from the image's
      own code or from ``Z``; it is decoded from ``Z`` here, as in MMEDA-I, of which II
      is the extension. The other reading leaves the image's information out of what
      trains ``Z`` (only ``Z V^T`` would): measured on the digits it gave a macro-F1 of
      0.50 against 0.86 for MMEDA-I, and it has no ``inverse_transform`` for images.

    Every MSE is a mean over its entries; ``loss_weights`` scales the kinds of terms.
    Training runs mini-batches of ``batch_size`` rows; as in the paper (section 3.1)
    each step pairs the row block with the next block of ``batch_size`` columns of every
    matrix view (cycling through the columns), so the ``Z V_m^T`` term is computed on
    the matching row and column block ``X_m[rows, cols]``.

    **Scale of the column encoder.** Its input is a column of ``X_m``, whose width would
    be the number of training rows. Instead, each column is read through a fixed sample
    of at most ``max_column_rows`` training rows (drawn once per fit from
    ``random_state``; all rows when there are fewer): the column encoder's width, its
    memory and its cost per column are then bounded whatever ``n_samples``, while the
    ``Z V_m^T`` term still runs over every training row. The learned ``V_m`` is stored in
    ``column_embeddings_``, so ``transform`` (row encoders and fusion only) and
    ``inverse_transform`` never need those rows again.

    Parameters
    ----------
    n_components : int, default=50
        Width of the representation ``Z``.
    variant : {"I", "II"}, default="II"
        The architecture (see above); with tensor views only, both are the same.
    encoder : {"auto", "neural", "linear"}, default="auto"
        ``"neural"``: the networks above, trained. ``"linear"``: linear encoders, decoders
        and fusion set to their closed-form optimum, the principal components of the
        standardised views side by side (each view scaled by the square root of its
        ``loss_weights`` weight; no training, no column encoders). ``"auto"``: linear
        below ``NEURAL_FROM = 500`` training rows, neural from ``LINEAR_BELOW = 1000``;
        in between, both are fitted on 90% of the training rows and the one that
        reconstructs the other 10% better (:meth:`score`) is fitted on all of them
        (``encoder_scores_``). Measured (``benchmarks/results/representations_log.md``):
        on the digits (narrow views) the trained networks lost to PCA on every probe at
        100 to 800 training rows (by 0.02-0.32 macro-F1) and beat it on two of three at
        1,600; at 600 and 900 digits the held-out comparison picks the linear model
        (score -0.26 vs -0.54, -0.24 vs -0.45). On MovieLens (754 users, 1,682 movie
        columns) it picks the network (-1.12 vs -1.34), whose embedding predicts age
        far better (test R^2 0.36 ± 0.01 over three seeds against 0.21 for the linear
        one; PCA 0.23); on dicty (975 genes) the linear model (-0.35 vs -0.43), whose
        embedding scored a mean GO-term AUC of 0.80 against 0.73 for the network (PCA
        0.79). Tens of samples always get the linear model. The fitted choice is
        ``encoder_``.
    conv_channels : tuple of int, default=(4, 8)
        Channels of each conv layer (3-wide kernels, 2x max-pooling after each) of every
        tensor view's autoencoder. Each spatial dimension needs ``2 ** len`` entries.
    hidden_layer_sizes : tuple of int, default=(128,)
        Hidden widths of every view's (and column) autoencoder, between the input (or the
        flattened conv maps) and the view's code; decoders mirror them. With
        ``input_map``, a matrix view's encoder is linear in its kernel features.
    view_components : int, default=64
        Width of each view's code (the paper uses 200 for the images).
    fusion_layer_sizes : tuple of int, default=(128,)
        Hidden widths of the fusion network from the concatenated codes to ``Z``.
    activation : {"relu", "tanh", "sigmoid", "elu"}, default="relu"
        Hidden activation of every network.
    code_activation : {"identity", "tanh", "sigmoid", "relu", "elu"}, default="identity"
        Activation applied to ``Z`` (a bounded ``"tanh"`` code spreads the information
        over the coordinates).
    standardize : bool, default=True
        Standardise every view with statistics fitted on the training rows (per column
        for a matrix view, per channel for a tensor view), stored in ``view_means_`` and
        ``view_scales_``; reconstructions are returned on the original scale.
    input_map : {"rbf"} or None, default="rbf"
        A fixed nonlinear map in front of every matrix view's row encoder (the network
        only; not the linear closed form, not tensor views): ``"rbf"`` reads each
        standardised row through its Gaussian-kernel similarities to ``n_landmarks``
        training rows (drawn once per fit from ``random_state``), whitened by the
        landmarks' own kernel matrix -- Nystroem features, whose inner products
        approximate the kernel, ``phi(x) . phi(y) ~ exp(-gamma |x - y|^2)`` (exact
        between landmarks). ``gamma`` is the median heuristic, one over the median
        squared distance between two landmarks (``input_gammas_``). The view's code is
        a linear function of these features, as a kernel PCA's scores are;
        ``hidden_layer_sizes`` then shapes the view's decoder only, which still
        reconstructs the standardised view itself, so ``inverse_transform`` and
        :meth:`score` are unchanged in meaning. ``None``: the encoders read the
        standardised rows (the paper). Chosen by 3-fold CV on the training digits
        (``benchmarks/results/representations_log.md``, session 3; MMEDA-II, seeds 0-2):
        on six views the depth-2 forest's macro-F1 0.909 against 0.893 without the map
        (logistic 0.979 / 0.978, 5-NN 0.980 / 0.983); on pix+fou logistic 0.961 against
        0.945 and 5-NN 0.958 against 0.951, the forest 0.874 ± 0.020 against
        0.882 ± 0.012 (within the seed noise). A hidden layer between the features and
        the code scored alike (six views: forest 0.910) but took the six-view fit from
        9.4 to 10.6 CPU s; mapping the image too, in place of its conv encoder, did not
        help (pix+fou forest 0.880), so tensor views keep their conv encoder.
    n_landmarks : int, default=200
        Landmarks of ``input_map`` per matrix view (all training rows when fewer). With
        100, MMEDA-II's MovieLens embedding predicted age worse (test R^2 0.31 against
        0.36 with 200, seeds 0-2, measured with a hidden layer after the features); 400
        raised the forest's CV score on the digits by 0.01-0.02 but took the six-view
        fit over 10 CPU s.
    rotation : {"pca", "varimax", "ica"} or None, default="pca"
        The loss fixes ``Z`` only up to an orthogonal transform ``R`` as far as the
        matrix views go (``Z V^T = (Z R)(V R)^T``), and a tensor decoder's first layer
        absorbs ``R`` as well, so the network's own axes are arbitrary mixtures.
        ``"pca"`` turns the fitted representation to the principal axes of ``Z`` on the
        training rows (decorrelated coordinates by decreasing variance; decoders and
        ``column_embeddings_`` turned with it, so every reconstruction is unchanged).
        Axis-aligned downstream models gain from it: on the digits, a depth-2 random
        forest gained 0.03 to 0.14 macro-F1 in 8 of 10 configurations measured, and
        moved by less than 0.01 in the other two. ``"varimax"`` turns the principal
        scores further, orthogonally, to maximise the varimax criterion (squared
        coordinates as unequal as possible, as in factor analysis). ``"ica"`` whitens
        the principal scores and turns them to maximal non-Gaussianity (symmetric
        FastICA, log-cosh, started from the identity): a non-orthogonal invertible map
        ``W``, absorbed exactly by the tensor decoders' first layer and by the column
        codes (``Z V^T = (Z W)(V W^-T)^T``), so reconstructions are unchanged in every
        case. Measured with a depth-2 forest on the digits (MMEDA-II, 3-fold
        cross-validation on the training digits, 30 to 120 epochs): ``"varimax"`` beat
        ``"pca"`` by 0.01-0.03 macro-F1 in 3 of 4 fits on two views but lost by
        0.02-0.04 in all 3 on six; ``"ica"`` lost everywhere (0.63-0.79 against
        0.82-0.91: whitening gives the many weak coordinates the weight of the strong
        ones). ``None`` keeps the network's axes.
    loss_weights : dict, default=None
        Weights of the kinds of terms -- ``"view"`` (a view's reconstruction),
        ``"column"`` (the transpose's, II), ``"cross"`` (``Z V^T`` in II) -- and of the
        views, by name (multiplying all of that view's terms); missing keys weigh 1.
        Every term is a mean over entries, so by default each view counts the same
        whatever its number of features.
    contrastive : float, default=0.1
        Weight of a contrastive term between the views' codes: the mean over pairs of
        views of the symmetric InfoNCE (:func:`info_nce`), which asks each sample's code
        in one view to pick the same sample's code in the other among the batch
        (contrastive multiview coding). ``0`` turns it off (the paper's loss). Recorded in
        ``loss_terms_["contrastive"]``.
    temperature : float, default=0.5
        Temperature of the InfoNCE logits (cosine similarities divided by it).
    view_dropout : float in [0, 1), default=0.15
        Masked-view training (cross-view prediction): during training each sample's code
        of each view is hidden from the fusion network with this probability (every
        sample keeps at least one view), while ``Z`` must still reconstruct every view:
        ``Z`` from view A alone learns to predict view B. ``transform`` uses every view.
        The defaults of ``view_dropout`` and ``input_dropout`` were chosen by 3-fold CV
        on the training digits (``benchmarks/results/representations_log.md``): together
        they raised MMEDA-II's depth-2 forest macro-F1 by 0.03 (two views) and 0.01 (six)
        at the same logistic and 5-NN scores; view dropout 0.3 alone did not help.
    input_dropout : float in [0, 1), default=0.2
        Denoising: during training each entry of every standardised view is set to 0
        (the training mean) with this probability before the encoders; the losses
        compare the reconstructions with the clean views.
    lr_schedule : {"constant", "cosine"}, default="constant"
        ``"cosine"``: the Adam step size of epoch ``e`` (counted from 0 in each call to
        ``fit``) is ``learning_rate_init * (1 + cos(pi e / max_iter)) / 2``.
    max_column_rows : int, default=512
        At most this many training rows form the column encoder's input (see above).
    batch_size : int, default=128
        Rows per step (and columns per step of each matrix view).
    learning_rate_init : float, default=1e-3
        Adam step size.
    alpha : float, default=0.0
        L2 penalty (Adam weight decay) on every weight.
    max_iter : int, default=25
        Maximum number of epochs.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when their loss stops
        improving and keep the best weights.
    validation_fraction : float, default=0.1
        Held-out share for early stopping.
    n_iter_no_change : int, default=10
        Epochs without an improvement of at least ``tol`` (relative) before stopping.
    tol : float, default=0.0
        Relative improvement that counts; ``0`` (the default) runs all ``max_iter``
        epochs, a fixed budget: MMEDA's mini-batch training loss keeps falling slowly
        for hundreds of epochs, so a rule on it (``tol=1e-4`` and
        ``n_iter_no_change=10``) fires only after about 70 epochs on the digits and
        would warn at every default fit. To stop on held-out rows, use
        ``early_stopping=True`` with ``tol > 0`` (e.g. ``1e-4``).
    warm_start : bool, default=False
        Continue from the previous fit's weights (and standardisation) on the next call
        to ``fit``; the views must have the same shapes. Only a neural model whose
        architecture parameters (``n_components``, ``variant``, ``encoder``, the layer
        sizes, the activations, ``standardize``, ``max_column_rows``) are unchanged is
        continued; after ``set_params`` changed any of them, ``fit`` builds a new
        network. A warm refit that fails or is interrupted before its first epoch ends
        leaves the previous model in place.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the column rows and the batch order (through a
        :class:`torch.Generator`; the global seed is never touched). The same value gives
        bit-identical results on the CPU.
    devices : None, str, list or dict, default=None
        Device of each view's autoencoders (and its data): one for all, a list with one
        entry per view or a dict by view name. The fusion network lives on the first
        view's device; only the codes and ``Z`` cross devices.
    verbose : int, default=0
        Show a progress bar.
    n_jobs : int, default=None
        CPU threads of torch, BLAS and OpenMP during this estimator's ``fit``,
        ``transform`` and other calls, put back afterwards (``-1``: all CPUs; ``None``:
        unchanged). See :ref:`busy-machines`.

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained network (``view_aes``, ``col_aes``, ``fusion``).
    encoder_ : str
        ``"neural"`` or ``"linear"`` (see ``encoder``).
    encoder_scores_ : dict or None
        With ``encoder="auto"`` between ``NEURAL_FROM`` and ``LINEAR_BELOW`` training rows:
        the held-out :meth:`score` of each kind that decided ``encoder_``; else None.
    column_embeddings_ : dict of str -> ndarray of shape (n_columns, n_components)
        ``V_m`` of every matrix view (the column entity's representation), turned by
        ``rotation_``.
    input_gammas_ : dict of str -> float
        ``gamma`` of the ``input_map`` of every mapped matrix view (empty without one,
        and for the linear model).
    rotation_ : ndarray of shape (n_components, n_components) or None
        The map ``W`` applied to the network's output, ``Z = Z_net W``: orthogonal for
        ``rotation="pca"`` and ``"varimax"``, invertible for ``"ica"``.
    view_names_ : list of str
        The views' names.
    view_kinds_ : list of str
        ``"conv"`` or ``"dense"`` for each view.
    view_means_, view_scales_ : list of ndarray
        Standardisation statistics of each view.
    devices_ : list of torch.device
        One per view.
    loss_curve_ : list of float
        Mean total training loss of every epoch.
    loss_terms_ : dict of str -> list of float
        Every term per epoch: ``"<view>"`` (reconstruction), ``"<view>.T"`` (transpose,
        II), ``"<view>.ZV"`` (``Z V^T``), and ``"validation"`` with early stopping.
    n_iter_ : int
        Epochs run (in total, across warm starts).
    n_features_in_ : int
        Total number of features over the views (``C * H * W`` for an image view).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        The column names of ``X`` when it is one pandas DataFrame with string column
        names (only then); ``transform`` and ``score`` check them first.

    See Also
    --------
    CMF : Collective matrix factorization of matrix views.

    Notes
    -----
    The training runs through mmfactor's one training loop (``fit_loop``) rather than
    skorch: a step here draws a row block for every view *and* a column block for every
    matrix view, each on its own device, which does not fit skorch's one-input-tensor,
    one-device batching. ``transform`` returns float32. Supervised fine-tuning of the
    fitted encoders, a plain step, does run on skorch:
    :class:`~mmfactor.neural.MultiModalNetClassifier` (and ``...Regressor``).

    References
    ----------
    MMEDA: multimodal encoder-decoder architectures, ``shared/papers/mmeda.txt``
    (sections 3 and 6.3-6.5; code at github.com/Srini-98/CS5260-Neural-Networks-2).

    Examples
    --------
    >>> import numpy as np
    >>> from mmfactor import MMEDA, MultiModal
    >>> rng = np.random.RandomState(0)
    >>> X = MultiModal(image=rng.rand(40, 1, 8, 8), text=rng.rand(40, 12))
    >>> model = MMEDA(n_components=5, conv_channels=(4,), hidden_layer_sizes=(16,),
    ...               view_components=8, fusion_layer_sizes=(16,), max_iter=3,
    ...               random_state=0)
    >>> Z = model.fit_transform(X)
    >>> Z.shape, Z.dtype
    ((40, 5), dtype('float32'))
    >>> [r.shape for r in model.inverse_transform(Z)]
    [(40, 1, 8, 8), (40, 12)]

    Your own views -- NumPy arrays, a SciPy sparse matrix (unstored entries read as
    zeros), a pandas DataFrame (rows by position) -- in a cross-validated pipeline (more
    in the user guide's quick start):

    >>> import pandas as pd
    >>> import scipy.sparse as sp
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import cross_val_score
    >>> from sklearn.pipeline import make_pipeline
    >>> y = rng.randint(0, 2, 60)
    >>> X = MultiModal(a=rng.rand(60, 6) + y[:, None], b=rng.rand(60, 3),
    ...                clicks=sp.random(60, 20, density=0.2, random_state=0),
    ...                profile=pd.DataFrame({"age": rng.randint(18, 80, 60)}))
    >>> pipe = make_pipeline(MMEDA(n_components=2, random_state=0), LogisticRegression())
    >>> cross_val_score(pipe, X, y, cv=3).shape
    (3,)
    """

    _parameter_constraints = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "variant": [StrOptions({"I", "II"})],
        "encoder": [StrOptions({"auto", "neural", "linear"})],
        "conv_channels": [list, tuple],
        "hidden_layer_sizes": [list, tuple],
        "view_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "fusion_layer_sizes": [list, tuple],
        "activation": [StrOptions({"relu", "tanh", "sigmoid", "elu"})],
        "code_activation": [StrOptions(set(ACTIVATIONS))],
        "standardize": ["boolean"],
        "input_map": [None, StrOptions({"rbf"})],
        "n_landmarks": [Interval(numbers.Integral, 1, None, closed="left")],
        "rotation": [None, StrOptions({"pca", "varimax", "ica"})],
        "loss_weights": [None, dict],
        "contrastive": [Interval(numbers.Real, 0, None, closed="left")],
        "temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "view_dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "input_dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "lr_schedule": [StrOptions({"constant", "cosine"})],
        "max_column_rows": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "devices": [None, str, list, tuple, dict],
        "verbose": ["verbose"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __init__(
        self,
        n_components=50,
        *,
        variant="II",
        encoder="auto",
        conv_channels=(4, 8),
        hidden_layer_sizes=(128,),
        view_components=64,
        fusion_layer_sizes=(128,),
        activation="relu",
        code_activation="identity",
        standardize=True,
        input_map="rbf",
        n_landmarks=200,
        rotation="pca",
        loss_weights=None,
        contrastive=0.1,
        temperature=0.5,
        view_dropout=0.15,
        input_dropout=0.2,
        lr_schedule="constant",
        max_column_rows=512,
        batch_size=128,
        learning_rate_init=1e-3,
        alpha=0.0,
        max_iter=25,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=0.0,
        warm_start=False,
        random_state=None,
        devices=None,
        verbose=0,
        n_jobs=None,
    ):
        self.n_components = n_components
        self.variant = variant
        self.encoder = encoder
        self.conv_channels = conv_channels
        self.hidden_layer_sizes = hidden_layer_sizes
        self.view_components = view_components
        self.fusion_layer_sizes = fusion_layer_sizes
        self.activation = activation
        self.code_activation = code_activation
        self.standardize = standardize
        self.input_map = input_map
        self.n_landmarks = n_landmarks
        self.rotation = rotation
        self.loss_weights = loss_weights
        self.contrastive = contrastive
        self.temperature = temperature
        self.view_dropout = view_dropout
        self.input_dropout = input_dropout
        self.lr_schedule = lr_schedule
        self.max_column_rows = max_column_rows
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.random_state = random_state
        self.devices = devices
        self.verbose = verbose
        self.n_jobs = n_jobs

    # ---- input ---------------------------------------------------------------------

    def _check_sizes(self, what, sizes, allow_empty):
        sizes = list(sizes)
        if (not sizes and not allow_empty) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
            for s in sizes
        ):
            raise ValueError(
                f"{what} must be a {'possibly empty ' if allow_empty else ''}tuple of positive "
                f"integers; got {sizes!r}."
            )
        return [int(s) for s in sizes]

    def _check_input(self, X, *, fitted):
        """Validate ``X``; return ``(mm, views, kinds)``; nothing is copied or modified."""
        mm, views = check_views(X, missing="zero", allow_nan=False,  # sparse: unstored = 0
                                min_samples=1 if fitted else 2,
                                max_ndim=5)
        kinds = ["dense" if v.ndim == 2 else "conv" for v in views]
        if fitted:
            self._check_input_signature(mm, views)
            return mm, views, kinds
        n_conv = len(self._check_sizes("conv_channels", self.conv_channels, False))
        self._check_sizes("hidden_layer_sizes", self.hidden_layer_sizes, True)
        self._check_sizes("fusion_layer_sizes", self.fusion_layer_sizes, True)
        for v, kind in zip(views, kinds, strict=True):
            if kind == "conv":
                conv_stack_shapes(v.shape[2:], n_conv, name=v.name)
        for v in views:  # last: errors about the input's structure come first
            check_variation(v)
        return mm, views, kinds

    def _weights(self, names):
        """Weights of the kinds of terms and of the views, from ``loss_weights``."""
        kinds = {"view": 1.0, "column": 1.0, "cross": 1.0}
        views = dict.fromkeys(names, 1.0)
        if self.loss_weights is not None:
            unknown = set(self.loss_weights) - set(kinds) - set(views)
            if unknown:
                raise ValueError(
                    f"loss_weights has unknown keys {sorted(unknown)}; expected kinds of "
                    f"terms {sorted(kinds)} or view names {list(names)}."
                )
            for k, v in self.loss_weights.items():
                if not isinstance(v, numbers.Real) or v < 0:
                    raise ValueError(f"loss_weights[{k!r}] must be a non-negative number; "
                                     f"got {v!r}.")
                (kinds if k in kinds else views)[k] = float(v)
        return kinds, views

    # ---- the network ---------------------------------------------------------------

    def _build_linear(self, views, gen):
        """Linear view encoders (code width ``n_components``) summed by the fusion layer."""
        k = self.n_components
        view_aes = [build_module(lambda v=v: LinearAutoencoder(v.shape[1:], k), gen, dev)
                    for v, dev in zip(views, self.devices_, strict=True)]
        fuse = build_module(lambda: mlp([k * len(views), k]), gen, self.devices_[0])
        return _Net(view_aes, {}, fuse)

    def _build(self, views, kinds, gen, data, train_idx):
        k, kv = self.n_components, self.view_components
        hidden = self._check_sizes("hidden_layer_sizes", self.hidden_layer_sizes, True)
        fusion = self._check_sizes("fusion_layer_sizes", self.fusion_layer_sizes, True)
        channels = self._check_sizes("conv_channels", self.conv_channels, False)
        act = self.activation
        view_aes, col_aes = [], {}
        for i, (v, kind, dev) in enumerate(zip(views, kinds, self.devices_, strict=True)):
            if kind == "conv":
                view_aes.append(build_module(
                    lambda v=v: ConvAutoencoder(
                        v.shape[1:], channels, hidden, kv, activation=act,
                        code_input=k, name=v.name),
                    gen, dev))
                continue
            if self.input_map is None:
                view_aes.append(build_module(
                    lambda v=v: DenseAutoencoder(v.shape[1], hidden, kv, activation=act),
                    gen, dev))
            else:  # "rbf": landmarks drawn from the training rows
                rows = train_idx[torch.randperm(len(train_idx), generator=gen)
                                 [: self.n_landmarks].sort().values]
                features = rbf_features(data[i].rows(rows))
                self.input_gammas_[v.name] = float(features.gamma)
                m = len(rows)
                ae = build_module(lambda v=v, m=m: _MappedAutoencoder(
                    m, v.shape[1], hidden, kv, activation=act), gen, dev)
                ae.features = features
                view_aes.append(ae)
            width = self._n_col_rows
            col_aes[str(i)] = build_module(
                lambda width=width: DenseAutoencoder(width, hidden, k, activation=act),
                gen, dev)
        code_act = None if self.code_activation == "identity" else self.code_activation
        fuse = build_module(
            lambda: mlp([kv * len(views), *fusion, k], act, code_act), gen, self.devices_[0])
        return _Net(view_aes, col_aes, fuse)

    def _encode(self, batches, rotate=True, keep=None):
        """``Z`` (on the fusion device) and each view's code from standardised batches.

        ``rotate``: in the fitted orientation (``Z R``, see ``rotation``); the training
        loss uses the network's own output. ``keep``: per view, a ``(n, 1)`` 0/1 mask of
        the samples whose code reaches the fusion (``view_dropout``).
        """
        net = self.module_
        dev0 = self.devices_[0]
        codes = [ae.encode(x) for ae, x in zip(net.view_aes, batches, strict=True)]
        fused = [c.to(dev0) for c in codes]
        if keep is not None:
            fused = [c * m for c, m in zip(fused, keep, strict=True)]
        Z = net.fusion(torch.cat(fused, 1))
        if rotate and self.rotation_ is not None:
            Z = Z @ torch.as_tensor(self.rotation_, dtype=Z.dtype, device=dev0)
        return Z, codes

    def _rotation_inv(self):
        """``W^-1`` of the fitted map ``rotation_`` (float64; ``W^T`` when orthogonal)."""
        cached = self.__dict__.get("_rotation_inverse")
        if cached is None or cached[0] is not self.rotation_:
            cached = (self.rotation_, np.linalg.inv(np.asarray(self.rotation_, np.float64)))
            self._rotation_inverse = cached
        return cached[1]

    # ---- fitting -------------------------------------------------------------------

    def fit_transform(self, X, y=None):
        """Fit the model and return the representation of ``X``.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views (rows = samples).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components), float32
            The fused representation (computed in eval mode after training).
        """
        self._fit(X)
        return self.transform(X)

    def _architecture(self):
        return {key: getattr(self, key) for key in _ARCHITECTURE}

    def _is_warm(self):
        """A warm start continues the fitted network only if its architecture is unchanged."""
        return (self.warm_start and hasattr(self, "module_")
                and self.__dict__.get("encoder_") == "neural"
                and self.__dict__.get("_built_with") == self._architecture())

    def _fit(self, X):
        warm = self._is_warm()
        before = set(vars(self))
        # a warm refit that fails or is interrupted puts the previous model back (its
        # network is trained in place, so the snapshot is a copy)
        saved = copy.deepcopy({k: v for k, v in vars(self).items()
                               if k.startswith("_") or k.endswith("_")}) if warm else None
        try:
            return self._fit_impl(X)
        except BaseException:
            # never half-fitted: a fresh fit that fails (a late validation error, Ctrl-C
            # while the networks are built) leaves the estimator unfitted
            for key in list(vars(self)):
                if key not in before or (key.endswith("_") and not key.startswith("__")):
                    delattr(self, key)
            if warm:
                vars(self).update(saved)
            raise

    def _choose_encoder(self, mm, train_idx):
        """``(encoder_, encoder_scores_)``: the fitted choice of ``encoder`` (see there)."""
        if self.encoder != "auto":
            return self.encoder, None
        choice = _auto_encoder(len(train_idx))
        if choice != "compare":
            return choice, None
        # both models on 90% of the training rows, scored on the other 10%
        gen, _ = torch_generator(self.random_state)
        perm = train_idx[torch.randperm(len(train_idx), generator=gen)].numpy()
        n_val = max(1, len(perm) // 10)
        fit_rows, val_rows = np.sort(perm[n_val:]), np.sort(perm[:n_val])
        scores = {}
        for kind in ("linear", "neural"):
            trial = clone(self).set_params(encoder=kind, warm_start=False, verbose=0)
            scores[kind] = float(trial.fit(mm[fit_rows]).score(mm[val_rows]))
        return max(scores, key=scores.get), scores

    def _fit_impl(self, X):
        self._validate_params()
        warm = self._is_warm()
        mm, views, kinds = self._check_input(X, fitted=warm)
        weights, view_w = self._weights(mm.names)
        n = len(mm)
        gen, rng = torch_generator(self.random_state)
        if not warm:
            self.devices_ = resolve_devices(self.devices, mm.names)
            self._set_input_signature(mm, views)
            self.view_kinds_ = kinds
            self._n_features_out = self.n_components
        # rows held out for early stopping
        perm = torch.randperm(n, generator=gen)
        if self.early_stopping:
            n_val = max(1, int(round(self.validation_fraction * n)))
            if n - n_val < 2:
                raise ValueError(f"early_stopping with validation_fraction="
                                 f"{self.validation_fraction} leaves {n - n_val} training "
                                 f"row(s) of {n}; at least 2 are needed.")
            val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        else:
            val_idx, train_idx = None, torch.arange(n)
        n_train = len(train_idx)
        if not warm:
            sub = [_subset(v, train_idx) for v in views]
            stats = [_stats(s, kd, self.standardize) for s, kd in zip(sub, kinds, strict=True)]
            self.view_means_ = [m for m, _ in stats]
            self.view_scales_ = [s for _, s in stats]
            self._n_col_rows = min(n_train, self.max_column_rows)
            self.encoder_, self.encoder_scores_ = self._choose_encoder(mm, train_idx)
            self._built_with = self._architecture()
            self.n_iter_ = 0
            self.loss_curve_, self.loss_terms_ = [], {}
            self.input_gammas_ = {}
            if self.encoder_ == "linear":
                return self._fit_linear(views, kinds, train_idx, view_w, gen)
        elif n_train < self._n_col_rows:
            raise ValueError(
                f"warm_start: the column encoders read {self._n_col_rows} rows, but X has "
                f"only {n_train} training rows; pass at least {self._n_col_rows}."
            )
        data = [_ViewData(v.data, m, s, d) for v, m, s, d in
                zip(views, self.view_means_, self.view_scales_, self.devices_, strict=True)]
        if not warm:
            self.module_ = self._build(views, kinds, gen, data, train_idx)
        # the fixed rows through which the column encoders read each column
        pick = torch.randperm(n_train, generator=gen)[: self._n_col_rows].sort().values
        col_rows = train_idx[pick]
        cols_T = {str(i): d.rows(col_rows).T.contiguous()
                  for i, (d, kd) in enumerate(zip(data, kinds, strict=True)) if kd == "dense"}
        net = self.module_
        net.train()
        # fused: one kernel per step for all the parameters (a third of the CPU time of
        # a step went into the per-tensor updates of the unfused Adam)
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate_init,
                               weight_decay=self.alpha, fused=_fusable(net))
        col_state = {key: [None, 0] for key in cols_T}  # (column order, position)

        def next_cols(key):
            order, pos = col_state[key]
            n_cols = cols_T[key].shape[0]
            if order is None or pos >= n_cols:  # drawn on the host, moved once
                order = torch.randperm(n_cols, generator=gen).to(cols_T[key].device)
                pos = 0
            block = order[pos: pos + self.batch_size]
            col_state[key] = [order, pos + self.batch_size]
            return block

        def batch_loss(idx, terms):
            batches = [d.rows(idx) for d in data]
            inputs, keep = batches, None
            if net.training and self.input_dropout > 0:  # denoising: masked inputs
                inputs = [x * _bernoulli(x.shape, 1 - self.input_dropout, gen, x.device)
                          for x in batches]
            if net.training and self.view_dropout > 0 and len(batches) > 1:
                keep = _view_masks(len(idx), len(batches), self.view_dropout, gen,
                                   self.devices_[0])
            Z, codes = self._encode(inputs, rotate=False, keep=keep)
            total = 0.0
            for i, (ae, x, c, dev, name) in enumerate(zip(
                    net.view_aes, batches, codes, self.devices_, self.view_names_,
                    strict=True)):
                key, vw = str(i), view_w[name]
                if kinds[i] == "conv" or self.variant == "II":
                    # a tensor is decoded from Z; in II a matrix also from its own code
                    src = Z.to(dev) if kinds[i] == "conv" else c
                    rec = torch.mean((ae.decode(src) - x) ** 2)
                    terms[name] = terms.get(name, 0.0) + rec.detach()
                    total = total + vw * weights["view"] * rec.to(self.devices_[0])
                if kinds[i] == "dense":
                    cols = next_cols(key)
                    xt = cols_T[key][cols.to(dev)]
                    col_ae = net.col_aes[key]
                    V, xt_rec = col_ae(xt)
                    cross = torch.mean((Z.to(dev) @ V.T - x[:, cols.to(dev)]) ** 2)
                    if self.variant == "I":
                        terms[name] = terms.get(name, 0.0) + cross.detach()
                        total = total + vw * weights["view"] * cross.to(self.devices_[0])
                    else:
                        trec = torch.mean((xt_rec - xt) ** 2)
                        terms[name + ".T"] = terms.get(name + ".T", 0.0) + trec.detach()
                        terms[name + ".ZV"] = terms.get(name + ".ZV", 0.0) + cross.detach()
                        total = (total + vw * weights["column"] * trec.to(self.devices_[0])
                                 + vw * weights["cross"] * cross.to(self.devices_[0]))
            if self.contrastive > 0 and len(codes) > 1:
                nce = contrastive_loss([c.to(self.devices_[0]) for c in codes],
                                       self.temperature)
                terms["contrastive"] = terms.get("contrastive", 0.0) + nce.detach()
                total = total + self.contrastive * nce
            return total

        def step(epoch):
            net.train()
            schedule_lr([opt], self.lr_schedule, self.learning_rate_init, epoch,
                        self.max_iter)
            terms, total, n_b = {}, 0.0, 0
            # indices moved to the devices once per epoch, losses summed there
            for rows in row_batches(n_train, self.batch_size, self.devices_, generator=gen,
                                    index=train_idx):
                opt.zero_grad(set_to_none=True)
                loss = batch_loss(rows, terms)
                loss.backward()
                opt.step()
                total = total + loss.detach()
                n_b += 1
            out = {k: float(v) / n_b for k, v in terms.items()}
            out["loss"] = float(total) / n_b
            return out

        validation, on_improvement, best = None, None, {}
        if self.early_stopping:
            def validation():
                net.eval()
                with torch.no_grad():
                    terms = {}
                    return float(batch_loss(val_idx, terms))

            def on_improvement():
                best["state"] = copy.deepcopy(net.state_dict())

        hist = fit_loop(step, max_iter=self.max_iter, tol=self.tol,
                        n_iter_no_change=self.n_iter_no_change, verbose=self.verbose,
                        desc="MMEDA", estimator="MMEDA", validation=validation,
                        on_improvement=on_improvement)
        if best:
            net.load_state_dict(best["state"])
        net.eval()
        self.loss_curve_ = self.loss_curve_ + hist.loss
        for key, vals in hist.terms.items():
            self.loss_terms_[key] = self.loss_terms_.get(key, []) + vals
        self.n_iter_ += hist.n_iter
        with torch.no_grad():
            V = {key: net.col_aes[key].encode(xt) for key, xt in cols_T.items()}
        return self._finish(data, train_idx, V)

    def _finish(self, data, train_idx, V):
        """Fit ``rotation_`` on the training rows and store the turned column codes ``V``."""
        with torch.no_grad():
            self.rotation_ = self._rotation_inverse = None
            if self.rotation is not None:
                Zt = torch.cat([self._encode([d.rows(idx) for d in data], rotate=False)[0]
                                for idx in train_idx.split(_CHUNK)]).double().cpu()
                self.rotation_ = _rotation_map(Zt, self.rotation)
            Rinv = torch.eye(self.n_components, dtype=torch.float64) if self.rotation_ is None \
                else torch.as_tensor(self._rotation_inv())
            # Z V^T = (Z W)(V W^-T)^T: the column codes turn with the representation
            # (W^-T = W for an orthogonal W)
            self.column_embeddings_ = {
                self.view_names_[int(key)]: as_numpy(v.double().cpu() @ Rinv.T).astype(
                    np.float32)
                for key, v in V.items()
            }
        return self

    def _fit_linear(self, views, kinds, train_idx, view_w, gen):
        """The small-data path: the closed-form optimum of a linear MMEDA.

        With linear encoders, decoders and fusion, the squared reconstruction error
        summed over every entry, view ``v``'s weighted by ``w_v`` (``loss_weights``), is
        minimised by the principal components of the standardised views side by side,
        view ``v`` scaled by ``sqrt(w_v)`` (Eckart-Young): the networks are set to that
        solution. Every entry weighs the same here (as in PCA of the concatenated views),
        not every view as in the neural loss: with 40 training digits, the per-view
        weighting lost 0.04-0.07 macro-F1 to it on every probe
        (``benchmarks/results/representations_log.md``). ``loss_curve_`` holds that
        objective divided by the number of entries per row.
        """
        k = self.n_components
        self.module_ = net = self._build_linear(views, gen)
        data = [_ViewData(v.data, m, s, d) for v, m, s, d in
                zip(views, self.view_means_, self.view_scales_, self.devices_, strict=True)]
        blocks, scales = [], []
        for d, v in zip(data, views, strict=True):
            x = torch.cat([d.rows(idx).flatten(1).double().cpu()
                           for idx in train_idx.split(_CHUNK)])
            scales.append(float(np.sqrt(view_w[v.name])))
            blocks.append(x * scales[-1])
        A = torch.cat(blocks, 1)
        mu = A.mean(0)
        Ac = A - mu
        Vh = torch.linalg.svd(Ac, full_matrices=False)[2]
        P = torch.zeros(k, A.shape[1], dtype=torch.float64)
        P[: min(k, len(Vh))] = Vh[:k]
        residual = Ac - (Ac @ P.T) @ P
        terms, total, off, V = {}, 0.0, 0, {}
        with torch.no_grad():
            for i, (ae, b, sv, v) in enumerate(zip(net.view_aes, blocks, scales, views,
                                                   strict=True)):
                cols = slice(off, off + b.shape[1])
                off += b.shape[1]
                inv = 1.0 / sv if sv > 0 else 0.0
                ae.encoder.weight.copy_(P[:, cols] * sv)
                ae.encoder.bias.zero_()
                ae.decoder.weight.copy_(P[:, cols].T * inv)
                ae.decoder.bias.copy_(mu[cols] * inv)
                mse = float((residual[:, cols] * inv).pow(2).mean()) if sv > 0 else 0.0
                terms[v.name] = [mse]
                total += view_w[v.name] * mse * b.shape[1] / A.shape[1]
                if kinds[i] == "dense":
                    V[str(i)] = ae.decoder.weight.to(torch.float32)
            fusion = net.fusion[0]
            fusion.weight.copy_(torch.eye(k, dtype=torch.float64).repeat(1, len(views)))
            fusion.bias.copy_(-(mu @ P.T))
        net.eval()
        self.n_iter_ = 1
        self.loss_curve_, self.loss_terms_ = [total], terms
        return self._finish(data, train_idx, V)

    # ---- out of sample ---------------------------------------------------------------

    def _chunks(self, X):
        """Yield the standardised views of ``X`` chunk by chunk, each on its device."""
        mm, views, _ = self._check_input(X, fitted=True)
        n = len(mm)
        data = [_ViewData(v.data, m, s, d) if v.kind == "sparse" else (v, m, s, d)
                for v, m, s, d in zip(views, self.view_means_, self.view_scales_,
                                      self.devices_, strict=True)]
        for start in range(0, n, _CHUNK):
            idx = torch.arange(start, min(start + _CHUNK, n))
            batch = []
            for d in data:
                if isinstance(d, _ViewData):
                    batch.append(d.rows(idx))
                else:
                    v, m, s, dev = d
                    t = _as_float32(v.data[start: start + _CHUNK], dev)
                    batch.append((t - torch.as_tensor(m, dtype=torch.float32, device=dev))
                                 / torch.as_tensor(s, dtype=torch.float32, device=dev))
            yield batch

    def transform(self, X):
        """The representation of (new) samples: row encoders and fusion, in eval mode.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views, shaped as in ``fit``.

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components), float32
            The fused representation, in the fitted rotation.
        """
        check_is_fitted(self)
        self.module_.eval()
        out = []
        with torch.no_grad():
            for batch in self._chunks(X):
                Z, _ = self._encode(batch)
                out.append(as_numpy(Z))
        return np.concatenate(out, 0).astype(np.float32, copy=False)

    def _decode_from_z(self, Z, i):
        """View ``i`` (standardised) decoded from the representation."""
        dev = self.devices_[i]
        if self.view_kinds_[i] == "dense":
            V = torch.as_tensor(self.column_embeddings_[self.view_names_[i]], device=dev)
            return Z.to(dev) @ V.T
        if self.rotation_ is not None:  # back to the network's own orientation
            Z = Z @ torch.as_tensor(self._rotation_inv(), dtype=Z.dtype, device=Z.device)
        return self.module_.view_aes[i].decode(Z.to(dev))

    def _unscale(self, rec, i):
        rec = as_numpy(rec).astype(np.float64)
        return rec * self.view_scales_[i] + self.view_means_[i]

    def inverse_transform(self, X):
        """Reconstruct every view from representations.

        A matrix view is ``Z V^T``, a tensor view its decoder's output from ``Z``
        (both variants).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Representations (the output of :meth:`transform`).

        Returns
        -------
        views : list of ndarray
            One reconstruction per view, on the original scale, shaped like the view.
        """
        check_is_fitted(self)
        Z = np.asarray(X, dtype=np.float32)
        if Z.ndim != 2 or Z.shape[1] != self.n_components:
            raise ValueError(f"inverse_transform expects an array of shape (n_samples, "
                             f"{self.n_components}); got {Z.shape}.")
        if not np.isfinite(Z).all():
            raise ValueError("inverse_transform: the representations contain NaN or inf.")
        self.module_.eval()
        out = [[] for _ in self.view_kinds_]
        with torch.no_grad():
            for s in range(0, len(Z), _CHUNK):
                z = torch.as_tensor(Z[s: s + _CHUNK], device=self.devices_[0])
                for i in range(len(out)):
                    out[i].append(self._unscale(self._decode_from_z(z, i), i))
        return [np.concatenate(parts, 0) for parts in out]

    def _reconstruct_std(self, Z, codes, i):
        if self.variant == "I" or self.view_kinds_[i] == "conv" or self.encoder_ == "linear":
            return self._decode_from_z(Z, i)
        return self.module_.view_aes[i].decode(codes[i])

    def reconstruct(self, X):
        """Each view of ``X`` as the model reconstructs it (``X'`` of the paper).

        A tensor view is decoded from ``Z``; a matrix view is ``Z V^T`` in variant I and
        its own autoencoder's output ``X'`` in variant II.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views, shaped as in ``fit``.

        Returns
        -------
        views : list of ndarray
            One reconstruction per view, on the original scale.
        """
        check_is_fitted(self)
        self.module_.eval()
        out = [[] for _ in self.view_kinds_]
        with torch.no_grad():
            for batch in self._chunks(X):
                Z, codes = self._encode(batch)
                for i in range(len(out)):
                    out[i].append(self._unscale(self._reconstruct_std(Z, codes, i), i))
        return [np.concatenate(parts, 0) for parts in out]

    def score(self, X, y=None):
        """Return minus the mean squared reconstruction error of the standardised views.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of samples, new or seen.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            ``-mean_v MSE_v`` over the views, each in standardised units (higher is
            better).
        """
        check_is_fitted(self)
        self.module_.eval()
        sums = np.zeros(len(self.view_kinds_))
        counts = np.zeros(len(self.view_kinds_))
        with torch.no_grad():
            for batch in self._chunks(X):
                Z, codes = self._encode(batch)
                for i, x in enumerate(batch):
                    rec = self._reconstruct_std(Z, codes, i)
                    sums[i] += float(((rec - x.to(rec.device)) ** 2).sum())
                    counts[i] += x.numel()
        return -float(np.mean(sums / counts))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False  # an autoencoder needs complete views
        return tags

    # ---- persistence -----------------------------------------------------------------

    def __getstate__(self):
        # the live network stays on its devices; the pickle holds a CPU copy
        module = self.__dict__.get("module_")
        if module is None:
            return super().__getstate__()
        del self.__dict__["module_"]
        try:
            state = super().__getstate__()
        finally:
            self.module_ = module
        state["module_"] = copy.deepcopy(module).to("cpu")
        return state

    def _restore_devices(self):
        net = self.module_
        for i, dev in enumerate(self.devices_):
            net.view_aes[i].to(dev)
            if str(i) in net.col_aes:
                net.col_aes[str(i)].to(dev)
        net.fusion.to(self.devices_[0])


def _fusable(net):
    """Whether Adam's fused kernel serves every parameter of ``net`` (CPU/CUDA floats)."""
    return all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point
               for p in net.parameters())


def _bernoulli(shape, p, gen, device):
    """A float 0/1 tensor of ``shape`` on ``device``, each entry 1 with probability ``p``
    (drawn on the CPU from ``gen``, so a seeded fit is the same on every device)."""
    return (torch.rand(shape, generator=gen) < p).to(device=device, dtype=torch.float32)


def _view_masks(n, n_views, p, gen, device):
    """Per view, a ``(n, 1)`` mask hiding each sample's code with probability ``p``;
    every sample keeps at least one view (one drawn at random when all were hidden)."""
    keep = torch.rand(n, n_views, generator=gen) >= p
    none = torch.nonzero(~keep.any(1)).squeeze(1)
    if len(none):
        keep[none, torch.randint(n_views, (len(none),), generator=gen)] = True
    keep = keep.to(device=device, dtype=torch.float32)
    return [keep[:, i: i + 1] for i in range(n_views)]


def info_nce(a, b, temperature):
    """Symmetric InfoNCE between two batches of codes (row ``i`` of each is one sample).

    The codes are L2-normalised; the logits are their cosine similarities over
    ``temperature``; each row of ``a`` must pick its own row of ``b`` among the batch,
    and the other way round (as in contrastive multiview coding, Tian et al. 2020).
    ``log(batch size)`` for codes that carry no information, 0 for a batch of one.
    """
    a = nn.functional.normalize(a, dim=1)
    b = nn.functional.normalize(b, dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (nn.functional.cross_entropy(logits, target)
                  + nn.functional.cross_entropy(logits.T, target))


def contrastive_loss(codes, temperature):
    """Mean :func:`info_nce` over every pair of views' codes (all on one device)."""
    pairs = [(i, j) for i in range(len(codes)) for j in range(i + 1, len(codes))]
    return sum(info_nce(codes[i], codes[j], temperature) for i, j in pairs) / len(pairs)


def _rotation_map(Z, kind):
    """The linear map ``W`` (k x k, float64 ndarray) of ``rotation=kind`` fitted on ``Z``."""
    R = _principal_axes(Z)
    if kind == "pca":
        return R
    Zc = as_numpy(Z - Z.mean(0)) @ R
    if kind == "varimax":  # an orthogonal turn of the principal scores
        sd = np.ones(Zc.shape[1])
        T = _varimax(Zc / np.sqrt(np.mean(Zc**2)))
    else:  # "ica": whiten the principal scores (unit variance), then turn them
        sd = Zc.std(0, ddof=1)
        sd = np.where(sd > 1e-8 * max(float(sd.max(initial=0.0)), 1e-300), sd, 1.0)
        T = _ica_rotation(Zc / sd)
    # signs fixed for reproducibility: each new coordinate's skewness is non-negative
    signs = np.where(np.sum(((Zc / sd) @ T) ** 3, 0) < 0, -1.0, 1.0)
    return (R / sd) @ (T * signs)


def _varimax(L, max_iter=500, tol=1e-8):
    """Orthogonal ``T`` maximising the varimax criterion of ``L T`` (rows = samples)."""
    p, k = L.shape
    T = np.eye(k)
    d = 0.0
    for _ in range(max_iter):
        Lt = L @ T
        u, s, vh = np.linalg.svd(L.T @ (Lt**3 - Lt * (np.sum(Lt**2, 0) / p)))
        T = u @ vh
        d_old, d = d, float(s.sum())
        if d_old and d < d_old * (1 + tol):
            break
    return T


def _ica_rotation(Zw, max_iter=500, tol=1e-6):
    """Orthogonal ``T`` of symmetric FastICA (log-cosh) on whitened ``Zw``.

    Starts from the identity (deterministic), so no random state is needed.
    """
    n, k = Zw.shape
    T = np.eye(k)
    for _ in range(max_iter):
        Y = Zw @ T
        g = np.tanh(Y)
        gp = 1.0 - g**2
        Tn = (Zw.T @ g) / n - T * gp.mean(0)
        u, _, vh = np.linalg.svd(Tn, full_matrices=False)
        Tn = u @ vh
        lim = float(np.max(np.abs(np.abs(np.sum(Tn * T, 0)) - 1.0)))
        T = Tn
        if lim < tol:
            break
    return T


def _principal_axes(Z):
    """The orthogonal ``R`` (k x k, float64) whose columns are the principal axes of ``Z``.

    Ordered by decreasing variance, each axis' sign fixed (its largest entry positive)
    so that the result is reproducible.
    """
    Zc = Z - Z.mean(0)
    cov = (Zc.T @ Zc) / max(len(Z) - 1, 1)
    evals, evecs = torch.linalg.eigh(cov.cpu())
    R = evecs[:, torch.argsort(evals, descending=True)]
    signs = torch.sign(R[R.abs().argmax(0), torch.arange(R.shape[1])])
    signs[signs == 0] = 1
    return as_numpy(R * signs)


def _subset(view, idx):
    """A shallow View-like of the rows ``idx`` (for fitting the standardisation)."""
    from .._multimodal import View

    idx_np = idx.numpy()
    data = view.data
    if isinstance(data, torch.Tensor):
        data = data[idx.to(data.device)]
    elif sp.issparse(data):
        data = data[idx_np]
    elif len(idx_np) != data.shape[0]:
        data = data[idx_np]
    return View(view.name, data, view.kind)
