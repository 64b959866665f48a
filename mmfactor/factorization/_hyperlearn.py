"""HyperLearn (Arya, Rudinac & Worring, 2019): hypergraph tensor factorization with graph
convolutions, one pipeline per mode."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names, check_is_fitted

from .._base import N_JOBS_CONSTRAINT, MultiModalTransformer
from .._device import as_numpy, resolve_devices, torch_generator
from .._graph import (
    chebyshev_basis,
    check_adjacency,
    knn_graph,
    normalized_laplacian,
    rescaled_laplacian,
    to_torch_sparse,
)
from .._multimodal import MultiModal, as_multimodal, check_variation, check_view
from .._training import fit_loop
from ._cp import (
    SparseTensor,
    TensorData,
    cp_entries,
    data_loss,
    mode_loss_grad,
    mode_normal_equations,
)

__all__ = ["HyperLearn", "update_mode"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------------------
# Input: one tensor (dense, SciPy sparse or SparseTensor) -> coordinates
# --------------------------------------------------------------------------------------


def _as_coordinates(view, name, missing):
    """``(indices, values, shape, kind)`` of one tensor view, never densifying a sparse one.

    ``kind`` is ``"full"`` (every entry counts; unstored = 0) or ``"observed"`` (only the
    stored / non-NaN entries count).
    """
    if isinstance(view, list | tuple) and view and all(isinstance(v, SparseTensor)
                                                       for v in view):
        view = SparseTensor.concatenate(view)  # rows picked one by one by MultiModal
    if _is_cp_tensor(view):  # a tensorly CPTensor: the (small) dense tensor it stands for
        import tensorly as tl

        view = np.asarray(tl.to_numpy(tl.cp_to_tensor(view)), dtype=np.float64)
    if isinstance(view, SparseTensor):
        if view.ndim < 2:
            raise ValueError(f"View {name!r} has shape {view.shape}; expected K >= 2 modes.")
        kind = "full" if missing == "zero" else "observed"
        return view.indices, view.values, view.shape, kind
    v = check_view(name, view, missing=missing, min_ndim=2)
    if v.kind == "sparse":
        coo = v.data.tocoo()
        idx = np.column_stack([coo.row, coo.col]).astype(np.int64)
        kind = "full" if missing == "zero" else "observed"
        return idx, np.asarray(coo.data, dtype=np.float64), v.shape, kind
    arr = as_numpy(v.data).astype(np.float64, copy=False)
    if v.has_nan:  # NaN = missing in a dense view, whatever `missing` says
        keep = ~np.isnan(arr)
        return np.argwhere(keep).astype(np.int64), arr[keep], arr.shape, "observed"
    keep = arr != 0
    return np.argwhere(keep).astype(np.int64), arr[keep], arr.shape, "full"


def _is_cp_tensor(obj):
    """Whether ``obj`` is a tensorly ``CPTensor`` (without importing tensorly)."""
    return type(obj).__name__ == "CPTensor" and type(obj).__module__.startswith("tensorly")


def _cp_factors(cp, R):
    """The factors of a tensorly ``CPTensor``, its weights spread evenly over the modes."""
    import tensorly as tl

    weights, factors = cp
    factors = [np.asarray(tl.to_numpy(f), dtype=np.float64) for f in factors]
    w = np.asarray(tl.to_numpy(weights), dtype=np.float64) if weights is not None else None
    if w is not None:
        scale = np.abs(w) ** (1.0 / len(factors))
        factors = [f * scale for f in factors]
        factors[0] = factors[0] * np.sign(w)
    return factors


def _split_input(X):
    """``(mm, tensor_view, feature_views)``: view 0 is the tensor, the others describe mode 0."""
    if isinstance(X, SparseTensor) or _is_cp_tensor(X):
        X = MultiModal(X)
    mm = as_multimodal(X)
    return mm, mm.views[0], mm.views[1:]


# --------------------------------------------------------------------------------------
# One mode's pipeline: base factor -> Chebyshev graph convolution -> LSTM diffusion
# --------------------------------------------------------------------------------------


class _Diffusion(torch.nn.Module):
    """Monti et al. (2017)'s separable RGCNN on one factor.

    ``diffusion_steps`` times: ``Z = relu(sum_j T_j(L~) A Theta_j)`` (a Chebyshev
    convolution with ``cheb_order`` terms, ``R -> hidden`` channels), an LSTM cell on
    ``Z`` and ``dA = tanh(h W_out)``, ``A <- A + dA``.
    """

    def __init__(self, rank, hidden, order, steps, device, dtype):
        super().__init__()
        kw = {"device": "meta", "dtype": dtype}  # no draw from torch's global generator
        self.conv = torch.nn.Linear(order * rank, hidden, **kw)
        self.lstm = torch.nn.LSTMCell(hidden, hidden, **kw)
        self.out = torch.nn.Linear(hidden, rank, **kw)
        self.order, self.steps, self.hidden = order, steps, hidden
        self.to_empty(device=device)

    def reset(self, gen):
        """Uniform(+-1/sqrt(fan_in)) weights from ``gen``; the output layer starts small."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                fan_in = p.shape[-1] if p.ndim == 2 else self.hidden
                bound = 1.0 / np.sqrt(fan_in)
                if name.startswith("out."):
                    bound *= 0.1
                draw = torch.rand(p.shape, generator=gen, dtype=torch.float64)
                p.copy_(((2 * draw - 1) * bound).to(p.dtype))

    def forward(self, A, L_tilde):
        n = A.shape[0]
        h = A.new_zeros(n, self.hidden)
        c = A.new_zeros(n, self.hidden)
        for _ in range(self.steps):
            feats = torch.cat(chebyshev_basis(L_tilde, A, self.order), 1)
            z = torch.relu(self.conv(feats))
            h, c = self.lstm(z, (h, c))
            A = A + torch.tanh(self.out(h))
        return A


class _Layout:
    """Where each mode's parameters sit among the columns of the augmented CP factors.

    The model ``mu + sum_t b_t[i_t] + sum_{s<t} <P_st[i_s], P_ts[i_t]> + [[A_1, ..., A_K]]``
    (intercept, per-mode biases, pairwise interactions as in PITF, the K-way CP term) is
    itself a CP model whose factors have these columns: ``n_components`` for the K-way
    term; one block of ``pairwise_components`` per pair of modes ``(s, t)``, free in
    modes ``s`` and ``t`` and ones in the others; then (with an intercept) one column for
    the global mean (the mean on mode 0, ones elsewhere) and one per mode (that mode's
    bias on its own column, ones on the others). So every kernel (Gram identity, MTTKRP,
    the normal equations with fixed columns) applies unchanged. A mode's embedding is its
    free non-bias columns: the K-way factor, then its pairwise blocks in pair order.
    """

    def __init__(self, K, R, P, intercept):
        self.pairs = [(s, t) for s in range(K) for t in range(s + 1, K)] if P else []
        self.R, self.P = R, P
        n_pair = len(self.pairs) * P
        self.width = R + n_pair + (K + 1 if intercept else 0)
        self.mean_col = R + n_pair if intercept else None
        self.emb, self.bias = [], []
        for t in range(K):
            cols = list(range(R))
            for j, pair in enumerate(self.pairs):
                if t in pair:
                    cols += list(range(R + j * P, R + (j + 1) * P))
            self.emb.append(cols)
            self.bias.append(R + n_pair + 1 + t if intercept else None)

    def free(self, t):
        """Mode ``t``'s free columns: its embedding, then its bias column."""
        return self.emb[t] + ([self.bias[t]] if self.bias[t] is not None else [])

    def template(self, t, n, mu):
        """Mode ``t``'s augmented factor with its free columns at 0 (``n`` rows)."""
        out = np.ones((n, self.width))
        if self.mean_col is not None and t == 0:
            out[:, self.mean_col] = mu
        out[:, self.free(t)] = 0.0
        return out

    def block(self, j, t):
        """Columns of pair ``j``'s block in mode ``t``'s embedding."""
        cols = self.emb[t]
        start = cols.index(self.R + j * self.P)
        return slice(start, start + self.P)


class _ModeState:
    """What one mode's pipeline owns, all on its device: parameters, optimizer, data, graph.

    ``factor()`` is the mode's augmented factor (differentiable, columns laid out by
    :class:`_Layout`): the mode's embedding (the diffused base factor) and bias written
    into its free columns of a template that holds the fixed ones.
    """

    def __init__(self, t, *, base, net, bias, template, free, L, L_tilde, data, lam,
                 alpha, lr, device, solver="adam", L_diag=None, scale=1.0):
        self.t, self.device, self.solver, self.L_diag = t, device, solver, L_diag
        self.scale = scale
        self.damping = 1.0
        self.fixed = self.nonnegative = False
        self.base, self.net, self.bias = base, net, bias
        self.template = template
        self.free = list(free)
        self.free_idx = None if template is None else torch.as_tensor(free, device=device)
        width = base.shape[1] if template is None else template.shape[1]
        self.fixed_cols = [c for c in range(width) if c not in set(self.free)]
        self.eye = torch.eye(len(self.free), dtype=base.dtype, device=device)
        self.zero = torch.zeros((), dtype=base.dtype, device=device)
        self.n_emb = base.shape[1]
        self.emb_idx = torch.as_tensor(self.free[: self.n_emb], device=device)
        self.L, self.L_tilde, self.data = L, L_tilde, data
        self.lam, self.alpha = lam, alpha
        params = [base] + ([bias] if bias is not None else [])
        params += list(net.parameters()) if net is not None else []
        # ALS needs no optimizer (and creating one imports torch._dynamo: seconds)
        self.optimizer = torch.optim.Adam(params, lr=lr) if solver == "adam" else None

    def core(self):
        """The mode's factor: ``scale`` times the (diffused) unit-scale base, so that
        Adam's steps (about ``lr`` per parameter) and the diffusion's increments (``tanh``,
        up to 1 each) are relative to the factor's own scale, not absolute."""
        core = self.net(self.base, self.L_tilde) if self.net is not None else self.base
        return core if self.scale == 1.0 else self.scale * core

    def augment(self, core):
        if self.template is None:  # no intercept, no pairwise terms: the factor itself
            return core
        free = core if self.bias is None else torch.cat([core, self.bias[:, None]], 1)
        return self.template.index_copy(1, self.free_idx, free)

    def embedding(self, factor):
        """The embedding columns of an augmented factor of this mode."""
        return factor if self.template is None else factor.index_select(1, self.emb_idx)

    def factor(self):
        return self.augment(self.core())

    def regularizers(self, core):
        """``1/2 tr(A^T L A)`` and ``alpha/2 (||A||^2 + ||b||^2)`` (differentiable)."""
        graph = pen = self.zero
        if self.L is not None:
            graph = 0.5 * (core * torch.sparse.mm(self.L, core)).sum()
        if self.alpha:
            pen = (core**2).sum()
            if self.bias is not None:
                pen = pen + (self.bias**2).sum()
            pen = 0.5 * self.alpha * pen
        return graph, pen


def update_mode(t, factors, state, n_steps=1):
    """One alternating update of mode ``t``: the other factors frozen, ``n_steps`` inner steps.

    This is the unit of work of HyperLearn's per-mode pipelines: a function of the mode,
    the current (augmented) factors of every mode and that mode's own state, returning
    the mode's new factor. Only factors cross devices (or, distributed, ranks).

    Parameters
    ----------
    t : int
        The mode.
    factors : list of torch.Tensor
        The current augmented factor of every mode, on any device.
    state : _ModeState
        Mode ``t``'s parameters, optimizer, data and graph, on its device.
    n_steps : int
        Adam steps (``solver="adam"``) or conjugate-gradient iterations (``"als"``) on
        ``loss_t = lam ||X_(t) - A_t Omega_t||^2 + 1/2 tr(A_t^T L_t
        A_t) + alpha/2 ||A_t||^2`` (eq. 11 of the paper with the PSD Laplacian).

    Returns
    -------
    factor : torch.Tensor
        Mode ``t``'s new augmented factor (detached, on ``state.device``).
    loss : torch.Tensor
        ``loss_t`` before the last step (0-d, on ``state.device``).
    """
    facs = [f.detach().to(state.device) for f in factors]
    if state.solver == "als":
        return _als_update(t, facs, state, n_steps)
    loss = None
    for _ in range(n_steps):
        state.optimizer.zero_grad(set_to_none=True)
        core = state.core()
        A = state.augment(core)
        facs[t] = A.detach()
        # the data term and its gradient in A_t by the sparse kernels (MTTKRP), then
        # back-propagated through the diffusion network: the tensor is never densified
        dl, grad = mode_loss_grad(t, facs, state.data)
        graph, pen = state.regularizers(core)
        surrogate = state.lam * (A * grad).sum() + graph + pen
        surrogate.backward()
        state.optimizer.step()
        if state.nonnegative:  # projected: the embedding stays >= 0
            with torch.no_grad():
                state.base.clamp_(min=0)
        loss = state.lam * dl + graph.detach().double() + pen.detach().double()
    with torch.no_grad():
        # a copy: with diffusion_steps=0 the factor *is* the parameter Adam updates in place
        return state.factor().detach().clone(), loss


def _als_update(t, facs, state, n_steps):
    """Exact-in-the-limit update of mode ``t`` (``diffusion_steps=0``): eq. (11) solved.

    ``loss_t`` is quadratic in ``A_t``; its minimiser solves ``(2 lam G_i + alpha) a_i +
    (L A)_i = 2 lam b_i`` for every row ``i`` at once (rows coupled by the Laplacian).
    Without a graph the rows are independent: one Cholesky solve (of the one ``F x F``
    system every row shares when the whole tensor counts, or of each row's own), exact.
    With a graph, ``n_steps`` iterations of conjugate gradients, preconditioned by the
    per-row blocks ``2 lam G_i + alpha + L_ii`` and warm-started from the current factor,
    decrease ``loss_t`` monotonically. The returned ``loss_t`` takes its data term from
    the normal equations (no pass over the entries; see :func:`mode_normal_equations`).
    """
    R = state.n_emb  # the embedding's columns come first among the free ones
    with torch.no_grad():
        A = state.factor()
        facs[t] = A
        free = state.free
        fixed = state.fixed_cols
        fixed_values = A[0, fixed] if fixed else A.new_zeros(0)
        lam, alpha = state.lam, state.alpha
        F = len(free)
        eye = state.eye
        L = state.L
        Ldiag = state.L_diag
        implicit = state.data.confidence > 0 and not state.nonnegative
        if implicit:  # confidence weights: never form the per-row F x F systems
            G, b, stored, data_term = mode_normal_equations(t, facs, state.data, free,
                                                            fixed_values, implicit=True,
                                                            with_loss=True)
            G, b = _coupled_normal_equations(G, b, state.coupled, R)
            op, solve = _implicit_operator(G, stored, 2 * lam, alpha, state.data.confidence,
                                           L, Ldiag, R, A.shape[0])
        else:
            G, b, data_term = mode_normal_equations(t, facs, state.data, free, fixed_values,
                                                    with_loss=True)
            G, b = _coupled_normal_equations(G, b, state.coupled, R)
            D = G * (2 * lam)  # (F, F) shared by every row, or (N, F, F)
            if alpha:
                D.diagonal(dim1=-2, dim2=-1).add_(alpha)
            if state.nonnegative and D.ndim == 2:
                D = D.expand(A.shape[0], F, F)
            precond = D
            if Ldiag is not None:
                core_mask = torch.zeros(F, dtype=A.dtype, device=A.device)
                core_mask[:R] = 1
                precond = D + Ldiag[:, None, None] * torch.diag(core_mask)[None]
            direct = L is None and not state.nonnegative
            if not direct:  # a preconditioner only: a little jitter keeps it usable
                scale = precond.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)
                precond = precond + 1e-7 * scale[..., None, None] * eye
            chol, info = torch.linalg.cholesky_ex(precond)
            failed = bool(info.any())

            def op(V):
                out = V @ D if D.ndim == 2 else torch.bmm(D, V[..., None])[..., 0]
                if L is not None:
                    out[:, :R] += torch.sparse.mm(L, V[:, :R].contiguous())
                return out

            def solve(r):
                if failed:
                    return r / precond.diagonal(dim1=-2, dim2=-1)
                if chol.ndim == 2:  # one system for every row
                    return torch.cholesky_solve(r.T, chol).T
                return torch.cholesky_solve(r[..., None], chol)[..., 0]

        if not implicit and direct:
            # rows independent: the preconditioner is the system itself, one solve is
            # exact; least squares where it is not positive definite
            X = solve(2 * lam * b) if not failed else _lstsq(D, 2 * lam * b)
        else:
            X = _pcg(A[:, free].clone(), 2 * lam * b, op, solve,
                     0 if state.nonnegative else n_steps)
        if state.nonnegative:  # coordinate descent instead, from the current point
            X = _nonnegative_solve(A[:, free].clone(), D, 2 * lam * b, L, Ldiag, R,
                                   max(n_steps, 1))
        if state.damping != 1.0:
            # Jacobi: every mode moved from the same old factors; the full step would let
            # the K modes rescale together and oscillate, so take a damped step
            X = A[:, free] + state.damping * (X - A[:, free])
        state.base.copy_(X if F == R else X[:, :R])
        if state.bias is not None:
            state.bias.copy_(X[:, R])
        new = state.factor()
        facs[t] = new
        graph, pen = state.regularizers(state.embedding(new))
        data = (data_term(new) if data_term is not None
                else data_loss(facs, state.data))
        state.last_data = data  # the data term at the factors after this update
        if state.coupled:
            data = data + sum(_matrix_loss(new[:, :R], c) for c in state.coupled)
        loss = lam * data
        if state.L is not None or alpha:
            loss = loss + graph.double() + pen.double()
        return new.clone(), loss


def _lstsq(D, rhs):
    """Least-squares solutions of ``D x_i = rhs_i`` (``D`` shared or one per row)."""
    if D.ndim == 2:
        return torch.linalg.lstsq(D, rhs.T).solution.T
    return torch.linalg.lstsq(D, rhs[..., None]).solution[..., 0]


def _pcg(X, rhs, op, solve, n_steps):
    """``n_steps`` preconditioned conjugate-gradient iterations on ``op(X) = rhs`` from
    ``X`` (updated in place and returned)."""
    r = rhs - op(X)
    z = solve(r)
    p = z.clone()
    rz = float((r * z).sum())
    rz0 = rz
    for _ in range(n_steps):
        if not rz > 1e-10 * rz0:  # converged
            break
        Ap = op(p)
        pAp = float((p * Ap).sum())
        if not pAp > 0:
            break
        step = rz / pAp
        X += step * p
        r -= step * Ap
        z = solve(r)
        rz_new = float((r * z).sum())
        p = z + (rz_new / rz) * p
        rz = rz_new
    return X


# --------------------------------------------------------------------------------------
# Coupled matrices: Y_m ~ A_t V_m^T, sharing mode t's K-way factor (coupling=)
# --------------------------------------------------------------------------------------


def _product(Y, V):
    """``Y @ V`` for a dense or sparse (COO) ``Y``."""
    return torch.sparse.mm(Y, V) if Y.is_sparse else Y @ V


def _coupled_normal_equations(G, b, coupled, R):
    """Mode ``t``'s normal equations with its coupled matrices: ``V^T V`` joins the Gram's
    K-way block and ``Y V`` the right-hand side's (``G`` shared or per row)."""
    if not coupled:
        return G, b
    G, b = G.clone(), b.clone()
    for c in coupled:
        V = c["V"]
        G[..., :R, :R] += V.T @ V
        b[:, :R] += _product(c["Y"], V)
    return G, b


def _matrix_loss(A, c):
    """``||Y - A V^T||^2`` in float64 (``A``: the coupled mode's K-way factor)."""
    A, V = A.double(), c["V"].double()
    cross = float((_product(c["Y64"], V) * A).sum())
    return max(c["sq"] - 2 * cross + float(((A.T @ A) * (V.T @ V)).sum()), 0.0)


def _update_coupled(A, c, ridge):
    """The coupled factor's closed-form ridge update ``V = Y^T A (A^T A + ridge I)^-1``."""
    G = A.T @ A + ridge * torch.eye(A.shape[1], dtype=A.dtype, device=A.device)
    rhs = _product(c["Y"].t(), A)
    L, info = torch.linalg.cholesky_ex(G)
    if bool(info != 0):  # a rank-deficient factor without alpha: least squares
        c["V"] = torch.linalg.lstsq(G, rhs.T).solution.T
    else:
        c["V"] = torch.cholesky_solve(rhs.T, L).T


def _implicit_operator(G, stored, two_lam, alpha, c, L, Ldiag, R, n):
    """``op(V)`` and a Jacobi ``solve`` for the confidence-weighted normal equations
    ``(2 lam (H + c sum_e p_e p_e^T) + alpha) v_i + (L V)_i``, applied entry by entry
    (``O(nnz F + N F^2)`` per product, as the implicit-feedback CG solvers do): the
    per-row ``F x F`` systems are never formed."""
    rows, P = stored
    F = G.shape[0]
    D = two_lam * G + alpha * torch.eye(F, dtype=G.dtype, device=G.device)
    cc = two_lam * c
    diag = D.diagonal()[None, :] + cc * P.new_zeros(n, F).index_add_(0, rows, P * P)
    if Ldiag is not None:
        diag[:, :R] += Ldiag[:, None]
    diag = diag.clamp_min(1e-12 * float(diag.max()))

    def op(V):
        out = V @ D
        out.index_add_(0, rows, P * (cc * (P * V.index_select(0, rows)).sum(1, keepdim=True)))
        if L is not None:
            out[:, :R] += torch.sparse.mm(L, V[:, :R].contiguous())
        return out

    def solve(r):
        return r / diag

    return op, solve


def _nonnegative_solve(X, D, rhs, L, Ldiag, R, n_steps):
    """``n_steps`` passes of exact coordinate descent (HALS) on a mode's quadratic
    ``1/2 x^T D x - rhs^T x (+ 1/2 tr(X^T L X))`` with the embedding columns (the first
    ``R``) kept >= 0: each column in turn, every row at once, ``x_j <- max(0, x_j - g_j /
    H_jj)``. Without a graph each step is an exact minimisation, so the loss never
    increases; with one, the rows it couples move together."""
    X[:, :R] = X[:, :R].clamp_min(0)
    diag = D.diagonal(dim1=1, dim2=2).clone()
    if Ldiag is not None:
        diag[:, :R] += Ldiag[:, None]
    for _ in range(n_steps):
        for j in range(X.shape[1]):
            g = (D[:, j, :] * X).sum(1) - rhs[:, j]
            if L is not None and j < R:
                g = g + torch.sparse.mm(L, X[:, j:j + 1].contiguous())[:, 0]
            h = diag[:, j]
            x = X[:, j] - torch.where(h > 0, g / torch.where(h > 0, h, 1), 0)
            X[:, j] = x.clamp_min(0) if j < R else x
    return X


# --------------------------------------------------------------------------------------
# The ranking loss (BPR) over sampled corrupted hyperedges
# --------------------------------------------------------------------------------------


def _corrupt(edges, mode, shape, gen):
    """Copies of ``edges`` with one node replaced by a uniformly drawn one: in ``mode``,
    or (``mode=None``) in a mode drawn for each hyperedge."""
    n, K = edges.shape
    out = edges.clone()
    cols = (torch.full((n,), mode, dtype=torch.int64) if mode is not None
            else torch.randint(K, (n,), generator=gen))
    sizes = torch.as_tensor(shape, dtype=torch.float64)[cols]
    draw = (torch.rand(n, generator=gen, dtype=torch.float64) * sizes).long()
    cols, draw = cols.to(edges.device), draw.to(edges.device)
    out[torch.arange(n, device=edges.device), cols] = draw
    return out


def _scores(edges, factors):
    """The model's value at each hyperedge (factors on any devices; result on edges')."""
    out = None
    for t, A in enumerate(factors):
        rows = A.index_select(0, edges[:, t].to(A.device)).to(edges.device)
        out = rows if out is None else out * rows
    return out.sum(1)


def _bpr_loss(factors, pos, neg):
    """``sum_e softplus(f(neg_e) - f(pos_e)) = -sum_e log sigmoid(f(pos_e) - f(neg_e))``."""
    diff = _scores(pos, factors) - _scores(neg, factors)
    return float(torch.nn.functional.softplus(-diff).double().sum())


def _bpr_epoch(states, edges, mode, shape, batch_size, lam, gen):
    """One pass of Adam over the hyperedges in random mini-batches, each against a
    corrupted copy (Rendle et al.'s BPR): minimises ``lam sum_e softplus(f(e~) - f(e))
    + sum_t (1/2 tr(A_t^T L_t A_t) + alpha/2 ||A_t||^2)``, the regularisers spread over
    the batches in proportion to their size. Returns the summed loss of the epoch's
    hyperedges (float64)."""
    n = edges.shape[0]
    perm = torch.randperm(n, generator=gen).to(edges.device)
    total = 0.0
    for start in range(0, n, batch_size):
        pos = edges[perm[start:start + batch_size]]
        neg = _corrupt(pos, mode, shape, gen)
        for s in states:
            s.optimizer.zero_grad(set_to_none=True)
        cores = [s.core() for s in states]
        facs = [s.augment(c) for s, c in zip(states, cores, strict=True)]
        diff = _scores(pos, facs) - _scores(neg, facs)
        data = torch.nn.functional.softplus(-diff).sum()
        reg = sum(sum(s.regularizers(c)) for s, c in zip(states, cores, strict=True))
        (lam * data + (len(pos) / n) * reg.to(data.device)).backward()
        for s in states:
            if not s.fixed:
                s.optimizer.step()
                if s.nonnegative:
                    with torch.no_grad():
                        s.base.clamp_(min=0)
        total += float(data.detach().double())
    return total


# --------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------


class HyperLearn(MultiModalTransformer):
    r"""Hypergraph tensor factorization with graph convolutions (HyperLearn).

    A K-order tensor ``X`` (the adjacency tensor of a K-partite hypergraph, or a
    rating matrix for K = 2) is factorized as a CP model ``[[A_1, ..., A_K]]`` with one
    factor ``A_t`` (``N_t x n_components``) per mode, while an intra-modal graph over the
    items of each mode pulls neighbours' factors together. Each mode has its own
    pipeline: a free base factor, ``diffusion_steps`` rounds of a Chebyshev graph
    convolution on the mode's graph followed by an LSTM cell that predicts the
    increment ``dA_t`` (the separable RGCNN of Monti et al. 2017), trained with Adam on
    the mode's loss (eq. 11 of the paper)

    .. math::

        \mathcal{L}_t = \lambda \lVert X_{(t)} - A_t \Omega_t^\top \rVert_F^2
        + \tfrac{1}{2} \operatorname{tr}(A_t^\top L_t A_t)
        + \tfrac{\alpha}{2} \lVert A_t \rVert_F^2

    with ``Omega_t`` the Khatri-Rao product of the other factors and ``L_t = I - D^-1/2
    W_t D^-1/2`` the positive semi-definite normalised Laplacian (the paper's eq. 5
    writes ``D^-1/2 W D^-1/2``, which is not a Laplacian: minimising it would push
    neighbours apart). Modes are updated in turn, all from the previous sweep's factors
    (``update="jacobi"``, so that they can run in parallel, one per device) or each from
    the freshest ones (``"gauss-seidel"``).

    The data term never forms the dense tensor nor a Khatri-Rao product:
    ``||X - [[A]]||^2 = ||X||^2 - 2 <X, [[A]]> + ||[[A]]||^2``, the inner product runs
    over the stored entries and ``||[[A]]||^2`` is the sum of the Hadamard product of the
    ``R x R`` Gram matrices; the gradient is a sparse MTTKRP. A sweep costs
    ``O(nnz K R + sum_t N_t R^2)`` plus the graph convolutions ``O(nnz(L_t) R)``.

    Parameters
    ----------
    n_components : int, default=10
        Rank ``R`` of the CP model (width of every factor).
    graphs : None or list, default=None
        One intra-modal graph per mode: a symmetric non-negative adjacency (SciPy sparse
        or dense, ``N_t x N_t``) or ``None`` (no graph for that mode). ``None`` takes
        ``X.shared["graphs"]`` when ``X`` is a :class:`~mmfactor.MultiModal`; modes
        without a graph there use ``X.shared["features"][t]`` (``N_t x d``) and, for
        mode 0, the views after the first, to build k-nearest-neighbour graphs (see
        :func:`~mmfactor.knn_graph`).
    pairwise_components : int, default=0
        Rank of the pairwise interaction terms beside the K-way product, one per pair of
        modes ``(s, t)``: the model becomes ``[[A_1, ..., A_K]] + sum_{s<t} <P_st[i_s],
        P_ts[i_t]>`` (as PITF for tag recommendation: a user-tag and an artist-tag term
        besides the user-artist-tag one). Held as extra columns of the CP factors (ones in
        the modes outside the pair), so every solver and kernel applies unchanged; a
        mode's embedding is its K-way factor followed by its pairwise factors.
    loss : {"squared", "bpr"}, default="squared"
        ``"squared"``: the least-squares data term of the paper. ``"bpr"``: a ranking
        loss for hypergraphs whose stored entries are positive hyperedges: each
        hyperedge is scored above a copy with one node replaced at random (Bayesian
        personalised ranking, ``-log sigmoid(f(e) - f(e~))``), trained by Adam on
        mini-batches of ``batch_size`` hyperedges (``solver="adam"``); the values
        of the stored entries are not used.
    confidence : float, default=0.0
        With the squared loss and ``missing="zero"``: the stored entries weigh ``1 +
        confidence`` and the unstored zeros 1 (the implicit-feedback weighting of Hu,
        Koren and Volinsky), at the cost of the unweighted fit plus one pass over the
        stored entries (the Gram identity still covers the zeros).
    ranking_mode : int or None, default=None
        With ``loss="bpr"``: the mode whose node is replaced in the corrupted copies
        (the mode ranked, e.g. the tags); None draws the mode for each hyperedge.
    batch_size : int, default=1024
        Hyperedges per Adam step with ``loss="bpr"``.
    lam : float, default=1.0
        Weight ``lambda`` of the data term.
    alpha : float, default=0.0
        L2 penalty on the factors (and biases).
    cheb_order : int, default=5
        Number of Chebyshev terms (degrees ``0 .. cheb_order - 1``) of the graph
        convolution.
    diffusion_steps : int, default=5
        Rounds of convolution + LSTM diffusion; 0 trains the factors directly (plain
        graph-regularised CP by Adam).
    hidden_size : int, default=32
        Channels of the graph convolution and of the LSTM.
    update : {"jacobi", "gauss-seidel"}, default="jacobi"
        Order of the alternating per-mode updates. ``"jacobi"`` updates every mode from
        the previous sweep's factors (the modes can run in parallel, one per device or
        rank); with ``solver="als"`` it takes a damped half step, since K exact
        simultaneous solves rescale together and oscillate. ``"gauss-seidel"`` uses the
        freshest factors (sequential; the faster and safer choice with ``"als"``).
    missing : {"zero", "unobserved"}, default="zero"
        What an unstored entry of a sparse input means: ``"zero"`` (a hypergraph: every
        entry counts) or ``"unobserved"`` (completion: the loss runs over the stored
        entries only). NaN entries of a dense input are always unobserved.
    fit_intercept : bool, default=False
        Add a global mean and one bias vector per mode (``mu + sum_t b_t[i_t] + [[A]]``),
        the biased model of rating data.
    init : {"svd", "random"}, default="svd"
        Initial base factors: the leading singular vectors of each mode's unfolding (of
        ``X - mu`` with an intercept), scaled by ``sigma^(1/K)``, or a scaled Gaussian.
        The default starts away from the saddle at zero: from a random start near it,
        the loss can sit on a plateau long enough for the ``tol`` rule to stop the fit
        before it learns anything, and a strong ``alpha`` can pull every factor to zero.
        Pairwise factors always start as a small Gaussian. Also a list of K arrays
        (``N_t x n_components``, the K-way factors to start from), or a tensorly
        ``CPTensor`` of rank ``n_components`` (its weights spread over the modes), as
        tensorly's ``parafac(init=...)`` takes. A model started from a ``CPTensor`` is
        saved with pickle or joblib (the safe format stores plain values only).
    fixed_modes : list of int or None, default=None
        Modes whose parameters stay at their initial value (tensorly's ``fixed_modes``):
        with a user-given ``init``, factors known in advance.
    n_init : int, default=1
        Fits from different random starts (seeded from ``random_state``); the one with
        the lowest final objective (or validation loss with ``early_stopping``) is kept.
    nonnegative : bool, default=False
        Keep the factors (K-way and pairwise; not the biases) >= 0: non-negative CP.
        ``solver="als"`` runs exact coordinate descent (HALS) on each mode's quadratic
        instead of conjugate gradients; ``"adam"`` projects after every step. Needs
        ``diffusion_steps=0`` (the diffusion's output is not constrained).
    solver : {"adam", "als"}, default="adam"
        ``"adam"``: ``n_inner_iter`` Adam steps per mode and sweep on the pipeline's
        parameters (base factor, convolution, LSTM). ``"als"`` (``diffusion_steps=0``
        only): alternating least squares, each mode's quadratic loss minimised exactly
        by Cholesky (without a graph on that mode: one ``F x F`` system shared by every
        row when every entry counts, one per row otherwise) or by ``n_inner_iter``
        preconditioned conjugate-gradient iterations (with a graph), far fewer sweeps
        than Adam.
    n_inner_iter : int, default=3
        Adam steps per mode in each sweep.
    n_neighbors : int, default=10
        Neighbours of the k-NN graphs built from features.
    coupling : "graph" or dict, default="graph"
        What the views after the first (and matrices in ``X.shared``) are. ``"graph"``:
        features of mode 0, turned into its k-NN graph (see ``graphs``). A dict
        ``{name: mode}``: coupled matrix-tensor factorization (as tensorly's
        ``coupled_matrix_tensor_3d_factorization``, for one K-way tensor and any number
        of matrices): each named matrix ``Y_m`` (``N_t x J_m``, ``t = mode``) is
        factorized as ``A_t V_m^T`` with the mode's K-way factor and its own factor
        ``V_m`` (``J_m x n_components``), and the objective gains ``lam ||Y_m - A_t
        V_m^T||^2 + alpha/2 ||V_m||^2``. A view's rows are the samples, so a view couples
        to mode 0; a matrix of ``X.shared`` (taken whole) couples to mode 1 or higher.
        Views not named stay k-NN features of mode 0. Needs ``solver="als"``: mode
        ``t``'s normal equations gain ``V_m^T V_m`` and ``Y_m V_m``, and each ``V_m`` is
        updated in closed form (ridge with ``alpha``) before every sweep; ``transform``
        folds new rows in from the tensor and the matrices coupled to mode 0 together.
    max_iter : int, default=200
        Maximum number of sweeps.
    learning_rate_init : float, default=0.01
        Adam's learning rate. With the squared loss it is relative: each mode's base
        factor is trained at unit scale and multiplied by the RMS of its initial factor
        (after ``init="svd"``, the singular vectors signed and scaled to fit ``X`` best),
        so a step and the diffusion's increments move a factor by a share of its own
        size, whatever the data's scale. An Adam fit whose data term ends less far below
        ``||X||^2`` than the best rank-one model's raises a ``ConvergenceWarning``.
    tol : float, default=1e-4
        Stop when the objective (or the validation error with ``early_stopping``)
        improves by less than ``tol`` (relative) for ``n_iter_no_change`` sweeps.
    n_iter_no_change : int, default=10
        Patience of the stopping rule.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the observed entries, stop when their error
        stops improving and keep the factors of the best sweep (completion, or
        ``loss="bpr"``: the ranking loss of held-out hyperedges against fixed corrupted
        copies).
    validation_fraction : float, default=0.1
        Share of observed entries held out with ``early_stopping``.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the computation; ``transform`` returns this dtype.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial factors, the networks and the validation split.
    devices : None, str or list, default=None
        Where each mode's pipeline lives: one device for all or a list of K entries.
        Only factors travel between devices.
    verbose : int, default=0
        Show a progress bar.
    n_jobs : int, default=None
        CPU threads of torch, BLAS and OpenMP during this estimator's ``fit``,
        ``transform`` and other calls, put back afterwards (``-1``: all CPUs; ``None``:
        unchanged). See :ref:`busy-machines`.

    Attributes
    ----------
    factors_ : list of ndarray
        ``factors_[t]`` of shape ``(N_t, n_components)``: the (diffused) factor of mode
        ``t``; ``factors_[0]`` holds the training samples.
    coupled_factors_ : dict of str -> ndarray
        With ``coupling`` a dict: ``V_m`` (``J_m x n_components``) of each coupled matrix;
        empty otherwise.
    interaction_factors_ : list of [ndarray, ndarray]
        With ``pairwise_components``: for each pair of modes ``(s, t)``, ``s < t`` in
        lexicographic order, the factors ``P_st`` (``N_s x pairwise_components``) and
        ``P_ts``; empty otherwise.
    biases_ : dict or None
        ``{"mean": float, "modes": [b_0, ..., b_{K-1}]}`` with ``fit_intercept``.
    shape_ : tuple of int
        Shape of the fitted tensor.
    loss_curve_ : list of float
        Objective (eq. 10 plus the L2 penalty) after every sweep; with ``loss="bpr"``
        the data term is the ranking loss of the sweep's hyperedges against the copies
        drawn for them.
    loss_terms_ : dict of str -> list of float
        ``"data"``, ``"graph"``, ``"penalty"``, each mode's ``loss_t`` (``"mode0"``, ...)
        and ``"validation"`` (root mean squared error) with ``early_stopping``. ``"data"``
        and the loss curve are exact float64 sums; with ``solver="als"`` each ``loss_t``
        takes its data term from that mode's normal equations (no pass over the
        entries), exact in float64 and to float32 rounding with ``dtype="float32"``.
    n_iter_ : int
        Sweeps run.
    devices_ : list of torch.device
        One device per mode.
    n_features_in_ : int
        Size of mode 1 (the number of columns when the tensor is a matrix).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        The column names of ``X`` when it is a pandas DataFrame with string column
        names (only then); ``transform`` checks them.

    See Also
    --------
    CMF : Collective matrix factorization (closed-form ALS).
    SparseTensor : Coordinates of a K-order sparse tensor.
    knn_graph : The k-nearest-neighbour graph of per-mode features.

    Notes
    -----
    ``transform`` folds new mode-0 items in by least squares from their entries with
    every other factor frozen (the diffusion network acts on the fitted graph, which
    the new items are not part of); ``transform`` of the training tensor therefore
    returns the least-squares factors, close to but not equal to ``factors_[0]``.

    References
    ----------
    D. Arya, S. Rudinac and M. Worring. HyperLearn: a distributed approach for
    representation learning in datasets with many modalities. ACM Multimedia 2019.
    F. Monti, M. Bronstein and X. Bresson. Geometric matrix completion with recurrent
    multi-graph neural networks. NeurIPS 2017.

    Examples
    --------
    >>> from mmfactor import HyperLearn
    >>> from mmfactor.datasets import make_hypergraph
    >>> data = make_hypergraph((30, 20, 10), n_communities=3, n_hyperedges=600,
    ...                        random_state=0)
    >>> model = HyperLearn(n_components=3, graphs=data.graphs, diffusion_steps=2,
    ...                    random_state=0)
    >>> emb = model.fit_transform(data.X)
    >>> emb.shape, [f.shape for f in model.factors_]
    ((30, 3), [(30, 3), (20, 3), (10, 3)])
    """

    _parameter_constraints = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "graphs": [None, list, tuple],
        "pairwise_components": [Interval(numbers.Integral, 0, None, closed="left")],
        "loss": [StrOptions({"squared", "bpr"})],
        "confidence": [Interval(numbers.Real, 0, None, closed="left")],
        "ranking_mode": [None, Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "lam": [Interval(numbers.Real, 0, None, closed="neither")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "cheb_order": [Interval(numbers.Integral, 1, None, closed="left")],
        "diffusion_steps": [Interval(numbers.Integral, 0, None, closed="left")],
        "hidden_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "update": [StrOptions({"jacobi", "gauss-seidel"})],
        "missing": [StrOptions({"zero", "unobserved"})],
        "fit_intercept": ["boolean"],
        "init": [StrOptions({"random", "svd"}), list, tuple, Mapping],
        "fixed_modes": [None, list, tuple],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "nonnegative": ["boolean"],
        "solver": [StrOptions({"adam", "als"})],
        "n_inner_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "coupling": [StrOptions({"graph"}), dict],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "dtype": [StrOptions({"float32", "float64"})],
        "random_state": ["random_state"],
        "devices": [None, str, list, tuple],
        "verbose": ["verbose"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __init__(
        self,
        n_components=10,
        *,
        graphs=None,
        pairwise_components=0,
        loss="squared",
        confidence=0.0,
        ranking_mode=None,
        batch_size=1024,
        lam=1.0,
        alpha=0.0,
        cheb_order=5,
        diffusion_steps=5,
        hidden_size=32,
        update="jacobi",
        missing="zero",
        fit_intercept=False,
        init="svd",
        fixed_modes=None,
        n_init=1,
        nonnegative=False,
        solver="adam",
        n_inner_iter=3,
        n_neighbors=10,
        coupling="graph",
        max_iter=200,
        learning_rate_init=0.01,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
        validation_fraction=0.1,
        dtype="float32",
        random_state=None,
        devices=None,
        verbose=0,
        n_jobs=None,
    ):
        self.n_components = n_components
        self.graphs = graphs
        self.pairwise_components = pairwise_components
        self.loss = loss
        self.confidence = confidence
        self.ranking_mode = ranking_mode
        self.batch_size = batch_size
        self.lam = lam
        self.alpha = alpha
        self.cheb_order = cheb_order
        self.diffusion_steps = diffusion_steps
        self.hidden_size = hidden_size
        self.update = update
        self.missing = missing
        self.fit_intercept = fit_intercept
        self.init = init
        self.fixed_modes = fixed_modes
        self.n_init = n_init
        self.nonnegative = nonnegative
        self.solver = solver
        self.n_inner_iter = n_inner_iter
        self.n_neighbors = n_neighbors
        self.coupling = coupling
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.dtype = dtype
        self.random_state = random_state
        self.devices = devices
        self.verbose = verbose
        self.n_jobs = n_jobs

    # ---- input ---------------------------------------------------------------------

    def _graph_specs(self, mm, feature_views, shape):
        """One adjacency (CSR) or None per mode, validated against the tensor's shape."""
        K = len(shape)
        graphs = self.graphs
        source = "graphs"
        if graphs is None:
            graphs = mm.shared.get("graphs")
            source = "X.shared['graphs']"
        if graphs is None:
            graphs = [None] * K
        if not isinstance(graphs, list | tuple):
            raise TypeError(f"{source} must be a list with one graph (or None) per mode; got "
                            f"{type(graphs).__name__}.")
        if len(graphs) != K:
            raise ValueError(
                f"{source} has {len(graphs)} entries; expected one per mode of the tensor "
                f"of shape {shape} ({K})."
            )
        features = mm.shared.get("features") or [None] * K
        if len(features) != K:
            raise ValueError(
                f"X.shared['features'] has {len(features)} entries; expected one per mode "
                f"({K})."
            )
        out = []
        for t, (g, n) in enumerate(zip(graphs, shape, strict=True)):
            if g is not None:
                if t == 0 and getattr(g, "shape", (n,))[0] != n:
                    raise ValueError(
                        f"{source}[0] has shape {g.shape} but mode 0 has {n} items (the "
                        "samples). When the samples are split (cross-validation), give "
                        "mode 0's graph as features in further views of a MultiModal."
                    )
                out.append(check_adjacency(g, n, name=f"{source}[{t}]"))
                continue
            feats = features[t]
            if t == 0 and feature_views:
                blocks = []
                for i, v in enumerate(feature_views):
                    fv = check_view(mm.names[i + 1], v, allow_nan=False)
                    arr = fv.data if fv.kind == "sparse" else as_numpy(fv.data)
                    arr = arr.reshape(arr.shape[0], -1) if not sp.issparse(arr) else arr
                    blocks.append(sp.csr_matrix(arr) if sp.issparse(arr) else arr)
                feats = (sp.hstack(blocks).tocsr() if any(sp.issparse(b) for b in blocks)
                         else np.hstack(blocks))
            if feats is None:
                out.append(None)
                continue
            if getattr(feats, "shape", (None,))[0] != n:
                raise ValueError(
                    f"features of mode {t} have shape {getattr(feats, 'shape', None)}; "
                    f"expected ({n}, n_features), one row per item of mode {t}."
                )
            if not sp.issparse(feats):
                feats = np.asarray(feats, dtype=np.float64)
                scale = feats.std(0)
                feats = (feats - feats.mean(0)) / np.where(scale > 0, scale, 1.0)
            out.append(knn_graph(feats, min(self.n_neighbors, n - 1)) if n > 1 else None)
        return out

    def _prepare(self, X):
        mm, tensor, feature_views = _split_input(X)
        idx, vals, shape, kind = _as_coordinates(tensor, mm.names[0], self.missing)
        K = len(shape)
        if shape[0] < 2:
            raise ValueError(
                f"View {mm.names[0]!r} has shape {shape}: n_samples = {shape[0]}; at least 2 "
                "items in mode 0 (the samples) are required to fit this model."
            )
        if kind == "observed" and len(vals) == 0:
            raise ValueError(
                f"View {mm.names[0]!r} of shape {shape} has no observed entry; with "
                "missing='unobserved' the stored entries are the observations."
            )
        if kind == "full" and not np.any(vals):
            raise ValueError(f"View {mm.names[0]!r} of shape {shape} is all zeros.")
        if self.nonnegative and self.diffusion_steps > 0:
            raise ValueError(f"nonnegative=True constrains the factors themselves and needs "
                             f"diffusion_steps=0; got diffusion_steps={self.diffusion_steps}.")
        if self.loss == "bpr" and self.solver != "adam":
            raise ValueError(f"loss='bpr' is trained by Adam on mini-batches; got "
                             f"solver={self.solver!r}. Use solver='adam'.")
        if self.ranking_mode is not None and self.ranking_mode >= K:
            raise ValueError(f"ranking_mode={self.ranking_mode} but the tensor of shape "
                             f"{shape} has {K} modes (0 to {K - 1}).")
        if self.confidence and (kind != "full" or self.loss != "squared"):
            raise ValueError(
                f"confidence={self.confidence} weighs stored entries against the unstored "
                "zeros: it needs missing='zero', a tensor without NaN and loss='squared'; "
                f"view {mm.names[0]!r} has "
                f"{'observed entries only' if kind != 'full' else 'no NaN'} and "
                f"loss={self.loss!r}.")
        check_variation(mm.names[0], coords=(idx, vals, shape, kind == "full"))
        couplings = self._coupled_matrices(mm, shape)
        coupled = {c[0] for c in couplings}
        feature_views = [v for name, v in zip(mm.names[1:], feature_views, strict=True)
                         if name not in coupled]
        graphs = self._graph_specs(mm, feature_views, shape)
        if self.solver == "als" and self.diffusion_steps > 0:
            raise ValueError(
                f"solver='als' solves for the factors directly and needs diffusion_steps=0; "
                f"got diffusion_steps={self.diffusion_steps}. Use solver='adam' to train the "
                "graph-convolutional diffusion."
            )
        if self.early_stopping and kind == "full" and self.loss == "squared":
            raise ValueError(
                "early_stopping=True needs observed entries to hold out: use "
                "missing='unobserved' (or NaN for the missing entries of a dense tensor); "
                f"view {mm.names[0]!r} of shape {shape} is complete."
            )
        return mm, idx, vals, tuple(shape), kind, graphs, K, couplings

    def _coupled_matrices(self, mm, shape):
        """``[(name, mode, Y)]`` of the matrices ``coupling`` names (``Y`` float64, dense
        or CSR), validated against the tensor's shape; ``[]`` with ``coupling="graph"``."""
        if isinstance(self.coupling, str):
            return []
        K = len(shape)
        views = mm.names[1:]
        shared = [k for k, v in mm.shared.items() if hasattr(v, "shape") and
                  len(v.shape) == 2]
        if self.solver != "als" or self.loss != "squared":
            raise ValueError(f"coupling={self.coupling!r} (coupled matrices) is solved by "
                             f"alternating least squares: it needs solver='als' and "
                             f"loss='squared'; got solver={self.solver!r}, "
                             f"loss={self.loss!r}.")
        out = []
        for name, mode in self.coupling.items():
            if name not in views and name not in shared:
                raise ValueError(f"coupling names {name!r}, which is neither a view after "
                                 f"the tensor {views} nor a matrix of X.shared {shared}.")
            if not isinstance(mode, numbers.Integral) or not 0 <= mode < K:
                raise ValueError(f"coupling[{name!r}] = {mode!r} is not a mode of the tensor "
                                 f"of shape {shape} (an int, 0 to {K - 1}).")
            is_view = name in views
            if not is_view and mode == 0:
                raise ValueError(f"coupling[{name!r}] = 0 couples a matrix of X.shared to "
                                 "mode 0 (the samples): give it as a view of the MultiModal "
                                 "instead, so that its rows follow the samples.")
            label = name if is_view else f"shared[{name!r}]"
            v = check_view(label, mm.views[mm.names.index(name)] if is_view
                           else mm.shared[name], allow_nan=False, max_ndim=2)
            if v.shape[0] != shape[mode]:
                raise ValueError(f"View {label!r} has shape {tuple(v.shape)} but is coupled "
                                 f"to mode {mode} of the tensor of shape {shape}: expected "
                                 f"({shape[mode]}, n_columns), one row per item of mode "
                                 f"{mode}.")
            Y = (v.data.tocsr().astype(np.float64) if v.kind == "sparse"
                 else as_numpy(v.data).astype(np.float64))
            out.append((name, int(mode), Y))
        return out

    # ---- initialisation ------------------------------------------------------------

    def _svd_init(self, idx, vals, shape, R, rng):
        """Leading left singular vectors of each unfolding, scaled by sigma^(1/K)."""
        K = len(shape)
        out = []
        for t in range(K):
            others = [s for s in range(K) if s != t]
            cols = np.ravel_multi_index(tuple(idx[:, s] for s in others),
                                        tuple(shape[s] for s in others))
            uniq, cols = np.unique(cols, return_inverse=True)
            M = sp.csr_matrix((vals, (idx[:, t], cols)), shape=(shape[t], len(uniq)))
            k = min(R, min(M.shape) - 1)
            B = np.zeros((shape[t], R))
            if k >= 1:
                U, s = _leading_singular(M, k, rng)
                order = np.argsort(s)[::-1]
                B[:, :k] = U[:, order] * s[order] ** (1.0 / K)
            if k < R:
                B[:, k:] = 1e-3 * rng.randn(shape[t], R - k)
            out.append(B)
        return out

    # ---- fitting -------------------------------------------------------------------

    def fit_transform(self, X, y=None):
        """Fit the factorization and return the factor of mode 0 (the samples).

        Parameters
        ----------
        X : ndarray, torch.Tensor, SciPy sparse matrix, SparseTensor or MultiModal
            The tensor; see :meth:`fit`.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_components)
            What :meth:`transform` gives the training rows (their fold-in against the
            fitted factors of the other modes); ``factors_[0]`` keeps the mode-0 factor
            learned jointly with the graphs.
        """
        self._fit(X)
        return self.transform(X)

    def _fit(self, X):
        self._validate_params()
        prepared = self._prepare(X)
        given = self._check_init(prepared[3])
        if self.n_init == 1:
            seeds = [self.random_state]
        else:
            seeds = check_random_state(self.random_state).randint(
                np.iinfo(np.int32).max, size=self.n_init).tolist()
        best = None
        for seed in seeds:
            self._fit_single(*prepared, given, seed)
            terms = self.loss_terms_
            score = min(terms["validation"]) if "validation" in terms else self.loss_curve_[-1]
            if best is None or score < best[0]:
                best = (score, {k: v for k, v in vars(self).items()
                                if k.endswith("_") or k in _FITTED_PRIVATE})
        vars(self).update(best[1])
        _check_feature_names(self, X, reset=True)  # feature_names_in_ of a DataFrame
        if self._failure is not None:
            warnings.warn(self._failure, ConvergenceWarning, stacklevel=_outside_stacklevel())

    def _check_init(self, shape):
        """The user's initial K-way factors (list of arrays) or None; checks fixed_modes."""
        K, R = len(shape), self.n_components
        if self.fixed_modes is not None:
            bad = [m for m in self.fixed_modes
                   if not isinstance(m, numbers.Integral) or not 0 <= m < K]
            if bad or len(set(self.fixed_modes)) != len(self.fixed_modes):
                raise ValueError(f"fixed_modes={list(self.fixed_modes)!r} must list distinct "
                                 f"modes of the tensor of shape {shape} (0 to {K - 1}).")
            if len(self.fixed_modes) == K:
                raise ValueError(f"fixed_modes={list(self.fixed_modes)!r} fixes every mode "
                                 "of the tensor: nothing is left to fit.")
        if isinstance(self.init, str):
            return None
        if _is_cp_tensor(self.init):
            factors = _cp_factors(self.init, R)
        elif isinstance(self.init, list | tuple):
            factors = list(self.init)
        else:
            raise TypeError(f"init must be 'svd', 'random', a list of {K} factor arrays or a "
                            f"tensorly CPTensor; got a {type(self.init).__name__}.")
        if len(factors) != K:
            raise ValueError(f"init has {len(factors)} factors; expected one per mode of the "
                             f"tensor of shape {shape} ({K}).")
        out = []
        for t, (f, n) in enumerate(zip(factors, shape, strict=True)):
            f = np.asarray(f, dtype=np.float64)
            if f.shape != (n, R):
                raise ValueError(f"init[{t}] has shape {f.shape}; expected ({n}, {R}) "
                                 f"(mode {t} has {n} items, n_components={R}).")
            if not np.isfinite(f).all():
                raise ValueError(f"init[{t}] has NaN or infinite entries.")
            out.append(f.copy())
        return out

    def _fit_single(self, mm, idx, vals, shape, kind, graphs, K, couplings, given,
                    random_state):
        """One fit from the start ``random_state`` gives (``n_init`` repeats it)."""
        devices = resolve_devices(self.devices, [f"mode{t}" for t in range(K)])
        dtype = _DTYPES[self.dtype]
        gen, rng = torch_generator(random_state)
        R, P = self.n_components, self.pairwise_components
        layout = _Layout(K, R, P, self.fit_intercept)
        bpr = self.loss == "bpr"

        val_data = None
        if self.early_stopping:
            perm = rng.permutation(len(vals))
            n_val = max(1, int(round(self.validation_fraction * len(vals))))
            if n_val >= len(vals):
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} leaves no training "
                    f"entry out of {len(vals)} observed ones."
                )
            va, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            if bpr:  # held-out hyperedges, each against one fixed corrupted copy
                val_pos = torch.as_tensor(idx[va]).to(devices[0])
                val_data = (val_pos, _corrupt(val_pos, self.ranking_mode, shape, gen))
            else:
                val_data = TensorData(idx[va], vals[va], shape, "observed", devices[0], dtype)
            idx, vals = idx[tr], vals[tr]

        mu = 0.0
        if self.fit_intercept:
            mu = float(vals.mean()) if kind == "observed" else float(vals.sum() / np.prod(
                shape, dtype=np.float64))
        centred = vals - mu if kind == "observed" else vals
        n_entries = len(vals) if kind == "observed" else float(np.prod(shape, dtype=np.float64))
        target = float(np.square(centred).sum() / n_entries)
        widths = [len(layout.emb[t]) for t in range(K)]
        scale = 0.5 * (max(target, 1e-12) / R) ** (1.0 / (2 * K))
        if bpr:  # a ranking loss has no data scale: small factors, as in BPR
            scale = 0.1
        bases = [scale * rng.randn(n, w) for n, w in zip(shape, widths, strict=True)]
        if given is not None:
            for b, g in zip(bases, given, strict=True):
                b[:, :R] = g
        elif self.init == "svd":
            for b, s in zip(bases, self._svd_init(idx, centred, shape, R, rng), strict=True):
                if bpr:  # the singular directions at the ranking loss's small scale
                    s = s * (scale / max(float(np.sqrt(np.mean(s**2))), 1e-12))
                b[:, :R] = s

        if self.nonnegative:  # start inside the constraint (a leading singular vector
            bases = [np.abs(b) for b in bases]  # may come out all negative)
        # Adam on the squared loss steps relative to each mode's scale (see _ModeState.core)
        relative = self.solver == "adam" and not bpr
        if relative and given is None and self.init == "svd":
            bases = _rescaled(bases, idx, centred, R)
        scales = [float(np.sqrt(np.mean(b[:, :R] ** 2))) if relative else 1.0
                  for b in bases]
        scales = [s if s > 0 else 1.0 for s in scales]
        states = []
        for t in range(K):
            dev = devices[t]
            base = torch.as_tensor(bases[t] / scales[t], dtype=dtype).to(dev)
            base.requires_grad_(True)
            has_graph = graphs[t] is not None and graphs[t].nnz > 0
            net = None
            if self.diffusion_steps > 0:
                order = self.cheb_order if has_graph else 1  # no graph: T_0 = I only
                net = _Diffusion(widths[t], self.hidden_size, order, self.diffusion_steps,
                                 dev, dtype)
                net.reset(gen)
            template = bias = None
            if layout.width != R:
                template = torch.as_tensor(layout.template(t, shape[t], mu), dtype=dtype).to(dev)
            if self.fit_intercept:
                bias = torch.zeros(shape[t], dtype=dtype, device=dev, requires_grad=True)
            L = L_tilde = None
            L_diag = None
            if has_graph:
                Lsp = normalized_laplacian(graphs[t])
                L = to_torch_sparse(Lsp, dev, dtype)
                if self.solver == "als":  # CSR: its products are 20x faster than COO's
                    L = _csr(L)
                L_diag = torch.as_tensor(Lsp.diagonal(), dtype=dtype).to(dev)
                if net is not None and self.cheb_order > 1:
                    L_tilde = to_torch_sparse(rescaled_laplacian(Lsp), dev, dtype)
            data = None
            if not bpr:
                data = TensorData(idx, vals, shape, kind, dev, dtype, sort_mode=t,
                                  confidence=self.confidence)
            states.append(_ModeState(t, base=base, net=net, bias=bias, template=template,
                                     free=layout.free(t), L=L, L_tilde=L_tilde, data=data,
                                     lam=float(self.lam), alpha=float(self.alpha),
                                     lr=float(self.learning_rate_init), device=dev,
                                     solver=self.solver, L_diag=L_diag, scale=scales[t]))
        if self.update == "jacobi":
            for s in states:
                s.damping = 0.5
        for s in states:
            s.fixed = s.t in set(self.fixed_modes or ())
            s.nonnegative = self.nonnegative
            s.coupled = []
        self._couplings = []
        for name, t, Y in couplings:  # on mode t's device; V set before the first sweep
            c = {"name": name, "mode": t, "sq": float(Y.multiply(Y).sum() if sp.issparse(Y)
                                                      else np.square(Y).sum())}
            c["Y64"] = (to_torch_sparse(Y.tocoo(), devices[t], torch.float64)
                        if sp.issparse(Y) else torch.as_tensor(Y).to(devices[t]))
            c["Y"] = c["Y64"].to(dtype)
            states[t].coupled.append(c)
            self._couplings.append(c)
        with torch.no_grad():
            factors = [s.factor().detach().clone() for s in states]
        self._states, self._factors = states, factors
        best = {}

        if bpr:
            edges = torch.as_tensor(idx).to(devices[0])

            def step(epoch):
                data = _bpr_epoch(states, edges, self.ranking_mode, shape, self.batch_size,
                                  self.lam, gen)
                with torch.no_grad():
                    self._factors = [s.factor().detach().clone() for s in states]
                return self._objective(states, self._factors, [], data=data)
        else:
            def step(epoch):
                ridge = self.alpha / (2 * self.lam)
                for c in self._couplings:  # closed form, from the current factors
                    _update_coupled(self._factors[c["mode"]][:, :R].to(devices[c["mode"]]),
                                    c, ridge)
                new = list(self._factors)
                losses = []
                for t, state in enumerate(states):
                    if state.fixed:  # kept at its initial value
                        losses.append(0.0)
                        continue
                    source = self._factors if self.update == "jacobi" else new
                    new[t], loss_t = update_mode(t, source, state, self.n_inner_iter)
                    losses.append(loss_t)
                self._factors = new
                if self.update == "gauss-seidel" and self.solver == "als" and (
                        dtype == torch.float64 and not self.confidence):
                    # the last mode's data term is that of the final factors, from its
                    # float64 normal equations: exact, no further pass over the entries
                    last = max(t for t, s in enumerate(states) if not s.fixed)
                    return self._objective(states, new, losses,
                                           data=float(states[last].last_data))
                return self._objective(states, new, losses)

        validation = on_improvement = None
        if val_data is not None:
            def validation():
                facs = [f.to(devices[0]) for f in self._factors]
                if bpr:
                    with torch.no_grad():
                        return _bpr_loss(facs, *val_data) / len(val_data[0])
                return float(np.sqrt(data_loss(facs, val_data) / val_data.nnz))

            def on_improvement():
                best["factors"] = [f.clone() for f in self._factors]

        hist = fit_loop(step, max_iter=self.max_iter, tol=self.tol,
                        n_iter_no_change=self.n_iter_no_change, verbose=self.verbose,
                        desc="HyperLearn", estimator="HyperLearn",
                        validation=validation, on_improvement=on_improvement)
        self.devices_ = devices
        factors = best.get("factors", self._factors)
        self.loss_curve_ = hist.loss
        self.loss_terms_ = hist.terms
        self.n_iter_ = hist.n_iter
        self.shape_ = shape
        self._kind = kind
        aug = [as_numpy(f).astype(dtype_np(dtype)) for f in factors]
        self.factors_ = [a[:, :R].copy() for a in aug]
        self.interaction_factors_ = [
            [aug[s][:, layout.emb[s]][:, layout.block(j, s)].copy(),
             aug[t][:, layout.emb[t]][:, layout.block(j, t)].copy()]
            for j, (s, t) in enumerate(layout.pairs)]
        if self.fit_intercept:
            self.biases_ = {"mean": mu, "modes": [a[:, layout.bias[t]].copy()
                                                  for t, a in enumerate(aug)]}
        else:
            self.biases_ = None
        self.coupled_factors_ = {c["name"]: as_numpy(c["V"]).astype(dtype_np(dtype))
                                 for c in self._couplings}
        self.n_features_in_ = shape[1]  # the size of mode 1 (the columns of a matrix)
        self._n_views = len(mm.views)
        self._n_features_out = widths[0]
        del self._states, self._factors, self._couplings  # data, optimizers: not kept
        self._failure = self._failure_reason(factors, states, idx, vals, kind)

    def _failure_reason(self, factors, states, idx, vals, kind):
        """Why the fit learned nothing (a mode's factors all zero, a data term no better
        than predicting zeros, a ranking loss at chance), or None."""
        R = self.n_components
        emb = [s.embedding(f) for s, f in zip(states, factors, strict=True)]
        collapsed = [t for t, e in enumerate(emb) if not bool(torch.any(e != 0))]
        why = None
        if collapsed:
            why = (f"the factors of mode(s) {collapsed} are all exactly zero (the K-way term"
                   f"{' and their pairwise terms' if self.pairwise_components else ''} "
                   "predict nothing)")
        elif self.loss == "bpr":
            final = self.loss_terms_["data"][-1] / max(len(idx), 1)
            if final >= np.log(2) * (1 - 1e-6):
                why = (f"the ranking loss per hyperedge ended at {final:.4g}, no better "
                       f"than chance (log 2 = {np.log(2):.4g})")
        else:
            null = float(np.square(vals - 0).sum()) * (
                1 + (self.confidence if kind == "full" else 0.0))
            final = self.loss_terms_["data"][-1]
            if final >= null * (1 - 1e-9):
                why = (f"the data term ended at {final:.6g}, no better than predicting "
                       f"zeros ({null:.6g}, i.e. ||X||^2)")
            elif (self.solver == "adam" and kind == "full" and not self.confidence
                  and not self.fit_intercept):
                gain = _rank_one_gain(idx, vals, self.shape_)
                if null - final < gain:
                    why = (f"the data term ended at {final:.6g}, {null - final:.4g} below "
                           f"||X||^2 = {null:.6g}: less than the best rank-one model "
                           f"removes ({gain:.4g}), so the Adam steps barely trained")
        if why is None:
            return None
        hint = ("lower alpha or learning_rate_init, use init='svd', or solver='als' "
                "with diffusion_steps=0" if self.loss == "squared" else
                "lower alpha, raise max_iter or change learning_rate_init")
        return (f"HyperLearn learned nothing: {why} after {self.n_iter_} sweep(s) "
                f"(n_components={R}). Try: {hint}.")

    def _objective(self, states, factors, losses, data=None):
        """eq. (10) + penalty with the factors after a sweep, and each mode's loss_t.

        ``data`` given (the ranking loss): the summed loss of the sweep's hyperedges.
        """
        terms = {}
        with torch.no_grad():
            if data is None:
                d0 = states[0].data
                facs = [f.to(d0.indices.device) for f in factors]
                data = data_loss(facs, d0)
            graph = pen = coupled = 0.0
            for s, f in zip(states, factors, strict=True):
                g, p = s.regularizers(s.embedding(f))
                graph += float(g)
                pen += float(p)
            for c in self._couplings:
                A = factors[c["mode"]][:, : self.n_components].to(c["Y"].device)
                coupled += _matrix_loss(A, c)
                pen += 0.5 * self.alpha * float((c["V"].double() ** 2).sum())
        terms["data"] = data
        if self._couplings:
            terms["coupled"] = coupled
        terms["graph"] = graph
        terms["penalty"] = pen
        for t, lt in enumerate(losses):
            terms[f"mode{t}"] = float(lt)
        terms["loss"] = self.lam * (data + coupled) + graph + pen
        return terms

    # ---- the fitted model --------------------------------------------------------------

    def _layout(self):
        return _Layout(len(self.factors_), self.n_components, self.pairwise_components,
                       self.biases_ is not None)

    def _augmented(self):
        """The fitted augmented factors (NumPy, float64), as in the fit."""
        layout = self._layout()
        if layout.width == self.n_components:
            return [f.astype(np.float64) for f in self.factors_]
        out = []
        for t, f in enumerate(self.factors_):
            mu = self.biases_["mean"] if self.biases_ is not None else 0.0
            aug = layout.template(t, f.shape[0], mu)
            emb = [f] + [self.interaction_factors_[j][pair.index(t)]
                         for j, pair in enumerate(layout.pairs) if t in pair]
            aug[:, layout.emb[t]] = np.hstack(emb)
            if self.biases_ is not None:
                aug[:, layout.bias[t]] = self.biases_["modes"][t]
            out.append(aug)
        return out

    def _fold_in(self, X):
        """Augmented mode-0 factor of new items (least squares, other factors frozen)."""
        check_is_fitted(self)
        mm, tensor, _ = _split_input(X)
        if len(mm.views) != self._n_views:
            raise ValueError(
                f"X has {len(mm.views)} view(s) {mm.names} but the model was fitted on "
                f"{self._n_views}."
            )
        idx, vals, shape, kind = _as_coordinates(tensor, mm.names[0], self.missing)
        if tuple(shape[1:]) != tuple(self.shape_[1:]):
            raise ValueError(
                f"X has {shape[1]} features, but HyperLearn is expecting {self.shape_[1]} "
                f"features as input: view {mm.names[0]!r} has shape {tuple(shape)} and the "
                f"model was fitted on a tensor of shape {self.shape_}, so expected "
                f"(n_samples, {', '.join(map(str, self.shape_[1:]))})."
            )
        dtype = _DTYPES[self.dtype]
        dev = self.devices_[0]
        aug = self._augmented()
        layout = self._layout()
        n = shape[0]
        free = layout.free(0)
        facs = [torch.as_tensor(a, dtype=torch.float64, device=dev) for a in aug]
        mu = self.biases_["mean"] if self.biases_ is not None else 0.0
        facs[0] = torch.as_tensor(layout.template(0, n, mu), dtype=torch.float64, device=dev)
        fixed = [c for c in range(layout.width) if c not in free]
        fixed_vals = facs[0][0, fixed]  # the same on every row of mode 0
        data = TensorData(idx, vals, shape, kind, dev, torch.float64,
                          confidence=self.confidence)
        G, rhs = mode_normal_equations(0, facs, data, free, fixed_vals)
        G, rhs = _coupled_normal_equations(G, rhs, self._coupled_rows(mm, dev),
                                           self.n_components)
        eye = torch.eye(len(free), dtype=torch.float64, device=dev)
        ridge = self.alpha / (2 * self.lam)
        if G.ndim == 2:
            A = G + (ridge + 1e-10 * float(torch.diagonal(G).mean() + 1)) * eye
            sol = torch.linalg.solve(A, rhs.T).T
        else:
            Amat = G + max(ridge, 1e-8) * eye
            L, info = torch.linalg.cholesky_ex(Amat)
            if bool((info != 0).any()):
                sol = torch.linalg.lstsq(Amat, rhs[..., None]).solution[..., 0]
            else:
                sol = torch.cholesky_solve(rhs[..., None], L)[..., 0]
        facs[0][:, free] = sol
        return facs, data, dtype

    def _coupled_rows(self, mm, dev):
        """The new rows' matrices coupled to mode 0, each with its fitted ``V``."""
        out = []
        for name, V in getattr(self, "coupled_factors_", {}).items():
            if self.coupling[name] != 0:
                continue
            if name not in mm.names[1:]:
                raise ValueError(f"X has views {mm.names} but the model couples view "
                                 f"{name!r} to mode 0: give its rows for the new samples.")
            v = check_view(name, mm.views[mm.names.index(name)], allow_nan=False, max_ndim=2)
            if v.shape[1] != V.shape[0]:
                raise ValueError(f"View {name!r} has shape {tuple(v.shape)}; expected "
                                 f"(n_samples, {V.shape[0]}), as in the fit (it is coupled "
                                 "to mode 0).")
            Y = (to_torch_sparse(v.data, dev, torch.float64) if v.kind == "sparse"
                 else torch.as_tensor(as_numpy(v.data), dtype=torch.float64, device=dev))
            out.append({"Y": Y, "V": torch.as_tensor(V, dtype=torch.float64, device=dev)})
        return out

    def transform(self, X):
        """Embed new mode-0 items: their factor folded in from their entries.

        Parameters
        ----------
        X : ndarray, torch.Tensor, SciPy sparse matrix, SparseTensor or MultiModal
            The entries of the new items (shape ``(n_samples, N_2, ..., N_K)``).

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_components)
            In the model's ``dtype``.
        """
        facs, _, dtype = self._fold_in(X)
        emb = facs[0][:, self._layout().emb[0]]
        return as_numpy(emb).astype(dtype_np(dtype))

    def score(self, X, y=None):
        """Negative mean squared reconstruction error of ``X`` after folding it in.

        Parameters
        ----------
        X : ndarray, torch.Tensor, SciPy sparse matrix, SparseTensor or MultiModal
            Entries of mode-0 items (new or seen).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            Minus the mean squared error over the entries the loss runs over (every
            entry, or the observed ones), higher is better.
        """
        facs, data, _ = self._fold_in(X)
        with torch.no_grad():
            return -float(data_loss(facs, data)) / max(data.n_entries, 1)

    def predict_entries(self, coords):
        """Predicted values of the tensor at the given coordinates.

        Parameters
        ----------
        coords : array-like of int, shape (n_entries, K)
            Indices into the fitted tensor (mode 0 = the training samples).

        Returns
        -------
        values : ndarray of float64, shape (n_entries,)
            ``mu + sum_t b_t[i_t] + sum_r prod_t A_t[i_t, r]`` at each coordinate.
        """
        check_is_fitted(self)
        coords = np.asarray(coords)
        K = len(self.shape_)
        if coords.ndim != 2 or coords.shape[1] != K or not (
            np.issubdtype(coords.dtype, np.integer) or coords.size == 0
        ):
            raise ValueError(
                f"coords must be an integer array of shape (n_entries, {K}); got shape "
                f"{coords.shape} and dtype {coords.dtype}."
            )
        if coords.size and ((coords < 0).any() or (coords >= np.asarray(self.shape_)).any()):
            raise ValueError(f"coords out of range for the fitted tensor of shape "
                             f"{self.shape_}.")
        facs = [torch.as_tensor(a) for a in self._augmented()]
        with torch.no_grad():
            return cp_entries(torch.as_tensor(coords.astype(np.int64)), facs).numpy()

    def to_cptensor(self):
        """The fitted model as a tensorly ``CPTensor``.

        Returns
        -------
        cp : tensorly.cp_tensor.CPTensor
            ``(weights, factors)`` with unit weights: the K-way factors, then the
            pairwise and intercept columns (see :class:`HyperLearn`'s ``pairwise_components``
            and ``fit_intercept``), whose CP reconstruction is the model itself. Without
            them, the factors are ``factors_``. Use it with tensorly's functions
            (``tensorly.cp_to_tensor``, ``tensorly.cp_normalize``, ...) or as ``init``.
        """
        check_is_fitted(self)
        from tensorly.cp_tensor import CPTensor

        facs = self._augmented()
        return CPTensor((np.ones(facs[0].shape[1]), facs))

    def reconstruct(self, X, max_entries=10**8):
        """The rows of ``X`` as the model approximates them, after folding ``X`` in.

        Parameters
        ----------
        X : ndarray, torch.Tensor, SciPy sparse matrix, SparseTensor or MultiModal
            Entries of mode-0 items (new or seen), as for :meth:`transform`.
        max_entries : int, default=10**8
            Refuse a result with more entries (it would not fit in memory).

        Returns
        -------
        tensor : ndarray of float64, shape ``(n_samples, N_2, ..., N_K)``
            The model's value at every entry of those items (tensorly's
            ``cp_to_tensor`` of the folded-in model). For the fitted tensor itself,
            ``tensorly.cp_to_tensor(model.to_cptensor())``.
        """
        facs, _, _ = self._fold_in(X)
        shape = (facs[0].shape[0],) + tuple(self.shape_[1:])
        n = int(np.prod(shape, dtype=np.float64))
        if n > max_entries:
            raise ValueError(f"The reconstruction of shape {shape} has {n} entries, more "
                             f"than max_entries={max_entries}; use predict_entries for the "
                             "entries you need.")
        import tensorly as tl

        facs = [as_numpy(f).astype(np.float64) for f in facs]
        return np.asarray(tl.to_numpy(tl.cp_to_tensor((np.ones(facs[0].shape[1]), facs))))

    def inverse_transform(self, X):
        """The tensor rows that embeddings stand for: ``(n, N_2, ..., N_K)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_out)
            Embeddings of mode-0 items, as :meth:`transform` returns them.

        Returns
        -------
        rows : ndarray of float64, shape ``(n_samples, N_2, ..., N_K)``
            The model's values for those items. With ``fit_intercept``, the items' own
            mode-0 bias is not part of the embedding and counts as 0.
        """
        check_is_fitted(self)
        E = np.asarray(X, dtype=np.float64)
        layout = self._layout()
        if E.ndim != 2 or E.shape[1] != len(layout.emb[0]):
            raise ValueError(f"X has shape {E.shape}; expected (n_samples, "
                             f"{len(layout.emb[0])}), embeddings as transform returns them.")
        mu = self.biases_["mean"] if self.biases_ is not None else 0.0
        A0 = layout.template(0, E.shape[0], mu)
        A0[:, layout.emb[0]] = E
        import tensorly as tl

        facs = [A0] + self._augmented()[1:]
        return np.asarray(tl.to_numpy(tl.cp_to_tensor((np.ones(A0.shape[1]), facs))))


#: private attributes a fit sets, kept with the fitted ones when ``n_init`` picks a fit
_FITTED_PRIVATE = ("_kind", "_n_views", "_n_features_out", "_failure")


def _csr(L):
    """A torch sparse COO matrix as CSR (no autograd needed: the ALS solver)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return L.to_sparse_csr()


def _leading_singular(M, k, rng):
    """The ``k`` leading left singular vectors and values of the sparse ``M``: PROPACK for
    a small matrix (10x faster than ARPACK on MovieLens-100K, the same vectors; its work
    arrays grow with the larger side), ARPACK otherwise or if PROPACK fails."""
    from scipy.sparse.linalg import svds

    if max(M.shape) <= 1 << 16:
        try:
            U, s, _ = svds(M, k=k, solver="propack", random_state=rng)
            return U, s
        except Exception:  # noqa: BLE001 - an older SciPy without PROPACK, or its failure
            pass
    U, s, _ = svds(M, k=k, v0=rng.uniform(-1, 1, min(M.shape)))
    return U, s


def _rescaled(bases, idx, vals, R):
    """The K-way columns of ``bases`` times ``c^(1/K)``, ``c`` the scalar minimising
    ``||X - c [[A]]||^2`` (``<X, [[A]]> / ||[[A]]||^2``): the singular vectors scaled by
    ``sigma^(1/K)`` in every mode can start above ``||X||^2``."""
    K = len(bases)
    out = [b.copy() for b in bases]
    A = [b[:, :R] for b in out]  # views: the sign flip and the scaling write into out
    # each mode's singular vectors have their own sign: flip mode 0's column of every
    # component that predicts the stored entries with the wrong sign
    per = (vals[:, None] * np.prod([a[idx[:, t]] for t, a in enumerate(A)], 0)).sum(0)
    A[0][:, per < 0] *= -1
    inner = float(np.abs(per).sum())
    norm2 = float(np.prod([a.T @ a for a in A], 0).sum())
    if inner > 0 and norm2 > 0:
        for a in A:
            a *= (inner / norm2) ** (1.0 / K)
    return out


def _rank_one_gain(idx, vals, shape, n_iter=10):
    """``sigma^2``: how much the best rank-one model (higher-order power iterations from
    the mode marginals) lowers ``||X||^2``, a cheap reference for an Adam fit's data term."""
    K = len(shape)
    vecs = [np.bincount(idx[:, t], weights=np.abs(vals), minlength=shape[t])
            for t in range(K)]
    sigma = 0.0
    for _ in range(n_iter):
        for t in range(K):
            w = vals * np.prod([vecs[s][idx[:, s]] for s in range(K) if s != t], 0)
            u = np.bincount(idx[:, t], weights=w, minlength=shape[t])
            norm = np.linalg.norm(u)
            if norm == 0:
                return 0.0
            vecs[t] = u / norm
        sigma = float((vals * np.prod([v[idx[:, s]] for s, v in enumerate(vecs)], 0)).sum())
    return sigma**2


def _outside_stacklevel():
    """The ``stacklevel`` of the caller's first frame outside mmfactor (the user's call)."""
    import os
    import sys

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def dtype_np(dtype):
    return np.float32 if dtype == torch.float32 else np.float64

