"""Data fusion by matrix tri-factorization (Zitnik & Zupan, TPAMI 2015): DFMF and DFMC."""

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
    MultiModal,
    check_entries,
    check_non_negative,
    check_variation,
    check_view,
    check_views,
    relation_data,
    relation_weights,
    resolve_relations,
)
from .._sparse import _csr, _torch_csr
from .._training import fit_loop
from ._heldout import hide_entries
from ._nnls import batched_nnls

__all__ = ["DFMF"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_CHUNK = 1 << 20  # observed entries per chunk when evaluating the approximation at them
# a complete dense relation's loss ||R||^2 - 2 <R, P> + ||P||^2 is recomputed from direct
# residuals when it falls below this fraction of ||R||^2 + ||P||^2 (the expansion's
# rounding error is about 1e-15 of that sum, so it stays within 1e-11 of the loss)
_CANCEL = 1e-4
_NEGATIVE_HINT = ("DFMF models relations as non-negative degrees of relationship. Scale "
                  "the view to non-negative values with MinMaxScaler(clip=True) (without "
                  "clip=True, new rows below the training minimum still come out "
                  "negative and transform refuses them), or pass allow_negative=True to "
                  "fit it as a semi-non-negative factorization (non-negative factors, a "
                  "backbone of any sign).")
_DIVERGENCE_HINT = ("With constraint_form='raw', must-link (negative) constraint entries "
                    "make DFMF's objective unbounded below: use constraint_form='laplacian' "
                    "(the default), which keeps it bounded, or remove the negative entries. "
                    "Do not standardize the views: DFMF needs non-negative data.")


def _balanced_weights(rels):
    """``weights="balanced"``: ``N / (M n_m)``, ``n_m`` the observed entries of relation m."""
    total = float(sum(r.n_obs for r in rels))
    return [total / (len(rels) * max(r.n_obs, 1)) for r in rels]


def _pos(A):
    return A.clamp_min(0)


def _neg(A):
    return (-A).clamp_min(0)


def _approx(Gr, S, Gc, out=None, GrS=None):
    """``G_r S G_c^T``, multiplied in the cheaper order (``S`` with the smaller side);
    ``GrS``: ``G_r S`` if the caller has it."""
    (n_r, k_r), (n_c, k_c) = Gr.shape, Gc.shape
    if n_r * k_c * (k_r + n_c) <= n_c * k_r * (k_c + n_r):
        return torch.mm(Gr @ S if GrS is None else GrS, Gc.T, out=out)
    return torch.mm(Gr, S @ Gc.T, out=out)


def _quad(Gr, S, Gc, grams=None):
    """``||G_r S G_c^T||_F^2 = <G_r'G_r S, S G_c'G_c>`` from the k x k Gram matrices
    (``grams``: ``(G_r'G_r, G_c'G_c)`` when the caller has them)."""
    GrtGr, GctGc = grams if grams is not None else (Gr.T @ Gr, Gc.T @ Gc)
    return float(((GrtGr @ S) * (S @ GctGc)).sum())


def _gram_pinv(A, rtol):
    """``pinv(A, hermitian=True, rtol=rtol)`` of a Gram matrix ``A``, usually by Cholesky.

    When ``||A||_F ||A^-1||_F < 1e-3 / rtol``, every eigenvalue exceeds ``1e3 rtol``
    times the largest (``lambda_max <= ||A||_F``, ``lambda_min >= 1 / ||A^-1||_F``), so
    the pseudo-inverse is the inverse, taken from a Cholesky factorization (a 50 x 50
    one costs 1/20 of the eigendecomposition); otherwise the eigendecomposition."""
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        inv = torch.cholesky_inverse(L)
        if float(torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(inv)) * rtol < 1e-3:
            return inv
    return torch.linalg.pinv(A, hermitian=True, rtol=rtol)


def _torch_csr_double(R):
    """A torch CSR matrix in float64."""
    return _csr(R.crow_indices(), R.col_indices(), R.values().double(), tuple(R.shape))


def _mm(A, W):
    """``A @ W`` for a dense or a torch CSR ``A``.

    A dense ``A`` is multiplied as ``(W^T A^T)^T``: the same product, but MKL runs the
    thin-output form 1.2 to 2x faster on CPU (measured on the dicty shapes, 1 thread)."""
    if A.layout == torch.sparse_csr:
        return torch.sparse.mm(A, W)
    return (W.T @ A.T).T


class _Factors(dict):
    """Entity type -> factor ``G``, each factor's Gram matrix ``G'G`` (float64) cached
    until the factor is replaced (the backbones, the updates and the objective of a
    sweep share it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._grams = {}

    def gram(self, e, like=None):
        g = self[e]
        hit = self._grams.get(e)
        if hit is None or hit[0] is not g:
            g64 = g.double()
            hit = self._grams[e] = (g, g64.T @ g64)
        return hit[1] if like is None else hit[1].to(device=like.device, dtype=like.dtype)


class _Theta:
    """A constraint matrix as ``(Theta^+, Theta^-)``, torch CSR, non-negative, symmetric.

    :meth:`products` keeps ``(Theta^+ G, Theta^- G)`` for the last factor it was given:
    the objective after a sweep and the next sweep's update of the same, unchanged
    factor share them (one sparse product each per sweep instead of two).
    """

    def __init__(self, theta, device, dtype):
        self.pos = self._part(theta.maximum(0), device, dtype)
        self.neg = self._part((-theta).maximum(0), device, dtype)
        self._of, self._products = None, None

    @staticmethod
    def _part(M, device, dtype):
        """``(diagonal, off-diagonal CSR or None)``: the diagonal (all of the Laplacian
        form's positive part when there are no cannot-links) scales rows, no product."""
        M = sp.csr_matrix(M)
        diag = torch.as_tensor(M.diagonal(), device=device).to(dtype)[:, None]
        off = sp.csr_matrix(M - sp.diags(M.diagonal()))
        off.eliminate_zeros()
        return diag, (_torch_csr(off, device, dtype) if off.nnz else None)

    @staticmethod
    def _apply(part, G):
        diag, off = part
        out = diag * G
        return out if off is None else out.add_(torch.sparse.mm(off, G))

    def products(self, G):
        if self._of is not G:
            self._of, self._products = G, (self._apply(self.pos, G), self._apply(self.neg, G))
        return self._products


class _Relation:
    """One relation ``R ~ G_r S G_c^T`` on its device, in the form the updates need.

    The updates only ever need ``R~ W`` and ``R~^T W`` for thin matrices ``W``, where
    ``R~`` is the relation with its missing entries filled by the approximation at the
    last :meth:`refresh` (the completion step of DFMC, once per sweep). With ``E`` the
    residual at the observed entries and ``(G_r, S, G_c)`` those of the fill,
    ``R~ = E + G_r S G_c^T``, so ``R~ W = E W + G_r (S (G_c^T W))``: the filled matrix is
    never formed, and a sparse relation costs O(nnz k) per product.

    ``R~`` only changes at a refresh, so the last product on each side is kept
    (:meth:`apply` by the same ``W`` returns it): a backbone and the update of a factor
    that follow each other with the other factor unchanged share one product. The
    update of a factor also leaves ``(side, R~ W, W's factor, S)`` in ``stash``: the
    objective of a complete relation then needs no product at all (see :meth:`refresh`).

    Modes: ``"dense"`` (complete dense), ``"sparse"`` (sparse, unstored entries are
    zeros), ``"masked"`` (dense with NaN = missing) and ``"observed"`` (sparse, unstored
    entries are missing).
    """

    def __init__(self, name, row, col, view, *, missing, device, dtype):
        self.name, self.row, self.col = name, row, col
        self.device, self.dtype = device, dtype
        self.weight = 1.0
        data = view.data
        self.shape = tuple(data.shape)
        self.E = None  # the residual at the observed entries, at the last fill
        self.fill = None  # (G_r, S, G_c) of the last fill (None: missing entries are 0)
        self._memo = {}  # side -> (W, R~ W) of the last product on that side
        self.stash = None  # (side, R~ W, W's factor, S) of the last factor update
        self._grs = None  # (G_r, S, G_r S) of the last call of grs
        if view.kind == "sparse":
            csr = sp.csr_matrix(data)
            self._coo64 = csr.tocoo()  # the data as given, for the reported loss
            self._csr64 = None  # a float64 torch copy, made by exact_loss if it is needed
            if missing == "zero":
                self.mode = "sparse"
                self.R = _torch_csr(csr, device, dtype)
                self.RT = _torch_csr(csr.T.tocsr(), device, dtype)
                self.sum_sq = float((csr.data.astype(np.float64) ** 2).sum())
                self.n_obs = self.shape[0] * self.shape[1]
            else:
                self._set_observed(csr.tocoo(), device, dtype)
        else:
            self._R64 = as_numpy(data)  # the caller's array (no copy), for the reported loss
            t = torch.as_tensor(self._R64).to(device=device, dtype=dtype)
            nan = torch.isnan(t)
            if bool(nan.any()):
                self.mode = "masked"
                self.mask = (~nan).to(dtype)  # 1 observed, 0 missing
                self.R = torch.where(nan, torch.zeros((), dtype=dtype, device=device), t)
                self.n_obs = int(self.mask.sum())
                self._residual = torch.empty_like(self.R)  # reused by every refresh
            else:
                self.mode = "dense"
                self.R = t
                self.n_obs = t.numel()
                self.sum_sq = float((t.double() ** 2).sum())

    def _set_observed(self, coo, device, dtype):
        self.mode = "observed"
        order = np.lexsort((coo.col, coo.row))
        rows, cols, vals = coo.row[order], coo.col[order], coo.data[order]
        perm = np.lexsort((rows, cols))  # row-major -> column-major order

        def as_t(a, dt=torch.int64):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)

        n_r, n_c = self.shape
        self.rows, self.cols, self.vals, self.perm = as_t(rows), as_t(cols), as_t(vals, dtype), \
            as_t(perm)
        self.crow_r = as_t(np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_r))]))
        self.crow_c = as_t(np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=n_c))]))
        self.rows_c = self.rows[self.perm]
        self.n_obs = len(vals)

    @property
    def needs_fill(self):
        return self.mode in ("masked", "observed")

    def zero_filled(self):
        """The relation with missing entries as zeros, on the CPU in float64 (for the
        initialization): a NumPy array, or a CSR matrix for the sparse modes."""
        if self.mode in ("dense", "masked"):
            return self.R.cpu().double().numpy()
        if self.mode == "sparse":
            R = self.R.cpu()
            return sp.csr_matrix((R.values().double().numpy(), R.col_indices().numpy(),
                                  R.crow_indices().numpy()), shape=self.shape)
        return sp.csr_matrix((self.vals.cpu().double().numpy(),
                              (self.rows.cpu().numpy(), self.cols.cpu().numpy())),
                             shape=self.shape)

    def exact_loss(self, Gr, S, Gc):
        """Squared error over the observed entries in float64 against the data as given
        (direct residuals, chunked): the loss reported when the fit runs in float32, whose
        own residuals carry a rounding error of 1e-7 of the data."""
        Gr, S, Gc = Gr.double(), S.double(), Gc.double()
        GrS = Gr @ S
        total = 0.0
        if self.mode in ("dense", "masked"):
            step = max(1, _CHUNK // max(self.shape[1], 1))
            for s in range(0, self.shape[0], step):
                R = torch.as_tensor(self._R64[s : s + step], device=Gr.device).double()
                total += float(torch.nansum((R - GrS[s : s + step] @ Gc.T) ** 2))
            return total
        coo = self._coo64
        if self.mode == "sparse":
            # ||R - P||^2 = ||R||^2 - 2 <R G_c, G_r S> + ||P||^2: one float64 sparse
            # product (gathering G_r S and G_c at every stored entry instead cost 3x a
            # whole float32 sweep: why float32 was slower than float64 on sparse graphs)
            if self._csr64 is None:
                self._csr64 = _torch_csr(coo.tocsr(), Gr.device, torch.float64)
            inner = float((torch.sparse.mm(self._csr64, Gc) * GrS).sum())
            return max(self.sum_sq - 2 * inner + _quad(Gr, S, Gc), 0.0)
        for s in range(0, coo.nnz, _CHUNK):
            r = torch.as_tensor(coo.row[s : s + _CHUNK], device=Gr.device, dtype=torch.int64)
            c = torch.as_tensor(coo.col[s : s + _CHUNK], device=Gr.device, dtype=torch.int64)
            v = torch.as_tensor(coo.data[s : s + _CHUNK], device=Gr.device).double()
            p = (GrS[r] * Gc[c]).sum(1)
            total += float(((v - p) ** 2).sum())
        return total

    def refresh(self, Gr, S, Gc, grams=None):
        """Squared error over the observed entries; stores the residual for ``apply``.

        The value is computed in ``dtype`` (float64 is exact enough); in float32 the
        objective is reported from :meth:`exact_loss` instead. ``grams``: the factors'
        Gram matrices, if the caller has them."""
        if self.mode in ("dense", "sparse") and self.dtype != torch.float64:
            return None  # a complete relation keeps no residual: exact_loss reports it
        if self.mode in ("dense", "sparse"):
            # ||R - P||^2 = ||R||^2 - 2 <R, P> + <G_r'G_r S, S G_c'G_c>: P is never
            # formed, and <R, P> comes from the last factor update when it can
            quad = _quad(Gr, S, Gc, grams)
            val = self.sum_sq - 2 * self._inner(Gr, S, Gc) + quad
            if self.mode == "dense" and val < _CANCEL * (self.sum_sq + quad):
                # an almost exact fit: the expansion would cancel, so direct residuals
                return float(((self.R - _approx(Gr, S, Gc)) ** 2).sum())
            return max(val, 0.0)
        GrS = self.grs(Gr, S)
        if self.mode == "masked":
            # in one preallocated buffer: no large temporary is allocated per sweep
            E = _approx(Gr, S, Gc, out=self._residual, GrS=GrS)
            torch.sub(self.R, E, out=E).mul_(self.mask)
            self.set_fill(E, (Gr, S, Gc, GrS))
            return float(torch.dot(E.view(-1), E.view(-1)))
        e = torch.empty_like(self.vals)
        for s in range(0, self.n_obs, _CHUNK):
            r, c = self.rows[s : s + _CHUNK], self.cols[s : s + _CHUNK]
            e[s : s + _CHUNK] = self.vals[s : s + _CHUNK] - (GrS[r] * Gc[c]).sum(1)
        self.set_fill(e, (Gr, S, Gc, GrS))
        return float((e**2).sum())

    def set_fill(self, E, fill):
        """A new residual ``E`` at the observed entries and the fill
        ``(G_r, S, G_c, G_r S)`` (``None``: missing entries are zeros): ``R~`` changes,
        the kept products go."""
        self.E, self.fill, self._memo = E, fill, {}

    def _inner(self, Gr, S, Gc):
        """``<R, G_r S G_c^T>`` of a complete relation: ``<R~ W, G>`` from the last update
        of a factor when the other factor and ``S`` are still those it used (the update
        computed ``R~ G_c S^T`` or ``R~^T G_r S``), else one product."""
        if self.stash is not None and self.stash[3] is S:
            side, A, other = self.stash[:3]
            if side == "row" and other is Gc:
                return float((A * Gr).sum())
            if side == "col" and other is Gr:
                return float((A * Gc).sum())
        return float((self.apply("row", Gc, Gr, S, Gc) * (Gr @ S)).sum())

    def grs(self, Gr, S):
        """``G_r S``, kept while ``G_r`` and ``S`` are the same tensors (an update of the
        column factor and the refresh after it share it)."""
        hit = self._grs
        if hit is None or hit[0] is not Gr or hit[1] is not S:
            hit = self._grs = (Gr, S, Gr @ S)
        return hit[2]

    def cached(self, side, W):
        """Whether :meth:`apply` by ``W`` on ``side`` is kept (costs no product)."""
        hit = self._memo.get(side)
        return hit is not None and hit[0] is W

    def apply(self, side, W, Gr, S, Gc):
        """``R~ W`` (``side="row"``) or ``R~^T W`` (``side="col"``)."""
        hit = self._memo.get(side)
        if hit is not None and hit[0] is W:
            return hit[1]
        if self.mode in ("dense", "sparse"):
            if side == "row":
                out = _mm(self.R, W)
            else:
                out = _mm(self.R.T, W) if self.mode == "dense" else torch.sparse.mm(self.RT, W)
        else:
            if self.E is None:
                self.refresh(Gr, S, Gc)
            if self.mode == "masked":
                E = self.E if side == "row" else self.E.T
            elif side == "row":
                E = _csr(self.crow_r, self.cols, self.E, self.shape)
            else:
                E = _csr(self.crow_c, self.rows_c, self.E[self.perm], self.shape[::-1])
            out = _mm(E, W)
            if self.fill is not None:
                # R~ = E + G_r S G_c' of the fill: the filled matrix stays the same until
                # the next refresh (a majorizer of the masked objective; see DFMF's Notes)
                Fr, FS, Fc, FrS = self.fill
                if FS.shape[1] <= FS.shape[0]:  # through G_r S, k_c <= k_r columns
                    low = FrS @ (Fc.T @ W) if side == "row" else Fc @ (FrS.T @ W)
                else:
                    low = Fr @ (FS @ (Fc.T @ W)) if side == "row" else Fc @ (FS.T @ (Fr.T @ W))
                out = out + low
        self._memo[side] = (W, out)
        return out


class DFMF(MultiModalTransformer):
    r"""Data fusion by non-negative matrix tri-factorization (DFMF, with DFMC completion).

    Every relation ``R_ij`` between entity types ``i`` and ``j`` is approximated as
    ``G_i S_ij G_j^T``: one non-negative factor ``G_i`` per entity type, shared by every
    relation that involves the type (its rank may differ per type), and one unconstrained
    backbone ``S_ij`` per relation. Constraint matrices ``Theta_i`` (negative entries:
    must-link, positive: cannot-link) add ``tr(G_i^T Theta_i G_i)`` to the objective

    .. math::

        J = \sum_{ij} w_{ij} \lVert M_{ij} \odot (R_{ij} - G_i S_{ij} G_j^\top) \rVert_F^2
        + \sum_i \operatorname{tr}(G_i^\top \Theta_i G_i), \qquad G_i \ge 0,

    where ``M_ij`` masks the observed entries (NaN in a dense view, the unstored entries
    of a sparse view with ``missing="unobserved"``): the completion variant DFMC, whose
    missing entries are then predicted by :meth:`predict_entries`.

    Each sweep solves every backbone in closed form (``S_ij = (G_i^T G_i)^+ G_i^T R~_ij
    G_j (G_j^T G_j)^+``) and then applies the paper's multiplicative rule
    ``G_i <- G_i * sqrt((A^+ + G_i B^- + Theta_i^- G_i) / (A^- + G_i B^+ + Theta_i^+ G_i))``
    (``X^+``, ``X^-``: positive and negative parts) to one entity type after the other.
    ``R~`` is the relation with its missing entries filled by the approximation at the
    end of the previous sweep (the paper's completion step; zeros in the first sweep),
    applied implicitly so that no dense filled matrix is formed. All rows of a type are
    updated by a few matrix products in torch (CPU or CUDA), so a sweep costs a few
    calls per relation, not per row.

    Parameters
    ----------
    n_components : int or dict, default=10
        Rank of every entity type's factor, or a dict ``{entity_type: rank}`` naming every
        type of the schema.
    relations : None, list or dict, default=None
        The schema: for each view (and each matrix in ``X.shared`` it names) the
        ``(row_entity, col_entity)`` pair. ``None``: every view relates the samples to a
        column entity type of its own. Views named in ``constraints`` are not relations.
    sample_entity : str, default=None
        Entity type of the rows of every view (default ``"sample"`` or the schema's).
    constraints : None or dict, default=None
        ``{entity_type: Theta}`` with ``Theta`` a square (n_entities x n_entities) array or
        sparse matrix, the name of a view of ``X`` (for the sample entity: an
        n_samples x n_samples view, used by ``transform`` among the new rows too) or of a
        matrix in ``X.shared``, or a list of these (summed). Only the symmetric part of
        ``Theta`` enters ``tr(G^T Theta G)``, so ``Theta`` is symmetrized. A constraint
        view of the sample entity cannot be row-sliced by cross-validation (it must stay
        square): to hold samples out, mask their entries instead (NaN, as DFMC does).
    constraint_form : {"laplacian", "raw"}, default="laplacian"
        ``"raw"``: ``Theta`` as given, the paper's and scikit-fusion's form. Its
        must-link (negative) entries make the objective unbounded below (see Notes): on
        the paper's own Dictyostelium constraints it reaches -inf after about 56 sweeps.
        ``"laplacian"``: the must-link part ``-W`` becomes ``D - W`` (``D`` the row sums
        of ``W`` on the diagonal), so that it contributes
        ``1/2 sum_ab w_ab ||g_a - g_b||^2 >= 0``: it pulls linked rows together and keeps
        the objective bounded below. Cannot-link (positive) entries are kept as given.
    init : {"random_c", "random", "svd"}, default="random_c"
        ``"random"``: uniform [0, 1) factors. ``"random_c"`` (the paper's): each column of
        ``G_i`` averages a random 20% of the 50% longest columns of each relation of
        type ``i``. ``"svd"``: NNDSVD of the type's relations side by side, zeros
        replaced by a small value so that the multiplicative rule can move them.
    missing : {"unobserved", "zero"}, default="unobserved"
        What an unstored entry of a sparse view means.
    allow_negative : bool, default=False
        DFMF models relations as non-negative degrees of relationship (presence or
        strength), so by default a relation with a negative entry is refused before
        training; scale such data to non-negative values first (e.g. with
        :class:`~sklearn.preprocessing.MinMaxScaler`). ``True`` accepts negative entries:
        the multiplicative rule splits every product into positive and negative parts,
        so the factors stay non-negative and ``S`` absorbs the sign (semi-NMF, Ding, Li
        & Jordan 2010). Constraint matrices always take both signs.
    weights : None, "balanced", float, list or dict, default=None
        Weight ``w_ij`` of each relation's squared error in ``J`` (default 1 each); one
        float for all, a list in the order of ``relations`` or a dict by relation name.
        ``"balanced"``: equal total weight per relation, ``N / (M n_ij)`` with ``n_ij``
        its number of observed entries, ``M`` the number of relations and ``N`` the sum
        of the ``n_ij``. Measured on mfeat view pairs (``MinMaxScaler(clip=True)``,
        ``benchmarks/bench_weights.py``, downstream 5-fold logistic-regression
        accuracy): ``"balanced"`` helps when one view is an order of magnitude narrower
        than the other (6 columns beside 64 to 240: +0.05 to +0.16 at
        ``n_components=2``, +0.01 to +0.05 at 10), but with widths within about 5x it
        tied or lost (down to -0.02), so it is not the default.
    n_init : int, default=1
        Number of random initializations (scikit-fusion's restarts); the fit with the
        lowest final objective is kept.
    dtype : {"float32", "float64"}, default="float64"
        Precision of the computation and of ``transform``'s output. float32 is not
        faster on CPU: measured per sweep (``benchmarks/bench_weights.py --part dtype``,
        2 cores) it took 1.2 to 1.6x the float64 time on dicty and on a six-type graph
        of sparse binary relations, because a float32 fit evaluates its reported
        objective in float64 each sweep (one float64 product per relation), which a
        float64 fit takes from its last update's product instead; it halves the memory
        of the factors and dense views. Moreover the backbones' least squares are
        ill-conditioned when a factor's columns are nearly collinear (as ``random_c``
        makes them, or a rank above an entity type's number of members), and float32
        then loses much of the fit.
    max_iter : int, default=500
        Maximum number of sweeps (also of the multiplicative fold-in of ``transform`` when
        constraints couple the new rows).
    tol : float, default=1e-4
        Stop when the objective decreases by less than ``tol`` (relative) in a sweep.
        The multiplicative rule converges slowly: on 60 ordinary fits (mfeat view pairs
        and synthetic collections, MinMax-scaled, ``n_components=10``) the former
        defaults (``tol=1e-5``, ``max_iter=200``) warned in 55; these stop at a median of
        163 sweeps and warned in 1.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialization (through a ``torch.Generator``).
    devices : None, str, list or dict, default=None
        Where each view's data and computation live; an entity type's factor lives on
        the device of the first view that involves it.
    verbose : int, default=0
        Show a progress bar.
    n_jobs : int, default=None
        CPU threads of torch, BLAS and OpenMP during this estimator's ``fit``,
        ``transform`` and other calls, put back afterwards (``-1``: all CPUs; ``None``:
        unchanged). See :ref:`busy-machines`.

    Attributes
    ----------
    factors_ : dict of str -> ndarray of shape (n_entities, n_components_[type])
        The non-negative factor ``G`` of each entity type (the training rows' for the
        sample entity).
    backbones_ : dict of str -> ndarray of shape (n_components_[row], n_components_[col])
        The backbone ``S`` of each relation.
    n_components_ : dict of str -> int
        The rank of each entity type.
    relations_ : list of tuple
        ``(name, row_entity, col_entity)`` of every relation.
    constraints_ : list of str
        The entity types that carry a constraint matrix.
    sample_entity_ : str
        The entity type of the samples.
    devices_ : list of torch.device
        One device per view.
    loss_curve_ : list of float
        Objective ``J`` after every sweep (non-increasing up to rounding).
    loss_terms_ : dict of str -> list of float
        After every sweep: the squared error of each relation (by name) and
        ``"constraint:<type>"``, the value of ``tr(G^T Theta G)`` of each constrained type.
    n_iter_ : int
        Number of sweeps run.
    n_features_in_ : int
        Total number of columns of the views that are relations (``X.shape[1]`` for one
        array); ``view_names_`` lists the views.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        The column names of ``X`` when it is one pandas DataFrame with string column
        names (only then); ``transform`` and ``score`` check them first.

    See Also
    --------
    CMF : Collective factorization with one factor per entity type and L2 penalties.

    Notes
    -----
    The paper updates every ``G_i`` at once from the same old factors; here each type's
    update uses the newest factors of the others (block coordinate descent). Each step
    is then the auxiliary-function step of Ding, Li & Jordan (2010) for one factor with
    the rest fixed, so the objective never increases (the simultaneous update does not
    have that guarantee), at the same cost per sweep. With missing entries, the sweep
    works on the relations filled once, at its start, from the current approximation
    (as the paper's DFMC does): the filled objective majorizes the masked one and
    touches it at the fill, and every step of the sweep lowers the filled objective, so
    the masked objective never increases either (majorize-minimize).

    With ``constraint_form="raw"``, ``J`` is not bounded below when a must-link
    constraint is not balanced by a positive diagonal: scaling ``G_i`` up and ``S`` down
    keeps the fit and lowers ``tr(G_i^T Theta_i G_i)`` without end, so long fits diverge
    (the error names the sweep). The default Laplacian form is bounded below by zero,
    though its infimum pulls the constrained factor's scale slowly down (and ``S`` up);
    the predictions ``G_i S G_j^T`` are unaffected by that scale.

    References
    ----------
    M. Zitnik and B. Zupan. Data fusion by matrix factorization. IEEE TPAMI 37(1), 2015.
    C. Ding, T. Li and M. I. Jordan. Convex and semi-nonnegative matrix factorizations.
    IEEE TPAMI 32(1), 2010.

    Examples
    --------
    >>> import numpy as np
    >>> from mmfactor import DFMF, MultiModal
    >>> rng = np.random.RandomState(0)
    >>> X = MultiModal(genes_go=rng.rand(30, 8), genes_expr=rng.rand(30, 5))
    >>> model = DFMF(n_components={"gene": 4, "go": 3, "cond": 2},
    ...              relations={"genes_go": ("gene", "go"), "genes_expr": ("gene", "cond")},
    ...              max_iter=50, random_state=0)
    >>> emb = model.fit_transform(X)
    >>> emb.shape, bool((emb >= 0).all())
    ((30, 4), True)
    >>> model.backbones_["genes_go"].shape
    (4, 3)
    >>> model.transform(X[:5]).shape
    (5, 4)
    """

    _parameter_constraints = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left"), dict],
        "relations": [None, list, tuple, dict],
        "sample_entity": [None, str],
        "constraints": [None, dict],
        "constraint_form": [StrOptions({"laplacian", "raw"})],
        "init": [StrOptions({"random_c", "random", "svd"})],
        "missing": [StrOptions({"unobserved", "zero"})],
        "allow_negative": ["boolean"],
        "weights": [None, StrOptions({"balanced"}), Interval(numbers.Real, 0, None,
                                                              closed="left"), list, tuple, dict],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "dtype": [StrOptions({"float32", "float64"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
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
        relations=None,
        sample_entity=None,
        constraints=None,
        constraint_form="laplacian",
        init="random_c",
        missing="unobserved",
        allow_negative=False,
        weights=None,
        n_init=1,
        dtype="float64",
        max_iter=500,
        tol=1e-4,
        random_state=None,
        devices=None,
        verbose=0,
        n_jobs=None,
    ):
        self.n_components = n_components
        self.relations = relations
        self.sample_entity = sample_entity
        self.constraints = constraints
        self.constraint_form = constraint_form
        self.init = init
        self.missing = missing
        self.allow_negative = allow_negative
        self.weights = weights
        self.n_init = n_init
        self.dtype = dtype
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.devices = devices
        self.verbose = verbose
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = not self.allow_negative
        return tags

    # ---- input ---------------------------------------------------------------------

    def _constraint_view_names(self, mm):
        """Names of the views of ``mm`` that ``constraints`` uses as constraint matrices."""
        names = []
        for spec in (self.constraints or {}).values():
            for s in spec if isinstance(spec, list | tuple) else [spec]:
                if isinstance(s, str) and s in mm.names:
                    names.append(s)
        return names

    def _prepare(self, X):
        """Validate X, the schema, the ranks and the constraints before any training."""
        mm, views = check_views(X, missing=self.missing, min_samples=2, max_ndim=2)
        con_views = self._constraint_view_names(mm)
        rel_mm = mm
        if con_views:
            kept = [(n, v) for n, v in zip(mm.names, mm.views, strict=True)
                    if n not in con_views]
            if not kept:
                raise ValueError(f"Every view of X {mm.names} is a constraint matrix; DFMF "
                                 "needs at least one view that is a relation.")
            rel_mm = MultiModal(**dict(kept), shared=mm.shared)
        specs, sample, entities = resolve_relations(
            self.relations, rel_mm, sample_entity=self.sample_entity
        )
        by_name = dict(zip(mm.names, views, strict=True))
        for s in specs:
            if s.row == s.col:
                raise ValueError(
                    f"Relation {s.name!r} relates entity type {s.row!r} to itself; DFMF "
                    "takes such a matrix as a constraint: pass constraints={"
                    f"{s.row!r}: {s.name!r}}} instead."
                )
        data, sizes = relation_data(mm, views, specs, missing=self.missing)
        self._check_non_negative(data)
        ranks = self._ranks(entities)
        thetas = {}
        for ent, spec in (self.constraints or {}).items():
            if ent not in entities:
                raise ValueError(f"constraints names entity type {ent!r}, which no relation "
                                 f"involves; the entity types are {entities}.")
            thetas[ent] = self._theta(ent, spec, mm, by_name, sizes[ent],
                                      self.constraint_form)
        for v in views:  # last: errors about the input's structure come first
            if v.name not in con_views:  # a constraint matrix may be all zeros
                check_variation(v)
        return mm, views, data, specs, sample, entities, ranks, thetas

    def _check_non_negative(self, relations):
        if not self.allow_negative:
            for v in relations:
                check_non_negative(v, "DFMF", _NEGATIVE_HINT)

    def _ranks(self, entities):
        k = self.n_components
        if not isinstance(k, dict):
            return {e: int(k) for e in entities}
        unknown = [e for e in k if e not in entities]
        if unknown:
            raise ValueError(f"n_components names entity types {unknown} that no relation "
                             f"involves; the entity types are {entities}.")
        missing = [e for e in entities if e not in k]
        if missing:
            raise ValueError(f"n_components gives no rank for entity types {missing}; give "
                             "one for every type or pass an int.")
        for e, r in k.items():
            if not isinstance(r, numbers.Integral) or isinstance(r, bool) or r < 1:
                raise ValueError(f"n_components[{e!r}] = {r!r}; expected an integer >= 1.")
        return {e: int(k[e]) for e in entities}

    @staticmethod
    def _theta(ent, spec, mm, by_name, n, form):
        """The constraint matrix of ``ent``: symmetrized, Laplacian-balanced by ``form``."""
        total = None
        for i, s in enumerate(spec if isinstance(spec, list | tuple) else [spec]):
            where = f"constraints[{ent!r}]" + (f"[{i}]" if isinstance(spec, list | tuple) else "")
            if isinstance(s, str):
                if s in by_name:
                    v = by_name[s]
                elif s in mm.shared:
                    v = check_view(f"shared[{s!r}]", mm.shared[s], allow_nan=False, max_ndim=2)
                else:
                    raise ValueError(f"{where} = {s!r} names neither a view {mm.names} nor a "
                                     f"shared matrix {sorted(mm.shared)} of X.")
            else:
                v = check_view(where, s, allow_nan=False, max_ndim=2)
            if v.has_nan:
                raise ValueError(f"Constraint matrix {where} has NaN values; a constraint "
                                 "matrix must be complete (0 = no constraint).")
            if v.shape != (n, n):
                raise ValueError(
                    f"Constraint matrix {where} has shape {v.shape}; entity type {ent!r} has "
                    f"{n} members, so it must be ({n}, {n})."
                )
            m = v.data if v.kind == "sparse" else sp.csr_matrix(as_numpy(v.data))
            total = m if total is None else total + m
        theta = sp.csr_matrix((total + total.T) * 0.5, dtype=np.float64)
        if form == "laplacian":
            # must-link part -W becomes D - W: tr(G^T (D - W) G) = 1/2 sum w_ab |g_a - g_b|^2
            must = (-theta).maximum(0)
            off = theta - sp.diags(theta.diagonal())
            theta = off + sp.diags(theta.diagonal() + np.asarray(must.sum(1)).ravel()
                                   - must.diagonal())
            theta = sp.csr_matrix(theta)
        theta.eliminate_zeros()
        return theta

    # ---- fitting -------------------------------------------------------------------

    def fit_transform(self, X, y=None):
        """Fit the factorization and return the samples' factor.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views (rows = samples).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_components_[sample_entity])
            What :meth:`transform` gives the training rows (their non-negative fold-in);
            ``factors_`` keeps the factor fitted jointly with the others.
        """
        self._fit(X)
        return self.transform(X)

    def _fit(self, X):
        self._validate_params()
        mm, views, data, specs, sample, entities, ranks, thetas = self._prepare(X)
        con_views = self._constraint_view_names(mm)
        devices = resolve_devices(self.devices, mm.names)  # self.devices_ once fitted
        dtype = _DTYPES[self.dtype]
        view_dev = dict(zip(mm.names, devices, strict=True))
        ent_dev = {}
        for s in specs:
            if s.source == "view":
                for e in (s.row, s.col):
                    ent_dev.setdefault(e, view_dev[s.name])
        for e in entities:
            ent_dev.setdefault(e, torch.device("cpu"))
        rels = [
            _Relation(s.name, s.row, s.col, v, missing=self.missing, dtype=dtype,
                      device=view_dev[s.name] if s.source == "view" else ent_dev[s.row])
            for s, v in zip(specs, data, strict=True)
        ]
        weights = (_balanced_weights(rels) if isinstance(self.weights, str)
                   else relation_weights(self.weights, [r.name for r in rels]))
        for r, w in zip(rels, weights, strict=True):
            r.weight = w
        theta_t = {e: self._theta_parts(t, ent_dev[e], dtype) for e, t in thetas.items()}
        gen, _ = torch_generator(self.random_state)
        self._ent_dev = ent_dev
        best = None
        for _ in range(self.n_init):  # restarts: the lowest final objective is kept
            G = _Factors(self._init_factors(entities, ranks, rels, gen, dtype, ent_dev))
            S = {r.name: torch.zeros(ranks[r.row], ranks[r.col], dtype=dtype, device=r.device)
                 for r in rels}

            def step(epoch, G=G, S=S):
                self._update_backbones(rels, G, S, first=epoch == 0)
                for e in entities:
                    self._update_factor(e, rels, G, S, theta_t.get(e))
                return self._objective(rels, G, S, theta_t)

            hist = fit_loop(step, max_iter=self.max_iter, tol=self.tol, verbose=self.verbose,
                            desc="DFMF", estimator="DFMF", hint=_DIVERGENCE_HINT)
            if best is None or hist.loss[-1] < best[0].loss[-1]:
                best = (hist, G, S)
        hist, G, S = best
        self._weights = {r.name: r.weight for r in rels}
        self.devices_ = devices
        self.loss_curve_ = hist.loss
        self.loss_terms_ = hist.terms
        self.n_iter_ = hist.n_iter
        self.factors_ = {e: as_numpy(g) for e, g in G.items()}
        self.backbones_ = {n: as_numpy(s) for n, s in S.items()}
        self.n_components_ = dict(ranks)
        self.relations_ = [(r.name, r.row, r.col) for r in rels]
        self.constraints_ = sorted(thetas)
        self.sample_entity_ = sample
        self._set_input_signature(mm, [v for v in views if v.name not in con_views])
        self._view_names = list(mm.names)
        self._constraint_views = {
            e: s for e, s in (self.constraints or {}).items()
            if isinstance(s, str) and s in mm.names
        }
        self._n_features_out = ranks[sample]

    @staticmethod
    def _theta_parts(theta, device, dtype):
        """``Theta`` as its positive and negative parts (torch CSR, both symmetric)."""
        return _Theta(theta, device, dtype)

    def _init_factors(self, entities, ranks, rels, gen, dtype, ent_dev):
        """Initial non-negative factors of ``entities`` (float64 on the CPU, then moved)."""
        init = self.init
        G = {}
        for e in entities:
            blocks = [r.zero_filled() if r.row == e else r.zero_filled().T
                      for r in rels if e in (r.row, r.col)]
            n, k = blocks[0].shape[0], ranks[e]
            if init == "random":
                g = torch.rand(n, k, generator=gen, dtype=torch.float64)
            elif init == "random_c":
                g = torch.full((n, k), 1e-5, dtype=torch.float64)
                for B in blocks:
                    m = B.shape[1]
                    p_c, l_c = max(int(0.2 * m), 1), max(int(0.5 * m), 1)
                    sq = B.multiply(B).sum(0) if sp.issparse(B) else (B**2).sum(0)
                    norms = torch.as_tensor(np.asarray(sq).ravel())
                    top = torch.argsort(norms, descending=True, stable=True)[:l_c]
                    # each component averages a random p_c of the l_c longest columns
                    pick = torch.argsort(torch.rand(k, l_c, generator=gen, dtype=torch.float64),
                                         dim=1)[:, :p_c]
                    sel = np.zeros((m, k))
                    sel[top[pick].T.numpy(), np.arange(k)[None, :]] = 1.0 / pick.shape[1]
                    g += torch.as_tensor(np.abs(np.asarray(B @ sel)))
            elif any(sp.issparse(B) for B in blocks):  # a truncated SVD, never densified
                from scipy.sparse.linalg import svds

                M = sp.hstack([sp.csr_matrix(B) for B in blocks]).tocsr()
                q = min(k, min(M.shape) - 1)
                v0 = torch.rand(min(M.shape), generator=gen, dtype=torch.float64).numpy()
                U, s, Vh = svds(M, k=q, v0=v0) if q >= 1 else (np.zeros((n, 0)),) * 3
                order = np.argsort(s)[::-1] if q >= 1 else []
                g = self._nndsvd(None, k, gen, svd=(torch.as_tensor(U[:, order].copy()),
                                                    torch.as_tensor(s[order].copy()),
                                                    torch.as_tensor(Vh[order].copy()), n))
            else:
                M = np.hstack(blocks)
                g = self._nndsvd(torch.as_tensor(M), k, gen)
            G[e] = g.to(dtype).to(ent_dev[e])
        return G

    @staticmethod
    def _nndsvd(M, k, gen, svd=None):
        """Left factor of NNDSVD (Boutsidis & Gallopoulos 2008), zeros filled (NNDSVDa-like);
        ``svd=(U, s, Vh, n)``: a (truncated) SVD computed by the caller."""
        U, s, Vh, n = svd or (*torch.linalg.svd(M, full_matrices=False), M.shape[0])
        g = torch.zeros(n, k, dtype=torch.float64)
        q = min(k, len(s))
        for j in range(q):
            u, v = U[:, j], Vh[j]
            up, un, vp, vn = _pos(u), _neg(u), _pos(v), _neg(v)
            mp = torch.linalg.vector_norm(up) * torch.linalg.vector_norm(vp)
            mn = torch.linalg.vector_norm(un) * torch.linalg.vector_norm(vn)
            x, nx = (up, torch.linalg.vector_norm(up)) if mp >= mn else (
                un, torch.linalg.vector_norm(un))
            sigma = mp if mp >= mn else mn
            if nx > 0:
                g[:, j] = torch.sqrt(s[j] * sigma) * x / nx
        fill = float(g[:, :q].mean()) if q and float(g[:, :q].mean()) > 0 else 1.0
        if q < k:
            g[:, q:] = fill * torch.rand(n, k - q, generator=gen, dtype=torch.float64)
        g[g == 0] = 1e-2 * fill
        return g

    # ---- the update rules ------------------------------------------------------------

    @staticmethod
    def _on(G, rel):
        return G[rel.row].to(rel.device), G[rel.col].to(rel.device)

    def _update_backbones(self, rels, G, S, first=False):
        """Closed-form least-squares backbones given the factors (missing entries filled)."""
        # S = (G_r'G_r)^+ G_r' R~ G_c (G_c'G_c)^+: the small Gram matrices, their
        # pseudo-inverses and the k x k products in float64 (float32 normal equations
        # would lose G's small singular values); only R~ G_c runs in ``dtype``
        # (eigenvalues of G'G below eps of ``dtype`` times the largest count as zero: a
        # rank above an entity's number of members leaves G'G singular, and a backbone
        # built on its round-off would be huge and cancel badly in ``dtype``)
        pinv = {e: _gram_pinv(G.gram(e), torch.finfo(g.dtype).eps * (
                    1.0 if g.dtype == torch.float32 else max(g.shape)))
                for e, g in G.items()}
        for r in rels:
            Gr, Gc = self._on(G, r)
            if first and r.needs_fill:
                # the paper's DFMC starts with the missing entries at zero
                r.set_fill((r.R if r.mode == "masked" else r.vals).clone(), None)
            # G_r' R~ G_c through the thinner factor: R~ is multiplied by min(k_r, k_c)
            # columns (apply is linear in its argument)
            if r.cached("col", Gr) or (Gr.shape[1] < Gc.shape[1] and not r.cached("row", Gc)):
                core = r.apply("col", Gr, Gr, S[r.name], Gc).double().T @ Gc.double()
            else:
                core = Gr.double().T @ r.apply("row", Gc, Gr, S[r.name], Gc).double()
            S[r.name] = (pinv[r.row].to(r.device) @ core @ pinv[r.col].to(r.device)).to(Gr.dtype)

    def _update_factor(self, e, rels, G, S, theta):
        """The multiplicative update of entity type ``e``'s factor, all else fixed."""
        Ge = G[e]
        dev = Ge.device
        num = den = B_pos = B_neg = None  # sums over the relations of A^+, A^-, B^+, B^-

        def add(total, part):
            return part if total is None else total.add_(part)

        for r in rels:
            if e not in (r.row, r.col):
                continue
            Gr, Gc = self._on(G, r)
            Sr = S[r.name]
            # R~ (G_c S') as (R~ G_c) S' when k_c <= k_r (fewer columns through R~, or
            # as many and the product kept for the next backbone) or when R~ G_c is kept
            if r.row == e:
                A = (r.apply("row", Gc, Gr, Sr, Gc) @ Sr.T
                     if Gc.shape[1] <= Gr.shape[1] or r.cached("row", Gc)
                     else r.apply("row", Gc @ Sr.T, Gr, Sr, Gc))
                B = Sr @ G.gram(r.col, like=Sr) @ Sr.T
                r.stash = ("row", A, Gc, Sr)
            else:
                A = (r.apply("col", Gr, Gr, Sr, Gc) @ Sr
                     if Gr.shape[1] <= Gc.shape[1] or r.cached("col", Gr)
                     else r.apply("col", r.grs(Gr, Sr), Gr, Sr, Gc))
                B = Sr.T @ G.gram(r.row, like=Sr) @ Sr
                r.stash = ("col", A, Gr, Sr)
            if r.weight != 1.0:
                A, B = r.weight * A, r.weight * B
            A, B = A.to(dev), B.to(dev)
            A_pos, B_pos_r = _pos(A), _pos(B)
            num, den = add(num, A_pos), add(den, A_pos - A)  # A^- = A^+ - A
            B_pos, B_neg = add(B_pos, B_pos_r), add(B_neg, B_pos_r - B)
        num = torch.addmm(num, Ge, B_neg)  # + G sum_r B_r^-
        den = torch.addmm(den, Ge, B_pos)  # + G sum_r B_r^+
        if theta is not None:
            pos_g, neg_g = theta.products(Ge)
            num.add_(neg_g)
            den.add_(pos_g)
        den.clamp_min_(torch.finfo(Ge.dtype).eps)
        G[e] = num.div_(den).sqrt_().mul_(Ge)

    @staticmethod
    def _relation_loss(r, Gr, S, Gc, grams=None):
        """The relation's squared error (refreshing its fill), exact in float64."""
        val = r.refresh(Gr, S, Gc, grams)
        return val if r.dtype == torch.float64 else r.exact_loss(Gr, S, Gc)

    def _objective(self, rels, G, S, theta_t):
        terms, total = {}, 0.0
        for r in rels:
            Gr, Gc = self._on(G, r)
            grams = (G.gram(r.row, like=Gr), G.gram(r.col, like=Gc))
            terms[r.name] = self._relation_loss(r, Gr, S[r.name], Gc, grams)
            total += r.weight * terms[r.name]
        for e, theta in theta_t.items():
            Ge = G[e]
            pos_g, neg_g = theta.products(Ge)
            val = float((Ge * (pos_g - neg_g)).sum())
            terms[f"constraint:{e}"] = val
            total += val
        terms["loss"] = total
        return terms

    # ---- out of sample ---------------------------------------------------------------

    def _restore_devices(self):
        view_dev = dict(zip(self._view_names, self.devices_, strict=True))
        self._ent_dev = {e: torch.device("cpu") for e in self.factors_}
        for name, row, col in reversed(self.relations_):
            if name in view_dev:
                self._ent_dev[row] = self._ent_dev[col] = view_dev[name]

    def _fold_in(self, X):
        """The factor of new samples, every other factor and backbone frozen."""
        check_is_fitted(self)
        mm, views = check_views(X, missing=self.missing, max_ndim=2)
        con_views = set(self._constraint_views.values())
        if len(mm.names) != len(self._view_names):
            raise ValueError(f"X has {len(mm.names)} view(s) {mm.names} but the model was "
                             f"fitted on {len(self._view_names)} view(s) {self._view_names}.")
        self._check_input_signature(mm, [v for v, n in zip(views, self._view_names,
                                                           strict=True) if n not in con_views])
        dtype = _DTYPES[self.dtype]
        sample = self.sample_entity_
        by_name = dict(zip(mm.names, views, strict=True))
        fitted_names = dict(zip(mm.names, self._view_names, strict=True))
        dev = self._ent_dev[sample]
        rels = []
        for name, row, col in self.relations_:
            if row != sample or name not in self._view_names:
                continue
            v = by_name[mm.names[self._view_names.index(name)]]
            exp = self.factors_[col].shape[0]
            if v.shape[1] != exp:
                raise ValueError(
                    f"View {v.name!r} has {v.shape[1]} columns but the model was fitted with "
                    f"{exp} members of entity type {col!r}."
                )
            self._check_non_negative([v])
            rels.append(_Relation(name, row, col, v, missing=self.missing,
                                  device=self._ent_dev[col], dtype=dtype))
            rels[-1].weight = self._weights[name]
        G = _Factors({e: torch.as_tensor(f, device=self._ent_dev[e]).to(dtype)
                      for e, f in self.factors_.items()})
        S = {n: torch.as_tensor(self.backbones_[n], device=self._ent_dev[c]).to(dtype)
             for n, _, c in self.relations_}
        theta = None
        if sample in self._constraint_views:
            name = self._constraint_views[sample]
            view_name = [k for k, v in fitted_names.items() if v == name][0]
            t = self._theta(sample, view_name, mm, by_name, len(mm), self.constraint_form)
            theta = self._theta_parts(t, dev, dtype)
        if theta is None:
            # without constraints among the new rows the problem separates by row: one
            # exact k x k non-negative least-squares problem per row
            G[sample] = self._nnls_rows(rels, G, S, len(mm), dev).to(dtype)
            return G, S, rels
        # constraints couple the new rows: every row starts from the training rows' mean
        # factor and takes max_iter steps of the multiplicative rule
        start = torch.as_tensor(self.factors_[sample].mean(0), device=dev).to(dtype)
        G[sample] = start.clamp_min(1e-3 * float(start.max())).expand(len(mm), -1).clone()
        theta_t = {sample: theta} if theta is not None else {}

        def step(epoch):
            self._update_factor(sample, rels, G, S, theta)
            return self._objective(rels, G, S, theta_t)

        fit_loop(step, max_iter=self.max_iter, tol=0, desc="DFMF.transform",
                 estimator="DFMF.transform")
        return G, S, rels

    def _nnls_rows(self, rels, G, S, n, dev):
        """The exact non-negative minimiser of every new row's (weighted, masked) squared
        error, the column factors and backbones fixed: ``min_g sum_r w_r ||m * (x - g W_r^T)||^2``
        with ``W_r = G_c S_r^T``, i.e. a k x k NNLS problem per row (float64)."""
        k = G[self.sample_entity_].shape[1]
        H = torch.zeros(k, k, dtype=torch.float64, device=dev)
        H_rows = None
        h = torch.zeros(n, k, dtype=torch.float64, device=dev)
        for r in rels:
            W = (G[r.col].to(r.device).double() @ S[r.name].double().T)  # (m, k)
            outer = None
            if r.mode in ("dense", "sparse"):
                H += r.weight * (W.T @ W).to(dev)
                hr = _mm(r.R.double(), W) if r.mode == "dense" else torch.sparse.mm(
                    _torch_csr_double(r.R), W)
            else:
                outer = (W[:, :, None] * W[:, None, :]).reshape(W.shape[0], k * k)
                if r.mode == "masked":
                    Hr, hr = r.mask.double() @ outer, r.R.double() @ W
                else:
                    ones = torch.ones_like(r.vals, dtype=torch.float64)
                    Hr = torch.sparse.mm(_csr(r.crow_r, r.cols, ones, r.shape), outer)
                    hr = torch.sparse.mm(_csr(r.crow_r, r.cols, r.vals.double(), r.shape), W)
                Hr = r.weight * Hr.reshape(n, k, k).to(dev)
                H_rows = Hr if H_rows is None else H_rows + Hr
            h += r.weight * hr.to(dev)
        A = H if H_rows is None else H_rows + H
        return batched_nnls(A, h)

    def transform(self, X):
        """Embed new samples: their non-negative factor, everything else frozen.

        Without constraints among the new rows (the usual case) the problem separates by
        row, and each row's factor is the exact non-negative least-squares solution of a
        k x k problem given the other factors and the backbones (batched block principal
        pivoting, in float64): a row's embedding does not depend on the other rows of
        ``X``, and ``fit_transform`` recovers a factor that fits the data exactly. With
        a constraint view of the sample entity (constraints among the new rows), the
        rows' factor starts from the training rows' mean factor and takes ``max_iter``
        steps of the multiplicative rule.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of the new samples, with the columns seen in ``fit`` (NaN = missing).

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_components_[sample_entity])
            The new samples' non-negative factor.
        """
        G, _, _ = self._fold_in(X)
        return as_numpy(G[self.sample_entity_]).copy()

    def score(self, X, y=None):
        """Negative mean squared reconstruction error of the views of ``X``, folded in.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of samples (new or seen).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            Minus the (weighted) squared error per observed entry (higher is better),
            computed in float64.
        """
        G, S, rels = self._fold_in(X)
        total = 0.0
        for r in rels:
            Gr, Gc = self._on(G, r)
            total += r.weight * self._relation_loss(r, Gr, S[r.name], Gc)
        count = sum(r.weight * r.n_obs for r in rels)
        return -total / max(count, 1e-12)

    def reconstruct(self, X):
        """The views of ``X`` as the model approximates them, after folding ``X`` in.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of samples.

        Returns
        -------
        views : dict of str -> ndarray
            ``G_new S G_col^T`` for every view that is a relation, by name.
        """
        G, S, rels = self._fold_in(X)
        return {r.name: as_numpy(G[r.row].to(r.device) @ S[r.name] @ G[r.col].to(r.device).T)
                for r in rels}

    def inverse_transform(self, X):
        """The views as the model reconstructs them from embeddings: ``Z S G_col^T``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components_[sample_entity])
            Embeddings (the output of :meth:`transform`).

        Returns
        -------
        views : list of ndarray of float64
            One per view that is a relation, in the order of ``relations_``.
        """
        check_is_fitted(self)
        Z = self._check_embedding(X, self.n_components_[self.sample_entity_])
        return [Z @ self.backbones_[name].astype(np.float64) @ self.factors_[col].T
                for name, row, col in self.relations_
                if row == self.sample_entity_ and name in self._view_names]

    def predict_entries(self, coords, relation=0):
        """Predicted values ``(G_r S G_c^T)[i, j]`` of entries of a fitted relation.

        Parameters
        ----------
        coords : array-like of shape (n_entries, 2)
            Integer (row, column) indices into the relation as fitted (the rows of a view
            are the training samples); typically its missing entries.
        relation : int or str, default=0
            The relation, by position in ``relations_`` or by name.

        Returns
        -------
        values : ndarray of shape (n_entries,)
            The predicted entries ``G_r S G_c^T`` at ``coords``.
        """
        check_is_fitted(self)
        sizes = {e: f.shape[0] for e, f in self.factors_.items()}
        idx, coords = check_entries(coords, relation, self.relations_, sizes)
        name, row, col = self.relations_[idx]
        left = self.factors_[row][coords[:, 0]] @ self.backbones_[name]
        return (left * self.factors_[col][coords[:, 1]]).sum(1).astype(np.float64)

    def score_heldout(self, X, fraction=0.5, random_state=0):
        """Score held-out entries of the rows of ``X`` (a criterion that can pick k).

        Unlike ``score``, this can select ``n_components``.

        ``score`` folds the rows in from all their entries and measures the error on
        those same entries, so it improves with every extra component. Here a random
        ``fraction`` of the observed entries of every relation view of the samples is
        hidden, the rows are folded in from the rest, and the hidden entries are
        predicted. Use it as
        ``GridSearchCV(..., scoring=lambda est, X, y=None: est.score_heldout(X))``.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            Views of samples, with missing entries as NaN or unstored
            (``missing="unobserved"``).
        fraction : float, default=0.5
            Fraction of the observed entries hidden, in (0, 1).
        random_state : int, RandomState instance or None, default=0
            Which entries are hidden.

        Returns
        -------
        score : float
            Minus the weighted squared error per hidden entry, in float64.
        """
        check_is_fitted(self)
        mm, views = check_views(X, missing=self.missing, max_ndim=2)
        # a wrong number of views is refused by the fold-in below, with its message
        fitted = dict(zip(mm.names, self._view_names, strict=False))
        rel_views = {n for n, row, _ in self.relations_ if row == self.sample_entity_}
        names = [n for n in mm.names if fitted[n] in rel_views]
        masked, hidden = hide_entries(mm, views, names, fraction, random_state, self.missing)
        G, S, rels = self._fold_in(masked)
        total, count = 0.0, 0.0
        given = {fitted[n]: h for n, h in hidden.items()}
        for r in rels:
            if r.name not in given:
                continue
            rows, cols, vals = given[r.name]
            Gr, Gc = (g.double() for g in self._on(G, r))
            left = Gr[torch.as_tensor(rows, dtype=torch.int64, device=Gr.device)] @ \
                S[r.name].double()
            pred = (left * Gc[torch.as_tensor(cols, dtype=torch.int64, device=Gc.device)]).sum(1)
            err = pred - torch.as_tensor(vals, device=pred.device)
            total += r.weight * float((err**2).sum())
            count += r.weight * len(vals)
        return -total / max(count, 1e-12)
