"""torch sparse CSR tensors from SciPy matrices and trusted index arrays."""

from __future__ import annotations

import warnings

import scipy.sparse as sp
import torch

__all__ = ["_csr", "_torch_csr"]


def _csr(crow, col, values, size):
    """A torch CSR tensor from trusted (already validated) index arrays, without warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def _torch_csr(csr, device, dtype):
    """A torch CSR tensor of a SciPy matrix; the caller's matrix is never reordered (an
    unsorted one is sorted on a copy)."""
    csr = sp.csr_matrix(csr)  # shares the caller's arrays when it is CSR already
    if not csr.has_sorted_indices:
        csr = csr.sorted_indices()
    return _csr(
        torch.as_tensor(csr.indptr, dtype=torch.int64, device=device),
        torch.as_tensor(csr.indices, dtype=torch.int64, device=device),
        torch.as_tensor(csr.data, dtype=dtype, device=device),
        csr.shape,
    )
