"""Plotting helpers: loss curves, 2-D maps of embeddings, reconstructions, comparisons.

Each helper draws on matplotlib axes it is given (or on new ones) and returns them, so
that it composes with the user's own figures; none of them calls ``plt.show()``.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._optional import import_optional

__all__ = ["plot_comparison", "plot_embedding", "plot_loss_curves", "plot_reconstructions"]


def _pyplot():
    return import_optional("matplotlib.pyplot", "mmfactor.plotting")


def _new_axes(ax, figsize):
    plt = _pyplot()
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
        cmap = _pyplot().colormaps["tab10" if len(classes) <= 10 else "tab20"]
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
    plt = _pyplot()
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


def _comparison_figsize(n_rows):
    """The size in inches of :func:`plot_comparison`'s figure for ``n_rows`` models."""
    return (9.5, 0.45 * n_rows + 2.2)


def plot_comparison(rows, *, reference="PCA (reference)", title=None, fig=None):
    """Compare embeddings: downstream scores (left) and fit times (right), one row each.

    The figure of the main job (``results.png`` of ``mmfactor --output DIR``): for each
    model a bar of its macro-F1 and its accuracy as a marker on a 0-1 scale, both values
    (and the difference to the reference) written in a column to the right, and, on a
    second panel, its fit time in seconds (log scale).
    The reference model is hatched and its macro-F1 drawn as a dashed line across the
    score panel; the legend sits below the panels, never over a bar.

    Parameters
    ----------
    rows : list of dict
        One dict per model with ``"model"``, ``"macro_f1"``, ``"accuracy"`` and
        ``"fit_s"`` (the rows returned by ``mmfactor.__main__.run``).
    reference : str or None, default="PCA (reference)"
        The ``"model"`` of the reference row (``None``: no reference).
    title : str, default=None
        Title of the figure.
    fig : matplotlib.figure.Figure, default=None
        Where to draw (default: a new figure).

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure, with the score axes first and the fit-time axes second.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from mmfactor.plotting import plot_comparison
    >>> rows = [{"model": "PCA (reference)", "macro_f1": 0.81, "accuracy": 0.82,
    ...          "fit_s": 0.05},
    ...         {"model": "CMF", "macro_f1": 0.86, "accuracy": 0.87, "fit_s": 1.3}]
    >>> fig = plot_comparison(rows)
    >>> [ax.get_xlabel() for ax in fig.axes]
    ['test score (RandomForest on the embedding)', 'fit time (s, log scale)']
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to compare.")
    missing = [k for k in ("model", "macro_f1", "accuracy", "fit_s") if k not in rows[0]]
    if missing:
        raise ValueError(f"each row needs the keys model, macro_f1, accuracy and fit_s; "
                         f"the first lacks {missing}.")
    names = [str(r["model"]) for r in rows]
    f1 = np.array([r["macro_f1"] for r in rows], dtype=float)
    acc = np.array([r["accuracy"] for r in rows], dtype=float)
    secs = np.array([r["fit_s"] for r in rows], dtype=float)
    y = np.arange(len(rows))[::-1]  # the first row on top
    is_ref = np.array([n == reference for n in names])
    if fig is None:
        fig = _pyplot().figure(figsize=_comparison_figsize(len(rows)))
    ax, ax_t = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [2.2, 1]})
    blue, grey = "#4C72B0", "#9A9A9A"
    colours = [grey if r else blue for r in is_ref]
    ref = float(f1[is_ref][0]) if is_ref.any() else None
    for axes, values in ((ax, f1), (ax_t, secs)):
        for b, r in zip(axes.barh(y, values, 0.6, color=colours), is_ref, strict=True):
            if r:
                b.set_hatch("//")
                b.set_edgecolor("white")
    ax.plot(acc, y, "D", color="black", ms=5)
    for yi, v, a, r in zip(y, f1, acc, is_ref, strict=True):
        delta = "" if ref is None or r else f" ({v - ref:+.3f})"
        # the values in one aligned column right of the 0-1 scale, whatever the score
        ax.text(1.03, yi, f"F1 {v:.3f}{delta} | acc {a:.3f}", va="center", fontsize="small")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=blue, label="macro-F1 (bar)"),
               Line2D([], [], ls="", marker="D", color="black", ms=5,
                      label="accuracy (marker)")]
    if ref is not None:
        ax.axvline(ref, color=grey, ls="--", lw=1.2)
        handles += [Patch(facecolor=grey, hatch="//", edgecolor="white", label=reference),
                    Line2D([], [], color=grey, ls="--",
                           label=f"reference macro-F1 {ref:.3f}")]
    ax.set_xlim(0, 1.62)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_yticks(y, [f"{n}" for n in names])
    ax.set_xlabel("test score (RandomForest on the embedding)")
    ax.grid(axis="x", alpha=0.3)
    ax_t.set_xscale("log")
    pos = secs[secs > 0]
    lo = pos.min() if pos.size else 1e-2
    hi = pos.max() if pos.size else 1.0
    ax_t.set_xlim(lo / 3, hi * 12)
    for yi, v in zip(y, secs, strict=True):
        ax_t.text(max(v, lo / 3) * 1.15, yi, f"{v:.2f} s", va="center", fontsize="small")
    ax_t.set_xlabel("fit time (s, log scale)")
    ax_t.grid(axis="x", alpha=0.3)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
               fontsize="small")
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
