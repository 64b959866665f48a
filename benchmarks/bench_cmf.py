"""CMF against cmfrec on MovieLens-100K (Monti et al.'s split), in one run.

Both libraries fit the same training ratings with the same rank and number of ALS
sweeps on the same CPU threads. Their regularisation is chosen the same way for both:
on a validation split of 10% of the training ratings, from a small grid; the chosen
model is then refitted on all training ratings and scored on the test ratings. Then the
same with the user (occupation, sex, age) and movie (genres) side features as extra
relations. The rating model is the biased one (``fit_intercept=True``), as cmfrec's.
The test RMSE is the mean ± sd over ``--seeds`` (the factors' random initialisation of
both libraries; the regularisation is validated with the first seed); the fit time is the
best of ``--repeat`` fits with the first seed, wall and CPU seconds.

``--part implicit``: implicit-feedback ALS (Hu, Koren & Volinsky 2008) on the same
training ratings taken as interaction strengths, against ``implicit`` (benfred), with the
same rank, regularisation, confidence scale and sweeps: the objective each reaches
(computed the same way, in float64, from each library's factors), precision@10 on the
test interactions, wall and CPU seconds.

    python benchmarks/bench_cmf.py --threads 2
    python benchmarks/bench_cmf.py --part implicit --threads 2
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    fmt_spread,
    loadavg,
    markdown_table,
    seed_spread,
    write_results,
)

from mmfactor import CMF, MultiModal  # noqa: E402
from mmfactor.datasets import fetch_movielens_100k  # noqa: E402


def rmse(pred, truth):
    return float(np.sqrt(np.mean((np.clip(pred, 1, 5) - truth) ** 2)))


def user_side(d):
    age = (d.user_age - d.user_age.mean()) / d.user_age.std()
    return np.c_[d.user_occupation, d.user_sex, age]


def split_validation(train, frac=0.1, seed=0):
    coo = train.tocoo()
    rng = np.random.RandomState(seed)
    val = rng.rand(coo.nnz) < frac
    fit = sp.csr_matrix((coo.data[~val], (coo.row[~val], coo.col[~val])), shape=train.shape)
    return fit, (coo.row[val], coo.col[val], coo.data[val])


# ---- mmfactor ------------------------------------------------------------------------


def ours_fit(train, d, alpha, alpha_bias, k, sweeps, side, device, seed=0):
    if side:
        X = MultiModal(ratings=train, user=user_side(d), shared={"genre": d.movie_genres})
        rel = {"ratings": ("user", "movie"), "user": ("user", "ufeat"),
               "genre": ("movie", "genre")}
        model = CMF(k, relations=rel, weights={"user": 3.0, "genre": 3.0}, alpha=alpha,
                    alpha_bias=alpha_bias, max_iter=sweeps, tol=0, random_state=seed,
                    devices=device, fit_intercept=True)
    else:
        X = [train]
        model = CMF(k, alpha=alpha, alpha_bias=alpha_bias, max_iter=sweeps, tol=0,
                    random_state=seed, devices=device, fit_intercept=True)
    return model.fit(X)


def ours_predict(model, rows, cols):
    return model.predict_entries(np.c_[rows, cols], relation=0)


# ---- cmfrec --------------------------------------------------------------------------


def cmfrec_fit(train, d, lam, k, sweeps, side, threads, use_cg, seed=0):
    import pandas as pd
    from cmfrec import CMF as CmfrecCMF

    coo = train.tocoo()
    X = pd.DataFrame({"UserId": coo.row, "ItemId": coo.col, "Rating": coo.data})
    kw = {}
    if side:
        U = pd.DataFrame(user_side(d)).assign(UserId=np.arange(d.train.shape[0]))
        Ig = pd.DataFrame(d.movie_genres).assign(ItemId=np.arange(d.train.shape[1]))
        U.columns = [str(c) for c in U.columns]
        Ig.columns = [str(c) for c in Ig.columns]
        kw = {"U": U, "I": Ig}
    model = CmfrecCMF(k=k, lambda_=lam, niter=sweeps, nthreads=threads, use_cg=use_cg,
                      verbose=False, random_state=seed, use_float=True)
    return model.fit(X, **kw)


def cmfrec_predict(model, rows, cols):
    return model.predict(user=rows, item=cols)


# ---- implicit feedback: mmfactor CMF(link="implicit") vs implicit (benfred) -----------


def hkv_objective(U, V, R, conf_scale, lam):
    """sum_all c (p - u.v)^2 + lam (||U||^2 + ||V||^2) in float64, the zeros by the Gram
    identity (the same formula for both libraries' factors)."""
    U, V = U.astype(np.float64), V.astype(np.float64)
    coo = R.tocoo()
    pred = (U[coo.row] * V[coo.col]).sum(1)
    conf = 1 + conf_scale * coo.data
    data = float((conf * (1 - pred) ** 2 - pred**2).sum()) + float(((U.T @ U) * (V.T @ V)).sum())
    return data + lam * float((U**2).sum() + (V**2).sum())


def precision_at(U, V, train, test, n=10):
    """Mean precision@n over the test users, the training items left out."""
    scores = U.astype(np.float64) @ V.astype(np.float64).T
    scores[train.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :n]
    test = test.tocsr()
    users = np.flatnonzero(np.diff(test.indptr))
    hits = [len(set(top[u]) & set(test.indices[test.indptr[u]:test.indptr[u + 1]]))
            for u in users]
    return float(np.mean(hits)) / n


def timed_cpu(fn, repeat):
    """``(result, best wall s, CPU s of that run)``."""
    import time

    best = None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        w, c = time.perf_counter() - w, time.process_time() - c
        if best is None or w < best[1]:
            best = (out, w, c)
    return best


def implicit_part(args, d):
    import os

    from implicit.cpu.als import AlternatingLeastSquares

    train, test = d.train.tocsr().astype(np.float64), d.test
    k, sweeps, lam, conf = args.rank, args.sweeps, args.implicit_reg, args.confidence
    rows = []

    def ours():
        return CMF(k, link="implicit", confidence_scale=conf, alpha=lam, max_iter=sweeps,
                   tol=0, random_state=0, devices=args.device).fit([train])

    def theirs(use_cg):
        m = AlternatingLeastSquares(factors=k, regularization=lam, alpha=conf,
                                    iterations=sweeps, use_cg=use_cg, random_state=0,
                                    num_threads=args.threads, calculate_training_loss=False)
        m.fit(train.astype(np.float32), show_progress=False)
        return m

    load0 = os.getloadavg()[0]
    m, w, c = timed_cpu(ours, args.repeat)
    U, V = m.factors_["sample"], m.factors_["view0_col"]
    rows.append({"library": "mmfactor CMF(link='implicit')", "solver": "exact (Cholesky)",
                 "objective": hkv_objective(U, V, train, conf, lam),
                 "precision_at_10": precision_at(U, V, train, test), "wall_s": w, "cpu_s": c})
    for use_cg in (True, False):
        m, w, c = timed_cpu(lambda cg=use_cg: theirs(cg), args.repeat)
        U, V = m.user_factors, m.item_factors
        rows.append({"library": "implicit AlternatingLeastSquares",
                     "solver": "CG" if use_cg else "exact (Cholesky)",
                     "objective": hkv_objective(U, V, train, conf, lam),
                     "precision_at_10": precision_at(U, V, train, test), "wall_s": w,
                     "cpu_s": c})
    load1 = os.getloadavg()[0]
    ref = rows[1]
    for r in rows:
        r["time_vs_implicit_cg"] = r["wall_s"] / ref["wall_s"]
        r["objective_vs_implicit_cg"] = r["objective"] / ref["objective"]
        print(r)
    cols = [("library", "library", None), ("solver", "solver", None),
            ("objective", "objective (float64)", "{:.1f}"),
            ("objective_vs_implicit_cg", "objective / implicit CG", "{:.4f}"),
            ("precision_at_10", "precision@10", "{:.4f}"),
            ("wall_s", "fit wall s", "{:.3f}"), ("cpu_s", "fit CPU s", "{:.3f}"),
            ("time_vs_implicit_cg", "wall / implicit CG", "{:.2f}x")]
    md = (f"MovieLens-100K training ratings as implicit feedback (80,000 interactions), rank "
          f"{k}, regularisation {lam}, confidence 1 + {conf} r, {sweeps} sweeps, "
          f"{args.threads} threads; best wall time of {args.repeat}; load average "
          f"{load0:.2f} before, {load1:.2f} after. mmfactor also evaluates its exact "
          "objective after every sweep (implicit's calculate_training_loss is off).\n\n"
          + markdown_table(rows, cols))
    write_results("cmf_implicit", {"rank": k, "sweeps": sweeps, "regularisation": lam,
                                   "confidence": conf, "load": [load0, load1], "rows": rows},
                  md, args.out)
    print(md)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--sweeps", type=int, default=15)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data-home", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--part", choices=["explicit", "implicit"], default="explicit")
    p.add_argument("--implicit-reg", type=float, default=1.0)
    p.add_argument("--confidence", type=float, default=2.0)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    d = fetch_movielens_100k(args.data_home)
    if args.part == "implicit":
        return implicit_part(args, d)
    te = d.test.tocoo()
    fit_part, (vr, vc, vv) = split_validation(d.train)
    k, sweeps = args.rank, args.sweeps

    ours_grid = [(a, b) for a in (8.0, 10.0, 12.0, 15.0) for b in (3.0, None)]
    cmfrec_grid = [5.0, 8.0, 10.0, 12.0, 15.0, 20.0]
    rows = []
    load_before = loadavg()

    def measure(fit, predict, **row):
        """Test RMSE over the seeds (mean ± sd), best wall time of the first seed's fits."""
        model, w, c = timed_cpu(lambda: fit(args.seeds[0]), args.repeat)
        scores = [rmse(predict(model, te.row, te.col), te.data)]
        scores += [rmse(predict(fit(s), te.row, te.col), te.data) for s in args.seeds[1:]]
        row.update(test_rmse=seed_spread(scores), fit_s=w, cpu_s=c)
        row["test_rmse_text"] = fmt_spread(row["test_rmse"], 4)
        rows.append(row)

    for side in (False, True):
        # choose regularisation on the validation split (first seed), the same way for both
        val_ours = {g: rmse(ours_predict(ours_fit(fit_part, d, *g, k, sweeps, side,
                                                  args.device, args.seeds[0]), vr, vc), vv)
                    for g in ours_grid}
        best_ours = min(val_ours, key=val_ours.get)
        measure(lambda s, b=best_ours, sd=side: ours_fit(d.train, d, *b, k, sweeps, sd,
                                                         args.device, s), ours_predict,
                library="mmfactor CMF", side_features=side, device=args.device,
                regularisation=f"alpha={best_ours[0]}, alpha_bias={best_ours[1]}",
                val_rmse=val_ours[best_ours])
        for use_cg in (True, False):
            val_c = {lam: rmse(cmfrec_predict(cmfrec_fit(fit_part, d, lam, k, sweeps, side,
                                                         args.threads, use_cg, args.seeds[0]),
                                              vr, vc), vv)
                     for lam in cmfrec_grid}
            best_c = min(val_c, key=val_c.get)
            measure(lambda s, lam=best_c, sd=side, cg=use_cg: cmfrec_fit(
                d.train, d, lam, k, sweeps, sd, args.threads, cg, s), cmfrec_predict,
                library=f"cmfrec CMF ({'CG' if use_cg else 'Cholesky'})", side_features=side,
                device="cpu", regularisation=f"lambda_={best_c}", val_rmse=val_c[best_c])
        for r in rows[-3:]:
            print(r)
    load_after = loadavg()
    for side in (False, True):
        ref = next(r for r in rows if r["library"] == "cmfrec CMF (CG)"
                   and r["side_features"] == side)
        for r in rows:
            if r["side_features"] == side:
                r["time_vs_cmfrec_cg"] = r["fit_s"] / ref["fit_s"]
    cols = [("library", "library", None), ("side_features", "side features", None),
            ("regularisation", "regularisation (validated)", None),
            ("val_rmse", "validation RMSE (seed 0)", "{:.4f}"),
            ("test_rmse_text", f"test RMSE (mean ± sd over {len(args.seeds)} seeds)", None),
            ("fit_s", f"fit time (s, {sweeps} sweeps)", "{:.3f}"),
            ("cpu_s", "fit CPU (s)", "{:.3f}"),
            ("time_vs_cmfrec_cg", "time / cmfrec CG", "{:.2f}x")]
    md = (f"MovieLens-100K, Monti `split_1` (80,000 training / 20,000 test ratings), rank {k}, "
          f"{sweeps} ALS sweeps, {args.threads} threads; test RMSE over seeds "
          f"{args.seeds} (the random initialisation of both libraries); best fit time of "
          f"{args.repeat} (seed {args.seeds[0]}). Load average before {load_before}, after "
          f"{load_after}.\n\n" + markdown_table(rows, cols))
    write_results("cmf", {"rank": k, "sweeps": sweeps, "seeds": args.seeds,
                          "loadavg_before": load_before, "loadavg_after": load_after,
                          "rows": rows}, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
