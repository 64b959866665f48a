"""DFMF on the Dictyostelium data: gene function prediction, against scikit-fusion and CMF.

10-fold cross-validation over the genes: the GO annotations of the held-out genes are
masked (the DFMC completion setting of the DFMF paper and of scikit-fusion's
``dicty_association`` example), every model fuses the annotations with the gene
expression (log1p) and, where it can, the protein-interaction constraints, and the
held-out annotations are predicted. The score is the AUC of each GO term over the
pooled out-of-fold predictions, averaged over the terms. Fit time, time per sweep and
the objective after each sweep are recorded for every model, all measured in this one
process on the same CPU threads.

Peers:

* scikit-fusion 0.2.1 (``skfusion.fusion.Dfmc``, the authors' package), run in this
  process through a shim for what current Python and NumPy removed
  (``collections.Iterable``, ``np.float``, and the ``entry != []`` test on arrays in
  ``_par_bdot``, which NumPy 2 turns into a broadcasting error; the shim replaces
  ``_par_bdot`` by a sequential loop over the module's own block product, which also
  drops joblib's per-call overhead, so it can only make scikit-fusion faster). Get it
  with ``pip download scikit-fusion==0.2.1 --no-deps --no-binary :all:``, unpack it,
  and pass the folder with ``--skfusion-path``;
* :class:`mmfactor.CMF` (no constraints: it has no term for them).

Usage::

    python benchmarks/bench_dfmf.py --skfusion-path /tmp/skf/scikit-fusion-0.2.1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from mmfactor import CMF, DFMF, MultiModal
from mmfactor.datasets import fetch_dicty

RANKS = {"gene": 50, "go": 15, "cond": 5}  # scikit-fusion's load_dicty ranks


def load_skfusion(path):
    """Import scikit-fusion 0.2.1 with the shims it needs on current Python/NumPy."""
    import collections
    import collections.abc

    for name in ("Iterable", "Mapping", "Sequence"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    if not hasattr(np, "float"):
        np.float = float  # noqa: NPY001 -- removed in NumPy 1.24; scikit-fusion uses np.finfo(np.float)
    if path:
        sys.path.insert(0, str(path))
    import skfusion.fusion as skf
    from skfusion.fusion.decomposition import _dfmc, _dfmf

    for mod in (_dfmc, _dfmf):
        bdot = getattr(mod, "__bdot")

        def _par_bdot(A, B, obj_types, verbose, n_jobs, _bdot=bdot):
            out = {}
            for i in obj_types:
                for j in obj_types:
                    _, _, entry = _bdot(A, B, i, j, obj_types)
                    if not (isinstance(entry, list) and len(entry) == 0):
                        out[i, j] = entry
            return out

        mod._par_bdot = _par_bdot
    return skf


def objective(R, mask, Theta, G_gene, G_go, G_cond, S_ann, S_expr):
    """The DFMC objective on the observed entries (the one mmfactor's DFMF reports)."""
    ann, expr = R
    res = np.where(mask, 0.0, ann - G_gene @ S_ann @ G_go.T)
    val = (res**2).sum() + ((expr - G_gene @ S_expr @ G_cond.T) ** 2).sum()
    if Theta is not None:
        val += (G_gene * (Theta @ G_gene)).sum()
    return float(val)


def run_skfusion(skf, ann, expr, ppi_dense, test, n_iter, seed, use_ppi):
    gene, go, cond = skf.ObjectType("gene", RANKS["gene"]), skf.ObjectType(
        "go", RANKS["go"]), skf.ObjectType("cond", RANKS["cond"])
    mask = np.zeros(ann.shape, dtype=bool)
    mask[test] = True
    rels = [skf.Relation(np.ma.array(ann, mask=mask), gene, go),
            skf.Relation(expr, gene, cond)]
    if use_ppi:
        rels.append(skf.Relation(ppi_dense, gene, gene))
    snaps = []

    def callback(G, S, it):
        snaps.append((time.perf_counter(), {k[0].name: v.copy() for k, v in G.items()},
                      {k: [s.copy() for s in v] for k, v in S.items()}))

    fuser = skf.Dfmc(max_iter=n_iter, n_run=1, init_type="random_c", random_state=seed,
                     callback=callback)
    t0 = time.perf_counter()
    fuser.fuse(skf.FusionGraph(rels))
    fit = time.perf_counter() - t0
    G = {ot.name: fuser.factor(ot) for ot in (gene, go, cond)}
    pred = G["gene"][test] @ fuser.backbone(rels[0]) @ G["go"].T
    times = np.diff([t0] + [s[0] for s in snaps])
    objs = []
    for _, g, s in snaps:
        S_ann = s[gene, go][0]
        S_expr = s[gene, cond][0]
        objs.append(objective((ann, expr), mask, ppi_dense if use_ppi else None,
                              g["gene"], g["go"], g["cond"], S_ann, S_expr))
    return pred, fit, times.tolist(), objs


def run_dfmf(ann, expr, ppi, test, n_iter, seed, use_ppi, device, form="laplacian",
             dtype="float64"):
    a = ann.copy()
    a[test] = np.nan
    X = MultiModal(ann=a, expr=expr, ppi=ppi) if use_ppi else MultiModal(ann=a, expr=expr)
    model = DFMF(n_components=RANKS, relations={"ann": ("gene", "go"), "expr": ("gene", "cond")},
                 constraints={"gene": "ppi"} if use_ppi else None, constraint_form=form,
                 init="random_c", max_iter=n_iter, tol=0, random_state=seed, devices=device,
                 dtype=dtype)
    t0 = time.perf_counter()
    model.fit(X)
    fit = time.perf_counter() - t0
    rows, cols = np.meshgrid(test, np.arange(ann.shape[1]), indexing="ij")
    pred = model.predict_entries(np.c_[rows.ravel(), cols.ravel()], "ann").reshape(len(test), -1)
    return pred, fit, [fit / model.n_iter_] * model.n_iter_, list(model.loss_curve_)


def run_cmf(ann, expr, test, n_iter, seed, device, n_components):
    a = ann.copy()
    a[test] = np.nan
    X = MultiModal(ann=a, expr=expr)
    model = CMF(n_components=n_components, relations={"ann": ("gene", "go"),
                                                      "expr": ("gene", "cond")},
                max_iter=n_iter, tol=0, random_state=seed, devices=device)
    t0 = time.perf_counter()
    model.fit(X)
    fit = time.perf_counter() - t0
    rows, cols = np.meshgrid(test, np.arange(ann.shape[1]), indexing="ij")
    pred = model.predict_entries(np.c_[rows.ravel(), cols.ravel()], "ann").reshape(len(test), -1)
    return pred, fit, [fit / model.n_iter_] * model.n_iter_, list(model.loss_curve_)


def mean_auc(y, pred):
    terms = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean([roc_auc_score(y[:, j], pred[:, j]) for j in terms])), len(terms)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="device of mmfactor's models")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"),
                   help="folder for dfmf.json and dfmf.md")
    p.add_argument("--skfusion-path", default=None,
                   help="folder holding the unpacked scikit-fusion 0.2.1 (with skfusion/)")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--ppi-weights", type=float, nargs="+", default=[1.0, 100.0],
                   help="scales of the interaction constraint matrix (the shipped one is x1)")
    p.add_argument("--n-iter", type=int, default=30, help="sweeps of every model")
    p.add_argument("--cmf-components", type=int, default=15)
    p.add_argument("--threads", type=int, default=1,
                   help="torch and BLAS threads of every model (1: robust on a shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-home", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # NumPy's BLAS, which scikit-fusion runs on

    d = fetch_dicty(args.data_home)
    ann, expr, ppi = d.annotations, np.log1p(d.expression), d.ppi
    ppi_dense = ppi.toarray()
    folds = list(KFold(args.folds, shuffle=True, random_state=args.seed).split(ann))

    try:
        skf = load_skfusion(args.skfusion_path)
        skf_error = None
    except Exception as exc:  # the measured reason is reported, not hidden
        skf, skf_error = None, f"import failed: {exc!r}"

    models = {}
    for w in args.ppi_weights:
        tag = f" + PPI x{w:g}"
        models["mmfactor DFMF" + tag] = lambda te, w=w: run_dfmf(
            ann, expr, ppi * w, te, args.n_iter, args.seed, True, args.device)
        models["mmfactor DFMF" + tag + " float32"] = lambda te, w=w: run_dfmf(
            ann, expr, ppi * w, te, args.n_iter, args.seed, True, args.device,
            dtype="float32")
        models["mmfactor DFMF" + tag + " (raw Theta)"] = lambda te, w=w: run_dfmf(
            ann, expr, ppi * w, te, args.n_iter, args.seed, True, args.device, form="raw")
        if skf is not None:
            models["scikit-fusion 0.2.1 Dfmc" + tag] = lambda te, w=w: run_skfusion(
                skf, ann, expr, ppi_dense * w, te, args.n_iter, args.seed, True)
    models["mmfactor DFMF"] = lambda te: run_dfmf(ann, expr, ppi, te, args.n_iter, args.seed,
                                                  False, args.device)
    if skf is not None:
        models["scikit-fusion 0.2.1 Dfmc"] = lambda te: run_skfusion(
            skf, ann, expr, ppi_dense, te, args.n_iter, args.seed, False)
    models["mmfactor CMF"] = lambda te: run_cmf(ann, expr, te, args.n_iter, args.seed,
                                                args.device, args.cmf_components)

    results = {}
    for name, fn in models.items():
        pred = np.zeros_like(ann)
        fits, sweeps, objs = [], [], None
        try:
            for _, te in folds:
                pr, fit, times, obj = fn(te)
                pred[te] = pr
                fits.append(fit)
                sweeps.extend(times)
                objs = objs if objs is not None else obj  # first fold's curve
            if not np.isfinite(pred).all():
                raise FloatingPointError("diverged: non-finite predictions")
        except Exception as exc:
            results[name] = {"error": f"{exc!r}", "traceback": traceback.format_exc()}
            print(f"{name}: failed: {exc!r}")
            continue
        auc, n_terms = mean_auc(ann, pred)
        results[name] = {
            "auc": auc, "n_terms": n_terms, "fit_s_mean": float(np.mean(fits)),
            "fit_s_total": float(np.sum(fits)), "sweep_s": float(np.mean(sweeps)),
            "objective_fold0": objs,
        }
        print(f"{name}: AUC {auc:.4f} over {n_terms} terms, fit {np.mean(fits):.3f} s/fold, "
              f"{1e3 * np.mean(sweeps):.2f} ms/sweep, objective {objs[0]:.6g} -> {objs[-1]:.6g}")

    machine = {"platform": platform.platform(), "cpu_count": torch.get_num_threads(),
               "os_cpu_count": __import__("os").cpu_count(), "python": sys.version.split()[0],
               "torch": torch.__version__, "numpy": np.__version__}
    command = "python " + " ".join([sys.argv[0].split("/work/main/")[-1]] + sys.argv[1:])
    out = {"benchmark": "dfmf_dicty", "command": command, "machine": machine,
           "settings": vars(args), "ranks": RANKS, "skfusion_error": skf_error,
           "results": results}
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "dfmf.json").write_text(json.dumps(out, indent=1))

    ref = results.get(f"scikit-fusion 0.2.1 Dfmc + PPI x{args.ppi_weights[0]:g}", {})
    lines = [
        "## DFMF: gene function prediction on dicty (10-fold CV, masked annotations)",
        "",
        f"Machine: {machine['platform']}, {machine['os_cpu_count']} CPUs "
        f"({args.threads} torch/BLAS threads), Python {machine['python']}, "
        f"torch {machine['torch']}, NumPy {machine['numpy']}.",
        f"Command: `{command}`",
        f"Ranks {RANKS}, {args.n_iter} sweeps per fit, {args.folds} folds; AUC per GO term "
        "on the pooled out-of-fold predictions, averaged over the terms.",
        "",
        "| model | mean AUC | fit s / fold | ms / sweep | fit speed-up vs scikit-fusion "
        f"+ PPI x{args.ppi_weights[0]:g} "
        "| objective after sweep 1 -> last (fold 1) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} | | | | |")
            continue
        speed = (f"{ref['fit_s_mean'] / r['fit_s_mean']:.1f}x" if "fit_s_mean" in ref else "n/a")
        lines.append(
            f"| {name} | {r['auc']:.4f} | {r['fit_s_mean']:.3f} | {1e3 * r['sweep_s']:.2f} "
            f"| {speed} | {r['objective_fold0'][0]:.6g} -> {r['objective_fold0'][-1]:.6g} |"
        )
    if skf_error:
        lines += ["", f"scikit-fusion could not run: {skf_error}"]
    lines += ["", "CMF has no constraint term (no PPI); its objective is its own (squared error "
              "plus L2 penalty), the others report the DFMC objective on the observed entries."]
    (outdir / "dfmf.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
