"""Batched non-negative least squares: many small k x k problems solved at once in torch."""

from __future__ import annotations

import torch

__all__ = ["batched_nnls"]


def _solve_passive(A, b, passive):
    """``x`` with ``A_FF x_F = b_F`` and ``x = 0`` off the passive set ``F``, every row."""
    D = A.shape[-1]
    pp = passive[:, :, None] & passive[:, None, :]
    eye = torch.eye(D, dtype=A.dtype, device=A.device)
    M = torch.where(pp, A, torch.zeros((), dtype=A.dtype, device=A.device))
    M = M + eye * (~passive)[:, None, :].to(A.dtype)  # identity on the active set
    rhs = torch.where(passive, b, torch.zeros((), dtype=b.dtype, device=b.device))
    L, info = torch.linalg.cholesky_ex(M)
    if bool((info != 0).any()):
        # a singular passive block: the minimum-norm least-squares solution, by the
        # symmetric pseudo-inverse (lstsq's default CPU driver, gelsy, gave different
        # answers to the same singular system from one call to the next)
        return (torch.linalg.pinv(M, hermitian=True) @ rhs[..., None])[..., 0]
    return torch.cholesky_solve(rhs[..., None], L)[..., 0]


def batched_nnls(A, b, constrained=None, max_iter=None):
    """Minimise ``x' A x / 2 - b' x`` subject to ``x_j >= 0`` (j constrained), per row.

    Block principal pivoting (Kim & Park, SIAM J. Sci. Comput. 33(6), 2011) run on every
    row at once: each iteration solves the rows' unconstrained problems restricted to
    their current passive sets (one batched Cholesky), then exchanges the variables
    that break the KKT conditions (all of them while that lowers their number, else
    the largest index, which guarantees termination). The result satisfies the KKT
    conditions exactly up to round-off: it is the exact minimiser, not an iterate.

    Parameters
    ----------
    A : Tensor of shape (n, D, D) or (D, D)
        Symmetric positive (semi-)definite Gram matrices (one shared by every row when 2-D).
    b : Tensor of shape (n, D)
        Right-hand sides.
    constrained : Tensor of bool of shape (D,), optional
        Which coordinates must be non-negative (default: all); the others are free.
    max_iter : int, optional
        Cap on the pivoting iterations (default ``10 * D + 10``).

    Returns
    -------
    x : Tensor of shape (n, D)
    """
    n, D = b.shape
    if A.dim() == 2:
        A = A.expand(n, D, D)
    dev = b.device
    con = (torch.ones(D, dtype=torch.bool, device=dev) if constrained is None
           else constrained.to(dev))
    passive = (~con).expand(n, D).clone()  # free coordinates are always passive
    x = _solve_passive(A, b, passive) if bool(passive.any()) else torch.zeros_like(b)
    y = torch.einsum("nij,nj->ni", A, x) - b
    scale = torch.finfo(b.dtype).eps * 64 * (b.abs().amax(1, keepdim=True) + 1e-300)
    n_bad_best = torch.full((n,), D + 1, dtype=torch.int64, device=dev)
    chances = torch.full((n,), 3, dtype=torch.int64, device=dev)
    idx = torch.arange(D, device=dev)
    for _ in range(max_iter or 10 * D + 10):
        bad = con & ((passive & (x < 0)) | (~passive & (y < -scale)))
        n_bad = bad.sum(1)
        todo = n_bad > 0
        if not bool(todo.any()):
            break
        better = n_bad < n_bad_best
        n_bad_best = torch.where(better, n_bad, n_bad_best)
        chances = torch.where(better, torch.full_like(chances, 3), chances - (~better).long())
        full = better | (chances > 0)
        # backup rule: flip only the largest infeasible index
        last = torch.where(bad, idx, torch.full_like(idx, -1)).amax(1)
        single = idx[None, :] == last[:, None]
        flip = torch.where(full[:, None], bad, single) & todo[:, None]
        passive = passive ^ flip
        x_new = _solve_passive(A, b, passive)
        x = torch.where(todo[:, None], x_new, x)
        y = torch.einsum("nij,nj->ni", A, x) - b
        y = torch.where(passive, torch.zeros((), dtype=y.dtype, device=dev), y)
    x = torch.where(con & ~passive, torch.zeros((), dtype=x.dtype, device=dev), x)
    return torch.where(con, x.clamp_min(0), x)
