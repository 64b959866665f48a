"""The main job: every estimator on the embedded default data, side by side.

``python -m mmfactor`` (or the console script ``mmfactor``) loads the UCI digits
(:func:`mmfactor.datasets.load_mfeat`, six views of 2,000 digits), splits them 80/20
(stratified, ``random_state=0``), fits each estimator on the training digits, embeds the
test digits with ``transform`` (rows the model never saw), and scores a RandomForest
(``max_depth=2, random_state=0``) trained on the training embeddings: macro-F1 and
accuracy on the test digits. PCA of the same standardised views is the reference row.
The table is printed and written, with a plot, to the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["main", "run"]


def _standardize(train, test):
    """Per-view standardisation fitted on the training rows (views flattened to 2-D)."""
    out_tr, out_te = [], []
    for a, b in zip(train, test, strict=True):
        a = a.reshape(len(a), -1)
        b = b.reshape(len(b), -1)
        mu, sd = a.mean(0), a.std(0)
        sd[sd == 0] = 1.0
        out_tr.append((a - mu) / sd)
        out_te.append((b - mu) / sd)
    return out_tr, out_te


def _minmax(train, test):
    """Per-view scaling to [0, 1] fitted on the training rows (for non-negative models)."""
    out_tr, out_te = [], []
    for a, b in zip(train, test, strict=True):
        a = a.reshape(len(a), -1)
        b = b.reshape(len(b), -1)
        lo, hi = a.min(0), a.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        out_tr.append((a - lo) / span)
        out_te.append(np.clip((b - lo) / span, 0, None))
    return out_tr, out_te


def _raw(train, test):
    """No preprocessing: the model standardises its views itself (MMEDA)."""
    return list(train), list(test)


def _hyperlearn_input(train, test):
    """HyperLearn takes one matrix (samples x features, a 2-mode tensor) per fit: the
    standardised views side by side, the views themselves riding along as mode-0
    features for the k-nearest-neighbour graph over the samples."""
    from mmfactor import MultiModal

    tr, te = _standardize(train, test)
    return MultiModal(np.hstack(tr), *tr), MultiModal(np.hstack(te), *te)


def _registry(n_components, device, seed, n_jobs=None, verbose=0):
    """name -> (factory, preprocessing). Each factory builds a fresh estimator."""
    import mmfactor

    k = n_components
    kw = {"random_state": seed, "devices": device, "n_jobs": n_jobs, "verbose": verbose}
    return {
        "PCA (reference)": (lambda: _PCAConcat(k, n_jobs), _standardize),
        "CMF": (lambda: mmfactor.CMF(k, alpha=30.0, max_iter=30, **kw), _standardize),
        "DFMF": (lambda: mmfactor.DFMF(k, init="svd", max_iter=50, tol=1e-4, **kw), _minmax),
        "DCMF": (lambda: mmfactor.DCMF(k, hidden_layer_sizes=(128,), batch_size=128,
                                       max_iter=20, tol=0, weights=0.2, **kw), _standardize),
        "MMEDA-I": (lambda: mmfactor.MMEDA(k, variant="I", batch_size=128, max_iter=30, tol=0,
                                           **kw), _raw),
        "MMEDA-II": (lambda: mmfactor.MMEDA(k, variant="II", batch_size=128, max_iter=30,
                                            tol=0, **kw), _raw),
        "HyperLearn": (lambda: mmfactor.HyperLearn(k, diffusion_steps=0, solver="als",
                                                   update="gauss-seidel", lam=0.002,
                                                   max_iter=20, **kw), _hyperlearn_input),
    }


class _PCAConcat:
    """PCA of the concatenated views: the reference every embedding is compared with."""

    def __init__(self, n_components, n_jobs=None):
        from sklearn.decomposition import PCA

        self.pca = PCA(n_components, random_state=0)
        self.n_jobs = n_jobs

    def fit_transform(self, views):
        from ._threads import thread_limits

        with thread_limits(self.n_jobs):
            return self.pca.fit_transform(np.hstack(views))

    def transform(self, views):
        from ._threads import thread_limits

        with thread_limits(self.n_jobs):
            return self.pca.transform(np.hstack(views))


def run(models=None, *, views=None, n_components=50, device="cpu", output="mmfactor_output",
        seed=0, threads=None, verbose=True):
    """Run the main job and return the table as a list of dicts.

    Parameters
    ----------
    models : list of str, default=None
        Names of the models to run (default: all that exist).
    views : list of str, default=None
        The mfeat views to use (default: all six).
    n_components : int, default=50
        Embedding width.
    device : str, default="cpu"
        ``devices=`` given to every torch model.
    output : str or path, default="mmfactor_output"
        Folder for ``results.csv``, ``results.json`` and ``results.png``.
    seed : int, default=0
        ``random_state`` of every model.
    threads : int, default=None
        ``n_jobs`` of every model (CPU threads during its fit and transform; ``None``:
        torch's default).
    verbose : bool, default=True
        Print one summary line per fit (its progress bar, left in place) and the table.
        Warnings (e.g. ``ConvergenceWarning``) are shown either way.

    Returns
    -------
    rows : list of dict
        One row per model: ``model``, ``macro_f1``, ``accuracy``, ``fit_s``.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    from mmfactor.datasets import load_mfeat

    X, y = load_mfeat(views=views, return_X_y=True)
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y,
                                      random_state=0)
    registry = _registry(n_components, device, seed, n_jobs=threads, verbose=int(verbose))
    names = list(registry) if not models else ["PCA (reference)"] + [
        m for m in models if m != "PCA (reference)"]
    unknown = [m for m in names if m not in registry]
    if unknown:
        raise SystemExit(f"Unknown model(s) {unknown}; choose among {list(registry)[1:]}.")
    rows = []
    for i, name in enumerate(names, 1):
        factory, prep = registry[name]
        tr, te = prep([v[idx_tr] for v in X.views], [v[idx_te] for v in X.views])
        est = factory()
        if verbose:
            print(f"[{i}/{len(names)}] {name}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        Z_tr = est.fit_transform(tr)
        fit_s = time.perf_counter() - t
        Z_te = est.transform(te)
        clf = RandomForestClassifier(max_depth=2, random_state=0).fit(Z_tr, y[idx_tr])
        pred = clf.predict(Z_te)
        rows.append({"model": name, "macro_f1": float(f1_score(y[idx_te], pred,
                                                               average="macro")),
                     "accuracy": float(accuracy_score(y[idx_te], pred)), "fit_s": fit_s})
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written = _write(rows, out, views=list(X.names), n_components=n_components,
                     device=device, threads=threads)
    if verbose:
        print(_format(rows))
        print(f"\nwritten to {out.resolve()}/results.{{{','.join(written)}}}")
    return rows


def _format(rows):
    lines = [f"{'model':<18} {'macro-F1':>9} {'accuracy':>9} {'fit (s)':>8}"]
    for r in rows:
        lines.append(f"{r['model']:<18} {r['macro_f1']:>9.4f} {r['accuracy']:>9.4f} "
                     f"{r['fit_s']:>8.2f}")
    return "\n".join(lines)


def _write(rows, out, **meta):
    """Write results.csv, results.json and (with matplotlib) results.png; return the
    suffixes written."""
    import csv

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "results.json").write_text(json.dumps({"protocol": {
        "data": "load_mfeat", "split": "stratified 80/20, random_state=0",
        "downstream": "RandomForestClassifier(max_depth=2, random_state=0)", **meta},
        "results": rows}, indent=2))
    from ._optional import import_optional
    from .plotting import _comparison_figsize, plot_comparison

    try:  # a bare Figure: no pyplot state, no GUI backend
        Figure = import_optional("matplotlib.figure", "results.png of the main job").Figure
    except ImportError as exc:
        warnings.warn(f"results.png not written: {exc}", stacklevel=2)
        return ["csv", "json"]
    fig = plot_comparison(rows, title="Embeddings of the mfeat digits (test split)",
                          fig=Figure(figsize=_comparison_figsize(len(rows))))
    fig.savefig(out / "results.png", dpi=150)
    return ["csv", "json", "png"]


def main(argv=None):
    """Command-line entry point (``mmfactor`` / ``python -m mmfactor``)."""
    p = argparse.ArgumentParser(prog="mmfactor", description=__doc__.strip().splitlines()[0])
    p.add_argument("--models", nargs="+", default=None,
                   help="models to run (default: all)")
    p.add_argument("--views", nargs="+", default=None,
                   help="mfeat views: pix fou fac kar zer mor (default: all six)")
    p.add_argument("--n-components", type=int, default=50)
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:1' or 'auto'")
    p.add_argument("--output", default="mmfactor_output", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads of every model's fit and transform (n_jobs; -1: all "
                        "CPUs; default: torch's). On a busy machine use 1, or set "
                        "OMP_WAIT_POLICY=PASSIVE: see the FAQ")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.threads == 0:
        p.error("--threads must be a positive number of threads, or negative (-1: all "
                "CPUs); got 0")
    run(args.models, views=args.views, n_components=args.n_components, device=args.device,
        output=args.output, seed=args.seed, threads=args.threads, verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
