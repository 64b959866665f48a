"""Held-out entries of the samples' views: the criterion that can select ``n_components``."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state

from .._device import as_numpy
from .._multimodal import MultiModal

__all__ = ["hide_entries"]


def hide_entries(mm, views, names, fraction, random_state, missing):
    """Hide a random ``fraction`` of the observed entries of the views ``names``.

    Returns ``(masked, hidden)``: a :class:`MultiModal` like ``mm`` with those entries
    missing (NaN in a dense view, unstored in a sparse one), and ``{name: (rows, cols,
    values)}`` of the hidden entries. A sparse view whose unstored entries are zeros
    (``missing="zero"``) has no "missing" to hide an entry as, so it is refused.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r}; expected a number strictly between 0 and 1.")
    rng = check_random_state(random_state)
    out, hidden = {}, {}
    for name, v in zip(mm.names, views, strict=True):
        if name not in names:
            out[name] = v.data
            continue
        if v.kind == "sparse":
            if missing == "zero":
                raise ValueError(
                    f"View {name!r} is sparse with missing='zero': its unstored entries are "
                    "zeros, so no entry can be held out as missing. Use a dense view with NaN, "
                    "or missing='unobserved'.")
            coo = v.data.tocoo()
            rows, cols, vals = coo.row, coo.col, coo.data
        else:
            arr = as_numpy(v.data)
            rows, cols = np.nonzero(~np.isnan(arr))
            vals = arr[rows, cols]
        hide = rng.rand(len(vals)) < fraction
        hidden[name] = (rows[hide], cols[hide], vals[hide].astype(np.float64))
        if v.kind == "sparse":
            out[name] = sp.csr_matrix((vals[~hide], (rows[~hide], cols[~hide])),
                                      shape=v.shape)
        else:
            masked = np.array(arr, dtype=np.float64)
            masked[rows[hide], cols[hide]] = np.nan
            out[name] = masked
    return MultiModal(**out, shared=mm.shared), hidden
