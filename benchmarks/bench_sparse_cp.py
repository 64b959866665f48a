"""Sparse CP-ALS at scale: HyperLearn's ALS path against pyttb's ``cp_als`` on an ``sptensor``.

Both fit plain CP (no graphs, no penalty) to a ``make_hypergraph`` tensor (unstored
entries are zeros) of 10^5, 10^6 and 10^7 hyperedges, K = 3 and 4, rank 10, from the same
random initial factors, for the same number of sweeps, with stopping disabled: in exact
arithmetic both run the same alternating least-squares iterates, so the fit
``1 - ||X - M|| / ||X||`` must agree and the time per sweep is the comparison. Each size
runs in a fresh process (its memory is its own); the two libraries run one after the
other in that process, on the same number of threads (torch's and the BLAS's).

    python benchmarks/bench_sparse_cp.py --nnz 100000 1000000 --modes 3 4
    python benchmarks/bench_sparse_cp.py --nnz 10000000 --modes 3 --sweeps 2 --name sparse_cp_1e7
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, markdown_table, write_results  # noqa: E402

SHAPES = {3: (5000, 4000, 3000), 4: (2000, 1500, 1000, 500)}


def one(K, nnz, rank, sweeps, dtype, device):
    """One size in this process: pyttb, then HyperLearn, from the same start."""
    import pyttb
    import torch

    from mmfactor import HyperLearn
    from mmfactor.datasets import make_hypergraph

    X = make_hypergraph(SHAPES[K], n_communities=10, n_hyperedges=nnz, graph_degree=1,
                        random_state=0).X
    rng = np.random.RandomState(0)
    init = [rng.rand(n, rank) for n in X.shape]
    norm = float(np.sqrt(np.square(X.values).sum()))
    out = {"K": K, "shape": list(X.shape), "nnz": X.nnz, "rank": rank, "sweeps": sweeps}

    w0, c0 = time.perf_counter(), time.process_time()
    T = pyttb.sptensor(X.indices, X.values[:, None], X.shape)
    M, _, info = pyttb.cp_als(T, rank, maxiters=sweeps, stoptol=0.0,
                              init=pyttb.ktensor([f.copy() for f in init]), printitn=0)
    out["pyttb_wall_s"] = time.perf_counter() - w0
    out["pyttb_cpu_s"] = time.process_time() - c0
    out["pyttb_iters"] = int(info["iters"]) + 1 if "iters" in info else sweeps
    out["pyttb_fit"] = float(info["fit"])
    del T, M

    w0, c0 = time.perf_counter(), time.process_time()
    model = HyperLearn(n_components=rank, solver="als", update="gauss-seidel",
                       diffusion_steps=0, init=[f.copy() for f in init], max_iter=sweeps,
                       tol=0, dtype=dtype, devices=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    out["hl_wall_s"] = time.perf_counter() - w0
    out["hl_cpu_s"] = time.process_time() - c0
    out["hl_iters"] = model.n_iter_
    out["hl_fit"] = 1 - np.sqrt(model.loss_terms_["data"][-1]) / norm
    out["dtype"] = dtype
    out["wall_ratio"] = out["pyttb_wall_s"] / out["hl_wall_s"]
    out["cpu_ratio"] = out["pyttb_cpu_s"] / out["hl_cpu_s"]
    out["fit_diff"] = out["hl_fit"] - out["pyttb_fit"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nnz", type=int, nargs="+", default=[10**5, 10**6])
    p.add_argument("--modes", type=int, nargs="+", default=[3, 4])
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--sweeps", type=int, default=None,
                   help="ALS sweeps (default 10 up to 10^5 hyperedges, 5 to 10^6, 2 above)")
    p.add_argument("--dtype", nargs="+", default=["float32"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default="sparse_cp")
    p.add_argument("--out", default=None)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        K, nnz, sweeps, dtype = args.one.split(",")
        with threadpool_limits(args.threads):
            res = one(int(K), int(nnz), args.rank, int(sweeps), dtype, args.device)
        print(json.dumps(res))
        return
    import torch

    torch.set_num_threads(args.threads)  # as in the children (the header records it)
    before = loadavg()
    rows = []
    for nnz in args.nnz:
        sweeps = args.sweeps or (10 if nnz <= 10**5 else 5 if nnz <= 10**6 else 2)
        for K in args.modes:
            for dtype in args.dtype:
                cmd = [sys.executable, __file__, "--one", f"{K},{nnz},{sweeps},{dtype}",
                       "--rank", str(args.rank), "--threads", str(args.threads),
                       "--device", args.device]
                res = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    print(res.stderr[-3000:], file=sys.stderr)
                    rows.append({"K": K, "nnz": nnz, "error": res.stderr[-300:]})
                    continue
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    after = loadavg()
    md = (
        "Plain CP-ALS (no graphs, no penalty) of a `make_hypergraph` tensor (unstored "
        "entries are zeros), rank "
        f"{args.rank}, both from the same random factors, the same number of sweeps, no "
        f"stopping rule; {args.threads} thread(s) for torch and the BLAS; device "
        f"{args.device}. Times are whole fits (set-up included: pyttb builds its "
        "`sptensor`, HyperLearn its per-mode sorted copies), one fresh process per size. "
        f"Fit = 1 - ||X - M|| / ||X||. Load average before: {before}; after: {after}.\n\n"
        + markdown_table(rows, [
            ("K", "K", None), ("shape", "shape", None), ("nnz", "nnz", None),
            ("sweeps", "sweeps", None), ("dtype", "HyperLearn dtype", None),
            ("pyttb_wall_s", "pyttb wall (s)", "{:.2f}"),
            ("pyttb_cpu_s", "pyttb CPU (s)", "{:.2f}"),
            ("hl_wall_s", "HyperLearn wall (s)", "{:.2f}"),
            ("hl_cpu_s", "HyperLearn CPU (s)", "{:.2f}"),
            ("wall_ratio", "pyttb / HyperLearn (wall)", "{:.2f}x"),
            ("cpu_ratio", "pyttb / HyperLearn (CPU)", "{:.2f}x"),
            ("pyttb_fit", "pyttb fit", "{:.6f}"), ("hl_fit", "HyperLearn fit", "{:.6f}"),
        ]))
    write_results(args.name, {"rows": rows, "threads": args.threads, "loadavg_before": before,
                              "loadavg_after": after}, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
