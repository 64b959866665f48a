"""DFMF on the Dictyostelium data: gene function prediction, against scikit-fusion and CMF.

10-fold cross-validation over the genes: the GO annotations of the held-out genes are
masked (the DFMC completion setting of the DFMF paper and of scikit-fusion's
``dicty_association`` example), every model fuses the annotations with the gene
expression (log1p) and, where it can, the protein-interaction constraints, and the
held-out annotations are predicted. The score is the AUC of each GO term over the
pooled out-of-fold predictions, averaged over the terms, then over seeds (``--seeds``:
each seed changes the folds and the initialization; mean ± sd). Fit time (wall and
process CPU), time per sweep and the objective after each sweep are recorded for every
model, all measured in this one process on the same CPU threads, with the load average
before and after.

Peers:

* scikit-fusion 0.2.1 (``skfusion.fusion.Dfmc``, the authors' package), run in this
  process through a shim for what current Python and NumPy removed
  (``collections.Iterable``, ``np.float``, and the ``entry != []`` test on arrays in
  ``_par_bdot``, which NumPy 2 turns into a broadcasting error; the shim replaces
  ``_par_bdot`` by a sequential loop over the module's own block product, which also
  drops joblib's per-call overhead, so it can only make scikit-fusion faster). Get it
  with ``pip download scikit-fusion==0.2.1 --no-deps --no-binary :all:``, then either
  install the archive (``pip install --no-deps scikit-fusion-0.2.1.tar.gz``) or unpack
  it and pass the folder with ``--skfusion-path``;
* :class:`mmfactor.CMF` (no constraints: it has no term for them).

Usage::

    python benchmarks/bench_dfmf.py --data-home /work/shared/data
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
import scipy.sparse as sp
import torch
from _common import fmt_spread, loadavg, seed_spread
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
    cpu, t0 = time.process_time(), time.perf_counter()
    fuser.fuse(skf.FusionGraph(rels))
    fit, cpu = time.perf_counter() - t0, time.process_time() - cpu
    G = {ot.name: fuser.factor(ot) for ot in (gene, go, cond)}
    pred = G["gene"][test] @ fuser.backbone(rels[0]) @ G["go"].T
    objs = []
    for _, g, s in snaps:
        S_ann = s[gene, go][0]
        S_expr = s[gene, cond][0]
        objs.append(objective((ann, expr), mask, ppi_dense if use_ppi else None,
                              g["gene"], g["go"], g["cond"], S_ann, S_expr))
    return pred, fit, cpu, len(snaps), objs


def run_dfmf(ann, expr, ppi, test, n_iter, seed, use_ppi, device, form="laplacian",
             dtype="float64"):
    a = ann.copy()
    a[test] = np.nan
    X = MultiModal(ann=a, expr=expr, ppi=ppi) if use_ppi else MultiModal(ann=a, expr=expr)
    model = DFMF(n_components=RANKS, relations={"ann": ("gene", "go"), "expr": ("gene", "cond")},
                 constraints={"gene": "ppi"} if use_ppi else None, constraint_form=form,
                 init="random_c", max_iter=n_iter, tol=0, random_state=seed, devices=device,
                 dtype=dtype)
    return _fit_and_predict(model, X, ann, test)


def _fit_and_predict(model, X, ann, test):
    cpu, t0 = time.process_time(), time.perf_counter()
    model.fit(X)
    fit, cpu = time.perf_counter() - t0, time.process_time() - cpu
    rows, cols = np.meshgrid(test, np.arange(ann.shape[1]), indexing="ij")
    pred = model.predict_entries(np.c_[rows.ravel(), cols.ravel()], "ann").reshape(len(test), -1)
    return pred, fit, cpu, model.n_iter_, list(model.loss_curve_)


def run_cmf(ann, expr, test, n_iter, seed, device, n_components):
    a = ann.copy()
    a[test] = np.nan
    X = MultiModal(ann=a, expr=expr)
    model = CMF(n_components=n_components, relations={"ann": ("gene", "go"),
                                                      "expr": ("gene", "cond")},
                max_iter=n_iter, tol=0, random_state=seed, devices=device)
    return _fit_and_predict(model, X, ann, test)


def sweep_flops(n, m_go, m_cond, nnz_theta, k=RANKS):
    """Multiply-adds of one DFMF sweep on dicty with PPI, per product (counted from the
    shapes, for the order in which ``mmfactor.DFMF`` multiplies)."""
    kg, ko, kc = k["gene"], k["go"], k["cond"]
    return {
        "ann (masked): E G_go, backbone (kept for the gene update)": n * m_go * ko,
        "ann: E^T (G_gene S), go update": n * m_go * ko,
        "ann: (G_gene S) G_go^T, the refresh (new fill and exact loss)": n * m_go * ko,
        "ann: G_gene S, G_gene^T (R~ G_go), (R~ G_go) S^T, fill terms": n * kg * ko * 3
        + 2 * n * ko * ko,
        "expr (dense): R G_cond, backbone (kept for the gene update)": n * m_cond * kc,
        "expr: R^T (G_gene S), cond update (loss: <that, G_cond>, no product)":
            n * m_cond * kc,
        "expr: G_gene S, G_gene^T (R G_cond), (R G_cond) S^T": 3 * n * kg * kc,
        "gene: Gram G^T G": n * kg * kg,
        "gene: G sum B^-, G sum B^+ (the multiplicative rule)": 2 * n * kg * kg,
        "gene: Theta^- G (sparse PPI; Theta^+ is diagonal)": nnz_theta * kg,
    }


def mean_auc(y, pred):
    terms = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean([roc_auc_score(y[:, j], pred[:, j]) for j in terms])), len(terms)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="device of mmfactor's models")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"),
                   help="folder for dfmf.json and dfmf.md")
    p.add_argument("--skfusion-path", default=None,
                   help="folder holding the unpacked scikit-fusion 0.2.1 (with skfusion/), "
                        "if it is not installed")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--ppi-weights", type=float, nargs="+", default=[1.0, 100.0],
                   help="scales of the interaction constraint matrix (the shipped one is x1)")
    p.add_argument("--n-iter", type=int, default=30, help="sweeps of every model")
    p.add_argument("--cmf-components", type=int, default=15)
    p.add_argument("--threads", type=int, default=1,
                   help="torch and BLAS threads of every model (1: robust on a shared machine)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="each seed: its own folds and initialization")
    p.add_argument("--data-home", default=None)
    args = p.parse_args(argv)

    d = fetch_dicty(args.data_home)
    ann, expr, ppi = d.annotations, np.log1p(d.expression), d.ppi
    ppi_dense = ppi.toarray()

    try:
        skf = load_skfusion(args.skfusion_path)
        skf_error = None
    except Exception as exc:  # the measured reason is reported, not hidden
        skf, skf_error = None, f"import failed: {exc!r}"
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    # after every import: a BLAS loaded later (scipy.linalg's) keeps its default threads,
    # and on a busy machine an OpenBLAS that spins made scikit-fusion's 50 x 50 pinv 100x
    # slower
    threadpool_limits(args.threads)

    def models(seed):
        out = {}
        for w in args.ppi_weights:
            tag = f" + PPI x{w:g}"
            out["mmfactor DFMF" + tag] = lambda te, w=w: run_dfmf(
                ann, expr, ppi * w, te, args.n_iter, seed, True, args.device)
            out["mmfactor DFMF" + tag + " float32"] = lambda te, w=w: run_dfmf(
                ann, expr, ppi * w, te, args.n_iter, seed, True, args.device, dtype="float32")
            out["mmfactor DFMF" + tag + " (raw Theta)"] = lambda te, w=w: run_dfmf(
                ann, expr, ppi * w, te, args.n_iter, seed, True, args.device, form="raw")
            if skf is not None:
                out["scikit-fusion 0.2.1 Dfmc" + tag] = lambda te, w=w: run_skfusion(
                    skf, ann, expr, ppi_dense * w, te, args.n_iter, seed, True)
        out["mmfactor DFMF"] = lambda te: run_dfmf(ann, expr, ppi, te, args.n_iter, seed,
                                                   False, args.device)
        if skf is not None:
            out["scikit-fusion 0.2.1 Dfmc"] = lambda te: run_skfusion(
                skf, ann, expr, ppi_dense, te, args.n_iter, seed, False)
        out["mmfactor CMF"] = lambda te: run_cmf(ann, expr, te, args.n_iter, seed,
                                                 args.device, args.cmf_components)
        return out

    load_before, wall0, cpu0 = loadavg(), time.perf_counter(), time.process_time()
    runs = {}
    for seed in args.seeds:
        folds = list(KFold(args.folds, shuffle=True, random_state=seed).split(ann))
        for name, fn in models(seed).items():
            res = runs.setdefault(name, {"auc": [], "fit": [], "cpu": [], "sweeps": []})
            if "error" in res:
                continue
            pred = np.zeros_like(ann)
            try:
                for _, te in folds:
                    pr, fit, cpu, n_sweeps, obj = fn(te)
                    pred[te] = pr
                    res["fit"].append(fit)
                    res["cpu"].append(cpu)
                    res["sweeps"].append(n_sweeps)
                    res.setdefault("objective_fold0", obj)  # the first seed's first fold
                if not np.isfinite(pred).all():
                    raise FloatingPointError("diverged: non-finite predictions")
            except Exception as exc:
                res.update(error=f"{exc!r}", traceback=traceback.format_exc())
                print(f"{name}: failed: {exc!r}")
                continue
            auc, n_terms = mean_auc(ann, pred)
            res["auc"].append(auc)
            res["n_terms"] = n_terms
            print(f"seed {seed} {name}: AUC {auc:.4f} over {n_terms} terms, fit "
                  f"{np.mean(res['fit'][-len(folds):]):.3f} s/fold", flush=True)
    load_after = loadavg()
    total_wall, total_cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    results = {}
    for name, res in runs.items():
        if "error" in res:
            results[name] = {"error": res["error"], "traceback": res["traceback"]}
            continue
        sweeps = float(np.sum(res["sweeps"]))
        results[name] = {
            "auc": seed_spread(res["auc"]), "n_terms": res["n_terms"],
            "fit_s_mean": float(np.mean(res["fit"])), "fit_cpu_s_mean": float(np.mean(res["cpu"])),
            "fit_s_total": float(np.sum(res["fit"])),
            "sweep_s": float(np.sum(res["fit"])) / sweeps,
            "sweep_cpu_s": float(np.sum(res["cpu"])) / sweeps,
            "objective_fold0": res["objective_fold0"],
        }

    machine = {"platform": platform.platform(), "cpu_count": torch.get_num_threads(),
               "os_cpu_count": __import__("os").cpu_count(), "python": sys.version.split()[0],
               "torch": torch.__version__, "numpy": np.__version__}
    command = "python " + " ".join([sys.argv[0].split("/work/main/")[-1]] + sys.argv[1:])
    out = {"benchmark": "dfmf_dicty", "command": command, "machine": machine,
           "settings": vars(args), "ranks": RANKS, "skfusion_error": skf_error,
           "load_before": load_before, "load_after": load_after,
           "total_wall_s": total_wall, "total_cpu_s": total_cpu, "results": results}
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
        f"Ranks {RANKS}, {args.n_iter} sweeps per fit, {args.folds} folds, seeds "
        f"{args.seeds} (each: its folds and initialization); AUC per GO term on the pooled "
        "out-of-fold predictions, averaged over the terms, mean ± sd over the seeds. Times: "
        f"mean over every fold and seed. Load average before {load_before}, after "
        f"{load_after}; whole run {total_wall:.0f} s wall, {total_cpu:.0f} s CPU.",
        "",
        "| model | mean AUC | fit s / fold | ms / sweep (wall) | ms / sweep (CPU) "
        f"| speed-up per sweep vs scikit-fusion + PPI x{args.ppi_weights[0]:g} (wall / CPU) "
        "| objective after sweep 1 -> last (seed 1, fold 1) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} | | | | | |")
            continue
        speed = (f"{ref['sweep_s'] / r['sweep_s']:.1f}x / "
                 f"{ref['sweep_cpu_s'] / r['sweep_cpu_s']:.1f}x" if "sweep_s" in ref else "n/a")
        lines.append(
            f"| {name} | {fmt_spread(r['auc'], 4)} | {r['fit_s_mean']:.3f} | "
            f"{1e3 * r['sweep_s']:.2f} | {1e3 * r['sweep_cpu_s']:.2f} | {speed} | "
            f"{r['objective_fold0'][0]:.6g} -> {r['objective_fold0'][-1]:.6g} |"
        )
    if skf_error:
        lines += ["", f"scikit-fusion could not run: {skf_error}"]
    lines += ["", "CMF has no constraint term (no PPI); its objective is its own (squared error "
              "plus L2 penalty), the others report the DFMC objective on the observed entries."]
    theta = DFMF._theta("gene", ppi, None, {}, ppi.shape[0], "laplacian")
    flops = sweep_flops(ann.shape[0], ann.shape[1], expr.shape[1],
                        int((theta - sp.diags(theta.diagonal())).nnz))
    total = sum(flops.values())
    best = results.get(f"mmfactor DFMF + PPI x{args.ppi_weights[0]:g}", {})
    lines += ["", "Where a DFMF sweep's work goes (dicty + PPI, multiply-adds counted from the "
              "shapes; everything else is k x k or elementwise):", "",
              "| product | multiply-adds | share |", "| --- | --- | --- |"]
    lines += [f"| {name} | {v / 1e6:.2f} M | {100 * v / total:.0f}% |"
              for name, v in flops.items()]
    lines += [f"| total | {total / 1e6:.1f} M ({2 * total / 1e6:.0f} MFLOP) | |"]
    if "sweep_cpu_s" in best:
        lines += ["", f"At {1e3 * best['sweep_cpu_s']:.2f} CPU ms per sweep that is "
                  f"{2 * total / best['sweep_cpu_s'] / 1e9:.1f} GFLOP/s on one thread "
                  "(the fit's fixed costs included)."]
    (outdir / "dfmf.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
