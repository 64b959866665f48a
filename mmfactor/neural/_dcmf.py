"""Deep collective matrix factorization (Mariappan & Rajan, Machine Learning 2019)."""

from __future__ import annotations

import copy
import math
import numbers

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._base import N_JOBS_CONSTRAINT, MultiModalTransformer
from .._device import as_numpy, resolve_devices, torch_generator
from .._multimodal import (
    check_entries,
    check_variation,
    check_views,
    relation_data,
    relation_weights,
    resolve_relations,
)
from .._training import DeviceCSR, fit_loop, row_batches, schedule_lr
from ._modules import ACTIVATIONS, build_module, mlp

__all__ = ["DCMF"]

_ENCODE_ROWS = 1024  # rows per chunk when encoding without gradients
_DENSE_BATCH = 1 << 22  # a sparse batch of at most this many cells is densified
#: ``encoder="auto"``: the sample entity's linear closed form below this many training
#: samples (measured: benchmarks/results/dcmf_log.md), the trained network from it
NEURAL_FROM = 1000


# --------------------------------------------------------------------------------------
# Data: one matrix of the collection, standardized, and its row blocks
# --------------------------------------------------------------------------------------


class _Matrix:
    """One relation on the host, standardized with the statistics of its observed entries.

    ``kind`` is ``"observed"`` (a CSR whose stored entries are the observed ones, explicit
    zeros included), ``"zero"`` (a CSR whose unstored entries are zeros that count) or
    ``"dense"`` (a complete array). Values are ``(x - mean) / std``; a missing entry is 0
    in the autoencoders' input and absent from every loss. A ``"zero"`` matrix has the
    mean and standard deviation of all its cells, the same as the matrix given dense; it
    stores ``x / std`` (sparse) and its batches subtract ``shift = mean / std`` when they
    are densified (implicit centring).
    """

    def __init__(self, view, *, missing, scale=None):
        data = view.data
        if view.kind == "sparse" and missing == "zero":
            # every cell counts, unstored ones as 0: the mean and standard deviation of
            # all cells, as for the same matrix given dense (centred implicitly: see shift)
            self.kind, csr = "zero", sp.csr_matrix(data, dtype=np.float64, copy=True)
            csr.sum_duplicates()
            n = max(csr.shape[0] * csr.shape[1], 1)
            mean = float(csr.data.sum()) / n
            stats = (mean, math.sqrt(max(float((csr.data**2).sum()) / n - mean**2, 0.0)))
        elif view.kind == "sparse":
            self.kind, csr = "observed", sp.csr_matrix(data, dtype=np.float64, copy=True)
            stats = (float(csr.data.mean()) if csr.nnz else 0.0,
                     float(csr.data.std()) if csr.nnz else 1.0)
        else:
            arr = as_numpy(data).astype(np.float64)
            nan = np.isnan(arr)
            if nan.any():
                rows, cols = np.nonzero(~nan)
                self.kind = "observed"
                csr = sp.csr_matrix((arr[rows, cols], (rows, cols)), shape=arr.shape)
            else:
                self.kind, csr = "dense", arr
            obs = arr[~nan]
            stats = (float(obs.mean()), float(obs.std())) if obs.size else (0.0, 1.0)
        self.mean, self.std = scale if scale is not None else (stats[0], stats[1] or 1.0)
        # a "zero" matrix stores x / std and stays sparse; a batch subtracts mean / std
        # when it is densified, so that every kind holds (x - mean) / std
        self.shift = self.mean / self.std if self.kind == "zero" else 0.0
        self.shape = tuple(data.shape)
        if self.kind == "dense":
            self.X = ((csr - self.mean) / self.std).astype(np.float32)
        else:
            csr.sum_duplicates()
            if self.kind == "observed":
                csr.data = csr.data - self.mean
            csr.data = (csr.data / self.std).astype(np.float32)
            self.X = csr.astype(np.float32)

    def coo(self):
        """Observed entries as (rows, cols, standardized values)."""
        if self.kind == "dense":
            r, c = np.indices(self.shape).reshape(2, -1)
            return r, c, self.X.ravel()
        coo = self.X.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data

    def hold_out(self, fraction, rng):
        """Move ``fraction`` of the observed entries out of the matrix; return them."""
        rows, cols, vals = self.coo()
        val = rng.rand(len(vals)) < fraction
        self.kind = "observed"
        self.X = sp.csr_matrix((vals[~val], (rows[~val], cols[~val])), shape=self.shape,
                               dtype=np.float32)
        return rows[val], cols[val], vals[val]


class _Part:
    """A batch of rows of one block, on a device, in one of two layouts.

    Dense (``rows is None``): ``X`` is ``(batch, width)`` with zeros at missing entries
    and ``M`` its 0/1 observation mask (``None`` when every entry counts). Sparse:
    the observed entries as ``rows``, ``cols``, ``vals`` plus the ``offsets`` of each row
    (used when a dense batch would be too large). ``count`` is the number of entries
    that enter the loss.
    """

    def __init__(self, X=None, M=None, rows=None, cols=None, vals=None, offsets=None,
                 count=0):
        self.X, self.M = X, M
        self.rows, self.cols, self.vals, self.offsets = rows, cols, vals, offsets
        self.count = count

    def dropped(self, rate, gen):
        """A copy for the encoder's input: each entry zeroed with probability ``rate``
        (drawn from ``gen``, on the part's device), the others scaled by ``1 / (1 - rate)``
        (inverted dropout: a full row keeps its expected input)."""
        vals = self.X if self.rows is None else self.vals
        keep = torch.rand(vals.shape, generator=gen, device=vals.device) >= rate
        vals = vals * keep / (1.0 - rate)
        if self.rows is None:
            return _Part(X=vals, M=self.M, count=self.count)
        return _Part(rows=self.rows, cols=self.cols, vals=vals, offsets=self.offsets,
                     count=self.count)

    def sse(self, pred):
        """Sum of squared errors of ``pred`` (laid out like this part) over its entries."""
        if self.rows is not None:
            return ((pred - self.vals) ** 2).sum()
        err = (pred - self.X) ** 2
        return (err * self.M).sum() if self.M is not None else err.sum()


class _Block:
    """The part of an entity's autoencoder input that one relation contributes.

    ``X`` has the entity's members as rows (the relation itself, or its transpose when the
    entity is the relation's column type: ``side="col"``); ``offset`` is its first column in the
    concatenated input and ``slot`` the code unit holding this relation's bias. The block
    is moved to ``device`` once (a dense tensor, or a :class:`DeviceCSR`); batches are
    gathered there.
    """

    def __init__(self, rel, side, other, X, kind, offset, slot, shift=0.0, device="cpu"):
        self.rel, self.side, self.other, self.kind = rel, side, other, kind
        self.shift = shift
        self.offset, self.slot = offset, slot
        self.width = X.shape[1]
        self.X = (torch.as_tensor(X, dtype=torch.float32, device=device) if kind == "dense"
                  else DeviceCSR(X, device))

    def batch(self, rows):
        """The :class:`Rows` ``rows`` as a :class:`_Part` (only this batch is densified)."""
        n = len(rows)
        if self.kind == "dense":
            return _Part(X=self.X[rows.on(self.X.device)], count=n * self.width)
        if self.kind == "zero":  # every entry counts
            return _Part(X=self.X.dense(rows) - self.shift, count=n * self.width)
        if n * self.width <= _DENSE_BATCH:
            X, M = self.X.dense(rows, mask=True)
            return _Part(X=X, M=M, count=self.X.nnz(rows))
        r, c, v, offsets = self.X.rows(rows)
        return _Part(rows=r, cols=c, vals=v, offsets=offsets, count=len(v))


def _row_blocks(matrices, specs, entity, codes_width, device):
    """The blocks of ``entity``'s input, in relation order, with offsets and bias slots."""
    blocks, offset = [], 0
    for m, (spec, mat) in enumerate(zip(specs, matrices, strict=True)):
        for side in ("row", "col"):
            if getattr(spec, side) != entity or (side == "col" and spec.row == spec.col):
                continue
            X = mat.X if side == "row" else mat.X.T
            if sp.issparse(X):
                X = sp.csr_matrix(X)
            other = spec.col if side == "row" else spec.row
            blocks.append(_Block(m, side, other, X, mat.kind, offset, codes_width + len(blocks),
                                 mat.shift, device))
            offset += X.shape[1]
    return blocks


# --------------------------------------------------------------------------------------
# The per-entity autoencoder
# --------------------------------------------------------------------------------------


class _EntityAutoencoder(nn.Module):
    """An autoencoder whose first and last layers read and write sparse rows sparsely.

    For a sparse batch, the first layer is an ``embedding_bag`` over the observed entries
    and the last layer is evaluated at the observed entries only, so a batch costs
    ``O(nnz * width)`` rather than ``O(batch * n_features * width)``.
    """

    def __init__(self, n_features, hidden_layer_sizes, n_code, activation):
        super().__init__()
        hidden = [int(h) for h in hidden_layer_sizes]
        self.inp = nn.Linear(n_features, hidden[0] if hidden else n_code)
        self.act = ACTIVATIONS[activation]() if hidden else nn.Identity()
        self.encoder = mlp([*hidden, n_code], activation) if hidden else nn.Identity()
        self.decoder = (mlp([n_code, *hidden[::-1]], activation, activation) if hidden
                        else nn.Identity())
        self.out = nn.Linear(hidden[0] if hidden else n_code, n_features)

    def encode(self, parts, blocks):
        h = self.inp.bias
        for part, b in zip(parts, blocks, strict=True):
            W = self.inp.weight[:, b.offset : b.offset + b.width]
            f = _row_factors(part, b)
            if part.rows is None:
                h = h + (part.X if f is None else part.X * f[:, None]) @ W.T
            else:
                vals = part.vals if f is None else part.vals * f[part.rows]
                h = h + nn.functional.embedding_bag(part.cols, W.T.contiguous(), part.offsets,
                                                    mode="sum", per_sample_weights=vals)
        return self.encoder(self.act(h))

    def decode(self, code, parts, blocks):
        """The reconstruction of each block, laid out like its part (``None``: dense)."""
        H = self.decoder(code)
        out = []
        for part, b in zip(parts, blocks, strict=True):
            W = self.out.weight[b.offset : b.offset + b.width]
            bias = self.out.bias[b.offset : b.offset + b.width]
            if part is None or part.rows is None:
                out.append(H @ W.T + bias)
            else:
                out.append((H[part.rows] * W[part.cols]).sum(1) + bias[part.cols])
        return out


def _bilinear(code, other, part, k, slots):
    """``U_e U_o^T`` (+ both biases) laid out like ``part`` (dense, or at its entries)."""
    U, V = code[:, :k], other[:, :k]
    if part.rows is None:
        pred = U @ V.T
        if slots is not None:
            pred = pred + code[:, slots[0], None] + other[None, :, slots[1]]
        return pred
    rows, cols = part.rows, part.cols
    pred = (U[rows] * V[cols]).sum(1)
    if slots is not None:
        pred = pred + code[rows, slots[0]] + other[cols, slots[1]]
    return pred


def _canonical_rotation(U):
    """The orthogonal ``R`` that makes the columns of ``U R`` uncorrelated, by variance.

    ``U_r R (U_c R)^T = U_r U_c^T``: rotating every entity type's codes by the same ``R``
    changes no prediction, but gives components ordered by variance with a fixed sign
    (what a shallow downstream model, such as a depth-2 forest, benefits from).
    """
    U = U.astype(np.float64)
    evals, evecs = np.linalg.eigh(np.cov(U, rowvar=False).reshape(U.shape[1], U.shape[1]))
    R = evecs[:, np.argsort(evals)[::-1]]
    R *= np.sign(R[np.abs(R).argmax(0), np.arange(R.shape[1])])
    return R.astype(np.float32)


def _unsupported_columns(Z, rtol=1e-4):
    """Columns of the training codes ``Z`` (canonical orientation) with no spread.

    A network's code can collapse onto fewer directions than ``n_components`` on the
    training rows (standard deviation at float32 round-off, ~1e-8 of the leading one):
    nothing in training fixes what the encoder writes there for a new row, and a
    downstream model fitted on the training codes may weigh that noise heavily (one
    MovieLens fit: a test user's prediction off by 600 years through such a column).
    Returns the indices of the columns whose spread is at most ``rtol`` times the
    largest one, and their training means, the value ``transform`` gives them.
    """
    sd = Z.std(0, dtype=np.float64)
    dead = np.flatnonzero(sd <= rtol * sd.max()) if sd.max() > 0 else np.arange(0)
    return dead, Z[:, dead].mean(0, dtype=np.float64).astype(Z.dtype)


def _row_factors(part, block):
    """``row_scaling="count"``: each row's factor ``row_scale / (its observed entries)``,
    or None (no scaling, or a fully observed dense block)."""
    scale = getattr(block, "row_scale", None)
    if scale is None:
        return None
    if part.rows is None:
        if part.M is None:
            return None
        counts = part.M.sum(1)
    else:
        ends = torch.cat([part.offsets[1:], part.offsets.new_tensor([len(part.vals)])])
        counts = (ends - part.offsets).to(part.vals.dtype)
    return scale / counts.clamp(min=1.0)


def _dense_rows(part, block):
    """The rows of ``part`` as the encoder reads them, dense (``row_scaling`` applied)."""
    if part.rows is None:
        x = part.X
    else:
        x = torch.zeros(len(part.offsets), block.width, dtype=part.vals.dtype,
                        device=part.vals.device)
        x[part.rows, part.cols] = part.vals
    f = _row_factors(part, block)
    return x if f is None else x * f[:, None]


def _set_linear_closed_form(net, A, k):
    """Set a linear :class:`_EntityAutoencoder` to the optimum of its reconstruction loss.

    ``A`` (float64, ``n x width``) holds the training rows as the encoder reads them. By
    Eckart-Young, the rank-``k`` linear autoencoder with the least squared error over
    every entry projects the centred rows on their top ``k`` principal axes ``P``:
    ``code = (x - mu) P^T`` and ``x' = code P + mu`` (PCA of the entity's concatenated,
    standardized matrices). Code units past ``k`` (the bias units) and principal axes
    past the rank of ``A`` are 0. Returns the mean squared reconstruction error.
    """
    mu = A.mean(0)
    Ac = A - mu
    Vh = torch.linalg.svd(Ac, full_matrices=False)[2][:k]
    P = torch.zeros(net.inp.weight.shape, dtype=torch.float64)
    P[: len(Vh)] = Vh
    with torch.no_grad():
        net.inp.weight.copy_(P)
        net.inp.bias.copy_(-(P @ mu))
        net.out.weight.copy_(P.T)
        net.out.bias.copy_(mu)
    return float(((Ac - Ac @ P.T @ P) ** 2).mean())


# --------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------


class DCMF(MultiModalTransformer):
    r"""Deep collective matrix factorization: one autoencoder per entity type.

    Every matrix ``X_m`` of the collection relates a row entity type ``r`` to a column
    entity type ``c``. For each entity type ``e``, the matrices in which it appears are
    concatenated (transposed where ``e`` is the column type; a relation between ``e``
    and itself enters once, by rows) into ``C_e``, and an autoencoder reads each member's
    row of ``C_e``; its bottleneck is the member's representation ``U_e``. The loss is

    .. math::

        \sum_e \rho \, \operatorname{MSE}\big(C_e, \operatorname{dec}_e(U_e)\big)
        + \sum_m w_m \operatorname{MSE}_{\Omega_m}\big(X_m,
        U_r U_c^\top + b_r^m \mathbf{1}^\top + \mathbf{1} (b_c^m)^\top\big)
        + \tfrac{\alpha}{2} \lVert \theta \rVert^2
        + \alpha_U \sum_e \tfrac{1}{n_e} \lVert U_e \rVert_F^2

    with :math:`\rho` = ``reconstruction_weight``, :math:`\operatorname{MSE}_{\Omega_m}`
    the mean over the observed entries of :math:`X_m`, :math:`\theta` the network
    weights, :math:`\alpha_U` = ``alpha_code`` and :math:`n_e` the number of members of
    entity type :math:`e`. With ``input_dropout``, the encoders read their rows with
    entries dropped at random (denoising) while both losses compare against the full
    rows.

    Every matrix is standardized by the mean and standard deviation of its observed
    entries; a missing entry is 0 in the autoencoder's input and absent from every loss.
    With ``fit_intercept``, each encoder emits, next to ``U_e``, one bias unit per
    relation of ``e`` (the ``b^m`` above), so biases too are available for new samples.

    **Mini-batches cover every block.** The authors' code pairs the ``i``-th batch of
    rows with the ``i``-th batch of columns, so the off-diagonal blocks of every matrix
    never enter the factorization loss. Here an epoch visits every entity type's
    members once, in shuffled batches interleaved across types; a batch of ``e`` is
    encoded with gradients and its factorization loss runs over its *whole* row (or
    column) block of every matrix of ``e``, against the other types' current codes
    (kept in a table refreshed as their own batches are encoded; no gradient flows into
    the other encoder from that batch, its own batches carry it). So every entry of
    every matrix enters each epoch's gradient, twice (once per side), and each member is
    encoded once per epoch: a block-coordinate stochastic descent of the same
    objective. Sparse matrices stay sparse: the first layer multiplies a sparse batch,
    the last is evaluated at observed entries only (a batch costs ``O(nnz x width)``),
    and only a batch of a ``missing="zero"`` sparse matrix is ever densified.

    Parameters
    ----------
    n_components : int, default=10
        Width of every entity type's representation (the bottleneck).
    encoder : {"auto", "neural", "linear"}, default="auto"
        The sample entity's autoencoder. ``"neural"``: the network above, trained.
        ``"linear"``: a linear autoencoder set to the closed-form optimum of its
        reconstruction loss, the principal components of the samples' concatenated
        standardized views (missing entries at 0, as the encoder reads them), kept fixed
        while the other entity types' autoencoders are trained against those codes.
        ``"auto"``: linear below ``NEURAL_FROM = 1000`` training samples, the network
        from there. Measured (``benchmarks/results/dcmf_log.md``): on 40 to 800 training
        digits of mfeat (pix+fou), the trained network lost to PCA of the same views on
        every probe (with 40 digits, logistic macro-F1 0.27 against 0.87: the encoder's
        weights in the directions the training rows do not span keep their random
        initial values, and map new samples far from the training codes), and in 3-fold
        CV on the training digits (100: 0.50 vs 0.91; 400: 0.85 vs 0.95; 800: 0.91 vs
        0.95; 1,600: a tie, 0.961 vs 0.964). On MovieLens' 754 training users the CV
        picks the linear encoder (R^2 of age 0.35 against the network's folds, one of
        which an outlying user wrecks; test R^2 0.36 against 0.31, 0.30 and -879 over
        three seeds); on dicty's 780 genes the linear one also scores higher (GO AUC
        0.76 vs 0.65). The fitted choice is ``encoder_``.
    relations : None, list or dict, default=None
        The schema: for each view (and each matrix in ``X.shared``) its
        ``(row_entity, col_entity)`` pair. ``None``: every view relates the samples to a
        column entity of its own. A shared matrix may not involve the sample entity.
    sample_entity : str, default=None
        Name of the entity type of the rows of every view (default ``"sample"``, or the
        row entity the schema gives the views).
    hidden_layer_sizes : array-like of int, default=(64,)
        Hidden widths of every encoder (the decoders mirror them); ``()`` gives linear
        autoencoders.
    activation : {"relu", "tanh", "sigmoid", "elu", "identity"}, default="relu"
        Activation of the hidden layers (the code and the output are linear).
    alpha : float, default=1e-4
        L2 penalty on the networks' weight matrices.
    weights : None, float, list or dict, default=None
        Weight ``w_m`` of each relation's factorization loss (default 1 each); one float
        for all, a list in the order of the relations or a dict by relation name.
    reconstruction_weight : float, default=1.0
        Weight of the autoencoders' reconstruction losses.
    input_dropout : float in [0, 1), default=0.0
        Denoising during training: each entry of an encoder's input row (observed or
        not) is zeroed with this probability in every batch, the others scaled by
        ``1 / (1 - input_dropout)``; both losses still compare against the full rows.
        An encoder then cannot copy a rating it is asked to predict from its own input,
        which keeps it from overfitting the observed entries. ``transform`` reads full
        rows.
    alpha_code : float, default=0.1
        L2 penalty on the codes themselves (the representations ``U_e``, biases
        excluded): ``alpha_code`` times the mean over an entity type's members of
        :math:`\lVert u_i \rVert^2`, for every entity type. As CMF's ``alpha`` on its
        factors, it shrinks the members that few entries describe towards the biases;
        ``alpha`` only penalises the network weights. The default was chosen by
        measurement (``benchmarks/results/dcmf_log.md``): against ``0`` (the paper's
        loss), 3-fold CV on the training digits of mfeat favours it (six views 0.977 vs
        0.968, pix+fou 0.956 vs 0.954), as does a validation split of MovieLens' training
        ratings; ``0`` gives the paper's objective.
    row_scaling : {"none", "count"}, default="none"
        ``"count"``: each row of an incompletely observed matrix (NaN or unstored
        entries) enters its encoder divided by its number of observed entries and
        multiplied by the matrix's mean number per row, so that the encoder's first
        (linear) layer can read the row's mean (e.g. a user's mean rating, which a sum
        over a varying number of entries does not give). ``transform`` uses the fitted
        matrices' means. Measured on MovieLens (``benchmarks/results/dcmf_log.md``).
    fit_intercept : bool, default=True
        Let each encoder emit a bias per relation of its entity type.
    missing : {"unobserved", "zero"}, default="unobserved"
        What an unstored entry of a sparse view means.
    batch_size : int or "auto", default="auto"
        Members of an entity type per mini-batch; ``"auto"`` is ``min(256, n)``.
    learning_rate_init : float, default=1e-3
        Adam's learning rate.
    lr_schedule : {"constant", "cosine"}, default="constant"
        ``"cosine"``: the step size of epoch ``t`` (from 0) is ``learning_rate_init *
        (1 + cos(pi t / max_iter)) / 2`` (as :class:`MMEDA`'s). On MovieLens' ratings
        (a validation split of the training ratings, ``benchmarks/results/dcmf_log.md``)
        it took the validation RMSE from 0.9120 (constant, batches of 64) to 0.9083 (60
        epochs), over three seeds.
    max_iter : int, default=200
        Maximum number of epochs.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the observed entries of every matrix (except
        ``missing="zero"`` sparse ones), stop when their factorization loss stops
        improving and keep the best networks.
    validation_fraction : float, default=0.1
        Fraction of observed entries held out when ``early_stopping``.
    n_iter_no_change : int, default=10
        Epochs without an improvement larger than ``tol`` before stopping.
    tol : float, default=1e-4
        Relative improvement that counts; ``0`` runs all ``max_iter`` epochs.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the batches and the held-out entries (through a
        :class:`torch.Generator`; the global seed is never touched).
    devices : None, str, list or dict, default=None
        Where each entity type's autoencoder, data and codes live: one device, a list in
        the order of ``entities_``, or a dict by entity type. Only codes cross devices.
    verbose : int, default=0
        Show a progress bar.
    n_jobs : int, default=None
        CPU threads of torch, BLAS and OpenMP during this estimator's ``fit``,
        ``transform`` and other calls, put back afterwards (``-1``: all CPUs; ``None``:
        unchanged). See :ref:`busy-machines`.

    Attributes
    ----------
    encoder_ : str
        ``"neural"`` or ``"linear"``: the sample entity's autoencoder (see ``encoder``).
    factors_ : dict of str -> ndarray of shape (n_members, n_components)
        Every entity type's representation (the sample entity's for the training rows),
        in the canonical rotation: the same orthogonal rotation of every type's codes
        that makes the training samples' components uncorrelated, ordered by variance
        (it changes no prediction: ``U_r R (U_c R)^T = U_r U_c^T``).
    biases_ : dict of str -> dict
        Per relation, the ``"row"`` and ``"col"`` biases (when ``fit_intercept``).
    autoencoders_ : dict of str -> torch.nn.Module
        Every entity type's autoencoder.
    scaling_ : dict of str -> tuple of float
        Per relation, the ``(mean, std)`` used to standardize it.
    relations_ : list of tuple
        The resolved ``(name, row_entity, col_entity)`` of every relation.
    entities_ : list of str
        The entity types, the sample entity first.
    sample_entity_ : str
        The entity type of the samples.
    devices_ : list of torch.device
        One device per entity type, in the order of ``entities_``.
    loss_curve_ : list of float
        Objective after every epoch.
    loss_terms_ : dict of str -> list of float
        Per epoch: ``"ae[<entity>]"`` (reconstruction mse), each relation's mse,
        ``"penalty"``, and ``"validation"`` with early stopping.
    best_validation_score_ : float or None
        Best held-out factorization loss (early stopping), else None.
    n_iter_ : int
        Number of epochs run.
    n_features_in_ : int
        Total number of features over the views seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        The column names of ``X`` when it is one pandas DataFrame with string column
        names (only then); ``transform`` and ``score`` check them first.
    view_names_ : list of str
        Names of the views seen in ``fit``.

    See Also
    --------
    CMF : The linear collective matrix factorization.
    MMEDA : Multimodal autoencoders for views of any order.

    Notes
    -----
    Computation is in float32; ``transform`` returns float32.

    References
    ----------
    R. Mariappan and V. Rajan. Deep collective matrix factorization for augmented
    multi-view learning. Machine Learning 108, 1395-1420 (2019).

    Examples
    --------
    >>> import numpy as np
    >>> from mmfactor import DCMF, MultiModal
    >>> rng = np.random.RandomState(0)
    >>> X = MultiModal(rng.rand(30, 6), rng.rand(30, 4))
    >>> dcmf = DCMF(n_components=3, hidden_layer_sizes=(8,), max_iter=5, tol=0,
    ...             random_state=0)
    >>> dcmf.fit_transform(X).shape
    (30, 3)
    >>> sorted(dcmf.factors_), dcmf.factors_["view0_col"].shape
    (['sample', 'view0_col', 'view1_col'], (6, 3))
    """

    _parameter_constraints = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "encoder": [StrOptions({"auto", "neural", "linear"})],
        "relations": [None, list, tuple, dict],
        "sample_entity": [None, str],
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "weights": [None, Interval(numbers.Real, 0, None, closed="left"), list, tuple, dict],
        "reconstruction_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "input_dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "alpha_code": [Interval(numbers.Real, 0, None, closed="left")],
        "row_scaling": [StrOptions({"none", "count"})],
        "fit_intercept": ["boolean"],
        "missing": [StrOptions({"unobserved", "zero"})],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "lr_schedule": [StrOptions({"constant", "cosine"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "devices": [None, str, list, tuple, dict],
        "verbose": ["verbose"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __init__(
        self,
        n_components=10,
        *,
        encoder="auto",
        relations=None,
        sample_entity=None,
        hidden_layer_sizes=(64,),
        activation="relu",
        alpha=1e-4,
        weights=None,
        reconstruction_weight=1.0,
        input_dropout=0.0,
        alpha_code=0.1,
        row_scaling="none",
        fit_intercept=True,
        missing="unobserved",
        batch_size="auto",
        learning_rate_init=1e-3,
        lr_schedule="constant",
        max_iter=200,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        random_state=None,
        devices=None,
        verbose=0,
        n_jobs=None,
    ):
        self.n_components = n_components
        self.encoder = encoder
        self.relations = relations
        self.sample_entity = sample_entity
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.weights = weights
        self.reconstruction_weight = reconstruction_weight
        self.input_dropout = input_dropout
        self.alpha_code = alpha_code
        self.row_scaling = row_scaling
        self.fit_intercept = fit_intercept
        self.missing = missing
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.lr_schedule = lr_schedule
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.devices = devices
        self.verbose = verbose
        self.n_jobs = n_jobs

    # ---- input ---------------------------------------------------------------------

    def _check_hidden(self):
        sizes = np.asarray(self.hidden_layer_sizes, dtype=object).ravel().tolist()
        if not all(isinstance(h, numbers.Integral) and not isinstance(h, bool) and h > 0
                   for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers; got "
                             f"{self.hidden_layer_sizes!r}.")
        return [int(h) for h in sizes]

    def _prepare(self, X):
        """Validate X and the schema, before anything is built."""
        mm, views = check_views(X, missing=self.missing, min_samples=2, max_ndim=2)
        specs, sample, entities = resolve_relations(self.relations, mm,
                                                    sample_entity=self.sample_entity)
        for s in specs:
            if s.source == "shared" and sample in (s.row, s.col):
                raise ValueError(
                    f"Shared matrix {s.name!r} relates the sample entity {sample!r} "
                    f"({s.row!r} x {s.col!r}); only views may involve the samples (their rows "
                    "are split across folds and encoded for new samples). Pass it as a view, "
                    "transposed if the samples are its columns."
                )
        data, sizes = relation_data(mm, views, specs, missing=self.missing)
        w = relation_weights(self.weights, [s.name for s in specs])
        for v in views:  # last: errors about the input's structure come first
            check_variation(v)
        return mm, specs, data, sample, entities, sizes, w

    # ---- fitting -------------------------------------------------------------------

    def fit_transform(self, X, y=None):
        """Fit the model and return the samples' representation.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views (rows = samples), plus shared matrices named in ``relations``.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_components), float32
            The sample entity's representation.
        """
        self._fit(X)
        return self.factors_[self.sample_entity_].copy()

    def _fit(self, X):
        self._validate_params()
        hidden = self._check_hidden()
        mm, specs, data, sample, entities, sizes, weights = self._prepare(X)
        devices = resolve_devices(self.devices, entities)  # self.devices_ once fitted
        dev = dict(zip(entities, devices, strict=True))
        gen, rng = torch_generator(self.random_state)
        k = self.n_components
        mats = [_Matrix(v, missing=self.missing) for v in data]
        held = {}
        if self.early_stopping:
            held = {m: mat.hold_out(self.validation_fraction, rng)
                    for m, mat in enumerate(mats) if mat.kind != "zero"}
            if not any(len(h[0]) for h in held.values()):
                raise ValueError(
                    "early_stopping=True holds out observed entries of the relations, but no "
                    f"relation has any to hold out with validation_fraction="
                    f"{self.validation_fraction} (sparse views with missing='zero' have "
                    "none); raise validation_fraction or set early_stopping=False."
                )
        blocks = {e: _row_blocks(mats, specs, e, k, dev[e]) for e in entities}  # moved once
        n_code = {e: k + (len(blocks[e]) if self.fit_intercept else 0) for e in entities}
        encoder = self.encoder
        if encoder == "auto":
            encoder = "linear" if sizes[sample] < NEURAL_FROM else "neural"
        nets = {}
        for e in entities:
            width = sum(b.width for b in blocks[e])
            h = [] if e == sample and encoder == "linear" else hidden
            nets[e] = build_module(
                lambda w=width, c=n_code[e], h=h: _EntityAutoencoder(w, h, c, self.activation),
                gen, dev[e])
        slot = {(e, b.rel): b.slot for e in entities for b in blocks[e]}
        self._k, self._slot, self._specs = k, slot, specs
        # row_scaling="count": each row of an incompletely observed block enters the
        # encoder scaled by (the block's mean count of observed entries per row) / (the
        # row's count), so that a linear layer reads the row's mean; kept for transform
        self._row_scales = {}
        if self.row_scaling == "count":
            for e in entities:
                for b in blocks[e]:
                    if b.kind == "observed":
                        b.row_scale = float(b.X.indptr_host[-1]) / max(len(b.X.indptr_host) - 1, 1)
                        self._row_scales[f"{b.rel}:{b.side}"] = b.row_scale
        if encoder == "linear":  # the samples' closed form, fixed while the others train
            A = torch.cat([torch.cat([_dense_rows(b.batch(rows), b) for b in blocks[sample]], 1)
                           .double().cpu()
                           for rows in row_batches(sizes[sample], _ENCODE_ROWS, [dev[sample]])])
            _set_linear_closed_form(nets[sample], A, k)
            nets[sample].requires_grad_(False)
        self._weights = dict(zip([s.name for s in specs], weights, strict=True))
        codes = {e: self._encode_all(nets[e], blocks[e], sizes[e], dev[e]) for e in entities}
        opts = {e: torch.optim.Adam(nets[e].parameters(), lr=self.learning_rate_init)
                for e in entities}
        noise = {}  # input dropout: one generator per device, seeded from random_state
        if self.input_dropout > 0:
            for d in dict.fromkeys(devices):
                noise[d] = torch.Generator(device=d)
                noise[d].manual_seed(int(rng.randint(0, 2**31 - 1)))
        size = 256 if self.batch_size == "auto" else self.batch_size
        bs = {e: min(size, sizes[e]) for e in entities}

        def step(epoch):
            schedule_lr(opts.values(), self.lr_schedule, self.learning_rate_init, epoch,
                        self.max_iter)
            plan = []
            for i, e in enumerate(entities):
                batches = row_batches(sizes[e], bs[e], [dev[e]], generator=gen)
                nb = len(batches)
                plan += [((j + 0.5) / nb, i, rows) for j, rows in enumerate(batches)]
            plan.sort(key=lambda t: (t[0], t[1]))
            sums = {}  # name -> (sum of squared errors on the device, entry count)
            for _, i, rows in plan:
                e = entities[i]
                self._train_batch(e, rows, nets[e], opts[e], blocks[e], codes, dev[e], sums,
                                  noise.get(dev[e]))
            terms = {f"ae[{e}]": float(sums[f"ae[{e}]"][0]) / max(sums[f"ae[{e}]"][1], 1)
                     for e in entities}
            for s in specs:
                sse, n = sums.get(s.name, (0.0, 0))
                terms[s.name] = float(sse) / max(n, 1)
            pen = 0.5 * self.alpha * sum(self._sq_weights(net).item() for net in nets.values())
            if self.alpha_code:  # the codes' penalty, from the codes of this epoch's batches
                pen += self.alpha_code * sum(float((c[:, :k] ** 2).sum(1).mean())
                                             for c in codes.values())
            terms["penalty"] = pen
            terms["loss"] = (self.reconstruction_weight * sum(terms[f"ae[{e}]"] for e in entities)
                             + sum(self._weights[s.name] * terms[s.name] for s in specs) + pen)
            return terms

        held_t = {}
        for m, (r, c, v) in held.items():
            if len(v):
                d = dev[specs[m].row]
                held_t[m] = (torch.as_tensor(r, device=d), torch.as_tensor(c, device=d),
                             torch.as_tensor(v, device=d))

        def validation():
            total = 0.0
            with torch.no_grad():
                for m, (r, c, v) in held_t.items():
                    s = specs[m]
                    part = _Part(rows=r, cols=c, vals=v, count=len(v))
                    pred = _bilinear(codes[s.row], codes[s.col].to(dev[s.row]), part, k,
                                     self._slots(s, m))
                    total += weights[m] * float(part.sse(pred)) / part.count
            return total

        best = {}

        def keep_best():
            best.update({e: copy.deepcopy(net.state_dict()) for e, net in nets.items()})

        hist = fit_loop(step, max_iter=self.max_iter, tol=self.tol,
                        n_iter_no_change=self.n_iter_no_change, verbose=self.verbose,
                        desc="DCMF", estimator="DCMF",
                        validation=validation if self.early_stopping else None,
                        on_improvement=keep_best if self.early_stopping else None)
        if best:
            for e, net in nets.items():
                net.load_state_dict(best[e])
        for net in nets.values():
            net.eval()
            net.requires_grad_(False)
        codes = {e: self._encode_all(nets[e], blocks[e], sizes[e], dev[e]) for e in entities}
        self.devices_ = devices
        self.encoder_ = encoder
        self.autoencoders_ = nets
        self._codes = {e: as_numpy(c) for e, c in codes.items()}
        self._rotation = _canonical_rotation(self._codes[sample][:, :k])
        self.factors_ = {e: c[:, :k] @ self._rotation for e, c in self._codes.items()}
        self._unsupported = _unsupported_columns(self.factors_[sample])
        self.biases_ = {}
        if self.fit_intercept:
            for m, s in enumerate(specs):
                rs, cs = self._slots(s, m)
                self.biases_[s.name] = {"row": self._codes[s.row][:, rs].copy(),
                                        "col": self._codes[s.col][:, cs].copy()}
        self.scaling_ = {s.name: (mat.mean, mat.std) for s, mat in zip(specs, mats, strict=True)}
        self.relations_ = [(s.name, s.row, s.col) for s in specs]
        self.entities_ = list(entities)
        self.sample_entity_ = sample
        self.loss_curve_ = hist.loss
        self.loss_terms_ = hist.terms
        self.best_validation_score_ = (min(hist.terms["validation"])
                                       if self.early_stopping else None)
        self.n_iter_ = hist.n_iter
        self._set_input_signature(mm, data[: len(mm.views)])
        self._n_features_out = k

    def _slots(self, spec, m):
        """The code units holding relation ``m``'s row and column biases (or None)."""
        if not self.fit_intercept:
            return None
        return self._slot[(spec.row, m)], self._slot[(spec.col, m)]

    @staticmethod
    def _sq_weights(net):
        return sum((p**2).sum() for name, p in net.named_parameters() if name.endswith("weight"))

    def _encode_all(self, net, blocks, n, device):
        """Every member's code, in chunks, without gradients."""
        with torch.no_grad():
            out = [net.encode([b.batch(rows) for b in blocks], blocks)
                   for rows in row_batches(n, _ENCODE_ROWS, [device])]
            return torch.cat(out)

    def _train_batch(self, e, rows, net, opt, blocks, codes, device, sums, noise=None):
        """One Adam step of entity type ``e`` on the members ``rows`` (:class:`Rows`).

        Nothing crosses between host and device here: the batch is gathered from the
        blocks on the device, and the loss sums stay there (``sums``).
        """
        k = self._k
        parts = [b.batch(rows) for b in blocks]
        inputs = parts if noise is None else [p.dropped(self.input_dropout, noise)
                                              for p in parts]
        code = net.encode(inputs, blocks)
        recon = net.decode(code, parts, blocks)
        ae_sse = sum(p.sse(r) for r, p in zip(recon, parts, strict=True))
        ae_n = sum(p.count for p in parts)
        loss = self.reconstruction_weight * ae_sse / max(ae_n, 1)
        rel = []
        for part, b in zip(parts, blocks, strict=True):
            s = self._specs[b.rel]
            slots = self._slots(s, b.rel)
            if slots is not None and s.row != e:
                slots = slots[::-1]
            sse = part.sse(_bilinear(code, codes[b.other].to(device), part, k, slots))
            if part.count:
                loss = loss + self._weights[s.name] * sse / part.count
            if s.row == e:  # recorded once per relation, from its row side
                rel.append((s.name, sse, part.count))
        loss = loss + 0.5 * self.alpha * self._sq_weights(net)
        if self.alpha_code:
            loss = loss + self.alpha_code * (code[:, :k] ** 2).sum(1).mean()
        if loss.requires_grad:  # not for the fixed linear encoder (encoder="linear")
            opt.zero_grad()
            loss.backward()
            opt.step()
        codes[e][rows.on(device)] = code.detach()
        for name, sse, n in [(f"ae[{e}]", ae_sse, ae_n), *rel]:
            old = sums.get(name, (0.0, 0))
            sums[name] = (old[0] + sse.detach(), old[1] + n)

    # ---- out of sample ---------------------------------------------------------------

    def _sample_blocks(self, X):
        """Validate new samples' views; return their blocks, the encoder and its device."""
        check_is_fitted(self)
        mm, views = check_views(X, missing=self.missing, max_ndim=2)
        self._check_input_signature(mm, views)
        mats = {s.index: _Matrix(v, missing=self.missing, scale=self.scaling_[s.name])
                for s, v in zip(self._specs, views, strict=False)}
        matrices = [mats.get(m) for m in range(len(self._specs))]
        device = self.devices_[self.entities_.index(self.sample_entity_)]
        blocks = _row_blocks(matrices, self._specs, self.sample_entity_, self._k, device)
        for b in blocks:  # the fitted rows' scaling (row_scaling="count")
            scale = getattr(self, "_row_scales", {}).get(f"{b.rel}:{b.side}")
            if scale is not None:
                b.row_scale = scale
        return blocks, self.autoencoders_[self.sample_entity_], device, len(mm)

    def _chunks(self, X):
        """Yield ``(parts, code, blocks)`` for chunks of the new samples, no gradients."""
        blocks, net, device, n = self._sample_blocks(X)
        with torch.no_grad():
            for rows in row_batches(n, _ENCODE_ROWS, [device]):
                parts = [b.batch(rows) for b in blocks]
                yield parts, net.encode(parts, blocks), blocks, net, device

    def transform(self, X):
        """Encode samples (new or seen) with the sample entity's encoder.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of the samples, with the columns seen in ``fit``; missing entries as in
            ``fit`` (NaN, or unstored sparse entries).

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_components), float32
            The samples' codes, in the fitted rotation. A column with no spread on the
            training rows (at most 1e-4 of the leading column's standard deviation: the
            network's code collapsed there) is given its training mean.
        """
        check_is_fitted(self)
        codes = [as_numpy(code[:, : self._k]) for _, code, *_ in self._chunks(X)]
        Z = np.concatenate(codes) @ self._rotation
        dead, values = getattr(self, "_unsupported", ((), ()))  # (models saved before)
        Z[:, dead] = values  # directions the training rows do not span: their constant
        return Z

    def reconstruct(self, X):
        """The autoencoder's reconstruction of every view of ``X``, on the data's scale.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of the samples.

        Returns
        -------
        views : list of ndarray of shape (n_samples, n_columns)
            One dense reconstruction per view, in the order of the views.
        """
        out = []
        for parts, code, blocks, net, _ in self._chunks(X):
            out.append([as_numpy(r) for r in net.decode(code, [None] * len(parts), blocks)])
        names = [self._specs[b.rel].name for b in blocks]
        return [np.concatenate([o[i] for o in out]) * self.scaling_[n][1] + self.scaling_[n][0]
                for i, n in enumerate(names)]

    def score(self, X, y=None):
        """Return minus the model's loss on the views of ``X`` (standardized, per entry).

        The samples are encoded; the loss is the reconstruction error of their
        autoencoder plus each view's factorization error against the fitted codes of its
        column entity, weighted as in training (penalty excluded). Higher is better.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of samples (new or seen).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            Minus the weighted loss per entry (higher is better).
        """
        ae, rel = [0.0, 0], {}
        for parts, code, blocks, net, device in self._chunks(X):
            recon = net.decode(code, parts, blocks)
            for part, r, b in zip(parts, recon, blocks, strict=True):
                s = self._specs[b.rel]
                ae[0] += float(part.sse(r))
                ae[1] += part.count
                other = torch.as_tensor(self._codes[b.other], device=device)
                pred = _bilinear(code, other, part, self._k, self._slots(s, b.rel))
                old = rel.get(s.name, (0.0, 0))
                rel[s.name] = (old[0] + float(part.sse(pred)), old[1] + part.count)
        loss = self.reconstruction_weight * ae[0] / max(ae[1], 1)
        loss += sum(self._weights[n] * sse / max(c, 1) for n, (sse, c) in rel.items())
        return -loss

    def predict_entries(self, coords, relation=0):
        """Predicted values ``U_r U_c^T + b_r + b_c`` of entries of a fitted relation.

        Parameters
        ----------
        coords : array-like of shape (n_entries, 2)
            Integer (row, column) indices into the relation as fitted (rows of a view are
            the training samples).
        relation : int or str, default=0
            The relation, by position in ``relations_`` or by name.

        Returns
        -------
        values : ndarray of shape (n_entries,)
            Predictions on the scale of the data.
        """
        check_is_fitted(self)
        sizes = {e: len(c) for e, c in self._codes.items()}
        m, coords = check_entries(coords, relation, self.relations_, sizes)
        name, row, col = self.relations_[m]
        part = _Part(rows=torch.as_tensor(coords[:, 0]), cols=torch.as_tensor(coords[:, 1]))
        with torch.no_grad():
            pred = _bilinear(torch.as_tensor(self._codes[row]),
                             torch.as_tensor(self._codes[col]), part, self._k,
                             self._slots(self._specs[m], m))
        mean, std = self.scaling_[name]
        return as_numpy(pred).astype(np.float64) * std + mean

    # ---- persistence -----------------------------------------------------------------

    def __getstate__(self):
        # CPU copies of the networks, leaving the fitted model's own ones where they are
        nets = self.__dict__.get("autoencoders_")
        if nets is None:
            return super().__getstate__()
        self.autoencoders_ = {e: copy.deepcopy(net).cpu() for e, net in nets.items()}
        try:
            return super().__getstate__()
        finally:
            self.autoencoders_ = nets

    def _restore_devices(self):
        for e, d in zip(self.entities_, self.devices_, strict=True):
            self.autoencoders_[e].to(d)
