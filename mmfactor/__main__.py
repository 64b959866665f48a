"""The main job: every estimator on the embedded default data, side by side.

``python -m mmfactor`` (or the console script ``mmfactor``) loads the UCI digits
(``mmfactor.datasets.load_mfeat``, six views of 2,000 digits), splits them 80/20
(stratified, ``random_state=0``), fits each estimator on the training digits, embeds the
test digits with ``transform`` (rows the model never saw), and scores a RandomForest
(``max_depth=2, random_state=0``) trained on the training embeddings: macro-F1 and
accuracy on the test digits. PCA of the same standardised views is the reference row.
Each model is fitted at several seeds (default 0, 1, 2): the table gives the mean and
the spread over seeds, each fit runs on one thread (``--threads 1``: the same numbers on
any machine), and the fits run side by side in processes (``--jobs``). The table is printed
and written, with a plot, to the output folder, whose path is printed at the end.

This module imports neither torch nor the models until a job runs, so that
``mmfactor --help`` answers at once.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["main", "run", "check_args", "MODELS", "VIEWS"]


def _scaled(scaler, train, test):
    """Each view flattened to 2-D and scaled by a scikit-learn scaler fitted on the
    training rows."""
    from sklearn.base import clone

    out_tr, out_te = [], []
    for a, b in zip(train, test, strict=True):
        fitted = clone(scaler).fit(a.reshape(len(a), -1))
        out_tr.append(fitted.transform(a.reshape(len(a), -1)))
        out_te.append(fitted.transform(b.reshape(len(b), -1)))
    return out_tr, out_te


def _standardize(train, test):
    """Per-view standardisation (StandardScaler) fitted on the training rows."""
    from sklearn.preprocessing import StandardScaler

    return _scaled(StandardScaler(), train, test)


def _minmax(train, test):
    """Per-view scaling to [0, 1] (MinMaxScaler) fitted on the training rows, test values
    below the training minimum clipped to 0 (for non-negative models)."""
    from sklearn.preprocessing import MinMaxScaler

    tr, te = _scaled(MinMaxScaler(), train, test)
    return tr, [np.clip(b, 0, None) for b in te]


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


#: The models of the main job, in the order of the table (PCA is the reference row): by
#: their fit time on the digits, cheapest first.
MODELS = ("CMF", "DFMF", "DCMF", "MMEDA-I", "MMEDA-II", "HyperLearn")
#: The views of the embedded digits (mmfactor.datasets.load_mfeat), named here so that
#: ``--help`` and argument checks need neither torch nor the data.
VIEWS = ("pix", "fou", "fac", "kar", "zer", "mor")
REFERENCE = "PCA (reference)"


def _registry(n_components, device, seed, n_jobs=1, verbose=0):
    """name -> (factory, preprocessing). Each factory builds a fresh estimator.

    The settings keep the whole job (three seeds) under two minutes on two cores: MMEDA
    trains 15 epochs and HyperLearn 10 sweeps (on the digits, their test macro-F1 at
    seed 0 is within the spread over seeds of the settings twice as long).
    """
    import mmfactor

    k = n_components
    kw = {"random_state": seed, "devices": device, "n_jobs": n_jobs, "verbose": verbose}
    return {
        REFERENCE: (lambda: _PCAConcat(k, n_jobs), _standardize),
        "CMF": (lambda: mmfactor.CMF(k, alpha=30.0, max_iter=30, **kw), _standardize),
        "DFMF": (lambda: mmfactor.DFMF(k, init="svd", max_iter=50, tol=1e-4, **kw), _minmax),
        "DCMF": (lambda: mmfactor.DCMF(k, hidden_layer_sizes=(128,), batch_size=128,
                                       max_iter=20, tol=0, weights=0.2, **kw), _standardize),
        "MMEDA-I": (lambda: mmfactor.MMEDA(k, variant="I", batch_size=128, max_iter=15, tol=0,
                                           **kw), _raw),
        "MMEDA-II": (lambda: mmfactor.MMEDA(k, variant="II", batch_size=128, max_iter=15,
                                            tol=0, **kw), _raw),
        "HyperLearn": (lambda: mmfactor.HyperLearn(k, diffusion_steps=0, solver="als",
                                                   update="gauss-seidel", lam=0.002,
                                                   max_iter=10, **kw), _hyperlearn_input),
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


@functools.lru_cache(maxsize=4)
def _split(views):
    """The digits (the given views) and the stratified 80/20 split, once per process."""
    from sklearn.model_selection import train_test_split

    from mmfactor.datasets import load_mfeat

    X, y = load_mfeat(views=list(views), return_X_y=True)
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y,
                                      random_state=0)
    return X, y, idx_tr, idx_te


def _fit_score(name, seed, views, n_components, device, threads, verbose):
    """Fit one model at one seed on the training digits; score its test embedding.

    The model's ``n_jobs`` is ``threads`` (default 1: one thread per fit, so that its
    result does not depend on how many cores the machine has, as a reduction split over
    more threads adds in another order); the job's parallelism is across fits (``jobs``).
    Warnings (e.g. ``ConvergenceWarning``) are shown.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, f1_score

    X, y, idx_tr, idx_te = _split(views)
    factory, prep = _registry(n_components, device, seed, threads, int(verbose))[name]
    tr, te = prep([v[idx_tr] for v in X.views], [v[idx_te] for v in X.views])
    est = factory()
    t, cpu = time.perf_counter(), time.process_time()
    Z_tr = est.fit_transform(tr)
    fit_s = time.perf_counter() - t
    Z_te = est.transform(te)
    cpu_s = time.process_time() - cpu
    clf = RandomForestClassifier(max_depth=2, random_state=0).fit(Z_tr, y[idx_tr])
    pred = clf.predict(Z_te)
    return {"model": name, "seed": seed,
            "macro_f1": float(f1_score(y[idx_te], pred, average="macro")),
            "accuracy": float(accuracy_score(y[idx_te], pred)), "fit_s": fit_s,
            "cpu_s": cpu_s}


def check_args(models=None, views=None, device="cpu", seeds=(0, 1, 2), threads=1, jobs=None):
    """Check the job's arguments before any model runs; raise ValueError saying what is
    wrong and what is accepted."""
    unknown = [m for m in models or () if m not in MODELS and m != REFERENCE]
    if unknown:
        raise ValueError(f"Unknown model(s) {unknown}; choose among {list(MODELS)}.")
    unknown = [v for v in views or () if v not in VIEWS]
    if unknown:
        raise ValueError(f"Unknown view(s) {unknown}; choose among {list(VIEWS)}.")
    if not list(seeds):
        raise ValueError("Give at least one seed.")
    if threads == 0:
        raise ValueError("--threads must be a positive number of threads, or negative (-1: "
                         "all CPUs); got 0.")
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be a positive number of processes; got {jobs}.")
    from mmfactor._device import resolve_devices

    try:  # an absent CUDA device: a clear error now, not after the first models
        resolve_devices(device, ["every model"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"device {device!r}: {exc}") from None


def run(models=None, *, views=None, n_components=50, device="cpu", output="mmfactor_output",
        seeds=(0, 1, 2), threads=1, jobs=None, verbose=True):
    """Run the main job and return the table as a list of dicts.

    Every model is fitted once per seed; the table gives the mean and the spread over
    the seeds (the split and the random forest stay fixed: the spread is the model's).

    Parameters
    ----------
    models : list of str, default=None
        Names of the models to run (default: all of :data:`MODELS`).
    views : list of str, default=None
        The mfeat views to use (default: all six).
    n_components : int, default=50
        Embedding width.
    device : str, default="cpu"
        ``devices=`` given to every torch model.
    output : str or path, default="mmfactor_output"
        Folder for ``results.csv``, ``results.json`` and ``results.png``.
    seeds : sequence of int, default=(0, 1, 2)
        ``random_state`` of the models; each model is fitted once per seed.
    threads : int, default=1
        ``n_jobs`` of every model (CPU threads during its fit and transform). One thread
        makes the numbers the same on any machine; ``None``: torch's default.
    jobs : int, default=None
        Fits run side by side in this many processes (joblib); None: as many as the
        machine has cores. With ``jobs=1`` the fits run in this process and show the
        training loop's progress bar.
    verbose : bool, default=True
        Print the table, a progress bar and one line per finished fit. Warnings (e.g.
        ``ConvergenceWarning``) are shown either way.

    Returns
    -------
    rows : list of dict
        One row per model: ``model``, ``macro_f1``, ``accuracy``, ``fit_s`` (means over
        the seeds), ``macro_f1_std``, ``macro_f1_min``, ``macro_f1_max``,
        ``accuracy_std`` and ``n_seeds``.
    """
    import os

    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    check_args(models, views, device, seeds, threads, jobs)
    views = tuple(views or VIEWS)
    names = [REFERENCE] + [m for m in (models or MODELS) if m != REFERENCE]
    seeds = [int(s) for s in seeds]
    # PCA has no seed of its own: one fit
    tasks = [(n, s) for n in names for s in (seeds[:1] if n == REFERENCE else seeds)]
    if jobs is None:
        jobs = os.cpu_count() or 1
    jobs = max(1, min(int(jobs), len(tasks)))
    if verbose:
        print(f"mmfactor: {len(names)} models x {len(seeds)} seeds on the digits "
              f"({', '.join(views)}), {len(tasks)} fits, {jobs} at a time", flush=True)
    # the longest fits first (the order of MODELS is by cost, cheapest first), so that
    # parallel workers finish together; the table keeps the order of ``names``
    schedule = sorted(tasks, key=lambda t: -names.index(t[0])) if jobs > 1 else tasks
    run_one = delayed(_fit_score)
    calls = [run_one(n, s, views, n_components, device, threads, verbose and jobs == 1)
             for n, s in schedule]
    # joblib: processes for parallel fits (loky), and in-process calls when jobs == 1
    done = Parallel(n_jobs=jobs, return_as="generator_unordered")(calls)
    runs = []
    with tqdm(total=len(tasks), desc="mmfactor fits", disable=not verbose) as bar:
        for r in done:
            runs.append(r)
            bar.update()
            if verbose:
                bar.write(f"  {r['model']:<16} seed {r['seed']}: fit {r['fit_s']:6.1f} s, "
                          f"test macro-F1 {r['macro_f1']:.4f}")
    order = {t: i for i, t in enumerate(tasks)}
    runs.sort(key=lambda r: order[r["model"], r["seed"]])
    rows = [_summary(n, [r for r in runs if r["model"] == n]) for n in names]
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written = _write(rows, runs, out, views=list(views), n_components=n_components,
                     device=device, seeds=seeds, threads=threads)
    if verbose:
        print(_format(rows, threads))
        print(f"\nwritten to {out.resolve()}: "
              + ", ".join(f"results.{w}" for w in written))
    return rows


def _summary(name, runs):
    """The mean and spread over seeds of one model's runs (the sample sd, ``ddof=1``, as
    the benchmarks report it; 0 for one seed)."""
    f1 = np.array([r["macro_f1"] for r in runs])
    acc = np.array([r["accuracy"] for r in runs])
    ddof = 1 if len(runs) > 1 else 0
    return {"model": name, "macro_f1": float(f1.mean()), "accuracy": float(acc.mean()),
            "fit_s": float(np.mean([r["fit_s"] for r in runs])),
            "macro_f1_std": float(f1.std(ddof=ddof)), "macro_f1_min": float(f1.min()),
            "macro_f1_max": float(f1.max()), "accuracy_std": float(acc.std(ddof=ddof)),
            "n_seeds": len(runs)}


def _format(rows, threads=1):
    lines = [f"{'model':<16} {'macro-F1 (mean +- sd, min-max over seeds)':>44} "
             f"{'accuracy':>15} {'fit (s)':>8}"]
    for r in rows:
        spread = (f"{r['macro_f1']:.4f} +- {r['macro_f1_std']:.4f}  "
                  f"[{r['macro_f1_min']:.3f}, {r['macro_f1_max']:.3f}]")
        lines.append(f"{r['model']:<16} {spread:>44} {r['accuracy']:>7.4f} +- "
                     f"{r['accuracy_std']:.3f} {r['fit_s']:>7.2f}")
    n = max(r["n_seeds"] for r in rows)
    lines.append(f"({n} seeds" + ("; each fit on one thread, so the same table on any "
                                 "machine)" if threads == 1 else f"; threads={threads})"))
    return "\n".join(lines)


def _write(rows, runs, out, **meta):
    """Write results.csv (the table), results.json (protocol, table and every fit) and
    (with matplotlib) results.png; return the suffixes written."""
    import csv

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "results.json").write_text(json.dumps({"protocol": {
        "data": "load_mfeat", "split": "stratified 80/20, random_state=0",
        "downstream": "RandomForestClassifier(max_depth=2, random_state=0)", **meta},
        "results": rows, "runs": runs}, indent=2))
    from ._optional import import_optional
    from .plotting import _comparison_figsize, plot_comparison

    try:  # a bare Figure: no pyplot state, no GUI backend
        Figure = import_optional("matplotlib.figure", "results.png of the main job").Figure
    except ImportError as exc:
        warnings.warn(f"results.png not written: {exc}", stacklevel=2)
        return ["csv", "json"]
    n = max(r["n_seeds"] for r in rows)
    fig = plot_comparison(rows, title="Embeddings of the mfeat digits (test split, mean of "
                          f"{n} seed{'s' if n > 1 else ''})",
                          fig=Figure(figsize=_comparison_figsize(len(rows))))
    fig.savefig(out / "results.png", dpi=150)
    return ["csv", "json", "png"]


def main(argv=None):
    """Command-line entry point (``mmfactor`` / ``python -m mmfactor``)."""
    about = __doc__.replace("``", "").split("\n\n")[:2]
    p = argparse.ArgumentParser(
        prog="mmfactor", description="\n\n".join(about).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"models: {', '.join(MODELS)} (and PCA, the reference row, always)")
    p.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help=f"models to run, among {' '.join(MODELS)} (default: all)")
    p.add_argument("--views", nargs="+", default=None, metavar="VIEW",
                   help=f"mfeat views, among {' '.join(VIEWS)} (default: all six)")
    p.add_argument("--n-components", type=int, default=50)
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:1' or 'auto'")
    p.add_argument("--output", default="mmfactor_output", help="output folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="random_state of the models; one fit per seed (default: 0 1 2)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads of every model's fit and transform (n_jobs; -1: all "
                        "CPUs). Default 1: the same numbers on any machine; see the FAQ")
    p.add_argument("--jobs", type=int, default=None,
                   help="fits side by side (default: one per core); 1 shows each fit's "
                        "own progress bar")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        check_args(args.models, args.views, args.device, args.seeds, args.threads, args.jobs)
    except ValueError as exc:
        p.error(str(exc))  # usage and the message, exit status 2, before any model runs
    run(args.models, views=args.views, n_components=args.n_components, device=args.device,
        output=args.output, seeds=args.seeds, threads=args.threads, jobs=args.jobs,
        verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    # run the module under its own name, so that worker processes can unpickle its
    # functions (python -m runs this file as __main__)
    from mmfactor.__main__ import main as _main

    sys.exit(_main())
