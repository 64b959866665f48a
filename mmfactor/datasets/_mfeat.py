"""The UCI Multiple Features digits, shipped inside the package (the embedded default)."""

from __future__ import annotations

from importlib import resources

import numpy as np
from sklearn.utils import Bunch

from .._multimodal import MultiModal

__all__ = ["load_mfeat"]

VIEWS = {
    "pix": "240 pixel averages in 2 x 3 windows: a 16 x 15 image, values 0..6",
    "fou": "76 Fourier coefficients of the character shapes",
    "fac": "216 profile correlations",
    "kar": "64 Karhunen-Loeve coefficients",
    "zer": "47 Zernike moments",
    "mor": "6 morphological features",
}


def load_mfeat(*, views=None, image=True, return_X_y=False):
    """Load the UCI Multiple Features handwritten digits (2,000 digits, six views).

    Each of the 2,000 digits (200 per class, "0" to "9") is described by six views of
    the same scanned character. The pixel view is returned as an image tensor of shape
    ``(n, 1, 16, 15)`` (16 rows, 15 columns, values 0..6) when ``image=True``.

    The data is CC BY 4.0: M. van Breukelen, R. P. W. Duin, D. M. J. Tax and
    J. E. den Hartog, "Handwritten digit recognition by combined classifiers",
    Kybernetika 34(4), 1998; UCI Machine Learning Repository, "Multiple Features".

    Parameters
    ----------
    views : list of str, default=None
        The views to return, among ``"pix", "fou", "fac", "kar", "zer", "mor"``
        (default: all six in that order).
    image : bool, default=True
        Return the pixel view as images ``(n, 1, 16, 15)`` rather than ``(n, 240)``.
    return_X_y : bool, default=False
        Return ``(X, y)`` instead of a Bunch.

    Returns
    -------
    data : Bunch
        ``X`` (a :class:`~mmfactor.MultiModal` with the views by name, float64), ``y``
        (digit labels), ``view_descriptions``, ``DESCR``.
    (X, y) : tuple
        When ``return_X_y`` is True.

    Examples
    --------
    >>> from mmfactor.datasets import load_mfeat
    >>> X, y = load_mfeat(views=["pix", "fou"], return_X_y=True)
    >>> X.views[0].shape, X.views[1].shape, y.shape
    ((2000, 1, 16, 15), (2000, 76), (2000,))
    """
    views = list(VIEWS) if views is None else list(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"Unknown mfeat views {unknown}; choose among {list(VIEWS)}.")
    with resources.files(__package__).joinpath("data/mfeat.npz").open("rb") as f:
        npz = np.load(f)
        arrays = {v: npz[v].astype(np.float64) for v in views}
        y = npz["y"].astype(np.int64)
    if image and "pix" in arrays:
        arrays["pix"] = arrays["pix"].reshape(-1, 1, 16, 15)
    X = MultiModal(**arrays)
    if return_X_y:
        return X, y
    return Bunch(X=X, y=y, view_descriptions={v: VIEWS[v] for v in views},
                 DESCR=load_mfeat.__doc__)
