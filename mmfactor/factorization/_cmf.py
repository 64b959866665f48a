"""Collective matrix factorization (Singh & Gordon, KDD 2008)."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._base import N_JOBS_CONSTRAINT, MultiModalTransformer
from .._device import as_numpy, resolve_devices, torch_generator
from .._multimodal import (
    RelationSpec,
    check_entries,
    check_variation,
    check_views,
    per_relation,
    relation_data,
    relation_weights,
    resolve_relations,
)
from .._sparse import _csr, _torch_csr
from .._training import fit_loop
from ._als import RowGram, cg_solve, sampled_dots
from ._heldout import hide_entries
from ._nnls import batched_nnls

__all__ = ["CMF"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_CG_FROM = 32  # als_solver="auto": conjugate gradient from this n_components on
_CHUNK = 1 << 20  # entries per chunk when evaluating predictions at observed entries


class _Relation:
    """One matrix of the collection, on its device, in the form the solvers need.

    ``mode="observed"``: only the stored/non-NaN entries enter the loss (COO kept in row
    order plus the permutation to column order). ``mode="full"``: every entry enters
    (a complete dense matrix, or a sparse one whose unstored entries are zeros).
    ``mode="implicit"`` (link ``"implicit"``): every entry enters with preference
    ``p = [x > 0]`` and confidence ``c = 1 + confidence_scale * x``; the non-zeros are
    kept as COO, the zeros (confidence 1) enter through the Gram identity.
    ``entry_weight`` (per-entry weights, aligned with ``data``: an array of its shape, or
    a CSR matrix of its sparsity) puts the relation in ``mode="observed"`` with entry
    ``(i, j)`` weighted by ``entry_weight[i, j]``.
    """

    def __init__(self, spec, data, *, weight, link, biased, device, dtype, missing,
                 row_bias=True, confidence_scale=1.0, entry_weight=None):
        self.spec = spec
        self.name = spec.name
        self.row, self.col = spec.row, spec.col
        self.weight = float(weight)
        self.link = link
        self.biased = biased and spec.row != spec.col and link != "implicit"
        self.row_bias = self.biased and row_bias  # False: mean and column biases only
        self.device = device
        self.dtype = dtype
        self.shape = tuple(data.shape)
        self.ew = None  # per-entry weights (row order), with ew_c (column order), ew64
        if entry_weight is not None:
            if sp.issparse(data):
                coo = sp.csr_matrix(data).tocoo()
                ew = sp.csr_matrix(entry_weight).tocoo().data
            else:
                arr = as_numpy(data)
                rows, cols = np.nonzero(~np.isnan(arr))
                coo = sp.coo_matrix((arr[rows, cols], (rows, cols)), shape=arr.shape)
                ew = np.asarray(entry_weight)[rows, cols]
            self._set_observed(coo, device, dtype, np.asarray(ew, dtype=np.float64))
            return
        if link == "implicit":
            csr = sp.csr_matrix(data if sp.issparse(data) else as_numpy(data), dtype=np.float64)
            csr.eliminate_zeros()
            self._set_observed(csr.tocoo(), device, dtype)
            self.mode = "implicit"
            conf = 1.0 + confidence_scale * csr.tocoo().data  # row order, as _set_observed's
            order = np.argsort(csr.tocoo().col, kind="stable")
            self.conf = torch.as_tensor(conf, dtype=dtype, device=device)
            self.conf64 = torch.as_tensor(conf, dtype=torch.float64, device=device)
            self.conf_c = torch.as_tensor(conf[order], dtype=dtype, device=device)
            self.n_obs = self.shape[0] * self.shape[1]
            return
        if sp.issparse(data):
            csr = sp.csr_matrix(data)
            if missing == "unobserved":
                self._set_observed(csr.tocoo(), device, dtype)
            else:
                self.mode = "full"
                self.X = _torch_csr(csr, device, dtype)
                self.X64 = _torch_csr(csr, device, torch.float64).values()  # for the loss
                self.XT = _torch_csr(csr.T.tocsr(), device, dtype)
                self.row_sums = torch.as_tensor(np.asarray(csr.sum(1)).ravel())
                self.col_sums = torch.as_tensor(np.asarray(csr.sum(0)).ravel())
                self.n_obs = self.shape[0] * self.shape[1]
                self.sum_sq = float((csr.data.astype(np.float64) ** 2).sum())
                self.total = float(csr.data.sum())
        else:
            arr = as_numpy(data)
            nan = np.isnan(arr)
            if nan.any():
                rows, cols = np.nonzero(~nan)
                coo = sp.coo_matrix((arr[rows, cols], (rows, cols)), shape=arr.shape)
                self._set_observed(coo, device, dtype)
            else:
                self.mode = "full"
                self.X = torch.tensor(arr, dtype=dtype, device=device)
                self.X64 = arr  # the caller's array (no copy), for the loss in float64
                self.XT = self.X.T
                self.row_sums = torch.as_tensor(arr.sum(1, dtype=np.float64))
                self.col_sums = torch.as_tensor(arr.sum(0, dtype=np.float64))
                self.n_obs = arr.size
                self.sum_sq = float((arr.astype(np.float64) ** 2).sum())
                self.total = float(arr.sum(dtype=np.float64))

    def _set_observed(self, coo, device, dtype, ew=None):
        self.mode = "observed"
        rows, cols, vals = coo.row, coo.col, coo.data
        if len(rows) > 1 and not (np.diff(rows) >= 0).all():  # COO from CSR is row-sorted
            order = np.argsort(rows, kind="stable")
            rows, cols, vals = rows[order], cols[order], vals[order]
            ew = None if ew is None else ew[order]
        n_r, n_c = self.shape
        crow_r = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_r))])
        # column order, rows ascending within a column: scipy's linear-time CSR -> CSC
        # transpose of the entries' positions (a stable argsort of ``cols``, ~10x faster)
        perm = sp.csr_matrix((np.arange(len(rows)), cols, crow_r), shape=self.shape).tocsc().data
        as_t = lambda a, dt=torch.int64: torch.as_tensor(np.ascontiguousarray(a), dtype=dt,  # noqa: E731
                                                         device=device)
        self.rows, self.cols = as_t(rows), as_t(cols)
        self.vals = as_t(vals, dtype)
        self.vals64 = as_t(vals, torch.float64)  # the data as given, for the reported loss
        self.rows_c, self.vals_c = as_t(rows[perm]), as_t(vals[perm], dtype)
        self._perm = as_t(perm)
        self.w_vals = torch.full((len(vals),), self.weight, dtype=dtype, device=device)
        self.w_vals_c = self.w_vals
        if ew is not None:
            self.ew, self.ew_c = as_t(ew, dtype), as_t(ew[perm], dtype)
            self.ew64 = as_t(ew, torch.float64)
            self.w_vals, self.w_vals_c = self.weight * self.ew, self.weight * self.ew_c
        self.crow_r = as_t(crow_r)
        self.crow_c = as_t(np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=n_c))]))
        self.n_obs = len(vals)
        self.total = float(vals.sum(dtype=np.float64))
        if ew is not None:  # the weighted total and count (bias start, ``score``)
            self._ew_sum = float(ew.sum())
            self.total = float((ew * vals).sum())

    @property
    def count(self):
        """Number of entries in the loss, or the sum of their weights."""
        return self.n_obs if self.ew is None else self._ew_sum

    # ---- the pieces of the normal equations ------------------------------------------

    def mean(self):
        return self.total / self.count if self.count > 0 else 0.0

    def seen(self):
        """Boolean (n_rows, n_cols) mask of the entries already seen (``recommend``): the
        observed entries, the non-zeros of a relation whose unstored entries are zeros."""
        if self.mode == "full":
            X = self.X.to_dense() if self.X.is_sparse_csr else self.X
            return X != 0 if self.X.is_sparse_csr else torch.ones_like(X, dtype=torch.bool)
        mask = torch.zeros(self.shape, dtype=torch.bool, device=self.rows.device)
        mask[self.rows, self.cols] = True
        return mask

    def normal_equations(self, side, Z, offset, with_loss=True):
        """Gram matrices and right-hand sides of the least-squares problem of one side.

        ``Z`` (n_other x D) is the design of the other side (its factor, plus a ones column
        at this relation's bias slot); ``offset`` (n_other) is subtracted from every target
        (global mean plus the other side's bias). Returns ``(A, b, sum_y2)`` with ``A``
        either (n x D x D) or one (D x D) shared by every row, ``b`` (n x D), both
        weighted, and ``sum_y2`` the unweighted sum of the squared targets: with them the
        loss of any solution ``theta`` is ``sum_y2 - (2 theta.b - theta A theta) / w``
        (None without ``with_loss``: an O(nnz) float64 pass saved when it is not used).
        """
        w = self.weight
        if self.mode == "full":
            X = self.X if side == "row" else self.XT
            A = w * (Z.T @ Z)
            b = X @ Z if not X.is_sparse_csr else torch.sparse.mm(X, Z)
            b = w * (b - (offset @ Z)[None, :])
            # sum_ij (x_ij - o_j)^2 = ||X||^2 - 2 sum_j o_j colsum_j + n sum_j o_j^2
            o = offset.double()
            sums = self.col_sums if side == "row" else self.row_sums
            sum_y2 = self.sum_sq - 2 * float(o @ sums.to(o)) + X.shape[0] * float(o @ o)
            return A, b, sum_y2
        if side == "row":
            crow, idx, vals, wv = self.crow_r, self.cols, self.vals, self.w_vals
        else:
            crow, idx, vals, wv = self.crow_c, self.rows_c, self.vals_c, self.w_vals_c
        if self.mode == "implicit":
            # sum_all c (p - z.theta)^2: Z'Z over every entry plus (c - 1) z z' over the
            # non-zeros (the Gram identity of Hu, Koren & Volinsky), b = sum_nnz c z
            conf = self.conf if side == "row" else self.conf_c
            n = len(crow) - 1
            b = torch.sparse.mm(_csr(crow, idx, conf * w, (n, Z.shape[0])), Z)
            A = _row_grams(_csr(crow, idx, (conf - 1) * w, (n, Z.shape[0])), Z)
            return A + w * (Z.T @ Z), b, float(conf.double().sum()) if with_loss else None
        # per-entry weights w_ij: G_i = sum_j w w_ij z_j z_j', b_i = sum_j w w_ij y_ij z_j
        y = vals - offset[idx]
        n = len(crow) - 1
        b = torch.sparse.mm(_csr(crow, idx, y * wv, (n, Z.shape[0])), Z)
        A = _row_grams(_csr(crow, idx, wv, (n, Z.shape[0])), Z)
        if not with_loss:
            return A, b, None
        y2 = y.double() ** 2
        if self.ew is not None:
            y2 = y2 * (self.ew64 if side == "row" else self.ew64[self._perm])
        return A, b, float(y2.sum())

    def gram_free(self, side, Z, offset):
        """The normal equations of one side without per-row Gram matrices (for CG).

        Returns ``(G, A)``: ``G`` a :class:`RowGram` (the per-row Grams and the right-hand
        sides of :meth:`normal_equations`, as products), ``A`` the (D x D) part shared by
        every row or None. Only for ``mode="observed"`` or ``"implicit"``.
        """
        if side == "row":
            crow, idx, vals, wv = self.crow_r, self.cols, self.vals, self.w_vals
        else:
            crow, idx, vals, wv = self.crow_c, self.rows_c, self.vals_c, self.w_vals_c
        if self.mode == "implicit":  # b = sum_nnz c z (preference 1 at every non-zero)
            conf = self.conf if side == "row" else self.conf_c
            w = self.weight
            return RowGram(crow, idx, (conf - 1) * w, conf * w, Z), w * (Z.T @ Z)
        return RowGram(crow, idx, wv, (vals - offset[idx]) * wv, Z), None

    def loss(self, Ua, Va, exact=False):
        """Sum of squared errors (identity) or log-loss (sigmoid) of ``Ua Va^T``, unweighted.

        ``exact``: the value reported (``loss_curve_``, ``score``): computed in float64
        from direct residuals (or, for the unstored zeros of a sparse relation, the Gram
        identity in float64) and clamped at 0, so that it agrees with a direct float64
        computation whatever ``dtype`` the fit runs in. Without ``exact`` (the L-BFGS
        objective), in the factors' dtype, differentiable.
        """
        if exact:
            with torch.no_grad():
                return max(float(self._exact_loss(Ua.double(), Va.double())), 0.0)
        if self.mode == "observed":
            out = Ua.new_zeros(())
            for s in range(0, self.n_obs, _CHUNK):
                r, c = self.rows[s : s + _CHUNK], self.cols[s : s + _CHUNK]
                pred = (Ua[r] * Va[c]).sum(1)
                ew = None if self.ew is None else self.ew[s : s + _CHUNK]
                out = out + _pointwise_loss(self.link, pred, self.vals[s : s + _CHUNK], ew)
            return out
        if self.link == "identity":
            # ||X - P||^2 = ||X||^2 - 2<X, P> + ||P||^2, P = Ua Va^T never formed
            if self.X.is_sparse_csr:
                inner = (torch.sparse.mm(self.X, Va) * Ua).sum()
            else:
                inner = ((self.X @ Va) * Ua).sum()
            return self.sum_sq - 2 * inner + ((Ua.T @ Ua) * (Va.T @ Va)).sum()
        out = Ua.new_zeros(())
        step = max(1, _CHUNK // max(self.shape[1], 1))
        for s in range(0, self.shape[0], step):
            Xc = self.X[s : s + step]
            Xc = Xc.to_dense() if Xc.is_sparse_csr else Xc
            out = out + _pointwise_loss(self.link, Ua[s : s + step] @ Va.T, Xc)
        return out


    def _exact_loss(self, Ua, Va):
        if self.mode in ("observed", "implicit"):
            # every prediction at the stored entries in one sampled product (float64)
            pred = sampled_dots(self.crow_r, self.cols, Ua, Va, self.vals64)
            if self.mode == "implicit":  # c (1 - pred)^2 on the non-zeros, less pred^2
                out = float((self.conf64 * (1 - pred) ** 2 - pred**2).sum())
                return out + float(((Ua.T @ Ua) * (Va.T @ Va)).sum())  # + every pred^2
            return float(_pointwise_loss(self.link, pred, self.vals64, self.ew64
                                         if self.ew is not None else None))
        if self.link == "identity" and self.X.is_sparse_csr:
            # ||X - P||^2 = ||X||^2 - 2<X, P> + ||P||^2 in float64, <X, P> over the non-zeros
            X = self.X
            crow, col, vals = X.crow_indices(), X.col_indices(), self.X64
            rows = torch.repeat_interleave(torch.arange(X.shape[0], device=vals.device),
                                           crow[1:] - crow[:-1])
            inner = 0.0
            for s in range(0, len(vals), _CHUNK):
                r, c = rows[s : s + _CHUNK], col[s : s + _CHUNK]
                inner += float((vals[s : s + _CHUNK] * (Ua[r] * Va[c]).sum(1)).sum())
            return self.sum_sq - 2 * inner + float(((Ua.T @ Ua) * (Va.T @ Va)).sum())
        out = 0.0
        step = max(1, _CHUNK // max(self.shape[1], 1))
        for s in range(0, self.shape[0], step):
            if self.X.is_sparse_csr:
                Xc = self.X[s : s + step].to_dense().double()
            else:
                Xc = torch.as_tensor(self.X64[s : s + step], device=Ua.device).double()
            out += float(_pointwise_loss(self.link, Ua[s : s + step] @ Va.T, Xc))
        return out


def _row_grams(W, Z):
    """Every row's ``sum_j W_ij z_j z_j'`` (n x D x D) for a sparse ``W``: one sparse product
    with the rows' outer products, their upper triangle only (the Grams are symmetric)."""
    D = Z.shape[1]
    iu, ju = torch.triu_indices(D, D, device=Z.device)
    tri = torch.sparse.mm(W, Z[:, iu] * Z[:, ju])
    where = torch.empty(D, D, dtype=torch.int64, device=Z.device)  # (i, j) -> its column
    where[iu, ju] = where[ju, iu] = torch.arange(len(iu), device=Z.device)
    return tri.index_select(1, where.view(-1)).view(-1, D, D)


def _inverse_link(link, pred):
    """Predictions (float64 NumPy) on the data's scale: a sigmoid link's probabilities are
    kept strictly inside (0, 1), so that a log-loss downstream stays finite."""
    pred = np.asarray(pred, dtype=np.float64)
    if link != "sigmoid":
        return pred
    tiny = np.finfo(np.float64).eps
    return np.clip(1 / (1 + np.exp(-np.clip(pred, -700, 700))), tiny, 1 - tiny)


def _balanced_weights(data, links, missing):
    """``weights="balanced"``: ``N / (M n_m)``, ``n_m`` the observed entries of relation m."""
    counts = []
    for v, lk in zip(data, links, strict=True):
        n, m = v.shape
        if v.kind == "sparse":
            counts.append(n * m if missing == "zero" or lk == "implicit" else v.data.nnz)
        elif v.kind == "tensor":
            counts.append(int((~torch.isnan(v.data)).sum()))
        else:
            counts.append(int(np.count_nonzero(~np.isnan(v.data))))
    total = float(sum(counts))
    return [total / (len(counts) * max(c, 1)) for c in counts]


def _check_entry_weights(entry_weights, names, views, links, missing):
    """``entry_weights`` validated, as a dict view name -> weights aligned with the view.

    A dense view takes an array of its shape (the weights at NaN entries are ignored); a
    sparse view (``missing="unobserved"``) a sparse matrix storing the same entries.
    Every weight finite and non-negative (0 = the entry is left out).
    """
    if entry_weights is None:
        return {}
    if not isinstance(entry_weights, dict):
        raise TypeError("entry_weights must be a dict: view name -> per-entry weights; got "
                        f"{type(entry_weights).__name__}.")
    by_name = dict(zip(names, views, strict=True))
    out = {}
    for name, W in entry_weights.items():
        if name not in by_name:
            raise ValueError(f"entry_weights names view {name!r}, which X does not have; its "
                             f"views are {list(names)}.")
        v = by_name[name]
        if links.get(name) == "implicit":
            raise ValueError(f"entry_weights[{name!r}]: view {name!r} has link='implicit', "
                             "whose confidences are already per-entry weights.")
        if v.kind == "sparse" and missing == "zero":
            raise ValueError(f"entry_weights[{name!r}]: a sparse view with missing='zero' "
                             "takes no per-entry weights (its unstored zeros would need one "
                             "each); give it as a dense array.")
        if v.kind == "sparse":
            if not sp.issparse(W) or W.shape != v.shape:
                raise ValueError(f"entry_weights[{name!r}] must be a sparse matrix of shape "
                                 f"{v.shape} storing the entries view {name!r} stores; got "
                                 f"{type(W).__name__} of shape {getattr(W, 'shape', None)}.")
            X, W = sp.csr_matrix(v.data), sp.csr_matrix(W, dtype=np.float64)
            for m in (X, W):
                m.sum_duplicates()
                m.sort_indices()
            if not (np.array_equal(X.indptr, W.indptr) and np.array_equal(X.indices,
                                                                          W.indices)):
                raise ValueError(f"entry_weights[{name!r}] does not store the same entries "
                                 f"as view {name!r} ({W.nnz} stored against {X.nnz}); give "
                                 "one weight per stored entry.")
            vals = W.data
        else:
            if sp.issparse(W):
                raise ValueError(f"entry_weights[{name!r}] is sparse but view {name!r} is "
                                 f"dense; give an array of shape {v.shape}.")
            W = np.asarray(W, dtype=np.float64)
            if W.shape != tuple(v.shape):
                raise ValueError(f"entry_weights[{name!r}] has shape {W.shape}; view "
                                 f"{name!r} has shape {tuple(v.shape)}, expected the same.")
            vals = W
        if not np.isfinite(vals).all() or (vals < 0).any():
            raise ValueError(f"entry_weights[{name!r}] has NaN, infinite or negative "
                             "values; weights must be finite and >= 0.")
        out[name] = W
    return out


def _pointwise_loss(link, pred, target, weight=None):
    """Summed squared error (identity) or log-loss (sigmoid), each entry times ``weight``."""
    if link == "identity":
        sq = (pred - target) ** 2
        return (sq if weight is None else weight * sq).sum()
    return torch.nn.functional.binary_cross_entropy_with_logits(pred, target, weight=weight,
                                                                reduction="sum")


class CMF(MultiModalTransformer):
    r"""Collective matrix factorization over any schema of relations between entity types.

    Every matrix :math:`X_m` of the collection relates a row entity type :math:`r` to a
    column entity type :math:`c` and is approximated as
    :math:`f_m(U_r U_c^\top + \mu_m + b_m \mathbf{1}^\top + \mathbf{1} c_m^\top)`:
    one factor matrix per entity type, shared by every relation that involves it (this
    is what makes the factorization *collective*), optional per-relation biases, a link
    :math:`f_m` (identity for real values, sigmoid for binary relations) and a weight
    :math:`w_m`. The objective runs over the observed entries :math:`\Omega_m` only (NaN
    in a dense view, or the unstored entries of a sparse view with
    ``missing="unobserved"``):

    .. math::

        \min_{U, b, c, \mu} \sum_m w_m \sum_{(i, j) \in \Omega_m}
        \ell_m\big(X_{m,ij}, f_m(u_{r,i}^\top u_{c,j} + \mu_m + b_{m,i} + c_{m,j})\big)
        + \alpha \sum_e \lVert U_e \rVert_F^2
        + \alpha_{\text{bias}} \sum_m (\lVert b_m \rVert^2 + \lVert c_m \rVert^2)

    with :math:`\ell_m` the squared error for the identity link and the logistic loss for
    the sigmoid link; for the implicit link the sum runs over every entry, with the
    confidence-weighted squared error :math:`c_{ij} (p_{ij} - u_{r,i}^\top u_{c,j})^2`.

    Each observed entry can also carry its own weight (cmfrec's ``W``): ``fit(X,
    entry_weights={view: W})`` multiplies the entry's loss by ``W[i, j]`` (``transform``
    takes the new rows' weights the same way); the ALS Gram matrix of row :math:`i` is
    then :math:`\sum_j W_{ij} v_j v_j^\top`.

    With identity links the fit is alternating least squares: each entity type's factor
    is the exact minimiser with all others fixed, all its rows solved at once by a
    batched Cholesky factorization in torch (CPU or CUDA), or, at larger ranks, moved
    towards it by a few conjugate-gradient steps per row that never form a Gram matrix
    (``als_solver``). With a sigmoid link the whole objective is minimised by full-batch
    L-BFGS.

    Parameters
    ----------
    n_components : int, default=10
        Dimension of every entity type's factor (the embedding width).
    relations : None, list or dict, default=None
        The schema: for each view (and each matrix in ``X.shared``) its
        ``(row_entity, col_entity)`` pair. ``None``: every view relates the samples to a
        column entity of its own.
    sample_entity : str, default=None
        Name of the entity type of the rows of every view (default ``"sample"``, or the
        row entity the schema gives the views).
    alpha : float, default=1.0
        L2 penalty on every factor row.
    alpha_bias : float, default=None
        L2 penalty on the biases (default: ``alpha``).
    weights : None, "balanced", float, list or dict, default=None
        Weight of each relation's loss (default 1 each); one float for all, a list in
        the order of ``relations`` or a dict by relation name. ``"balanced"``: equal
        total weight per relation, ``w_m = N / (M n_m)`` with ``n_m`` the relation's
        number of observed entries, ``M`` the number of relations and ``N`` the sum of
        the ``n_m`` (so a 120-column view no longer swamps a 21-column one; the views
        should still be on comparable scales, e.g. standardized). Measured on mfeat
        view pairs (standardized, ``benchmarks/bench_weights.py``, downstream 5-fold
        logistic-regression accuracy): ``"balanced"`` helps when one view is an order
        of magnitude narrower than the other (6 columns beside 64 to 240: +0.21 to +0.28
        at ``n_components=2``, +0.02 at 10), but with widths within about 5x it tied or
        lost (down to -0.06), so it is not the default: use it when a narrow view
        carries the signal you need, and compare on your own data.
    link : {"identity", "sigmoid", "implicit"} or list or dict, default="identity"
        Link of each relation (one for all, a list, or a dict by name). The sigmoid link
        fits binary (0/1) relations with the logistic loss. ``"implicit"``: implicit
        feedback (Hu, Koren & Volinsky 2008): every entry counts, with preference
        ``p = [x > 0]`` and confidence ``1 + confidence_scale * x``, loss
        ``sum c (p - u.v)^2``; the zeros cost nothing extra (Gram identity), so a
        sparse view of counts is never densified. No biases for such a relation.
    confidence_scale : float, default=1.0
        Confidence per unit of an implicit-feedback entry (``alpha`` in the paper and in
        ``implicit``/``cmfrec``).
    fit_intercept : "columns" or bool, default="columns"
        Biases of every relation between two distinct entity types. ``"columns"``: a
        global mean and column biases (centring each column, as PCA does), so that
        everything the model learns about a sample is in its embedding. ``True``: also
        a bias per row (the biased model of rating matrices); a per-sample bias is not
        part of the embedding ``transform`` returns, so a class carried by a shift of
        whole rows is hidden there (on a planted case, cross-validated accuracy 0.47-0.52
        with ``True`` against 1.00 with ``"columns"``; held-out rating RMSE was the same
        within 0.005). ``False``: no biases.
    nonneg : bool, default=False
        Constrain every factor to be non-negative (each ALS row update is then an exact
        non-negative least-squares problem, solved for all rows at once by batched block
        principal pivoting). The biases stay free. Needs ``solver="als"``; the fitted
        factors are then not rotated (see ``factors_``).
    n_init : int, default=1
        Number of random initializations; the fit with the lowest final objective is
        kept (as scikit-learn's ``KMeans`` does).
    missing : {"unobserved", "zero"}, default="unobserved"
        What an unstored entry of a sparse view means.
    solver : {"auto", "als", "lbfgs"}, default="auto"
        ``"als"`` needs identity links; ``"auto"`` uses it whenever it can.
    update : {"gauss-seidel", "jacobi"}, default="gauss-seidel"
        ALS order: each entity type from the factors just updated (monotone descent), or
        every entity type from the previous sweep's factors (independent solves that can
        run in parallel, on several devices or processes).
    als_solver : {"auto", "cholesky", "cg"}, default="auto"
        How ALS solves each row's least-squares problem. ``"cholesky"``: exactly, by a
        batched Cholesky factorization of every row's Gram matrix (``nnz D^2`` to form
        them, ``n D^3 / 3`` to factorize, ``D`` = ``n_components`` plus the bias slots).
        ``"cg"``: ``cg_steps`` conjugate-gradient steps per row and sweep, warm-started
        from the previous sweep's factor and using only products with the other side's
        factor at the row's entries (``(2 + 4 cg_steps) nnz D`` per side, no Gram
        matrix; cmfrec's ``use_cg``): each sweep still decreases the objective, but the
        rows are not exact minimisers, and ``transform`` (always exact) differs slightly
        from the fitted factor of the training rows. ``"auto"``: ``"cg"`` from
        ``n_components=32`` on (where it was faster at the same held-out error on 10^7
        ratings, ``benchmarks/bench_scale.py``), otherwise ``"cholesky"``; always
        ``"cholesky"`` with ``nonneg=True`` or complete (dense, no NaN) relations only.
    cg_steps : int, default=3
        Conjugate-gradient steps per row and sweep (``als_solver="cg"``).
    dtype : {"float32", "float64"}, default="float32"
        Precision of the computation; ``transform`` returns this dtype.
    max_iter : int, default=200
        Maximum number of sweeps (ALS) or L-BFGS iterations. The ``tol`` rule stops
        ordinary fits well before it: on 60 ordinary fits (mfeat view pairs,
        standardized, and synthetic collections; ``n_components=10``) the median stop was
        sweep 41 and the latest 74, with no ``ConvergenceWarning`` (with the former
        default of 30, 40 of the 60 warned).
    tol : float, default=1e-4
        Stop when the objective decreases by less than ``tol`` (relative) in
        ``n_iter_no_change`` consecutive sweeps.
    n_iter_no_change : int, default=3
        Patience of the stopping rule (Jacobi sweeps need not decrease monotonically).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial factors.
    devices : None, str, list or dict, default=None
        Where each view's data and computation live (see the user guide); an entity
        type's factor lives on the device of the first view that involves it.
    verbose : int, default=0
        Show a progress bar.
    n_jobs : int, default=None
        CPU threads of torch, BLAS and OpenMP during this estimator's ``fit``,
        ``transform`` and other calls, put back afterwards (``-1``: all CPUs; ``None``:
        unchanged). See :ref:`busy-machines`.

    Attributes
    ----------
    factors_ : dict of str -> ndarray of shape (n_entities, n_components)
        The learned factor of each entity type (the sample entity's for the training
        rows), rotated so that the samples' components are uncorrelated and ordered by
        variance (not with ``nonneg=True``, which a rotation would break).
    biases_ : dict of str -> dict
        Per relation: ``"mean"``, ``"row"`` and ``"col"`` biases (when fitted).
    relations_ : list of tuple
        The resolved ``(name, row_entity, col_entity)`` of every relation.
    sample_entity_ : str
        The entity type of the samples.
    devices_ : list of torch.device
        One device per view.
    loss_curve_ : list of float
        Objective after every sweep.
    loss_terms_ : dict of str -> list of float
        Unweighted loss of each relation and the penalty, after every sweep.
    n_iter_ : int
        Number of sweeps run.
    n_features_in_ : int
        Total number of columns of the views seen in ``fit`` (``X.shape[1]`` for one
        array).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        The column names of ``X`` when it is one pandas DataFrame with string column
        names (only then); ``transform`` and ``score`` check them first.

    See Also
    --------
    DFMF : Non-negative tri-factorization of a relation collection.
    HyperLearn : Factorization of higher-order tensors with graph convolutions.

    References
    ----------
    A. P. Singh and G. J. Gordon. Relational learning via collective matrix factorization.
    KDD 2008.

    Examples
    --------
    >>> import numpy as np
    >>> from mmfactor import CMF, MultiModal
    >>> rng = np.random.RandomState(0)
    >>> X = MultiModal(rng.rand(20, 6), rng.rand(20, 4))
    >>> emb = CMF(n_components=3, random_state=0).fit_transform(X)
    >>> emb.shape
    (20, 3)
    """

    _parameter_constraints = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "relations": [None, list, tuple, dict],
        "sample_entity": [None, str],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "alpha_bias": [None, Interval(numbers.Real, 0, None, closed="left")],
        "weights": [None, StrOptions({"balanced"}), Interval(numbers.Real, 0, None,
                                                              closed="left"), list, tuple, dict],
        "link": [StrOptions({"identity", "sigmoid", "implicit"}), list, tuple, dict],
        "confidence_scale": [Interval(numbers.Real, 0, None, closed="left")],
        "fit_intercept": ["boolean", StrOptions({"columns"})],
        "nonneg": ["boolean"],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "missing": [StrOptions({"unobserved", "zero"})],
        "solver": [StrOptions({"auto", "als", "lbfgs"})],
        "update": [StrOptions({"gauss-seidel", "jacobi"})],
        "als_solver": [StrOptions({"auto", "cholesky", "cg"})],
        "cg_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "dtype": [StrOptions({"float32", "float64"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "devices": [None, str, list, tuple, dict],
        "verbose": ["verbose"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __init__(
        self,
        n_components=10,
        *,
        relations=None,
        sample_entity=None,
        alpha=1.0,
        alpha_bias=None,
        weights=None,
        link="identity",
        confidence_scale=1.0,
        fit_intercept="columns",
        nonneg=False,
        n_init=1,
        missing="unobserved",
        solver="auto",
        update="gauss-seidel",
        als_solver="auto",
        cg_steps=3,
        dtype="float32",
        max_iter=200,
        tol=1e-4,
        n_iter_no_change=3,
        random_state=None,
        devices=None,
        verbose=0,
        n_jobs=None,
    ):
        self.n_components = n_components
        self.relations = relations
        self.sample_entity = sample_entity
        self.alpha = alpha
        self.alpha_bias = alpha_bias
        self.weights = weights
        self.link = link
        self.confidence_scale = confidence_scale
        self.fit_intercept = fit_intercept
        self.nonneg = nonneg
        self.n_init = n_init
        self.missing = missing
        self.solver = solver
        self.update = update
        self.als_solver = als_solver
        self.cg_steps = cg_steps
        self.dtype = dtype
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.devices = devices
        self.verbose = verbose
        self.n_jobs = n_jobs

    @property
    def _alpha_bias(self):
        return float(self.alpha if self.alpha_bias is None else self.alpha_bias)

    # ---- input ---------------------------------------------------------------------

    def _prepare(self, X, entry_weights=None):
        """Validate X and the schema; return (mm, views, specs, sample, entities, ...)."""
        mm, views = check_views(X, missing=self.missing, min_samples=2, max_ndim=2)
        specs, sample, entities = resolve_relations(
            self.relations, mm, sample_entity=self.sample_entity
        )
        names = [s.name for s in specs]
        links = per_relation(self.link, names, "link", "identity")
        for n, lk in zip(names, links, strict=True):
            if lk not in ("identity", "sigmoid", "implicit"):
                raise ValueError(f"link of relation {n!r} is {lk!r}; expected 'identity', "
                                 "'sigmoid' or 'implicit'.")
        data, sizes = relation_data(mm, views, specs, missing=self.missing)
        weights = (_balanced_weights(data, links, self.missing)
                   if isinstance(self.weights, str) else relation_weights(self.weights, names))
        for s, v, lk in zip(specs, data, links, strict=True):
            if lk == "implicit":
                vals = v.data.data if v.kind == "sparse" else as_numpy(v.data)
                if np.isnan(vals).any() or (vals < 0).any():
                    raise ValueError(
                        f"Relation {s.name!r} has link='implicit' but NaN or negative values; "
                        "implicit feedback is a non-negative count or strength per entry "
                        "(0 = no interaction), every entry observed."
                    )
            if lk == "sigmoid":
                vals = v.data.data if v.kind == "sparse" else as_numpy(v.data)
                vals = vals[~np.isnan(vals)]
                if ((vals != 0) & (vals != 1)).any():
                    raise ValueError(
                        f"Relation {s.name!r} has link='sigmoid' but values other than 0 "
                        "and 1; the sigmoid link fits binary relations."
                    )
        solver = self.solver
        if solver == "auto":
            solver = "als" if all(lk != "sigmoid" for lk in links) else "lbfgs"
        if solver == "als" and any(lk == "sigmoid" for lk in links):
            raise ValueError("solver='als' needs identity or implicit links; use "
                             "solver='lbfgs' (or 'auto') with link='sigmoid'.")
        if solver == "lbfgs" and any(lk == "implicit" for lk in links):
            raise ValueError("link='implicit' is fitted by ALS; use solver='als' (or 'auto') "
                             "and no sigmoid link in the same model.")
        if self.nonneg and solver != "als":
            raise ValueError("nonneg=True needs solver='als' (identity or implicit links); "
                             "the L-BFGS solver of the sigmoid link has no bound constraints.")
        if self.nonneg and self.als_solver == "cg":
            raise ValueError("nonneg=True needs als_solver='cholesky' (or 'auto'): each row's "
                             "non-negative least squares is solved exactly, not by conjugate "
                             "gradient.")
        ew = _check_entry_weights(entry_weights, mm.names, views,
                                  dict(zip(names, links, strict=True)), self.missing)
        for v in views:  # last: errors about the input's structure come first
            check_variation(v)
        return mm, data, specs, sample, entities, links, weights, sizes, solver, ew

    # ---- fitting -------------------------------------------------------------------

    def fit(self, X, y=None, *, entry_weights=None):
        """Fit the factorization.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views (rows = samples), plus shared matrices of the schema.
        y : Ignored
            Not used, present for API consistency.
        entry_weights : dict of str -> array-like or sparse matrix, default=None
            Per-entry weights of some views (cmfrec's ``W``), by view name: for a dense
            view an array of its shape, for a sparse view a sparse matrix storing the
            same entries. Finite and >= 0; an entry of weight 0 counts as missing; the
            other entries weigh 1. Not for implicit views nor ``missing="zero"`` sparse
            ones. The weights are of the rows of ``X``: under cross-validation, fit on
            each fold's rows with their rows of the weights.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._fit_with_weights(X, entry_weights)
        return self

    def fit_transform(self, X, y=None, *, entry_weights=None):
        """Fit the factorization and return the samples' factor.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views (rows = samples).
        y : Ignored
            Not used, present for API consistency.
        entry_weights : dict of str -> array-like or sparse matrix, default=None
            Per-entry weights of some views (see :meth:`fit`).

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_components)
            The sample entity's factor.
        """
        self._fit_with_weights(X, entry_weights)
        return self.factors_[self.sample_entity_].copy()

    def _fit_with_weights(self, X, entry_weights):
        # ``_fit(self, X)`` keeps the one signature every estimator's has (mmfactor.distributed
        # routes it); the weights ride along for the duration of the call
        self._entry_weights = entry_weights
        try:
            self._fit(X)
        finally:
            vars(self).pop("_entry_weights", None)  # (a failed fit drops it already)

    def _fit(self, X):
        self._validate_params()
        (mm, data, specs, sample, entities, links, weights, sizes, solver,
         ew) = self._prepare(X, getattr(self, "_entry_weights", None))
        # fitted (public) attributes are set only once training is over: an error or a
        # Ctrl-C before that leaves the estimator unfitted, never half-fitted
        devices = resolve_devices(self.devices, mm.names)
        dtype = _DTYPES[self.dtype]
        view_dev = dict(zip(mm.names, devices, strict=True))
        ent_dev = {}
        for s in specs:
            if s.source == "view":
                for e in (s.row, s.col):
                    ent_dev.setdefault(e, view_dev[s.name])
        for e in entities:
            ent_dev.setdefault(e, torch.device("cpu"))
        rels = []
        for s, v, lk, w in zip(specs, data, links, weights, strict=True):
            dev = view_dev[s.name] if s.source == "view" else ent_dev[s.row]
            rels.append(_Relation(s, v.data, weight=w, link=lk, biased=bool(self.fit_intercept),
                                  row_bias=self.fit_intercept is True, device=dev,
                                  dtype=dtype, missing=self.missing,
                                  confidence_scale=self.confidence_scale,
                                  entry_weight=ew.get(s.name) if s.source == "view" else None))
        gen, _ = torch_generator(self.random_state)
        self._rels, self._ent_dev = rels, ent_dev
        self._sample = sample
        self._links = dict(zip([s.name for s in specs], links, strict=True))
        self._weights = dict(zip([s.name for s in specs], weights, strict=True))
        self._solver = solver
        self._als_solve = self._resolve_als_solver()
        best = None
        for _ in range(self.n_init):  # restarts: the lowest final objective is kept
            U, bias = self._init_params(rels, entities, sizes, gen, dtype, ent_dev)
            self._U, self._bias = U, bias
            step = self._als_sweep if solver == "als" else self._lbfgs_step(list(entities))
            hist = fit_loop(step, max_iter=self.max_iter, tol=self.tol,
                            n_iter_no_change=self.n_iter_no_change, verbose=self.verbose,
                            desc="CMF", estimator="CMF")
            if solver == "lbfgs":
                for p in self._lbfgs_params:
                    p.requires_grad_(False)
                del self._lbfgs_params
            if best is None or hist.loss[-1] < best[0].loss[-1]:
                best = (hist, U, bias)
        hist, U, bias = best
        self.devices_ = devices
        self.sample_entity_ = sample
        self.relations_ = [(r.name, r.row, r.col) for r in rels]
        self.loss_curve_ = hist.loss
        self.loss_terms_ = hist.terms
        self.n_iter_ = hist.n_iter
        if not self.nonneg:
            # The objective is unchanged by one orthogonal rotation R of every factor
            # (U_r R R^T U_c^T = U_r U_c^T, ||U R|| = ||U||): pick the rotation that makes
            # the samples' components uncorrelated and ordered by variance, as PCA's are.
            Us = U[sample].double()
            evals, Q = torch.linalg.eigh(Us.T @ Us)
            Q = Q[:, torch.argsort(evals, descending=True)]
            Q = Q * torch.where(Q.sum(0) < 0, -1.0, 1.0).to(Q)  # a deterministic sign
            U = {e: (u.double() @ Q.to(u.device)).to(dtype) for e, u in U.items()}
        self.factors_ = {e: as_numpy(u) for e, u in U.items()}
        self.biases_ = {
            n: {"mean": b["mean"], "row": as_numpy(b["row"]), "col": as_numpy(b["col"])}
            for n, b in bias.items()
        }
        self._row_bias = {r.name: r.row_bias for r in rels if r.biased}
        self._set_input_signature(mm, data[: len(mm.views)])
        self._n_features_out = self.n_components
        del self._rels, self._U, self._bias  # the training data is not kept in the model

    def _resolve_als_solver(self):
        """``als_solver`` as used: ``"auto"`` is conjugate gradient from
        ``n_components >= _CG_FROM`` (measured, see ``als_solver``), except with ``nonneg``."""
        if self.als_solver != "auto":
            return self.als_solver
        return "cg" if self.n_components >= _CG_FROM and not self.nonneg else "cholesky"

    def _init_params(self, rels, entities, sizes, gen, dtype, ent_dev):
        """Random initial factors (small, non-negative with ``nonneg``) and zero biases."""
        U = {}
        for e in entities:
            u = 0.1 * torch.randn(sizes[e], self.n_components, generator=gen,
                                  dtype=torch.float64)
            U[e] = (u.abs() if self.nonneg else u).to(dtype).to(ent_dev[e])
        bias = {}
        for r in rels:
            if r.biased:
                mu = r.mean() if r.link == "identity" else 0.0
                bias[r.name] = {
                    "mean": mu,
                    "row": torch.zeros(r.shape[0], dtype=dtype, device=ent_dev[r.row]),
                    "col": torch.zeros(r.shape[1], dtype=dtype, device=ent_dev[r.col]),
                }
        return U, bias

    # the augmented factors: Ua = [U, mean + row bias, 1], Va = [V, 1, col bias]
    def _augmented(self, rel, U, bias, dev):
        Ur, Uc = U[rel.row].to(dev), U[rel.col].to(dev)
        if not rel.biased:
            return Ur, Uc
        b = bias[rel.name]
        one_r = torch.ones_like(b["row"]).to(dev)[:, None]
        one_c = torch.ones_like(b["col"]).to(dev)[:, None]
        Ua = torch.cat([Ur, (b["row"].to(dev) + b["mean"])[:, None], one_r], 1)
        Va = torch.cat([Uc, one_c, b["col"].to(dev)[:, None]], 1)
        return Ua, Va

    def _objective(self, rels, U, bias, known=None):
        """The objective and its terms; ``known`` holds relation losses already computed."""
        terms, total = {}, 0.0
        for r in rels:
            if known is not None and r.name in known:
                val = known[r.name]
            else:
                Ua, Va = self._augmented(r, U, bias, r.device)
                val = r.loss(Ua, Va, exact=True)
            terms[r.name] = val
            total += r.weight * val
        pen = sum(float((u.double() ** 2).sum()) for u in U.values())
        pen_b = sum(float((b["row"].double() ** 2).sum() + (b["col"].double() ** 2).sum())
                    for b in bias.values())
        terms["penalty"] = self.alpha * pen + self._alpha_bias * pen_b
        terms["loss"] = total + terms["penalty"]
        return terms

    def _solve_entity(self, e, rels, U, bias, n_rows, sse=None, exact=False):
        """Least-squares update of entity type ``e``'s factor (and its biases).

        Exact (batched Cholesky of every row's normal equations) unless the fit's ALS
        solver is conjugate gradient (``als_solver``) and ``exact`` is False: then
        ``cg_steps`` CG steps per row from the current factor, without per-row Grams.
        When ``sse`` is a dict, the loss of every relation of ``e`` whose normal
        equations were formed is written into it (O(n D^2), no pass over the entries).
        """
        k = self.n_components
        dev = self._ent_dev[e]
        dtype = _DTYPES[self.dtype]
        use_cg = not exact and getattr(self, "_als_solve", "cholesky") == "cg"
        parts = []  # (relation, side) pairs involving e, with their bias slot
        for r in rels:
            if r.row == e:
                parts.append((r, "row"))
            if r.col == e and r.row != e:
                parts.append((r, "col"))
        # a bias slot per relation: its column bias, and its row bias unless it has none
        slots = {id(r): k + i for i, (r, _) in enumerate(
            p for p in parts if p[0].biased and (p[1] == "col" or p[0].row_bias))}
        D = k + len(slots)
        pieces = []
        A_shared = torch.zeros(D, D, dtype=dtype, device=dev)  # identical for every row
        A_rows = None  # per-row Gram matrices, only when some relation has missing entries
        grams = []  # per-row Grams as operators (CG)
        b = torch.zeros(n_rows, D, dtype=dtype, device=dev)
        for r, side in parts:
            other = r.col if side == "row" else r.row
            W = U[other].to(r.device)
            Z = torch.zeros(W.shape[0], D, dtype=dtype, device=r.device)
            Z[:, :k] = W
            offset = torch.zeros(W.shape[0], dtype=dtype, device=r.device)
            if id(r) in slots:
                Z[:, slots[id(r)]] = 1.0
            if r.biased:
                bb = bias[r.name]
                offset = offset + bb["mean"] + bb["col" if side == "row" else "row"].to(r.device)
            if use_cg and r.mode != "full":
                G, Ar = r.gram_free(side, Z, offset)
                grams.append(G)
                if sse is not None:
                    sse.pop(r.name, None)  # evaluated directly at the end of the sweep
                if Ar is not None:
                    A_shared += Ar.to(dev)
                continue
            Ar, br, sum_y2 = r.normal_equations(side, Z, offset, with_loss=sse is not None)
            if sse is not None:
                pieces.append((r, Ar, br, sum_y2))
            if Ar.dim() == 2:
                A_shared += Ar.to(dev)
            else:
                A_rows = Ar.to(dev) if A_rows is None else A_rows + Ar.to(dev)
            b += br.to(dev)
        reg = torch.full((D,), float(self.alpha), dtype=dtype, device=dev)
        reg[k:] = self._alpha_bias
        A_shared += torch.diag(reg)
        if grams:
            # warm start: the current factor and biases
            x0 = torch.zeros(n_rows, D, dtype=dtype, device=dev)
            x0[:, :k] = U[e]
            for r, side in parts:
                if id(r) in slots:
                    x0[:, slots[id(r)]] = bias[r.name][side].to(dev)

            def matvec(P):
                out = P @ A_shared
                for G in grams:
                    out += (G @ P.to(G.Z.device)).to(dev)
                return out

            r0 = b - x0 @ A_shared  # b: the complete relations' right-hand sides
            for G in grams:
                r0 += G.residual(x0.to(G.Z.device)).to(dev)
            theta = cg_solve(matvec, r0, x0, self.cg_steps)
        elif self.nonneg:
            # exact non-negative least squares per row; the bias slots stay free
            A = A_shared if A_rows is None else A_rows + A_shared
            con = torch.arange(D, device=dev) < k
            theta = batched_nnls(A.double(), b.double(), con).to(dtype)
        elif A_rows is None:
            # one factorization serves every row
            L, info = torch.linalg.cholesky_ex(A_shared)
            if int(info) != 0:
                theta = torch.linalg.lstsq(A_shared, b.T).solution.T
            else:
                theta = torch.cholesky_solve(b.T, L).T
        else:
            A = A_rows + A_shared
            L, info = torch.linalg.cholesky_ex(A)
            if bool((info != 0).any()):
                theta = torch.linalg.lstsq(A, b[..., None]).solution[..., 0]
            else:
                theta = torch.cholesky_solve(b[..., None], L)[..., 0]
        for r, Ar, br, sum_y2 in pieces:
            if r.weight > 0 and r.link != "sigmoid":
                t = theta.to(r.device).double()
                quad = (t @ Ar.double() * t).sum() if Ar.dim() == 2 else torch.einsum(
                    "nd,nde,ne->", t, Ar.double(), t)
                sse[r.name] = max(sum_y2 - float(2 * (t * br.double()).sum() - quad)
                                  / r.weight, 0.0)
        new_bias = {}
        for r, side in parts:
            if id(r) in slots:
                new_bias[(r.name, side)] = theta[:, slots[id(r)]]
        return theta[:, :k].contiguous(), new_bias

    def _als_sweep(self, epoch):
        U, bias, rels = self._U, self._bias, self._rels
        # the sample entity last: its fitted factor is then exactly what transform gives
        # for the training rows (a fold-in against the final factors of everything else)
        order = [e for e in U if e != self._sample] + [self._sample]
        if self.update == "jacobi":
            # every entity type from the previous sweep's factors: the solves are
            # independent, so they can run in parallel (see mmfactor.distributed)
            solved = self._jacobi_solves(order, rels, U, bias)
        # Gauss-Seidel: the loss of each relation comes exactly from the normal equations
        # of whichever of its entity types is solved last (nothing it involves changes
        # after that); relations of an entity type with itself are evaluated directly.
        # In float32 those normal equations carry a rounding error of about 1e-7 of the
        # data's squared norm, more than the loss of a good fit: the loss is then
        # evaluated directly, in float64 (an O(nnz k) pass, below the solves' O(nnz k^2))
        sse = {} if self.update == "gauss-seidel" and self.dtype == "float64" else None
        for i, e in enumerate(order):
            if self.update == "jacobi":
                # damped: the two halves of an undamped bilinear Jacobi iteration are two
                # interleaved Gauss-Seidel chains that need not meet; averaging couples them
                new, nb = solved[i]
                U[e] = 0.5 * (U[e] + new)
                nb = {key: 0.5 * (bias[key[0]][key[1]] + v.to(bias[key[0]][key[1]].device))
                      for key, v in nb.items()}
            else:
                U[e], nb = self._solve_entity(e, rels, U, bias, U[e].shape[0], sse=sse)
            for (name, side), v in nb.items():
                bias[name][side] = v.to(bias[name][side].device)
        if sse is None:
            return self._objective(rels, U, bias)
        sse = {n: v for n, v in sse.items() if not any(r.name == n and r.row == r.col
                                                       for r in rels)}
        return self._objective(rels, U, bias, known=sse)

    def _jacobi_solves(self, order, rels, U, bias):
        """The undamped solves of ``order`` from the current factors (a Jacobi sweep's work;
        :mod:`mmfactor.distributed` splits it across ranks)."""
        return [self._solve_entity(e, rels, U, bias, U[e].shape[0]) for e in order]

    def _lbfgs_step(self, trainable, bias_sides=("row", "col")):
        """Full-batch L-BFGS over the factors of ``trainable`` entity types and the biases."""
        U, bias, rels = self._U, self._bias, self._rels
        params = [U[e].requires_grad_(True) for e in trainable]
        has_row = {r.name: r.row_bias for r in rels if r.biased}
        biases = [b[side].requires_grad_(True) for name, b in bias.items()
                  for side in bias_sides if side == "col" or has_row[name]]
        opt = torch.optim.LBFGS(params + biases, lr=1, max_iter=20, history_size=10,
                                line_search_fn="strong_wolfe")
        dev = params[0].device

        def closure():
            opt.zero_grad()
            total = 0
            for r in rels:
                Ua, Va = self._augmented(r, U, bias, r.device)
                total = total + r.weight * r.loss(Ua, Va).to(dev)
            total = total + self.alpha * sum((p**2).sum().to(dev) for p in params)
            total = total + self._alpha_bias * sum((p**2).sum().to(dev) for p in biases)
            total.backward()
            return total

        def step(epoch):
            opt.step(closure)
            with torch.no_grad():
                return self._objective(rels, U, bias)

        self._lbfgs_params = params + biases
        return step

    # ---- out of sample ---------------------------------------------------------------

    def _fold_in(self, X, entry_weights=None):
        """Factors (and per-relation row biases) of new samples, all else frozen."""
        check_is_fitted(self)
        mm, views = check_views(X, missing=self.missing, max_ndim=2)
        self._check_input_signature(mm, views)
        ew = _check_entry_weights(entry_weights, mm.names, views, self._links, self.missing)
        dtype = _DTYPES[self.dtype]
        sample, n = self.sample_entity_, len(mm)
        dev = self._ent_dev[sample]
        U = {e: torch.as_tensor(f, device=self._ent_dev[e]) for e, f in self.factors_.items()}
        rels = []
        for (name, row, col), v in zip(self.relations_, views, strict=False):
            spec = RelationSpec(name, row, col, "view")
            rels.append(_Relation(spec, v.data, weight=self._weights[name],
                                  link=self._links[name], biased=name in self.biases_,
                                  row_bias=self._row_bias.get(name, False),
                                  device=self._ent_dev[col], dtype=dtype, missing=self.missing,
                                  confidence_scale=self.confidence_scale,
                                  entry_weight=ew.get(name)))
        bias = {
            name: {"mean": b["mean"], "row": torch.zeros(n, dtype=dtype, device=dev),
                   "col": torch.as_tensor(b["col"], device=self._ent_dev[col])}
            for (name, _, col) in self.relations_ if name in self.biases_
            for b in [self.biases_[name]]
        }
        U[sample] = torch.zeros(n, self.n_components, dtype=dtype, device=dev)
        if self._solver == "als":
            U[sample], nb = self._solve_entity(sample, rels, U, bias, n, exact=True)
            for (name, side), v in nb.items():
                bias[name][side] = v
        else:
            self._U, self._bias, self._rels = U, bias, rels
            step = self._lbfgs_step([sample], bias_sides=("row",))
            for t in range(self.max_iter):
                step(t)
            for p in self._lbfgs_params:
                p.requires_grad_(False)
            del self._U, self._bias, self._rels, self._lbfgs_params
        return U, bias, rels

    def _restore_devices(self):
        view_dev = dict(zip(self.view_names_, self.devices_, strict=True))
        self._ent_dev = {e: torch.device("cpu") for e in self.factors_}
        for name, row, col in reversed(self.relations_):
            if name in view_dev:
                self._ent_dev[row] = self._ent_dev[col] = view_dev[name]

    def transform(self, X, *, entry_weights=None):
        """Embed new samples: their factor, solved with every other factor frozen.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of the new samples, with the columns seen in ``fit``.
        entry_weights : dict of str -> array-like or sparse matrix, default=None
            Per-entry weights of the new samples' views (as in :meth:`fit`); the entries
            of views without weights weigh 1.

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_components)
            The new samples' factor (``dtype``), in the fitted rotation.
        """
        U, _, _ = self._fold_in(X, entry_weights)
        return as_numpy(U[self.sample_entity_].detach())

    def score(self, X, y=None):
        """Negative mean reconstruction error of the views of ``X`` after folding it in.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of samples (new or seen).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            Minus the weighted mean loss per observed entry (higher is better).
        """
        U, bias, rels = self._fold_in(X)
        total, count = 0.0, 0.0
        for r in rels:
            Ua, Va = self._augmented(r, U, bias, r.device)
            total += r.weight * r.loss(Ua, Va, exact=True)
            count += r.weight * r.count
        return -total / max(count, 1e-12)

    def predict_entries(self, coords, relation=0):
        """Predicted values of the given (row, column) entries of a fitted relation.

        Parameters
        ----------
        coords : array-like of shape (n_entries, 2)
            Integer (row, column) indices into the relation as fitted (rows of a view are
            the training samples).
        relation : int or str, default=0
            The relation, by position in ``relations_`` or by name.

        Returns
        -------
        values : ndarray of float64 of shape (n_entries,)
            Predictions on the scale of the data (probabilities for a sigmoid link,
            strictly inside (0, 1); preference scores for an implicit one). float64
            whatever ``dtype``, as every ``predict_entries`` of mmfactor returns.
        """
        check_is_fitted(self)
        sizes = {e: f.shape[0] for e, f in self.factors_.items()}
        idx, coords = check_entries(coords, relation, self.relations_, sizes)
        name, row, col = self.relations_[idx]
        r_idx, c_idx = coords[:, 0], coords[:, 1]
        left = self.factors_[row][r_idx].astype(np.float64)
        pred = (left * self.factors_[col][c_idx]).sum(1)
        if name in self.biases_:
            b = self.biases_[name]
            pred = pred + b["mean"] + b["row"][r_idx] + b["col"][c_idx]
        return _inverse_link(self._links[name], pred)

    def _view_relations(self):
        """``(index, name, col_entity)`` of every relation that is a view of the samples."""
        return [(i, name, col) for i, (name, row, col) in enumerate(self.relations_)
                if name in self.view_names_ and row == self.sample_entity_]

    def inverse_transform(self, X):
        """The views as the model reconstructs them from embeddings.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Embeddings (the output of :meth:`transform`).

        Returns
        -------
        views : list of ndarray of float64
            Per view, ``f(Z V^T + mean + column bias)`` on the data's scale. With
            ``fit_intercept=True`` the per-sample row bias is not in ``Z``, so it is left
            out here; :meth:`reconstruct` folds the samples in and includes it.
        """
        check_is_fitted(self)
        Z = self._check_embedding(X, self.n_components)
        out = []
        for _, name, col in self._view_relations():
            P = Z @ self.factors_[col].T.astype(np.float64)
            if name in self.biases_:
                P += self.biases_[name]["mean"] + self.biases_[name]["col"][None, :]
            out.append(_inverse_link(self._links[name], P))
        return out

    def reconstruct(self, X):
        """The views of ``X`` as the model approximates them, after folding ``X`` in.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of samples (new or seen).

        Returns
        -------
        views : dict of str -> ndarray of float64
            ``f(U V^T + biases)`` for every view, by name.
        """
        U, bias, rels = self._fold_in(X)
        out = {}
        with torch.no_grad():
            for r in rels:
                Ua, Va = self._augmented(r, U, bias, r.device)
                out[r.name] = _inverse_link(r.link, as_numpy(Ua.double() @ Va.double().T))
        return out

    def recommend(self, X, n_items=10, *, relation=0, exclude_seen=True):
        """Top-``n_items`` columns of a relation for each sample of ``X`` (cmfrec's top-N).

        The samples are folded in from every view of ``X`` (warm start), so a sample with
        no entry in ``relation`` (an all-NaN row, an empty row of a sparse view) is
        ranked from its other views alone (cold start).

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of the samples, with the columns seen in ``fit``.
        n_items : int, default=10
            Number of columns to return per sample (at most the relation's width).
        relation : int or str, default=0
            A view of the samples, by position in ``relations_`` or by name.
        exclude_seen : bool, default=True
            Leave out the entries of ``relation`` that ``X`` already has (observed
            entries; the non-zeros of an implicit or ``missing="zero"`` view).

        Returns
        -------
        items : ndarray of int64 of shape (n_samples, n_items)
            Column indices, best first.
        scores : ndarray of float64 of shape (n_samples, n_items)
            Their predicted values (``-inf`` where fewer than ``n_items`` columns are
            left after excluding the seen ones).
        """
        check_is_fitted(self)
        names = [name for _, name, _ in self._view_relations()]
        if isinstance(relation, numbers.Integral) and not isinstance(relation, bool) and (
                0 <= relation < len(self.relations_)):
            relation = self.relations_[relation][0]
        if relation not in names:
            raise ValueError(f"relation={relation!r} is not a view of the samples; recommend "
                             f"ranks the columns of one of {names}.")
        width = self.factors_[dict((n, c) for _, n, c in self._view_relations())[relation]
                              ].shape[0]
        if (isinstance(n_items, bool) or not isinstance(n_items, numbers.Integral)
                or not 1 <= n_items <= width):
            raise ValueError(f"n_items={n_items!r}; expected an integer in [1, {width}] (the "
                             f"number of columns of relation {relation!r}).")
        U, bias, rels = self._fold_in(X)
        r = next(r for r in rels if r.name == relation)
        with torch.no_grad():
            Ua, Va = self._augmented(r, U, bias, r.device)
            scores = Ua.double() @ Va.double().T
            if exclude_seen:
                scores[r.seen().to(scores.device)] = -torch.inf
            top = torch.topk(scores, n_items, dim=1)
        values = as_numpy(top.values)
        finite = np.isfinite(values)
        values[finite] = _inverse_link(r.link, values[finite])
        return as_numpy(top.indices).astype(np.int64), values

    def score_heldout(self, X, fraction=0.5, random_state=0):
        """Score held-out entries of the rows of ``X`` (a criterion that can pick k).

        Unlike ``score``, this can select ``n_components``.

        ``score`` folds the rows in from all their entries and measures the error on
        those same entries, so it improves with every extra component and
        ``GridSearchCV`` picks the largest ``n_components`` offered. Here a random
        ``fraction`` of the observed entries of every view of the samples is hidden, the
        rows are folded in from the rest, and the hidden entries are predicted: an
        over-fitted embedding predicts them badly. Use it as
        ``GridSearchCV(..., scoring=lambda est, X, y=None: est.score_heldout(X))``.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of samples (held-out rows in a search), with missing entries as NaN or
            unstored (``missing="unobserved"``).
        fraction : float, default=0.5
            Fraction of the observed entries hidden, in (0, 1).
        random_state : int, RandomState instance or None, default=0
            Which entries are hidden.

        Returns
        -------
        score : float
            Minus the weighted mean loss per hidden entry (squared error, or log-loss for
            a sigmoid link), in float64; higher is better.
        """
        check_is_fitted(self)
        mm, views = check_views(X, missing=self.missing, max_ndim=2)
        names = [n for _, n, _ in self._view_relations() if self._links[n] != "implicit"]
        masked, hidden = hide_entries(mm, views, names, fraction, random_state, self.missing)
        U, bias, rels = self._fold_in(masked)
        total, count = 0.0, 0.0
        with torch.no_grad():
            for r in rels:
                if r.name not in hidden:
                    continue
                rows, cols, vals = hidden[r.name]
                Ua, Va = self._augmented(r, U, bias, r.device)
                idx = [torch.as_tensor(a, dtype=torch.int64, device=Ua.device)
                       for a in (rows, cols)]
                pred = (Ua[idx[0]].double() * Va[idx[1]].double()).sum(1)
                target = torch.as_tensor(vals, device=Ua.device)
                total += r.weight * float(_pointwise_loss(r.link, pred, target))
                count += r.weight * len(vals)
        return -total / max(count, 1e-12)
