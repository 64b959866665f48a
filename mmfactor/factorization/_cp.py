"""Sparse CP (CANDECOMP/PARAFAC) kernels that never form the dense tensor.

For a K-order tensor ``X`` held as coordinates (``nnz`` hyperedges) and a CP model
``[[A_1, ..., A_K]]`` with factors ``A_t`` of shape ``(N_t, R)``:

* ``<X, [[A]]> = sum_e x_e sum_r prod_t A_t[i_t(e), r]`` runs over the stored entries;
* ``||[[A]]||^2 = sum(G_1 * G_2 * ... * G_K)``, ``G_t = A_t^T A_t`` (R x R Gram matrices);
* so ``||X - [[A]]||^2 = ||X||^2 - 2 <X, [[A]]> + ||[[A]]||^2`` costs ``O(nnz K R +
  sum_t N_t R^2)`` and the gradient with respect to ``A_t`` is
  ``2 (A_t H_t - MTTKRP_t(X))``, ``H_t`` the Hadamard product of the other Grams and
  ``MTTKRP_t(X) = X_(t) (A_K o ... o A_1)`` (skipping ``t``) computed entry by entry with
  a scatter-add: the Khatri-Rao product is never formed either.

When only some entries are observed (matrix or tensor completion) the loss runs over the
observed coordinates: the residual at each coordinate, then the same scatter-add MTTKRP
with the residuals as values. Both paths work in chunks of coordinates, so the extra
memory is ``O(chunk R)`` on top of the data and the factors.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "SparseTensor",
    "cp_norm_sq",
    "cp_entries",
    "mttkrp",
    "TensorData",
    "mode_loss_grad",
    "mode_normal_equations",
]

CHUNK = 1 << 18  # coordinates per chunk in the scatter/gather kernels
_NO_COLUMNS = torch.zeros(0, dtype=torch.int64)  # no fixed column
DENSE_UNFOLDING = 1 << 22  # an unfolding with at most this many entries, a quarter of
# them stored, is held dense (tensorly's small data sets): a matmul beats the sparse one


class SparseTensor:
    """A K-order sparse tensor in coordinate (COO) form: the hyperedges of a hypergraph.

    Rows (mode 0) are the samples: ``len(T)`` is ``shape[0]`` and ``T[rows]`` (a slice,
    a boolean mask or an index array) returns the sub-tensor of those mode-0 items, so a
    ``SparseTensor`` works as a view of a :class:`~mmfactor.MultiModal` under
    scikit-learn's splitters. Duplicate coordinates are summed; coordinates are kept
    sorted by mode 0 so that row selection is cheap.

    Parameters
    ----------
    indices : array-like of int, shape (nnz, K)
        Coordinates of the stored entries (K >= 2).
    values : array-like of float, shape (nnz,), default=None
        Their values (default: ones, an unweighted hypergraph).
    shape : tuple of int, default=None
        Size of each mode (default: one more than the largest index of each mode).

    Attributes
    ----------
    indices : ndarray of int64, shape (nnz, K)
    values : ndarray of float64, shape (nnz,)
    shape : tuple of int
    nnz, ndim : int

    Examples
    --------
    >>> from mmfactor import SparseTensor
    >>> T = SparseTensor([[0, 1, 2], [1, 0, 0]], [1.0, 2.0], shape=(2, 2, 3))
    >>> T.nnz, T.shape, float(T.to_dense()[1, 0, 0])
    (2, (2, 2, 3), 2.0)
    """

    def __init__(self, indices, values=None, shape=None):
        idx = np.asarray(indices)
        if idx.ndim != 2 or idx.shape[1] < 2:
            raise ValueError(
                f"SparseTensor indices must have shape (nnz, K) with K >= 2; got shape "
                f"{idx.shape}."
            )
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            if not np.all(np.equal(np.mod(idx, 1), 0)):
                raise TypeError(f"SparseTensor indices must be integers; got dtype {idx.dtype}.")
        if idx.size and np.issubdtype(idx.dtype, np.unsignedinteger) and idx.max() > np.iinfo(
                np.int64).max:
            raise ValueError(
                f"SparseTensor index {int(idx.max())} overflows int64: it is out of range for "
                "any tensor mmfactor can hold."
            )
        idx = idx.astype(np.int64, copy=True)
        nnz, K = idx.shape
        vals = np.ones(nnz) if values is None else np.asarray(values, dtype=np.float64).copy()
        if vals.shape != (nnz,):
            raise ValueError(
                f"SparseTensor values have shape {vals.shape}; expected ({nnz},), one per "
                "coordinate."
            )
        if not np.isfinite(vals).all():
            raise ValueError("SparseTensor values have NaN or infinite entries.")
        if (idx < 0).any():
            raise ValueError("SparseTensor indices must be >= 0.")
        if shape is None:
            shape = tuple(int(m) + 1 for m in idx.max(0)) if nnz else None
            if shape is None:
                raise ValueError("SparseTensor with no entries needs an explicit shape.")
        shape = tuple(int(s) for s in shape)
        if len(shape) != K:
            raise ValueError(
                f"SparseTensor shape {shape} has {len(shape)} modes but indices have {K}."
            )
        if any(s < 1 for s in shape):
            raise ValueError(f"SparseTensor shape {shape} has an empty mode.")
        if nnz and (idx.max(0) >= np.asarray(shape)).any():
            bad = int(np.flatnonzero(idx.max(0) >= np.asarray(shape))[0])
            raise ValueError(
                f"SparseTensor index {int(idx[:, bad].max())} in mode {bad} is out of range "
                f"for shape {shape}."
            )
        # canonical form: sorted by (mode 0, mode 1, ...), duplicates summed
        order = np.lexsort(idx.T[::-1])
        idx, vals = idx[order], vals[order]
        if nnz > 1:
            new = np.ones(nnz, dtype=bool)
            new[1:] = (idx[1:] != idx[:-1]).any(1)
            if not new.all():
                groups = np.cumsum(new) - 1
                vals = np.bincount(groups, weights=vals)
                idx = idx[new]
        self.indices = idx
        self.values = vals
        self.shape = shape
        self._indptr = None

    @classmethod
    def _trusted(cls, indices, values, shape):
        out = object.__new__(cls)
        out.indices, out.values, out.shape, out._indptr = indices, values, tuple(shape), None
        return out

    @classmethod
    def from_dense(cls, array):
        """The non-zeros of a dense array (NaN entries are left out).

        Parameters
        ----------
        array : array-like of shape (N_1, ..., N_K)
            A dense tensor.

        Returns
        -------
        tensor : SparseTensor
            Its non-zero, non-NaN entries.
        """
        arr = np.asarray(array, dtype=np.float64)
        keep = (arr != 0) & ~np.isnan(arr)
        idx = np.argwhere(keep)
        return cls._trusted(idx.astype(np.int64), arr[keep], arr.shape)

    @classmethod
    def from_scipy(cls, matrix):
        """The stored entries of a SciPy sparse matrix (a 2-mode tensor).

        Parameters
        ----------
        matrix : scipy sparse matrix or array of shape (N_1, N_2)
            The matrix.

        Returns
        -------
        tensor : SparseTensor
            Its stored entries.
        """
        coo = sp.coo_matrix(matrix)
        return cls(np.column_stack([coo.row, coo.col]), coo.data, coo.shape)

    @staticmethod
    def concatenate(parts):
        """Stack sparse tensors along mode 0 (their other modes must agree).

        Parameters
        ----------
        parts : iterable of SparseTensor
            Tensors with the same sizes of modes 1 .. K-1.

        Returns
        -------
        tensor : SparseTensor
            Their items of mode 0 one after the other.
        """
        parts = list(parts)
        if not parts:
            raise ValueError("Nothing to concatenate.")
        rest = parts[0].shape[1:]
        for p in parts:
            if p.shape[1:] != rest:
                raise ValueError(
                    f"Cannot stack SparseTensors of shapes {parts[0].shape} and {p.shape}: "
                    "modes other than 0 differ."
                )
        offsets = np.cumsum([0] + [p.shape[0] for p in parts])
        idx = np.concatenate([p.indices + np.r_[o, np.zeros(len(rest), dtype=np.int64)]
                              for p, o in zip(parts, offsets, strict=False)])
        vals = np.concatenate([p.values for p in parts])
        return SparseTensor._trusted(idx, vals, (int(offsets[-1]),) + rest)

    @property
    def nnz(self):
        """Number of stored entries (hyperedges)."""
        return len(self.values)

    @property
    def ndim(self):
        """Order K of the tensor."""
        return len(self.shape)

    @property
    def dtype(self):
        """Data type of the values (float64)."""
        return self.values.dtype

    def __len__(self):
        return self.shape[0]

    def _rows_ptr(self):
        if self._indptr is None:
            counts = np.bincount(self.indices[:, 0], minlength=self.shape[0])
            self._indptr = np.concatenate([[0], np.cumsum(counts)])
        return self._indptr

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if len(key) == 2 and key[1] is Ellipsis:
                key = key[0]
            else:
                raise IndexError("SparseTensor supports mode-0 indexing only: T[rows].")
        n = self.shape[0]
        if isinstance(key, numbers.Integral):
            if not -n <= key < n:
                raise IndexError(f"Row {key} out of range for {n} rows.")
            rows = np.array([key % n])
        elif isinstance(key, slice):
            rows = np.arange(n)[key]
        else:
            rows = np.asarray(key)
            if rows.dtype == bool:
                if rows.shape != (n,):
                    raise IndexError(f"Boolean mask of shape {rows.shape} does not match {n} rows.")
                rows = np.flatnonzero(rows)
            elif rows.size == 0:
                rows = rows.astype(np.int64)
            elif not np.issubdtype(rows.dtype, np.integer):
                raise IndexError(f"Row indices must be integers or booleans; got {rows.dtype}.")
            if rows.size and (rows.max() >= n or rows.min() < -n):
                raise IndexError(f"Row index out of range for {n} rows.")
            rows = rows % n
        ptr = self._rows_ptr()
        starts, stops = ptr[rows], ptr[rows + 1]
        lengths = stops - starts
        take = (np.repeat(starts - np.cumsum(np.r_[0, lengths[:-1]]), lengths)
                + np.arange(lengths.sum()))
        idx = self.indices[take].copy()
        idx[:, 0] = np.repeat(np.arange(len(rows)), lengths)
        return SparseTensor._trusted(idx, self.values[take].copy(), (len(rows),) + self.shape[1:])

    def to_dense(self):
        """The dense array (only for small tensors: it has ``prod(shape)`` entries).

        Returns
        -------
        array : ndarray of shape ``shape``
            Zeros where nothing is stored.
        """
        out = np.zeros(self.shape)
        np.add.at(out, tuple(self.indices.T), self.values)
        return out

    def __repr__(self):
        return f"SparseTensor(shape={self.shape}, nnz={self.nnz})"


# --------------------------------------------------------------------------------------
# Kernels on torch tensors (CPU or CUDA). ``indices`` is an int64 tensor (nnz, K).
# --------------------------------------------------------------------------------------


def _gather_prod(indices, factors, skip, sl, work=None):
    """Row products ``prod_{s != skip} A_s[i_s]`` for the coordinates in slice ``sl``.

    ``work`` (a dict kept by the caller) holds two buffers reused from call to call: a
    fresh large temporary per gather costs its page faults (2-4x slower on the CPU); the
    result then lives in a buffer that the next call with the same ``work`` overwrites.
    """
    out = None
    for s, A in enumerate(factors):
        if s == skip:
            continue
        idx = indices[sl, s]
        if A.requires_grad or work is None:
            rows = A.index_select(0, idx)  # much faster than A[idx] on the CPU
            out = rows if out is None else out * rows
            continue
        buf = _buffer(work, "out" if out is None else "rows", (len(idx), A.shape[1]), A)
        torch.index_select(A, 0, idx, out=buf)
        out = buf if out is None else out.mul_(buf)
    return out


def _buffer(work, name, shape, like):
    """A tensor of ``shape`` (``like``'s dtype and device) kept in ``work`` for reuse."""
    key = (name, like.dtype, like.device)
    buf = work.get(key)
    if buf is None or buf.numel() < shape[0] * shape[1]:
        buf = work[key] = like.new_empty(shape[0] * shape[1])
    return buf[: shape[0] * shape[1]].view(shape)


def cp_norm_sq(factors):
    """``||[[A_1, ..., A_K]]||_F^2`` from the R x R Gram matrices (no dense tensor)."""
    H = None
    for A in factors:
        G = A.T @ A
        H = G if H is None else H * G
    return H.sum()


def cp_entries(indices, factors, chunk=CHUNK):
    """Values of the CP model at the coordinates ``indices`` (nnz, K)."""
    out = []
    for s in range(0, indices.shape[0], chunk):
        out.append(_gather_prod(indices, factors, None, slice(s, s + chunk)).sum(1))
    if not out:
        return factors[0].new_zeros(0)
    return torch.cat(out)


def mttkrp(indices, values, factors, mode, chunk=CHUNK):
    """Sparse MTTKRP: ``X_(mode) (Khatri-Rao of the other factors)`` in ``O(nnz K R)``.

    Parameters
    ----------
    indices : torch.Tensor of int64, shape (nnz, K)
    values : torch.Tensor, shape (nnz,)
    factors : list of torch.Tensor, each (N_t, R)
        The factor of ``mode`` is only used for its shape.
    mode : int

    Returns
    -------
    torch.Tensor of shape (N_mode, R)
    """
    A = factors[mode]
    out = A.new_zeros(A.shape)
    for s in range(0, indices.shape[0], chunk):
        sl = slice(s, s + chunk)
        prod = _gather_prod(indices, factors, mode, sl)
        out.index_add_(0, indices[sl, mode], prod * values[sl, None])
    return out


class TensorData:
    """The data term of one mode's loss, on one device.

    ``kind="full"``: every entry of the tensor counts and the unstored ones are zeros
    (``||X - [[A]]||^2`` by the Gram identity); ``kind="observed"``: only the stored
    coordinates count (``sum_e (x_e - [[A]]_e)^2``). ``confidence=c > 0`` (full only)
    weighs the stored entries ``1 + c`` against 1 for the unstored zeros (the
    implicit-feedback weighting of Hu, Koren and Volinsky 2008): the data term becomes
    ``||X - [[A]]||^2 + c sum_e (x_e - [[A]]_e)^2``, the Gram identity plus the same sum
    over the stored entries, so the cost stays ``O(nnz K R + sum_t N_t R^2)``.
    """

    def __init__(self, indices, values, shape, kind, device, dtype, *, sort_mode=None,
                 chunk=CHUNK, confidence=0.0):
        indices = np.asarray(indices, dtype=np.int64)
        values = np.asarray(values)
        self.sort_mode = sort_mode
        self.unfolding = None
        self.work = {}  # buffers of the gathers (see _gather_prod)
        if sort_mode is not None:
            # sorted by the mode whose gradient this copy serves: the scatter-add of the
            # MTTKRP becomes a CSR product, chunk by chunk (no atomics, cache friendly)
            cols, n_cols = _column_tuples(indices, shape, sort_mode)
            if cols is not None and n_cols <= chunk:  # see _Unfolding
                order = np.lexsort((cols, indices[:, sort_mode]))
                cols = cols[order]
            else:
                order, cols = np.argsort(indices[:, sort_mode], kind="stable"), None
            indices, values = indices[order], values[order]
        self.indices = _by_column(indices, device)
        self.values = torch.as_tensor(values).to(device=device, dtype=dtype)
        # the reported loss is computed against the exact values (float64)
        self.values64 = (self.values if dtype == torch.float64 else
                         torch.as_tensor(values).to(device=device, dtype=torch.float64))
        self.shape = tuple(shape)
        self.kind = kind
        self.confidence = float(confidence) if kind == "full" else 0.0
        self.chunk = chunk
        self.sum_sq = float(np.sum(np.square(values.astype(np.float64))))
        self.nnz = int(self.indices.shape[0])
        self._crows = None
        if sort_mode is not None:
            n = self.shape[sort_mode]
            rows = indices[:, sort_mode]
            self._crows = []
            for s in range(0, self.nnz, chunk):
                r = rows[s : s + chunk]
                crow = np.searchsorted(r, np.arange(n + 1), side="left")
                self._crows.append(torch.as_tensor(crow.astype(np.int64)).to(device))
            self._cols = torch.arange(min(chunk, self.nnz), device=device)
            if cols is not None:
                self.unfolding = _Unfolding(indices, self.values, self.values64, cols,
                                            self.shape, sort_mode, kind)

    def scatter(self, k, weights):
        """``S_k @ weights``: rows of chunk ``k`` summed into their mode-``sort_mode`` item."""
        crow = self._crows[k]
        n = weights.shape[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            S = torch.sparse_csr_tensor(crow, self._cols[:n], weights.new_ones(n),
                                        size=(len(crow) - 1, n), check_invariants=False)
        return torch.sparse.mm(S, weights)

    @property
    def n_entries(self):
        """Entries the loss runs over."""
        return float(np.prod(self.shape, dtype=np.float64)) if self.kind == "full" else self.nnz


def _by_column(indices, device):
    """``(nnz, K)`` int64 coordinates held column by column (a transposed view), so that
    each mode's column is contiguous: ``index_select`` with a strided index is 2-7x
    slower on the CPU."""
    return torch.as_tensor(np.ascontiguousarray(indices.T)).to(device).t()


def _column_tuples(indices, shape, mode):
    """Each entry's column of the mode-``mode`` unfolding (numbered over the distinct
    tuples of the other modes' indices present) and their number, or ``(None, 0)`` when
    the other modes span more than :data:`CHUNK` tuples (a sparse hypergraph, whose
    tuples hardly repeat: the chunked kernels serve it, without the cost of finding
    them)."""
    others = [s for s in range(len(shape)) if s != mode]
    sizes = [shape[s] for s in others]
    span = float(np.prod(np.asarray(sizes, dtype=np.float64)))
    if len(indices) == 0 or span > CHUNK:
        return None, 0
    key = np.ravel_multi_index(tuple(indices[:, s] for s in others), sizes)
    uniq, cols = np.unique(key, return_inverse=True)
    return cols.reshape(-1), len(uniq)


class _Unfolding:
    """Mode ``t``'s unfolding ``X_(t)`` over the ``U`` distinct tuples of the other modes'
    indices that hold entries, for tensors where ``U`` is small (at most one chunk).

    The Khatri-Rao rows are then formed once per tuple instead of once per entry, and the
    MTTKRP ``X_(t) KR``, the per-row Grams ``W_(t) (KR * KR)`` and the right-hand sides are
    matrix products: dense ones when the unfolding has at most :data:`DENSE_UNFOLDING`
    entries and a quarter of them are stored (tensorly's data sets), CSR ones otherwise
    (a rating matrix: ``U`` = the other mode's items). The dense matrix is held transposed
    (``U x N_t``): torch's CPU product ``(R x U) @ (U x N_t)`` is several times faster
    than ``(N_t x U) @ (U x R)`` for the skinny shapes of CP.
    """

    def __init__(self, indices, values, values64, cols, shape, mode, kind):
        device = values.device
        n, U = shape[mode], int(cols.max()) + 1
        first = np.empty(U, dtype=np.int64)
        first[cols] = np.arange(len(cols))
        self.tuples = _by_column(indices[first], device)  # column `mode` unused
        self.observed = kind == "observed"
        rows = indices[:, mode]
        self.dense = n * U <= DENSE_UNFOLDING and 4 * len(cols) >= n * U
        if self.dense:
            def dense(v):
                out = v.new_zeros(U, n)
                out[torch.as_tensor(cols, device=device), torch.as_tensor(rows, device=device)] = v
                return out

            self.XT, self.XT64 = dense(values), dense(values64)
            if self.observed:
                self.WT = dense(values.new_ones(len(cols)))
                self.WT64 = dense(values64.new_ones(len(cols)))
        else:
            self.crow = torch.as_tensor(np.searchsorted(rows, np.arange(n + 1))).to(device)
            self.col = torch.as_tensor(cols).to(device)
            self.rows = torch.as_tensor(rows).to(device)
            self.n, self.U = n, U
        self.values, self.values64 = values, values64
        self.work = {}

    def _csr(self, vals):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(self.crow, self.col, vals, size=(self.n, self.U),
                                           check_invariants=False)

    def times(self, D, values=None):
        """``X_(t) @ D`` (``D``: ``U x F``) with the stored values, or ``values`` instead:
        a ``U x N_t`` matrix (dense) or one value per stored entry (CSR)."""
        if self.dense:
            return (D.T @ (self.XT if values is None else values)).T
        return torch.sparse.mm(self._csr(self.values if values is None else values), D)

    def ones(self, D):
        """``W_(t) @ D``, ``W`` the pattern of stored entries."""
        return self.times(D, self.WT if self.dense else self.values.new_ones(len(self.col)))

    def khatri_rao(self, factors, mode):
        """The Khatri-Rao rows of the ``U`` tuples (``U x R``; a reused buffer)."""
        return _gather_prod(self.tuples, factors, mode, slice(None), self.work)

    def loss(self, factors, mode, sum_sq):
        """The data term in float64 (``factors`` float64): the Gram identity (every entry
        counts) or the residuals of the stored entries."""
        KR = self.khatri_rao(factors, mode)
        A = factors[mode]
        if not self.observed:
            inner = float((self.times(KR, self.XT64 if self.dense else self.values64)
                           * A).sum())
            return max(sum_sq - 2 * inner + float(cp_norm_sq(factors)), 0.0)
        if self.dense:
            return float(((self.XT64 - self.WT64 * (KR @ A.T)) ** 2).sum())
        pred = (A.index_select(0, self.rows) * KR.index_select(0, self.col)).sum(1)
        return float(((self.values64 - pred) ** 2).sum())


def mode_loss_grad(mode, factors, data, chunk=CHUNK):
    """The data term ``||X - [[A]]||^2`` (over ``data``'s entries) and its gradient in ``A_mode``.

    Parameters
    ----------
    mode : int
    factors : list of torch.Tensor, each (N_t, R), on ``data``'s device
    data : TensorData

    Returns
    -------
    loss : torch.Tensor (0-d, float64)
        Kept on the device (no synchronisation), so modes on several GPUs overlap.
    grad : torch.Tensor of shape (N_mode, R)
        ``2 (A H - MTTKRP(X))`` (full) or ``-2 MTTKRP(residual)`` (observed).
    """
    A = factors[mode]
    idx, vals = data.indices, data.values
    fast = data.sort_mode == mode
    chunk = data.chunk if fast else chunk

    def scatter_add(out, k, sl, weights):
        if fast:
            return out + data.scatter(k, weights)
        return out.index_add_(0, idx[sl, mode], weights)

    if data.kind == "full":
        M = A.new_zeros(A.shape)
        for k, s in enumerate(range(0, idx.shape[0], chunk)):
            sl = slice(s, s + chunk)
            M = scatter_add(M, k, sl, _gather_prod(idx, factors, mode, sl) * vals[sl, None])
        H = None
        for s, B in enumerate(factors):
            if s != mode:
                G = B.T @ B
                H = G if H is None else H * G
        AH = A @ H
        inner = (M * A).sum().double()
        norm = (AH * A).sum().double()
        loss, grad = data.sum_sq - 2 * inner + norm, 2 * (AH - M)
        if data.confidence:
            obs_loss, obs_grad = _observed_loss_grad(mode, factors, data, chunk, scatter_add)
            loss, grad = loss + data.confidence * obs_loss, grad + data.confidence * obs_grad
        return loss, grad
    return _observed_loss_grad(mode, factors, data, chunk, scatter_add)


def _observed_loss_grad(mode, factors, data, chunk, scatter_add):
    """``sum_e (x_e - [[A]]_e)^2`` over the stored entries and its gradient in ``A_mode``."""
    A = factors[mode]
    idx, vals = data.indices, data.values
    grad = A.new_zeros(A.shape)
    loss = A.new_zeros((), dtype=torch.float64)
    for k, s in enumerate(range(0, idx.shape[0], chunk)):
        sl = slice(s, s + chunk)
        prod = _gather_prod(idx, factors, mode, sl)
        res = vals[sl] - (A.index_select(0, idx[sl, mode]) * prod).sum(1)
        loss = loss + (res.double() ** 2).sum()
        grad = scatter_add(grad, k, sl, prod * (-2 * res[:, None]))
    return loss, grad


def data_loss(factors, data, chunk=CHUNK):
    """The data term ``||X - [[A]]||^2`` alone (over ``data``'s entries), in float64.

    The stored-entry sums run in float64 and ``||[[A]]||^2`` comes from float64 Gram
    matrices, so the reported loss agrees with a direct float64 computation on the same
    factors even when they are float32 (``||X||^2 - 2 <X, [[A]]> + ||[[A]]||^2`` cancels
    to a small number once a fit is good); it is clamped at 0.
    """
    if data.unfolding is not None and not data.confidence:
        return data.unfolding.loss([f.double() for f in factors], data.sort_mode,
                                   data.sum_sq)
    idx, vals = data.indices, data.values64
    if data.kind == "full":
        f64 = [f.double() for f in factors]
        inner = 0.0
        for s in range(0, idx.shape[0], chunk):
            sl = slice(s, s + chunk)
            inner += float((_gather_prod(idx, f64, None, sl, data.work).sum(1)
                            * vals[sl]).sum())
        loss = max(data.sum_sq - 2 * inner + float(cp_norm_sq(f64)), 0.0)
        if data.confidence:
            loss += data.confidence * _observed_loss(f64, data, chunk)
        return loss
    return _observed_loss([f.double() for f in factors], data, chunk)


def _observed_loss(factors, data, chunk):
    idx, vals = data.indices, data.values64
    loss = 0.0
    for s in range(0, idx.shape[0], chunk):
        sl = slice(s, s + chunk)
        res = vals[sl] - _gather_prod(idx, factors, None, sl, data.work).sum(1)
        loss += float((res.double() ** 2).sum())
    return loss


def mode_normal_equations(mode, factors, data, free, fixed_values, chunk=1 << 16,
                          implicit=False, with_loss=False):
    """Normal equations of the least-squares data term in the ``free`` columns of ``A_mode``.

    With the other factors fixed, ``||X - [[A]]||^2`` is quadratic in ``A_mode``; the
    columns of ``A_mode`` split into ``free`` ones and fixed ones whose value is the same
    on every row (``fixed_values``: the intercept columns). Returns ``(G, b)`` such that
    the data term is ``sum_i a_i^T G_i a_i - 2 b_i^T a_i + const`` over the free part
    ``a_i`` of each row: ``G`` of shape ``(F, F)`` (shared by every row, ``kind="full"``)
    or ``(N_mode, F, F)`` (``kind="observed"``), ``b`` of shape ``(N_mode, F)``. With
    ``data.confidence`` (``kind="full"``) ``G`` is per row, or, with ``implicit=True``,
    the shared part plus ``(rows, P)``: the stored entries' rows and free Khatri-Rao
    rows, whose ``c sum_e p_e p_e^T`` a solver applies entry by entry (a third output).

    ``with_loss=True`` adds a last output: ``data_term(A)``, the data term at a new
    factor ``A`` of this mode (the whole augmented factor, fixed columns included), a
    float64 0-d tensor from the same products (``||X||^2 - 2 <M, A> + <A H, A>``, or
    ``sum_e y_e^2 - 2 <b, a> + sum_i a_i^T G_i a_i`` over the stored entries) without a
    pass over the entries; None with ``data.confidence``. Exact up to the rounding of
    ``M``, ``G`` and ``b`` in the working dtype.
    """
    A = factors[mode]
    R = A.shape[1]
    every = len(free) == R  # no fixed column: skip the column selections
    if every:
        free, fixed = torch.arange(R, device=A.device), _NO_COLUMNS.to(A.device)
    else:
        free = torch.as_tensor(free, device=A.device)
        fixed = torch.as_tensor([c for c in range(R) if c not in set(free.tolist())],
                                dtype=torch.int64, device=A.device)
    idx, vals = data.indices, data.values
    fast = data.sort_mode == mode
    chunk = data.chunk if fast else chunk
    unf = data.unfolding if fast and not data.confidence else None
    extra = ()
    if data.kind == "full":
        H = None
        for s, B in enumerate(factors):
            if s != mode:
                Gs = B.T @ B
                H = Gs if H is None else H * Gs
        if unf is not None:
            M = unf.times(unf.khatri_rao(factors, mode))
        else:
            M = A.new_zeros(A.shape)
            for k, s in enumerate(range(0, idx.shape[0], chunk)):
                sl = slice(s, s + chunk)
                w = _gather_prod(idx, factors, mode, sl, data.work).mul_(vals[sl, None])
                M = M.add_(data.scatter(k, w)) if fast else M.index_add_(0, idx[sl, mode], w)
        b = M if every else M[:, free]
        if len(fixed):
            b = b - (fixed_values[None, :] @ H[fixed][:, free])
        G = H if every else H[free][:, free]
        if data.confidence and implicit:  # the stored entries' part left as (rows, P)
            rows, P, b_obs = _stored_rows(mode, factors, data, free, fixed, fixed_values)
            out = (G, b + data.confidence * b_obs, (rows, P))
            return out + (None,) if with_loss else out
        if data.confidence:  # plus c times the stored entries' own normal equations
            G_obs, b_obs, _ = _observed_normal_equations(mode, factors, data, free, fixed,
                                                         fixed_values, chunk, fast)
            G, b = G[None] + data.confidence * G_obs, b + data.confidence * b_obs
            return (G, b, None) if with_loss else (G, b)
        if with_loss:
            M2, H64 = 2 * M.double(), H.double()

            def data_term(new):  # ||X||^2 - <A, 2 M - A H>
                new = new.double()
                return (data.sum_sq - (new * (M2 - new @ H64)).sum()).clamp_min(0)

            extra = (data_term,)
        return (G, b) + extra
    if unf is not None:
        G, b, sum_y2 = _unfolded_normal_equations(mode, factors, unf, free, fixed,
                                                  fixed_values)
    else:
        G, b, sum_y2 = _observed_normal_equations(mode, factors, data, free, fixed,
                                                  fixed_values, chunk, fast)
    if with_loss:
        G64, b64 = G.double(), b.double()

        def data_term(new):
            a = (new if every else new[:, free]).double()
            return (sum_y2 - 2 * (b64 * a).sum()
                    + (torch.bmm(G64, a[..., None])[..., 0] * a).sum()).clamp_min(0)

        extra = (data_term,)
    return (G, b) + extra


def _stored_rows(mode, factors, data, free, fixed, fixed_values):
    """``(rows, P, b)``: each stored entry's row in ``mode``, its free Khatri-Rao row
    ``p_e`` and ``b = sum_e p_e y_e`` (``y_e`` the value less the fixed columns' part)."""
    idx, vals = data.indices, data.values
    prod = _gather_prod(idx, factors, mode, slice(None))
    y = vals
    if len(fixed):
        y = y - prod[:, fixed] @ fixed_values
    P = prod[:, free]
    rows = idx[:, mode]
    b = P.new_zeros(factors[mode].shape[0], P.shape[1]).index_add_(0, rows, P * y[:, None])
    return rows, P, b


def _observed_normal_equations(mode, factors, data, free, fixed, fixed_values, chunk, fast):
    """``(G, b)`` of ``sum_e (x_e - [[A]]_e)^2`` over the stored entries, per row."""
    A = factors[mode]
    idx, vals = data.indices, data.values
    F = len(free)
    G = A.new_zeros(A.shape[0], F * F)
    b = A.new_zeros(A.shape[0], F)
    sum_y2 = A.new_zeros((), dtype=torch.float64)
    for k, s in enumerate(range(0, idx.shape[0], chunk)):
        sl = slice(s, s + chunk)
        prod = _gather_prod(idx, factors, mode, sl, data.work)
        y = vals[sl]
        if len(fixed):
            y = y - prod[:, fixed] @ fixed_values
        sum_y2 = sum_y2 + (y.double() ** 2).sum()
        pf = prod[:, free]
        outer = (pf[:, :, None] * pf[:, None, :]).reshape(-1, F * F)
        if fast and chunk == data.chunk:
            G = G + data.scatter(k, outer)
            b = b + data.scatter(k, pf * y[:, None])
        else:
            G.index_add_(0, idx[sl, mode], outer)
            b.index_add_(0, idx[sl, mode], pf * y[:, None])
    return G.reshape(-1, F, F), b, sum_y2


def _unfolded_normal_equations(mode, factors, unf, free, fixed, fixed_values):
    """:func:`_observed_normal_equations` by products with the unfolding (``U`` tuples)."""
    KR = unf.khatri_rao(factors, mode)
    Pf = KR if len(free) == KR.shape[1] else KR[:, free]
    F = Pf.shape[1]
    outer = (Pf[:, :, None] * Pf[:, None, :]).reshape(-1, F * F)
    c = KR[:, fixed] @ fixed_values if len(fixed) else None  # the fixed columns' part
    if unf.dense:
        Y = unf.XT if c is None else unf.XT - unf.WT * c[:, None]
    else:
        Y = unf.values if c is None else unf.values - c.index_select(0, unf.col)
    G = unf.ones(outer).reshape(-1, F, F)
    return G, unf.times(Pf, Y), (Y.double() ** 2).sum()
