"""The row solves of CMF's alternating least squares without per-row Gram matrices.

Every row ``i`` of an entity type's factor solves ``(sum_j w_ij z_j z_j' + S) theta_i = b_i``
(``z_j`` the other side's design rows over the row's stored entries, ``S`` the part shared
by every row: the ridge, the Gram of a complete relation). Forming the ``D x D`` Gram of
every row costs ``nnz D^2`` and factorising them ``n D^3 / 3``; at ``D = 50`` and 10^7
ratings that is most of a sweep. Conjugate gradient needs only products of the Gram with a
vector, ``sum_j w_ij z_j (z_j' p_i)``: for all rows at once a sampled dense product at the
stored entries (SDDMM) followed by a sparse-dense product (SpMM), ``2 nnz D`` each, with
nothing of size ``nnz x D`` ever formed. Warm-started from the previous sweep's factor, a
few steps per sweep suffice (cmfrec's ``use_cg``, after Takacs, Pilaszy & Tikk 2011).
"""

from __future__ import annotations

import torch

from .._sparse import _csr

__all__ = ["RowGram", "cg_solve", "sampled_dots"]


def sampled_dots(crow, idx, P, Z, like):
    """``(P Z')[i, j]`` at the stored entries of the CSR pattern ``(crow, idx)``, as a vector
    in the pattern's order, computed in ``P``'s dtype. ``like``: any finite vector of the
    pattern's length and ``P``'s dtype (the sampled product scales it by 0)."""
    size = (P.shape[0], Z.shape[0])
    # written into a CSR that shares the pattern's index arrays: without ``out`` torch
    # copies the nnz column indices on every call (~15% of the call at 10^7 entries)
    out = _csr(crow, idx, torch.empty_like(like), size)
    torch.sparse.sampled_addmm(_csr(crow, idx, like, size), P, Z.T, beta=0.0, out=out)
    return out.values()


class RowGram:
    """One relation's side of the row problems as operators, without any per-row Gram.

    Row ``i``'s Gram is ``G_i = sum_j w_ij z_j z_j'`` and its right-hand side
    ``b_i = sum_j t_ij z_j`` over its stored entries (``weight`` = ``w``, ``target`` = ``t``,
    in the pattern's order). ``G @ P`` gives every row's ``G_i p_i``;
    ``G.residual(X)`` every row's ``b_i - G_i x_i`` in one sampled product and one sparse
    product (``b`` itself is never formed).
    """

    def __init__(self, crow, idx, weight, target, Z):
        self.crow, self.idx, self.weight, self.target, self.Z = crow, idx, weight, target, Z
        self.shape = (len(crow) - 1, Z.shape[0])

    def _spmm(self, values):
        return torch.sparse.mm(_csr(self.crow, self.idx, values, self.shape), self.Z)

    def __matmul__(self, P):
        return self._spmm(sampled_dots(self.crow, self.idx, P, self.Z, self.weight)
                          * self.weight)

    def residual(self, X):
        return self._spmm(self.target - self.weight
                          * sampled_dots(self.crow, self.idx, X, self.Z, self.weight))


def cg_solve(matvec, r, x, steps):
    """``steps`` conjugate-gradient steps on every row's system at once, from ``x``.

    ``matvec(P)`` returns every row's ``A_i p_i`` (rows of ``P``); ``r`` (n x D) the
    residuals ``b_i - A_i x_i`` at the start (consumed). Each step minimises row ``i``'s
    quadratic ``x'A_i x / 2 - b_i'x`` over a growing Krylov space that contains the
    start, so the objective of every row
    never increases (ALS stays a descent method); a row whose residual is exactly zero
    stays where it is. Returns the new ``x`` (``x`` itself is not modified).
    """
    x = x.clone()
    p = r.clone()
    rs = (r * r).sum(1)
    for _ in range(steps):
        Ap = matvec(p)
        pAp = (p * Ap).sum(1)
        a = torch.where(pAp > 0, rs / torch.where(pAp > 0, pAp, 1), 0)[:, None]
        x += a * p
        r -= a * Ap
        rs_new = (r * r).sum(1)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, 1), 0)[:, None]
        p = r + beta * p
        rs = rs_new
    return x
