"""Synthetic multimodal collections with known ground-truth factors."""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch, check_random_state

from .._multimodal import MultiModal

__all__ = ["make_collective"]


def make_collective(
    n_samples=200,
    n_features=(30, 20),
    n_components=5,
    *,
    missing_rate=0.0,
    noise=0.0,
    nonnegative=False,
    random_state=None,
):
    """Generate views ``X_v = U V_v^T + noise`` sharing a planted sample factor ``U``.

    Parameters
    ----------
    n_samples : int, default=200
        Number of samples (rows of every view).
    n_features : sequence of int, default=(30, 20)
        Columns of each view; one view per entry.
    n_components : int, default=5
        Rank of the planted factors.
    missing_rate : float, default=0.0
        Fraction of entries set to NaN (missing), uniformly at random.
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to every entry.
    nonnegative : bool, default=False
        Draw non-negative factors (uniform on [0, 1)) instead of Gaussian ones.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    data : Bunch
        ``X`` (a :class:`~mmfactor.MultiModal`), ``complete`` (the views without missing
        entries or noise), ``factors`` (``{"sample": U, "view0_col": V_0, ...}``).

    Examples
    --------
    >>> from mmfactor.datasets import make_collective
    >>> data = make_collective(50, (8, 6), 3, random_state=0)
    >>> [v.shape for v in data.X.views], data.factors["sample"].shape
    ([(50, 8), (50, 6)], (50, 3))
    """
    rng = check_random_state(random_state)
    draw = (lambda *s: rng.rand(*s)) if nonnegative else (lambda *s: rng.randn(*s))
    U = draw(n_samples, n_components)
    factors = {"sample": U}
    complete, views = [], []
    for i, m in enumerate(n_features):
        V = draw(m, n_components)
        factors[f"view{i}_col"] = V
        clean = U @ V.T
        X = clean + noise * rng.randn(*clean.shape)
        if missing_rate > 0:
            X[rng.rand(*X.shape) < missing_rate] = np.nan
        complete.append(clean)
        views.append(X)
    return Bunch(X=MultiModal(*views), complete=complete, factors=factors)
