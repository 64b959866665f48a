"""Two questions of issue 22, measured.

``--part weights``: should ``weights="balanced"`` (equal total weight per view) be the
default of CMF and DFMF? On pairs of mfeat views of very different widths, each model
embeds the 2,000 digits (views standardized for CMF, ``MinMaxScaler(clip=True)`` for
DFMF) with ``weights=None`` and with ``weights="balanced"``; the embedding is scored by
the 5-fold CV accuracy of a logistic regression predicting the digit. Each cell is the
mean ± sd over ``--seeds`` (default 0 1 2: the models' ``random_state``), the difference
is paired by seed, and each fit's wall and CPU seconds are recorded (the mean over seeds
is in the table). It is a timing too: run it alone, in parts if long (``--models``,
``--pairs``), each part merged into the table with ``--merge``.

``--part dtype``: what float32 and float64 cost for DFMF (seconds per sweep, same data,
on dicty and on a synthetic six-type fusion graph with sparse binary relations), and
what torch's and NumPy's CPU matrix products cost for the shapes a DFMF sweep uses.
Run it alone (``/tmp/alone``): it is a timing.

    python benchmarks/bench_weights.py --part weights
    python benchmarks/bench_weights.py --part weights --models DFMF --merge results/weights.json
    python benchmarks/bench_weights.py --part dtype
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from _common import (
    command,
    fmt_spread,
    loadavg,
    markdown_table,
    seed_spread,
    timed,
    write_results,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from mmfactor import CMF, DFMF, MultiModal
from mmfactor.datasets import fetch_dicty, load_mfeat

PAIRS = [("fac", "mor"), ("pix", "kar"), ("fou", "zer"), ("pix", "mor"), ("kar", "mor"),
         ("fac", "zer")]


def load_pair(pair, scaler):
    X, y = load_mfeat(views=list(pair), image=False, return_X_y=True)
    scaled = {n: scaler().fit_transform(v) for n, v in zip(pair, X.views, strict=True)}
    return MultiModal(**scaled), y


def probe(Z, y, seed):
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(clf, Z, y, cv=5).mean())


def part_weights(args):
    models = {
        "CMF": (lambda: StandardScaler(),
                lambda k, w, s: CMF(n_components=k, weights=w, random_state=s)),
        "DFMF": (lambda: MinMaxScaler(clip=True),
                 lambda k, w, s: DFMF(n_components=k, weights=w, random_state=s)),
    }
    pairs = [pair for pair in PAIRS if args.pairs is None or "+".join(pair) in args.pairs]
    rows = []
    for name in args.models:
        scaler, make = models[name]
        warm, _ = load_pair(pairs[0], scaler)  # torch's first calls, not in any timing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            make(2, None, 0).fit_transform(warm[:200])
        for pair in pairs:
            X, y = load_pair(pair, scaler)
            for k in args.ks:
                row = {"model": name, "views": f"{pair[0]} {X.views[0].shape[1]} + "
                       f"{pair[1]} {X.views[1].shape[1]}", "k": k, "seeds": args.seeds}
                for w, key in ((None, "none"), ("balanced", "balanced")):
                    accs, walls, cpus, sweeps = [], [], [], []
                    for s in args.seeds:
                        est = make(k, w, s)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", ConvergenceWarning)
                            cpu, t = time.process_time(), time.perf_counter()
                            Z = est.fit_transform(X)
                            walls.append(time.perf_counter() - t)
                            cpus.append(time.process_time() - cpu)
                        sweeps.append(est.n_iter_)
                        accs.append(probe(np.asarray(Z, dtype=np.float64), y, s))
                    row[key] = float(np.mean(accs))
                    row[key + "_spread"] = seed_spread(accs)
                    # the median over seeds: robust to one fit disturbed by another process
                    row[key + "_fit_s"] = float(np.median(walls))
                    row[key + "_fit_cpu_s"] = float(np.median(cpus))
                    row[key + "_fit_walls"], row[key + "_fit_cpus"] = walls, cpus
                    row[key + "_n_iter"] = float(np.mean(sweeps))
                diffs = np.subtract(row["balanced_spread"]["values"],
                                    row["none_spread"]["values"])
                row["diff"] = float(diffs.mean())
                row["diff_spread"] = seed_spread(diffs)
                row["time_ratio"] = row["balanced_fit_s"] / row["none_fit_s"]
                row["loadavg"] = loadavg()
                rows.append(row)
                print({k_: v for k_, v in row.items() if "spread" not in k_}, flush=True)
    return rows


def weights_table(rows, parts):
    """The markdown of ``--part weights`` from all its rows (merged parts)."""
    names = sorted({r["model"] for r in rows})
    summary = {}
    for name in names:
        mine = [r for r in rows if r["model"] == name]
        d = np.array([r["diff"] for r in mine])
        every = [(np.array(r["diff_spread"]["values"]) > 0.005).all() for r in mine]
        summary[name] = {"wins": int((d > 0.005).sum()), "losses": int((d < -0.005).sum()),
                         "ties": int((abs(d) <= 0.005).sum()), "mean_diff": float(d.mean()),
                         "wins_every_seed": int(sum(every)), "n": len(mine)}
    shown = [dict(r, none=fmt_spread(r["none_spread"]),
                  balanced=fmt_spread(r["balanced_spread"]),
                  diff=_signed(r["diff_spread"]),
                  none_time=f"{r['none_fit_s']:.2f} / {r['none_fit_cpu_s']:.2f}",
                  balanced_time=f"{r['balanced_fit_s']:.2f} / {r['balanced_fit_cpu_s']:.2f}",
                  sweeps=(f"{r['none_n_iter']:.0f} / {r['balanced_n_iter']:.0f}"
                          if "none_n_iter" in r else ""))
             for r in rows]
    cols = [("model", "model", None), ("views", "views (columns)", None), ("k", "k", None),
            ("none", "weights=None", None), ("balanced", '"balanced"', None),
            ("diff", "balanced - None (paired by seed)", None),
            ("none_time", "fit s, None (wall / CPU)", None),
            ("balanced_time", "fit s, balanced (wall / CPU)", None),
            ("time_ratio", "wall balanced / None", "{:.2f}"),
            ("sweeps", "sweeps (mean n_iter_) None / balanced", None)]
    lines = [f"- {n}: balanced better (mean > +0.005) in {s['wins']} (on every seed in "
             f"{s['wins_every_seed']}), worse in {s['losses']}, within 0.005 in "
             f"{s['ties']} of {s['n']}; mean difference {s['mean_diff']:+.3f}"
             for n, s in summary.items()]
    seeds = sorted({s for r in rows for s in r["seeds"]})
    runs = "; ".join(f"`{p['command']}` ({'alone' if p.get('alone') else 'NOT alone'}, "
                     f"load average before {p['loadavg'][0]}, after {p['loadavg'][1]}; "
                     f"{p['wall_s']:.0f} s wall, {p['cpu_s']:.0f} s CPU)" for p in parts)
    valid = ("measured alone (an exclusive lock: nothing else heavy running) in the parts "
             "below" if all(p.get("alone") for p in parts) else
             "**not valid timings where a part below ran NOT alone** (beside other jobs)")
    md = ("Downstream 5-fold CV accuracy (logistic regression on the embedding, digit "
          f"labels), mean ± sd over seeds {seeds} (`random_state` of the model); the "
          "difference is paired by seed (same seed, both weightings). Fit times: median "
          "over seeds of one `fit_transform`, wall / CPU seconds (after a warm-up fit; "
          f"the CV probe not included; every fit's times are in the JSON), {valid}; "
          f"torch threads {torch.get_num_threads()}.  \n"
          f"Parts: {runs}.\n\n"
          + markdown_table(shown, cols) + "\n\n" + "\n".join(lines))
    return md, summary


def _covered(part, args):
    """Whether this run measures again every row of an earlier ``part``."""
    models = part.get("models") or ["CMF", "DFMF"]
    if "models" not in part and "--models" in part["command"]:  # written before "models"
        models = part["command"].split("--models ")[1].split(" --")[0].split()
    pairs = part.get("pairs")
    return set(models) <= set(args.models) and (
        args.pairs is None or (pairs is not None and set(pairs) <= set(args.pairs)))


def _signed(s):
    return f"{s['mean']:+.3f} ± {s['sd']:.3f}"


def fusion_graph(sizes, density, seed):
    """Six object types, sparse binary relations along a chain and three chords."""
    rng = np.random.default_rng(seed)
    types = [f"t{i}" for i in range(len(sizes))]
    pairs = [(i, i + 1) for i in range(len(sizes) - 1)] + [(0, 2), (1, 4), (2, 5)]
    views, relations = {}, {}
    for i, j in pairs:
        R = sp.random(sizes[i], sizes[j], density=density, random_state=rng, format="csr")
        R.data[:] = 1.0
        views[f"r{i}{j}"] = R
        relations[f"r{i}{j}"] = (types[i], types[j])
    rows_t0 = {n: v for n, v in views.items() if n.startswith("r0")}
    shared = {n: v for n, v in views.items() if n not in rows_t0}
    return MultiModal(**rows_t0, shared=shared), relations, types


def time_fit(make, X, n_iter):
    make().set_params(max_iter=2).fit(X)  # warm-up: torch's first calls, allocations
    cpu = time.process_time()
    (model, wall) = timed(lambda: make().fit(X), repeat=2)
    return wall / model.n_iter_, (time.process_time() - cpu) / (2 * model.n_iter_)


def part_dtype(args):
    rows = []
    d = fetch_dicty(args.data_home)
    ann, expr, ppi = d.annotations, np.log1p(d.expression), d.ppi
    Xd = MultiModal(ann=ann, expr=expr, ppi=ppi)
    ranks = {"gene": 50, "go": 15, "cond": 5}
    graphs = {"dicty (gene 50, go 15, cond 5; PPI laplacian)": lambda dt: (
        Xd, lambda: DFMF(n_components=ranks, relations={"ann": ("gene", "go"),
                                                        "expr": ("gene", "cond")},
                         constraints={"gene": "ppi"}, max_iter=args.n_iter, tol=0,
                         random_state=0, dtype=dt))}
    sizes = args.sizes
    Xs, rel, types = fusion_graph(sizes, args.density, 0)
    graphs[f"six types {'/'.join(map(str, sizes))}, density {args.density}, rank 20"] = (
        lambda dt: (Xs, lambda: DFMF(n_components=20, relations=rel, missing="zero",
                                     sample_entity="t0", max_iter=args.n_iter, tol=0,
                                     random_state=0, dtype=dt)))
    for gname, make in graphs.items():
        for dt in ("float64", "float32"):
            X, mk = make(dt)
            wall, cpu = time_fit(mk, X, args.n_iter)
            rows.append({"what": f"DFMF fit, {gname}", "dtype": dt, "backend": "torch",
                         "ms": 1e3 * wall, "cpu_ms": 1e3 * cpu, "unit": "per sweep"})
            print(rows[-1], flush=True)
    n, m, k = sizes[0], sizes[1], 20
    shapes = [(n, m, k), (m, n, k), (n, k, k), (k, n, k), (k, k, k)]
    rng = np.random.default_rng(0)
    for a, b, c in shapes:
        for dt in (np.float64, np.float32):
            A, B = rng.random((a, b)).astype(dt), rng.random((b, c)).astype(dt)
            reps = max(10, int(2e8 / (a * b * c + 1e5)))
            At, Bt = torch.from_numpy(A), torch.from_numpy(B)
            for backend, f in (("numpy", lambda A=A, B=B: A @ B),
                               ("torch", lambda At=At, Bt=Bt: At @ Bt)):
                cpu = time.process_time()
                _, wall = timed(lambda f=f, reps=reps: [f() for _ in range(reps)], repeat=3)
                rows.append({"what": f"({a} x {b}) @ ({b} x {c})",
                             "dtype": np.dtype(dt).name, "backend": backend,
                             "ms": 1e3 * wall / reps,
                             "cpu_ms": 1e3 * (time.process_time() - cpu) / (3 * reps),
                             "unit": "per product"})
                print(rows[-1], flush=True)
    S = sp.random(n, m, density=args.density, random_state=0, format="csr")
    for dt in (np.float64, np.float32):
        Sd, B = S.astype(dt), rng.random((m, k)).astype(dt)
        St = torch.sparse_csr_tensor(Sd.indptr, Sd.indices, Sd.data, size=Sd.shape)
        Bt = torch.from_numpy(B)
        for backend, f in (("numpy", lambda Sd=Sd, B=B: Sd @ B),
                           ("torch", lambda St=St, Bt=Bt: torch.sparse.mm(St, Bt))):
            cpu = time.process_time()
            _, wall = timed(lambda f=f: [f() for _ in range(100)], repeat=3)
            rows.append({"what": f"CSR ({n} x {m}, density {args.density}) @ ({m} x {k})",
                         "dtype": np.dtype(dt).name, "backend": backend,
                         "ms": 1e3 * wall / 100,
                         "cpu_ms": 1e3 * (time.process_time() - cpu) / 300,
                         "unit": "per product"})
            print(rows[-1], flush=True)
    # ratios next to each row: float32 / float64 (same backend), torch / numpy (same dtype)
    key = {(r["what"], r["dtype"], r["backend"]): r["ms"] for r in rows}
    for r in rows:
        other = "float64" if r["dtype"] == "float32" else None
        if other:
            r["f32_over_f64"] = r["ms"] / key[(r["what"], other, r["backend"])]
        if r["backend"] == "torch" and (r["what"], r["dtype"], "numpy") in key:
            r["torch_over_numpy"] = r["ms"] / key[(r["what"], r["dtype"], "numpy")]
    cols = [("what", "what", None), ("dtype", "dtype", None), ("backend", "backend", None),
            ("unit", "unit", None), ("ms", "wall ms", "{:.3f}"), ("cpu_ms", "CPU ms", "{:.3f}"),
            ("f32_over_f64", "float32 / float64", "{:.2f}"),
            ("torch_over_numpy", "torch / NumPy", "{:.2f}")]
    return rows, {}, cols, []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["weights", "dtype"], default="weights")
    p.add_argument("--ks", type=int, nargs="+", default=[2, 10])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", choices=["CMF", "DFMF"], default=["CMF", "DFMF"],
                   help="--part weights: the models measured in this run")
    p.add_argument("--pairs", nargs="+", default=None,
                   choices=["+".join(pair) for pair in PAIRS],
                   help="--part weights: the view pairs measured in this run (default all)")
    p.add_argument("--merge", default=None,
                   help="--part weights: an earlier run's JSON whose rows are kept where "
                        "this run does not measure them (model, views, k)")
    p.add_argument("--alone", action="store_true",
                   help="--part weights: say that this run held the machine alone (an "
                        "exclusive lock such as /tmp/alone); its fit times are then valid")
    p.add_argument("--n-iter", type=int, default=10, help="DFMF sweeps timed (--part dtype)")
    p.add_argument("--sizes", type=int, nargs=6, default=[3000, 2000, 1500, 1000, 800, 500])
    p.add_argument("--density", type=float, default=0.01)
    p.add_argument("--data-home", default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load0, cpu0, t0 = loadavg(), time.process_time(), time.perf_counter()
    if args.part == "dtype":
        rows, summary, cols, lines = part_dtype(args)
    else:
        rows = part_weights(args)
    load1 = loadavg()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    if args.part == "weights":
        part = {"command": command(), "loadavg": [load0, load1], "wall_s": wall,
                "cpu_s": cpu, "seeds": args.seeds, "alone": args.alone,
                "models": args.models, "pairs": args.pairs}
        parts = [part]
        if args.merge:
            saved = json.loads(open(args.merge).read())
            new = {(r["model"], r["views"], r["k"]) for r in rows}
            rows = [r for r in saved["rows"] if (r["model"], r["views"], r["k"]) not in new
                    ] + rows
            order = {(m, "+".join(pair)): i for i, (m, pair) in enumerate(
                (m, pair) for m in ("CMF", "DFMF") for pair in PAIRS)}
            rows.sort(key=lambda r: (order[(r["model"], "+".join(r["views"].split()[::3]))],
                                     r["k"]))
            parts = [p_ for p_ in saved.get("parts", []) if not _covered(p_, args)] + parts
        md, summary = weights_table(rows, parts)
        write_results("weights", {"rows": rows, "summary": summary, "parts": parts}, md)
        print(md)
        return json.dumps(summary)
    intro = (f"Best of 2 fits of {args.n_iter} sweeps (tol=0) / best of 3 runs of the "
             f"products; NumPy {np.__version__}, torch threads {torch.get_num_threads()}.")
    md = (f"{intro}  \nLoad average before {load0.split()[0]}, after {load1.split()[0]}; "
          f"whole run {wall:.0f} s wall, {cpu:.0f} s CPU.\n\n" + markdown_table(rows, cols)
          + ("\n\n" + "\n".join(lines) if lines else ""))
    write_results("dtype", {"rows": rows, "summary": summary, "loadavg": [load0, load1],
                            "wall_s": wall, "cpu_s": cpu}, md)
    print(md)
    return json.dumps(summary)


if __name__ == "__main__":
    main()
