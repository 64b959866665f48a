"""DFMF on a synthetic fusion graph: six object types, six sparse binary relations.

A stand-in for a held-out fusion graph of that shape (thousands of objects per type,
sparse binary relations; the graph itself is not available here), in two sizes: the
default one (3,000 / 2,000 / 1,500 / 1,000 / 800 / 500 objects, density 0.01) and a
larger, sparser one (``--scale 2 --density 0.002``). Each object type has planted
clusters; every relation links objects of some cluster pairs more often than others,
so a low-rank model can predict held-out links. The relations form a chain
``t0-t1-...-t5`` and one chord ``t0-t3``.

Task: 10% of the links of ``r01`` (``t0`` x ``t1``) are removed before fitting; each
model scores them against as many non-links, and the AUC is averaged over seeds (the
graph, the held-out links and the initialization change with the seed). Both models
fit every relation with its unstored entries as zeros (mmfactor ``missing="zero"``,
scikit-fusion's ``Dfmf``), rank 20 for every type, the paper's ``random_c``
initialization, a fixed number of sweeps (``tol=0``).

Peers, in this process on the same threads (``--threads``, default 1, for torch and
for NumPy's BLAS, which scikit-fusion runs on):

* scikit-fusion 0.2.1 ``Dfmf`` (loaded as in ``bench_dfmf.py``). It multiplies NumPy
  arrays with ``np.dot``, so its relations are dense arrays: it cannot take a sparse
  matrix;
* :class:`mmfactor.DFMF` on the sparse relations (CSR; never densified).

Wall and CPU seconds (``time.process_time``: the whole process, every thread) per fit
and per sweep, and the load average before and after.

Usage::

    python benchmarks/bench_dfmf_graph.py --seeds 0 1 2
    python benchmarks/bench_dfmf_graph.py --scale 2 --density 0.002 --name dfmf_graph_large
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch
from _common import fmt_spread, loadavg, seed_spread, write_results
from bench_dfmf import load_skfusion
from sklearn.metrics import roc_auc_score

from mmfactor import DFMF, MultiModal

SIZES = (3000, 2000, 1500, 1000, 800, 500)
PAIRS = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 3))


def make_graph(sizes, density, seed, n_clusters=8, holdout=0.1):
    """Relations (CSR, binary) with planted clusters; ``r01``'s held-out links and as
    many non-links as ``(rows, cols, labels)``."""
    rng = np.random.default_rng(seed)
    labels = [rng.integers(n_clusters, size=n) for n in sizes]
    rels = {}
    for i, j in PAIRS:
        # cluster-pair affinities: a few strong pairs, the rest weak
        aff = rng.random((n_clusters, n_clusters)) ** 4
        aff *= density * sizes[i] * sizes[j] / (
            np.bincount(labels[i], minlength=n_clusters) @ aff
            @ np.bincount(labels[j], minlength=n_clusters))
        rows, cols = [], []
        for a in range(n_clusters):
            ra = np.flatnonzero(labels[i] == a)
            for b in range(n_clusters):
                cb = np.flatnonzero(labels[j] == b)
                m = rng.binomial(len(ra) * len(cb), min(aff[a, b], 1.0))
                rows.append(rng.choice(ra, m))
                cols.append(rng.choice(cb, m))
        R = sp.csr_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows),
                                                           np.concatenate(cols))),
                          shape=(sizes[i], sizes[j]))
        R.data[:] = 1.0  # duplicates merged
        rels[f"r{i}{j}"] = R
    R = rels["r01"].tocoo()
    hide = rng.random(R.nnz) < holdout
    pos = (R.row[hide], R.col[hide])
    rels["r01"] = sp.csr_matrix((R.data[~hide], (R.row[~hide], R.col[~hide])), shape=R.shape)
    full = set(zip(R.row.tolist(), R.col.tolist(), strict=True))
    neg_r, neg_c = [], []
    while len(neg_r) < hide.sum():
        r, c = int(rng.integers(R.shape[0])), int(rng.integers(R.shape[1]))
        if (r, c) not in full:
            neg_r.append(r)
            neg_c.append(c)
    test = (np.r_[pos[0], neg_r], np.r_[pos[1], neg_c],
            np.r_[np.ones(len(pos[0])), np.zeros(len(neg_r))])
    return rels, test


def objective(rels, G, S):
    """sum ||R - G_i S_ij G_j'||^2 in float64, from the sparse R (never densified)."""
    total = 0.0
    for name, R in rels.items():
        i, j = int(name[1]), int(name[2])
        Gi, Gj, Sij = (np.asarray(x, dtype=np.float64) for x in (G[i], G[j], S[name]))
        inner = float(((R @ Gj) * (Gi @ Sij)).sum())
        quad = float(((Gi.T @ Gi @ Sij) * (Sij @ (Gj.T @ Gj))).sum())
        total += float(R.multiply(R).sum()) - 2 * inner + quad
    return total


def run_mmfactor(rels, sizes, k, n_iter, seed):
    X = MultiModal(**{n: R for n, R in rels.items() if n.startswith("r0")},
                   shared={n: R for n, R in rels.items() if not n.startswith("r0")})
    relations = {n: (f"t{n[1]}", f"t{n[2]}") for n in rels}
    model = DFMF(n_components=k, relations=relations, sample_entity="t0", missing="zero",
                 init="random_c", max_iter=n_iter, tol=0, random_state=seed)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(X)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    G = [model.factors_[f"t{i}"] for i in range(len(sizes))]
    return G, model.backbones_, wall, cpu, model.n_iter_


def run_skfusion(skf, rels, sizes, k, n_iter, seed):
    types = [skf.ObjectType(f"t{i}", k) for i in range(len(sizes))]
    relations = {n: skf.Relation(R.toarray(), types[int(n[1])], types[int(n[2])])
                 for n, R in rels.items()}  # scikit-fusion takes dense arrays only
    fuser = skf.Dfmf(max_iter=n_iter, init_type="random_c", n_run=1, random_state=seed)
    graph = skf.FusionGraph(list(relations.values()))
    wall, cpu = time.perf_counter(), time.process_time()
    fuser.fuse(graph)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    G = [fuser.factor(t) for t in types]
    S = {n: fuser.backbone(r) for n, r in relations.items()}
    return G, S, wall, cpu, n_iter


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every type's size")
    p.add_argument("--density", type=float, default=0.01)
    p.add_argument("--rank", type=int, default=20)
    p.add_argument("--n-iter", type=int, default=20, help="sweeps of every fit")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skfusion-path", default=None)
    p.add_argument("--no-skfusion", action="store_true")
    p.add_argument("--name", default="dfmf_graph", help="results/<name>.json and .md")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    skf = None if args.no_skfusion else load_skfusion(args.skfusion_path)
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    # after every import: a BLAS loaded later would keep its default threads
    threadpool_limits(args.threads)
    sizes = [int(round(n * args.scale)) for n in SIZES]
    load_before = loadavg()
    runners = {"mmfactor DFMF (sparse)": lambda rels, s: run_mmfactor(
        rels, sizes, args.rank, args.n_iter, s)}
    if skf is not None:
        runners["scikit-fusion 0.2.1 Dfmf (dense)"] = lambda rels, s: run_skfusion(
            skf, rels, sizes, args.rank, args.n_iter, s)
    runs = {name: [] for name in runners}
    nnz = None
    for seed in args.seeds:
        rels, (tr, tc, ty) = make_graph(sizes, args.density, seed)
        nnz = {n: int(R.nnz) for n, R in rels.items()}
        for name, run in runners.items():
            G, S, wall, cpu, n_iter = run(rels, seed)
            pred = ((G[0][tr] @ np.asarray(S["r01"])) * G[1][tc]).sum(1)
            runs[name].append({"seed": seed, "auc": float(roc_auc_score(ty, pred)),
                               "objective": objective(rels, G, S), "fit_wall_s": wall,
                               "fit_cpu_s": cpu, "sweeps": n_iter})
            print(name, runs[name][-1], flush=True)
    load_after = loadavg()
    rows = []
    ref = "scikit-fusion 0.2.1 Dfmf (dense)"
    for name, rs in runs.items():
        wall = min(r["fit_wall_s"] / r["sweeps"] for r in rs)
        cpu = min(r["fit_cpu_s"] / r["sweeps"] for r in rs)
        rows.append({"model": name, "auc": seed_spread([r["auc"] for r in rs]),
                     "objective": seed_spread([r["objective"] for r in rs]),
                     "sweep_wall_ms": 1e3 * wall, "sweep_cpu_ms": 1e3 * cpu})
    by = {r["model"]: r for r in rows}
    for r in rows:
        if ref in by:
            r["cpu_ratio"] = by[ref]["sweep_cpu_ms"] / r["sweep_cpu_ms"]
            r["wall_ratio"] = by[ref]["sweep_wall_ms"] / r["sweep_wall_ms"]
    lines = [
        f"Six object types of {' / '.join(map(str, sizes))} objects, relations "
        f"{', '.join(f'{n} ({v:,} links)' for n, v in nnz.items())} (last seed; density "
        f"{args.density}), rank {args.rank}, {args.n_iter} sweeps, seeds {args.seeds}, "
        f"{args.threads} torch/BLAS thread(s). AUC of the held-out 10% of r01's links "
        "against as many non-links (mean ± sd over seeds); objective: the float64 sum of "
        "squared errors over all entries of every relation. Per sweep: the best seed's "
        "fit time / sweeps (wall and process CPU). Load average before "
        f"{load_before}, after {load_after}.",
        "",
        "| model | AUC | objective | ms / sweep (wall) | ms / sweep (CPU) | CPU speed-up "
        "vs scikit-fusion | wall speed-up vs scikit-fusion |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {fmt_spread(r['auc'], 4)} | "
                     f"{fmt_spread(r['objective'], 1)} | {r['sweep_wall_ms']:.1f} | "
                     f"{r['sweep_cpu_ms']:.1f} | "
                     + (f"{r['cpu_ratio']:.1f}x | {r['wall_ratio']:.1f}x |"
                        if "cpu_ratio" in r else " | |"))
    write_results(args.name, {"settings": vars(args), "sizes": sizes, "nnz": nnz,
                              "load_before": load_before, "load_after": load_after,
                              "runs": runs, "rows": rows}, "\n".join(lines), out=args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
