"""Intra-modal graphs on :mod:`scipy.sparse`: k-NN graphs, normalised Laplacians, Chebyshev.

Conventions used by every graph-regularised model of mmfactor:

* an adjacency ``W`` is a square, symmetric, non-negative matrix (self-loops ignored);
* the **normalised Laplacian** is the positive semi-definite
  ``L = I - D^-1/2 W D^-1/2`` with ``D = diag(W 1)`` (isolated nodes get a zero row, so
  the smoothness penalty ``tr(A^T L A)`` never pulls them anywhere). The HyperLearn paper
  (eq. 5) calls ``D^-1/2 W D^-1/2`` "the Laplacian"; that matrix is not positive
  semi-definite and ``tr(A^T D^-1/2 W D^-1/2 A)`` would *reward* spreading neighbours
  apart when minimised, so mmfactor uses the real Laplacian;
* the Chebyshev basis runs on the rescaled ``L~ = 2 L / lambda_max - I`` whose spectrum
  lies in ``[-1, 1]``; ``T_0 X = X``, ``T_1 X = L~ X``, ``T_k X = 2 L~ T_{k-1} X - T_{k-2} X``.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "knn_graph",
    "check_adjacency",
    "normalized_laplacian",
    "rescaled_laplacian",
    "chebyshev_basis",
    "to_torch_sparse",
]


def knn_graph(features, n_neighbors=10, *, metric="euclidean", symmetric=True):
    """The binary k-nearest-neighbour graph of the rows of ``features``.

    Parameters
    ----------
    features : array-like of shape (n_nodes, n_features)
        One row per node (dense or SciPy sparse).
    n_neighbors : int, default=10
        Neighbours per node (the node itself excluded).
    metric : str, default="euclidean"
        Any metric of :class:`sklearn.neighbors.NearestNeighbors`.
    symmetric : bool, default=True
        Connect ``i`` and ``j`` when either is among the other's neighbours (``max(W,
        W^T)``), which the Laplacian needs.

    Returns
    -------
    adjacency : scipy.sparse.csr_matrix of shape (n_nodes, n_nodes)
        Binary (float64) adjacency without self-loops.

    Examples
    --------
    >>> import numpy as np
    >>> from mmfactor import knn_graph
    >>> W = knn_graph(np.arange(10.0).reshape(-1, 1), n_neighbors=2)
    >>> W.shape, bool((W != W.T).nnz == 0)
    ((10, 10), True)
    """
    from sklearn.neighbors import kneighbors_graph

    if not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be an integer >= 1; got {n_neighbors!r}.")
    feats = features if sp.issparse(features) else np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(
            f"features must be a 2-D array (n_nodes, n_features); got shape {feats.shape}."
        )
    n = feats.shape[0]
    if n_neighbors >= n:
        raise ValueError(
            f"n_neighbors={n_neighbors} must be smaller than the number of nodes ({n})."
        )
    if not sp.issparse(feats) and not np.isfinite(feats).all():
        raise ValueError(
            f"features of shape {feats.shape} have NaN or infinite values; a k-NN graph "
            "needs complete features (impute them first)."
        )
    W = kneighbors_graph(feats, n_neighbors, mode="connectivity", metric=metric,
                         include_self=False)
    W = sp.csr_matrix(W, dtype=np.float64)
    if symmetric:
        W = W.maximum(W.T).tocsr()
    W.sort_indices()
    return W


def check_adjacency(W, n_nodes=None, *, name="graph"):
    """Validate an adjacency matrix and return it as a float64 CSR without self-loops.

    Raises a :class:`ValueError` naming ``name`` when ``W`` is not square, does not have
    ``n_nodes`` rows, is not symmetric, or has negative or non-finite weights.
    """
    if isinstance(W, torch.Tensor):
        W = W.detach().cpu().to_dense().numpy()
    if not sp.issparse(W):
        W = np.asarray(W)
        if W.dtype == object or not (np.issubdtype(W.dtype, np.number)
                                     or W.dtype == bool):
            raise TypeError(f"{name} must be a numeric adjacency matrix; got dtype {W.dtype}.")
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"{name} must be a square adjacency matrix; got shape {W.shape}.")
    if n_nodes is not None and W.shape[0] != n_nodes:
        raise ValueError(
            f"{name} has shape {W.shape} but its mode has {n_nodes} items; expected "
            f"({n_nodes}, {n_nodes})."
        )
    W = sp.csr_matrix(W, dtype=np.float64)
    if not np.isfinite(W.data).all():
        raise ValueError(f"{name} of shape {W.shape} has NaN or infinite weights.")
    if (W.data < 0).any():
        raise ValueError(f"{name} of shape {W.shape} has negative weights; expected >= 0.")
    asym = abs(W - W.T)
    if asym.nnz and asym.max() > 1e-8 * max(abs(W).max(), 1.0):
        raise ValueError(
            f"{name} of shape {W.shape} is not symmetric; pass W.maximum(W.T) or "
            "(W + W.T) / 2 for an undirected graph."
        )
    W = W - sp.diags(W.diagonal())
    W.eliminate_zeros()
    W.sort_indices()
    return W


def normalized_laplacian(W):
    """The positive semi-definite normalised Laplacian ``I - D^-1/2 W D^-1/2``.

    Parameters
    ----------
    W : sparse or dense array of shape (n, n)
        Symmetric non-negative adjacency (self-loops are ignored).

    Returns
    -------
    L : scipy.sparse.csr_matrix of shape (n, n)
        Eigenvalues in ``[0, 2]``; an isolated node has a zero row and column.

    Examples
    --------
    >>> import numpy as np
    >>> from mmfactor import normalized_laplacian
    >>> L = normalized_laplacian(np.array([[0, 1], [1, 0]]))
    >>> L.toarray()
    array([[ 1., -1.],
           [-1.,  1.]])
    """
    W = check_adjacency(W)
    deg = np.asarray(W.sum(axis=1)).ravel()
    connected = deg > 0
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[connected] = 1.0 / np.sqrt(deg[connected])
    Dm = sp.diags(inv_sqrt)
    L = sp.diags(connected.astype(np.float64)) - Dm @ W @ Dm
    L = sp.csr_matrix(L)
    L.sort_indices()
    return L


def rescaled_laplacian(L, lmax=None):
    """``2 L / lambda_max - I``, the argument of the Chebyshev polynomials.

    Parameters
    ----------
    L : sparse matrix of shape (n, n)
        A normalised Laplacian (see :func:`normalized_laplacian`).
    lmax : float, default=None
        Its largest eigenvalue; computed with ARPACK when None (2.0, the bound for a
        normalised Laplacian, when ARPACK does not converge or the graph is tiny).

    Returns
    -------
    L_tilde : scipy.sparse.csr_matrix of shape (n, n)
        Spectrum within ``[-1, 1]``.
    """
    L = sp.csr_matrix(L, dtype=np.float64)
    n = L.shape[0]
    if lmax is None:
        lmax = 2.0
        if n > 2 and L.nnz:
            from scipy.sparse.linalg import ArpackNoConvergence, eigsh

            try:
                v0 = np.ones(n) / np.sqrt(n)  # a fixed start keeps the result repeatable
                lmax = float(eigsh(L, k=1, which="LA", return_eigenvectors=False,
                                   v0=v0, tol=1e-3)[0])
            except ArpackNoConvergence:
                lmax = 2.0
    if lmax <= 0:  # an empty graph: L = 0
        lmax = 2.0
    Lt = sp.csr_matrix((2.0 / lmax) * L - sp.identity(n, format="csr"))
    Lt.sort_indices()
    return Lt


def to_torch_sparse(M, device="cpu", dtype=torch.float32):
    """A SciPy sparse matrix as a torch sparse COO tensor (autograd-friendly in ``mm``)."""
    coo = sp.coo_matrix(M)
    idx = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
    vals = torch.as_tensor(coo.data, dtype=dtype)
    return torch.sparse_coo_tensor(idx, vals, coo.shape, check_invariants=False).coalesce().to(
        device
    )


def chebyshev_basis(L_tilde, X, order):
    """``[T_0(L~) X, ..., T_{order-1}(L~) X]`` by the Chebyshev recurrence.

    Parameters
    ----------
    L_tilde : torch sparse tensor or None
        The rescaled Laplacian (see :func:`rescaled_laplacian` and
        :func:`to_torch_sparse`); ``None`` (no graph) returns ``[X]``.
    X : torch.Tensor of shape (n, d)
        The signal (differentiable).
    order : int
        Number of terms (polynomial degrees ``0 .. order - 1``).

    Returns
    -------
    list of torch.Tensor
        Each of shape (n, d); cost ``order`` sparse products, ``O(order nnz(L) d)``.
    """
    out = [X]
    if L_tilde is None or order < 2:
        return out
    out.append(torch.sparse.mm(L_tilde, X))
    for _ in range(2, order):
        out.append(2 * torch.sparse.mm(L_tilde, out[-1]) - out[-2])
    return out
