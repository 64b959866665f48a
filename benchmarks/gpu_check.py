"""GPU check: each estimator at a size that shows the accelerator, one table.

Run by ``benchmarks/gpu_check.sh`` (which also installs what is missing and runs the
``cuda``-marked tests). Every workload fits on ``--device`` and reports its wall time,
the process CPU time, the peak accelerator memory and a quality figure, so that a GPU
run can be compared with the CPU rows of the other benchmark tables:

- CMF: a planted rating matrix (``bench_scale.make_ratings``; 10^7 ratings at
  ``--size full``), rank 10, 10 ALS sweeps, RMSE on held-out ratings;
- HyperLearn: a ``make_hypergraph`` 3-mode tensor (10^7 hyperedges at ``--size full``),
  rank 10, ALS, adjusted Rand index of the planted communities;
- MMEDA-II and DCMF: the embedded UCI digits (six views), 50 dimensions, macro-F1 of a
  logistic regression on the held-out 20%;
- persistence: a model fitted on ``--device`` is saved, loaded with ``devices="cpu"``,
  and must transform to the same embedding on the CPU.

    python benchmarks/gpu_check.py --device cuda --size full
    python benchmarks/gpu_check.py --device cpu --size tiny      # the CPU path, here
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import markdown_table, write_results  # noqa: E402

#: workload sizes: (ratings, users, items), (hyperedges, nodes per mode), MMEDA epochs
SIZES = {
    "tiny": {"ratings": (20_000, 2_000, 500), "hyper": (20_000, 300), "epochs": 3},
    "small": {"ratings": (10**6, 20_000, 5_000), "hyper": (10**6, 5_000), "epochs": 30},
    "full": {"ratings": (10**7, 70_000, 10_000), "hyper": (10**7, 50_000), "epochs": None},
}


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _measure(device, fn):
    """``(result, wall seconds, CPU seconds, peak accelerator MiB or None)`` of ``fn()``."""
    import torch

    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return out, wall, cpu, peak


def check_cmf(device, size):
    import scipy.sparse as sp
    from bench_scale import make_ratings

    from mmfactor import CMF

    n, n_users, n_items = SIZES[size]["ratings"]
    (u, i, v), (ut, it, vt) = make_ratings(n_users, n_items, n, max(n // 100, 1000), 10)
    X = sp.csr_matrix((v, (u, i)), shape=(n_users, n_items))
    model = CMF(10, alpha=10.0, max_iter=10, tol=0, random_state=0, devices=device)
    model, wall, cpu, peak = _measure(device, lambda: model.fit([X]))
    rmse = float(np.sqrt(np.mean((model.predict_entries(np.c_[ut, it]) - vt) ** 2)))
    return {"work": f"CMF, {n:,} ratings, rank 10, 10 ALS sweeps", "quality": "test RMSE",
            "value": rmse, "wall_s": wall, "cpu_s": cpu, "peak_mib": peak}, model, [X]


def check_hyperlearn(device, size):
    from sklearn.metrics import adjusted_rand_score

    from mmfactor import HyperLearn
    from mmfactor.datasets import make_hypergraph

    n, nodes = SIZES[size]["hyper"]
    data = make_hypergraph((nodes,) * 3, n_communities=5, n_hyperedges=n, graph_degree=0,
                           random_state=0)
    model = HyperLearn(10, solver="als", diffusion_steps=0, max_iter=10, tol=0,
                       random_state=0, devices=device)
    model, wall, cpu, peak = _measure(device, lambda: model.fit(data.X))
    pred = np.argmax(np.abs(model.factors_[0]), axis=1)
    ari = float(adjusted_rand_score(data.labels[0], pred))
    return {"work": f"HyperLearn ALS, 3 modes x {nodes:,} nodes, {data.X.nnz:,} hyperedges, "
                    "rank 10, 10 sweeps",
            "quality": "ARI (mode 0)", "value": ari, "wall_s": wall, "cpu_s": cpu,
            "peak_mib": peak}, model, data.X


def _digits():
    from sklearn.model_selection import train_test_split

    from mmfactor.datasets import load_mfeat

    X, y = load_mfeat(image=False, return_X_y=True)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    return X, y, tr, te


def _probe(Z_tr, y_tr, Z_te, y_te):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(f1_score(y_te, clf.fit(Z_tr, y_tr).predict(Z_te), average="macro"))


def check_neural(cls, device, size):
    X, y, tr, te = _digits()
    epochs = SIZES[size]["epochs"]
    kw = {} if epochs is None else {"max_iter": epochs}
    model = cls(50, random_state=0, devices=device, **kw)
    model, wall, cpu, peak = _measure(device, lambda: model.fit(X[tr]))
    f1 = _probe(model.transform(X[tr]), y[tr], model.transform(X[te]), y[te])
    return {"work": f"{cls.__name__}, digits six views ({len(tr)} rows), 50 dims"
                    + ("" if epochs is None else f", {epochs} epochs"),
            "quality": "logistic macro-F1", "value": f1, "wall_s": wall, "cpu_s": cpu,
            "peak_mib": peak}, model, X[te]


def check_persistence(model, X):
    """Save a fitted model; load and transform it in a process that sees no GPU.

    The child runs with ``CUDA_VISIBLE_DEVICES=""``, as on a CPU-only machine; its
    embedding must match the one computed here. Returns the relative difference.
    """
    import pickle
    import subprocess

    import mmfactor

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mmfactor.save(model, tmp / "model.mmf")
        (tmp / "X.pkl").write_bytes(pickle.dumps(X))
        code = ("import pickle, sys, numpy as np, torch, mmfactor; "
                "assert not torch.cuda.is_available(); d = sys.argv[1]; "
                "m = mmfactor.load(d + '/model.mmf'); "
                "X = pickle.load(open(d + '/X.pkl', 'rb')); "
                "np.save(d + '/Z.npy', np.asarray(m.transform(X)))")
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        subprocess.run([sys.executable, "-c", code, str(tmp)], check=True, env=env)
        b = np.load(tmp / "Z.npy")
    a = np.asarray(model.transform(X))
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--only", nargs="+", default=["cmf", "hyperlearn", "mmeda", "dcmf"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None)
    p.add_argument("--name", default=None, help="results/<name>.json (default gpu_<device>)")
    args = p.parse_args(argv)

    import torch

    from mmfactor import DCMF, MMEDA

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device.")
    checks = {"cmf": lambda: check_cmf(args.device, args.size),
              "hyperlearn": lambda: check_hyperlearn(args.device, args.size),
              "mmeda": lambda: check_neural(MMEDA, args.device, args.size),
              "dcmf": lambda: check_neural(DCMF, args.device, args.size)}
    rows, failed = [], []
    load_before = os.getloadavg()
    for name in args.only:
        print(f"[gpu_check] {name} on {args.device} ...", flush=True)
        row, model, X = checks[name]()
        row["cpu_reload_rel_diff"] = check_persistence(model, X)
        if not row["cpu_reload_rel_diff"] < 1e-4:
            failed.append(f"{name}: the model reloaded on the CPU transforms differently "
                          f"(relative difference {row['cpu_reload_rel_diff']:.2e})")
        rows.append(row)
        print(f"[gpu_check]   {row}", flush=True)
    cols = [("work", "work", None), ("quality", "quality", None), ("value", "value", "{:.4f}"),
            ("wall_s", "wall (s)", "{:.2f}"), ("cpu_s", "CPU (s)", "{:.2f}"),
            ("peak_mib", "peak device memory (MiB)", "{:.0f}"),
            ("cpu_reload_rel_diff", "reloaded on CPU: rel. diff", "{:.1e}")]
    load_after = os.getloadavg()
    md = (f"Device `{args.device}`, size `{args.size}`. Load average (1, 5, 15 min) before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after "
          f"{' '.join(f'{x:.2f}' for x in load_after)}.\n\n" + markdown_table(rows, cols))
    write_results(args.name or f"gpu_{args.device.split(':')[0]}", {"rows": rows,
                  "device": args.device, "size": args.size,
                  "loadavg_before": load_before, "loadavg_after": load_after}, md, args.out)
    print(md)
    if failed:
        print("\n".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
