"""Scale: CMF at MovieLens-10M size against cmfrec; HyperLearn per-mode ranks from 2 to 5 modes.

(a) ``--part cmf``: a synthetic rating matrix of MovieLens-10M's size (70,000 users x
    10,000 movies, 10^7 ratings by default; planted rank-10 biased model, ratings rounded
    to 1..5), kept sparse throughout. mmfactor's CMF (ALS, Gauss-Seidel and Jacobi) and
    cmfrec's CMF (ALS with Cholesky and with conjugate gradient) fit the same training
    ratings with the same rank, regularisation and number of sweeps, on the same threads;
    fit time (wall and CPU seconds of the process), RMSE on 1% held-out ratings, and the
    peak memory of the process. mmfactor's ALS row solver is chosen with the library name:
    ``mmfactor`` (``als_solver="auto"``), ``mmfactor-cholesky``, ``mmfactor-cg`` (both
    Gauss-Seidel), ``mmfactor-jacobi``.
(b) ``--part hyperlearn``: HyperLearn on a ``make_hypergraph`` tensor with K = 2..5 modes
    (same nodes per mode, same number of hyperedges). Time per sweep of one process doing
    every mode against one ``torch.distributed`` rank per mode (gloo over 127.0.0.1), and
    the same on K dedicated cores, simulated from measurements (see ``simulate``).
(c) peak memory (resident set, and CUDA when used) of every run above.

Every measurement runs in a fresh child process, so that its peak memory is its own.

    python benchmarks/bench_scale.py --part cmf --threads 2 --n-ratings 10000000
    python benchmarks/bench_scale.py --part cmf --rank 50 --libraries mmfactor-cg cmfrec-cg
    python benchmarks/bench_scale.py --part hyperlearn --modes 2 3 4 5
    python benchmarks/bench_scale.py --part cmf --device cuda     # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import loadavg, markdown_table, write_results  # noqa: E402


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb():
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited at exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------------------
# (a) CMF vs cmfrec
# --------------------------------------------------------------------------------------


def make_ratings(n_users, n_items, n_ratings, n_test, rank, seed=0):
    """Planted ``mu + b_u + b_i + u.v + noise`` at unique random (user, item) pairs, 1..5."""
    rng = np.random.default_rng(seed)
    n = n_ratings + n_test
    # popularity-skewed items, uniform users, unique pairs; the most popular item gets
    # ~0.2% of the ratings (MovieLens-10M's most rated movie: ~0.35%)
    pop = 1.0 / (np.arange(n_items) + 50.0)
    pop = rng.permutation(0.5 * pop / pop.sum() + 0.5 / n_items)
    if n > 0.5 * n_users * n_items:
        raise ValueError(f"{n} ratings is more than half of the {n_users} x {n_items} matrix.")
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n:
        m = int((n - len(keys)) * 1.1) + 1000
        u = rng.integers(0, n_users, m)
        i = rng.choice(n_items, m, p=pop)
        keys = np.unique(np.concatenate([keys, u.astype(np.int64) * n_items + i]))
    keys = rng.permutation(keys)[:n]
    users, items = keys // n_items, keys % n_items
    U = rng.normal(0, 0.35, (n_users, rank))
    V = rng.normal(0, 0.35, (n_items, rank))
    bu, bi = rng.normal(0, 0.3, n_users), rng.normal(0, 0.4, n_items)
    vals = 3.5 + bu[users] + bi[items] + np.einsum("ij,ij->i", U[users], V[items])
    vals = np.clip(np.round(vals + rng.normal(0, 0.8, n)), 1, 5).astype(np.float32)
    tr, te = slice(0, n_ratings), slice(n_ratings, n)
    return (users[tr], items[tr], vals[tr]), (users[te], items[te], vals[te])


def worker_cmf(args):
    """One fit in this (fresh) process; prints a JSON line."""
    import scipy.sparse as sp
    import torch

    torch.set_num_threads(args.threads)
    d = np.load(args.data)
    (ur, ir, vr), (ut, it, vt) = ((d["u"], d["i"], d["v"]), (d["ut"], d["it"], d["vt"]))
    shape = (int(d["n_users"]), int(d["n_items"]))
    base = rss_mb()
    lib = args.library
    if lib.startswith("mmfactor"):
        from mmfactor import CMF

        X = sp.csr_matrix((vr, (ur, ir)), shape=shape)
        update = "jacobi" if "jacobi" in lib else "gauss-seidel"
        als = lib.split("-")[1] if lib in ("mmfactor-cg", "mmfactor-cholesky") else "auto"
        model = CMF(args.rank, alpha=args.reg, max_iter=args.sweeps, tol=0, random_state=0,
                    update=update, devices=args.device, fit_intercept=True,  # as cmfrec
                    als_solver=als, cg_steps=args.cg_steps)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t, c = time.perf_counter(), time.process_time()
        model.fit([X])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        fit_s, cpu_s = time.perf_counter() - t, time.process_time() - c
        extra = {"als_solver": model._als_solve}
        pred = model.predict_entries(np.c_[ut, it])
    else:
        import pandas as pd
        from cmfrec import CMF as CmfrecCMF

        df = pd.DataFrame({"UserId": ur, "ItemId": ir, "Rating": vr})
        model = CmfrecCMF(k=args.rank, lambda_=args.reg, niter=args.sweeps,
                          nthreads=args.threads, use_cg="cg" in lib, verbose=False,
                          random_state=0, use_float=True)
        t, c = time.perf_counter(), time.process_time()
        model.fit(df)
        fit_s, cpu_s = time.perf_counter() - t, time.process_time() - c
        extra = {}
        pred = model.predict(user=ut, item=it)
    rmse = float(np.sqrt(np.mean((np.clip(pred, 1, 5) - vt) ** 2)))
    out = {"library": lib, "device": args.device if lib.startswith("mmfactor") else "cpu",
           "fit_s": fit_s, "cpu_s": cpu_s, "sweep_s": fit_s / args.sweeps, "rmse": rmse,
           "peak_rss_mb": peak_rss_mb(), "rss_before_fit_mb": base, **extra}
    if args.device.startswith("cuda") and lib.startswith("mmfactor"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(out), flush=True)


def run_child(argv, timeout):
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {argv} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][7:])


def part_cmf(args):
    folder = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="bench_scale_"))
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"ratings_{args.n_users}_{args.n_items}_{args.n_ratings}_{args.rank}.npz"
    if not data.exists():
        t = time.perf_counter()
        (u, i, v), (ut, it, vt) = make_ratings(args.n_users, args.n_items, args.n_ratings,
                                               max(args.n_ratings // 100, 1000), args.rank)
        np.savez(data, u=u.astype(np.int32), i=i.astype(np.int32), v=v, ut=ut, it=it, vt=vt,
                 n_users=args.n_users, n_items=args.n_items)
        print(f"data: {len(v):,} training ratings, {args.n_users:,} x {args.n_items:,} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    libs = args.libraries
    rows = []
    load_before = loadavg()
    for lib in libs:
        devices = [args.device] if lib.startswith("mmfactor") else ["cpu"]
        for dev in devices:
            for rep in range(args.repeat):
                r = run_child(["--worker", "cmf", "--data", str(data), "--library", lib,
                               "--device", dev, "--threads", str(args.threads),
                               "--rank", str(args.rank), "--sweeps", str(args.sweeps),
                               "--reg", str(args.reg), "--cg-steps", str(args.cg_steps)],
                              args.timeout)
                r["repeat"] = rep
                print(r, flush=True)
                rows.append(r)
    best = {}
    for r in rows:  # the best of the repeats, as timeit reports
        key = (r["library"], r["device"])
        if key not in best or r["fit_s"] < best[key]["fit_s"]:
            best[key] = r
    table = list(best.values())
    ref = {r["library"]: r for r in table if r["library"].startswith("cmfrec")}
    for r in table:
        for name, c in ref.items():
            r[f"vs_{name}"] = r["fit_s"] / c["fit_s"]
    load_after = loadavg()
    cols = [("library", "library", None), ("als_solver", "row solve", None),
            ("device", "device", None), ("fit_s", f"fit time (s, {args.sweeps} sweeps)", "{:.2f}"),
            ("cpu_s", "CPU (s)", "{:.2f}"), ("sweep_s", "s / sweep", "{:.3f}"),
            ("rmse", "held-out RMSE", "{:.4f}"), ("peak_rss_mb", "peak RSS (MiB)", "{:.0f}"),
            ("cuda_peak_mb", "peak CUDA (MiB)", "{:.0f}")]
    cols += [(f"vs_{name}", f"time / {name}", "{:.2f}x") for name in ref]
    md = (f"(a) CMF on a synthetic {args.n_users:,} x {args.n_items:,} rating matrix with "
          f"{args.n_ratings:,} training ratings (1% more held out), rank {args.rank}, "
          f"{args.sweeps} ALS sweeps, L2 {args.reg} for both, {args.threads} threads, "
          f"mmfactor cg_steps={args.cg_steps} (cmfrec's CG: its default 3); best "
          f"fit time of {args.repeat}. Load average before {load_before}, after "
          f"{load_after}.\n\n" + markdown_table(table, cols))
    return {"cmf": {"loadavg_before": load_before, "loadavg_after": load_after,
                    "n_users": args.n_users, "n_items": args.n_items,
                    "n_ratings": args.n_ratings, "rank": args.rank, "sweeps": args.sweeps,
                    "reg": args.reg, "threads": args.threads, "cg_steps": args.cg_steps,
                    "runs": rows, "best": table}}, md


# --------------------------------------------------------------------------------------
# (b) HyperLearn: one process vs one rank per mode
# --------------------------------------------------------------------------------------


def hyperlearn_problem(args, K):
    from mmfactor import HyperLearn
    from mmfactor.datasets import make_hypergraph

    d = make_hypergraph((args.nodes,) * K, n_communities=5, n_hyperedges=args.hyperedges,
                        random_state=0)
    est = HyperLearn(args.rank, graphs=d.graphs, max_iter=args.sweeps, tol=0,
                     random_state=0, diffusion_steps=args.diffusion_steps,
                     devices=args.device)
    return est, d.X


def worker_hyperlearn(args):
    """Single process (``--ranks 0``) or one rank of a group (env from the parent)."""
    import torch

    torch.set_num_threads(args.threads)
    est, X = hyperlearn_problem(args, args.modes)
    base = rss_mb()
    if args.ranks == 0:
        import datetime

        import torch.distributed as dist

        import mmfactor.distributed as mmd

        # a one-rank group only to time each mode's update (the hooks add nothing else:
        # no exchange with one rank; the objective is the estimator's own)
        port = free_port()
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                world_size=1, timeout=datetime.timedelta(seconds=600))
        profile = []
        t = time.perf_counter()
        mmd.fit(est, X, profile=profile)
        fit_s = time.perf_counter() - t
        dist.destroy_process_group()
        out = {"mode": "one process", "modes": args.modes, "fit_s": fit_s,
               "n_iter": est.n_iter_, "profile": profile}
    else:
        import torch.distributed as dist

        import mmfactor.distributed as mmd

        with mmd.run(backend="gloo", timeout=600) as info:
            dist.barrier()  # every rank has started: time the fit, not the imports
            t = time.perf_counter()
            est.fit(X)
            fit_s = time.perf_counter() - t
        out = {"mode": f"{args.ranks} ranks", "rank": info["rank"], "modes": args.modes,
               "fit_s": fit_s, "n_iter": est.n_iter_, "profile": info["profile"]}
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_before_fit_mb"] = base
    print("RESULT " + json.dumps(out), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(argv, world, timeout):
    """``world`` ranks of this script (what torchrun does), gloo over 127.0.0.1."""
    port = free_port()
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, __file__, *argv], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            if p.returncode != 0 or not lines:
                raise RuntimeError(f"rank failed:\n{out[-2000:]}\n{err[-4000:]}")
            outs.append(json.loads(lines[-1][7:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def sweep_time(result):
    """Mean seconds per sweep on rank 0 (updates + exchange + objective), sweep 0 left out."""
    recs = result["profile"][1:] or result["profile"]
    return float(np.mean([r["compute_s"] + r["exchange_s"] + r["objective_s"] for r in recs]))


def simulate(single, ranks):
    """Seconds per sweep with one rank per mode on K dedicated cores, from measurements.

    Per sweep: the slowest mode's update as measured in the single (uncontended)
    process, plus the exchange as measured in the K-rank run on the rank that waited
    least (its exchange time is the communication itself, not a wait for a slower rank),
    plus rank 0's objective. Sweep 0 (warm-up) is left out.
    """
    sw = single["profile"][1:]
    per_mode = np.mean([[rec["unit_s"][str(t)] for t in range(single["modes"])] for rec in sw],
                       axis=0)
    obj = np.mean([rec["objective_s"] for rec in sw])
    n = len(ranks[0]["profile"])
    comm = np.mean([min(r["profile"][s]["exchange_s"] for r in ranks) for s in range(1, n)])
    return {"per_mode_s": per_mode.tolist(), "slowest_mode_s": float(per_mode.max()),
            "sum_modes_s": float(per_mode.sum()), "comm_s": float(comm),
            "objective_s": float(obj), "sweep_s": float(per_mode.max() + comm + obj)}


def part_hyperlearn(args):
    rows = []
    base = ["--worker", "hyperlearn", "--threads", "1", "--nodes", str(args.nodes),
            "--hyperedges", str(args.hyperedges), "--rank", str(args.rank), "--sweeps",
            str(args.sweeps), "--diffusion-steps", str(args.diffusion_steps), "--device",
            args.device]
    for K in args.modes:
        single = run_child(base + ["--modes", str(K), "--ranks", "0"], args.timeout)
        ranks = run_ranks(base + ["--modes", str(K), "--ranks", str(K)], K, args.timeout)
        sim = simulate(single, ranks)
        row = {"modes": K, "one_process_sweep_s": sweep_time(single),
               "ranks_sweep_s": sweep_time(ranks[0]),
               "simulated_sweep_s": sim["sweep_s"], "slowest_mode_s": sim["slowest_mode_s"],
               "comm_s": sim["comm_s"], "objective_s": sim["objective_s"],
               "one_process_peak_rss_mb": single["peak_rss_mb"],
               "rank_peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),
               "per_mode_s": sim["per_mode_s"]}
        print(row, flush=True)
        rows.append(row)
    ref = rows[0]
    for r in rows:
        for key in ("one_process_sweep_s", "ranks_sweep_s", "simulated_sweep_s"):
            r[key[:-2] + "_growth"] = r[key] / ref[key]
    cols = [("modes", "modes K", None),
            ("one_process_sweep_s", "1 process: s/sweep", "{:.3f}"),
            ("one_process_sweep_growth", "growth", "{:.2f}x"),
            ("ranks_sweep_s", f"K ranks on {os.cpu_count()} cores: s/sweep", "{:.3f}"),
            ("ranks_sweep_growth", "growth", "{:.2f}x"),
            ("simulated_sweep_s", "K ranks on K cores (simulated): s/sweep", "{:.3f}"),
            ("simulated_sweep_growth", "growth", "{:.2f}x"),
            ("slowest_mode_s", "slowest mode (s)", "{:.3f}"),
            ("comm_s", "exchange (s)", "{:.4f}"), ("objective_s", "objective (s)", "{:.3f}"),
            ("one_process_peak_rss_mb", "1 process peak RSS (MiB)", "{:.0f}"),
            ("rank_peak_rss_mb", "max rank peak RSS (MiB)", "{:.0f}")]
    md = (f"(b) HyperLearn, {args.nodes:,} nodes per mode, {args.hyperedges:,} hyperedges, "
          f"rank {args.rank}, diffusion_steps={args.diffusion_steps}, {args.sweeps} sweeps, "
          f"1 thread per process, device {args.device}; one rank per mode (gloo, "
          f"127.0.0.1).\n\n" + markdown_table(rows, cols))
    return {"hyperlearn": {"nodes": args.nodes, "hyperedges": args.hyperedges,
                           "rank": args.rank, "sweeps": args.sweeps, "rows": rows}}, md


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["cmf", "hyperlearn", "all"], default="all")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--sweeps", type=int, default=None,
                   help="ALS sweeps (cmf, default 10) or HyperLearn sweeps (default 4)")
    p.add_argument("--reg", type=float, default=10.0)
    p.add_argument("--cg-steps", type=int, default=3, help="mmfactor's cg_steps (CMF)")
    p.add_argument("--n-users", type=int, default=70_000)
    p.add_argument("--n-items", type=int, default=10_000)
    p.add_argument("--n-ratings", type=int, default=10_000_000)
    p.add_argument("--libraries", nargs="+",
                   default=["mmfactor", "mmfactor-jacobi", "cmfrec-cholesky", "cmfrec-cg"])
    p.add_argument("--modes", type=int, nargs="+", default=[2, 3, 4, 5])
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--hyperedges", type=int, default=200_000)
    p.add_argument("--diffusion-steps", type=int, default=5)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--cache", default=None, help="keep the generated ratings in this folder")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default=None)
    p.add_argument("--name", default="scale", help="results/<name>.json and .md")
    # child processes
    p.add_argument("--worker", choices=["cmf", "hyperlearn"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--library", help=argparse.SUPPRESS)
    p.add_argument("--ranks", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "cmf":
        args.sweeps = args.sweeps or 10
        return worker_cmf(args)
    if args.worker == "hyperlearn":
        args.modes = args.modes[0] if isinstance(args.modes, list) else args.modes
        return worker_hyperlearn(args)
    payload, mds = {}, []
    if args.part in ("cmf", "all"):
        a = argparse.Namespace(**vars(args))
        a.sweeps = args.sweeps or 10
        out, md = part_cmf(a)
        payload.update(out)
        mds.append(md)
    if args.part in ("hyperlearn", "all"):
        a = argparse.Namespace(**vars(args))
        a.sweeps = args.sweeps or 4
        out, md = part_hyperlearn(a)
        payload.update(out)
        mds.append(md)
    md = "\n\n".join(mds)
    write_results(args.name, payload, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
