"""Plotting helpers: loss curves per term, 2-D maps of embeddings, image reconstructions.

Each helper draws on matplotlib axes it is given (or on new ones) and returns them, so
that it composes with the user's own figures; none of them calls ``plt.show()``.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["plot_embedding", "plot_loss_curves", "plot_reconstructions"]


def _new_axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_loss_curves(estimator, *, terms=None, total=True, logy=True, ax=None):
    """Plot a fitted estimator's loss per iteration, in total and term by term.

    Reads ``loss_curve_`` (the total objective after every sweep or epoch) and
    ``loss_terms_`` (one list per term: each view's or relation's reconstruction, the
    penalty, the validation loss, ...), which every mmfactor estimator records.

    Parameters
    ----------
    estimator : estimator or dict
        A fitted mmfactor estimator, or a dict of ``name -> list of float`` (for curves
        recorded elsewhere).
    terms : list of str, default=None
        The terms to draw (default: every term in ``loss_terms_``).
    total : bool, default=True
        Also draw ``loss_curve_`` (as a thick black line).
    logy : bool, default=True
        Use a logarithmic y axis (when every plotted value is positive).
    ax : matplotlib.axes.Axes, default=None
        Where to draw (default: a new figure).

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes drawn on, one line per curve, labelled by term.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from mmfactor.plotting import plot_loss_curves
    >>> ax = plot_loss_curves({"view0": [3.0, 2.0, 1.5], "penalty": [0.2, 0.3, 0.3]})
    >>> [line.get_label() for line in ax.get_lines()]
    ['view0', 'penalty']
    """
    if isinstance(estimator, dict):
        curves, main = dict(estimator), None
    else:
        if not hasattr(estimator, "loss_curve_"):
            raise ValueError(
                f"{type(estimator).__name__} has no loss_curve_: fit it first (plot_loss_curves "
                "needs a fitted estimator or a dict of curves)."
            )
        curves = dict(getattr(estimator, "loss_terms_", None) or {})
        main = list(estimator.loss_curve_) if total else None
    if terms is not None:
        unknown = [t for t in terms if t not in curves]
        if unknown:
            raise ValueError(f"Unknown loss terms {unknown}; recorded terms: {sorted(curves)}.")
        curves = {t: curves[t] for t in terms}
    if not curves and main is None:
        raise ValueError("Nothing to plot: no loss terms were recorded and total=False.")
    ax = _new_axes(ax, (5.5, 3.5))
    values = []
    if main is not None:
        it = np.arange(1, len(main) + 1)
        ax.plot(it, main, color="black", lw=2.5, label="total (loss_curve_)")
        values.extend(main)
    for name, curve in curves.items():
        curve = np.asarray(curve, dtype=float)
        ax.plot(np.arange(1, len(curve) + 1), curve, lw=1.3, label=str(name))
        values.extend(curve.tolist())
    values = np.asarray(values, dtype=float)
    if logy and values.size and np.all(values[np.isfinite(values)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    return ax


def plot_embedding(embedding, labels=None, *, method="pca", random_state=0, ax=None,
                   title=None, **scatter_kws):
    """Scatter an embedding in 2-D, coloured by label.

    Embeddings wider than two columns are first mapped to 2-D with PCA (linear, fast,
    deterministic) or t-SNE (``method="tsne"``, slower, shows clusters better).

    Parameters
    ----------
    embedding : array-like of shape (n_samples, n_components)
        The output of an estimator's ``transform``.
    labels : array-like of shape (n_samples,), default=None
        A class per sample (integers or strings); one colour and legend entry each.
    method : {"pca", "tsne"}, default="pca"
        The map to 2-D when ``n_components > 2``.
    random_state : int, default=0
        Seed of the 2-D map (t-SNE).
    ax : matplotlib.axes.Axes, default=None
        Where to draw (default: a new figure).
    title : str, default=None
        Title of the axes.
    **scatter_kws
        Passed on to :meth:`matplotlib.axes.Axes.scatter`.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes drawn on.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from mmfactor.plotting import plot_embedding
    >>> Z = np.random.RandomState(0).rand(30, 5)
    >>> ax = plot_embedding(Z, labels=np.repeat([0, 1, 2], 10))
    >>> len(ax.collections)
    3
    """
    Z = np.asarray(embedding, dtype=float)
    if Z.ndim != 2 or Z.shape[1] < 1:
        raise ValueError(f"embedding must be a 2-D array (n_samples, n_components); got "
                         f"shape {Z.shape}.")
    if not np.isfinite(Z).all():
        raise ValueError("embedding has NaN or infinite values.")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (Z.shape[0],):
            raise ValueError(f"labels has shape {labels.shape}; expected ({Z.shape[0]},), one "
                             "label per row of the embedding.")
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne'; got {method!r}.")
    if Z.shape[1] == 1:
        Z2 = np.column_stack([Z[:, 0], np.zeros(len(Z))])
        xlabel, ylabel = "component 1", ""
    elif Z.shape[1] == 2:
        Z2, xlabel, ylabel = Z, "component 1", "component 2"
    elif method == "pca":
        from sklearn.decomposition import PCA

        Z2 = PCA(2, random_state=random_state).fit_transform(Z)
        xlabel, ylabel = "PC 1", "PC 2"
    else:
        from sklearn.manifold import TSNE

        perplexity = min(30.0, max(2.0, (len(Z) - 1) / 3))
        Z2 = TSNE(2, perplexity=perplexity, init="pca",
                  random_state=random_state).fit_transform(Z)
        xlabel, ylabel = "t-SNE 1", "t-SNE 2"
    ax = _new_axes(ax, (5, 4.5))
    kws = {"s": 8, "alpha": 0.8, **scatter_kws}
    if labels is None:
        ax.scatter(Z2[:, 0], Z2[:, 1], **kws)
    else:
        classes = np.unique(labels)
        import matplotlib as mpl

        cmap = mpl.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, c in enumerate(classes):
            sel = labels == c
            ax.scatter(Z2[sel, 0], Z2[sel, 1], color=cmap(i % cmap.N), label=str(c), **kws)
        ax.legend(fontsize="small", markerscale=2, loc="best",
                  ncol=2 if len(classes) > 6 else 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    return ax


def _as_images(x, image_shape, what):
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    x = x.astype(float)
    if image_shape is not None:
        try:
            x = x.reshape((len(x),) + tuple(image_shape))
        except ValueError:
            raise ValueError(f"{what} of shape {x.shape} cannot be reshaped to images of "
                             f"shape {tuple(image_shape)}.") from None
    if x.ndim == 4:  # (n, C, H, W)
        if x.shape[1] == 1:
            x = x[:, 0]
        elif x.shape[1] == 3:
            x = np.transpose(x, (0, 2, 3, 1))
        else:
            raise ValueError(f"{what} has {x.shape[1]} channels; images need 1 or 3 (pass "
                             "one channel, e.g. x[:, :1]).")
    elif x.ndim != 3:
        raise ValueError(f"{what} has shape {x.shape}; expected images (n, H, W) or "
                         "(n, C, H, W), or pass image_shape=(H, W) for flat rows.")
    return x


def plot_reconstructions(originals, reconstructions, *, n_images=8, image_shape=None,
                         cmap="gray", titles=("original", "reconstruction"), fig=None):
    """Show images and their reconstructions side by side (one pair per column).

    Parameters
    ----------
    originals : array-like of shape (n_samples, ...)
        Images ``(n, H, W)``, ``(n, 1, H, W)`` or ``(n, 3, H, W)``; or flat rows with
        ``image_shape``. NumPy arrays or torch tensors.
    reconstructions : array-like or list of array-like
        The reconstructions, same shape as ``originals`` (e.g. the output of an
        estimator's ``inverse_transform``); a list draws one row per entry.
    n_images : int, default=8
        Number of images (the first ones) to show.
    image_shape : tuple of int, default=None
        ``(H, W)`` or ``(C, H, W)`` to reshape flat rows into images.
    cmap : str, default="gray"
        Colour map of one-channel images.
    titles : tuple of str, default=("original", "reconstruction")
        Label of each row (originals first, then each reconstruction).
    fig : matplotlib.figure.Figure, default=None
        Where to draw (default: a new figure).

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure, with a grid of ``(1 + n_reconstructions) x n_images`` axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from mmfactor.plotting import plot_reconstructions
    >>> x = np.random.RandomState(0).rand(5, 1, 16, 15)
    >>> fig = plot_reconstructions(x, 0.9 * x, n_images=4)
    >>> len(fig.axes)
    8
    """
    import matplotlib.pyplot as plt

    if not isinstance(n_images, numbers.Integral) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer; got {n_images!r}.")
    recs = list(reconstructions) if isinstance(reconstructions, list | tuple) else [
        reconstructions]
    rows = [_as_images(originals, image_shape, "originals")]
    rows += [_as_images(r, image_shape, f"reconstructions[{i}]") for i, r in enumerate(recs)]
    for i, r in enumerate(rows[1:]):
        if r.shape[1:] != rows[0].shape[1:]:
            raise ValueError(f"reconstructions[{i}] has images of shape {r.shape[1:]} but the "
                             f"originals have {rows[0].shape[1:]}.")
    n = min(n_images, *(len(r) for r in rows))
    titles = list(titles) + [f"reconstruction {i}" for i in range(len(titles) - 1, len(rows))]
    if fig is None:
        fig = plt.figure(figsize=(1.2 * n + 0.8, 1.3 * len(rows)))
    axes = fig.subplots(len(rows), n, squeeze=False)
    lo = min(float(np.nanmin(r[:n])) for r in rows[:1])
    hi = max(float(np.nanmax(r[:n])) for r in rows[:1])
    for i, imgs in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            img = imgs[j]
            if img.ndim == 2:
                ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1)
            else:
                ax.imshow(np.clip(img, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(titles[i], fontsize="small")
    return fig
