"""DCMF against CMF and cmfrec: MovieLens-100K completion and mfeat embeddings, one run.

1. MovieLens-100K, Monti et al.'s ``split_1`` (80,000 training / 20,000 test ratings),
   users x movies plus user occupations and movie genres as two more relations; every
   model has the same rank. Test RMSE (predictions clipped to [1, 5]) and fit time.
   DCMF uses early stopping on 10% of its training entries; CMF and cmfrec use the
   regularisation the CMF benchmark (``bench_cmf.py``) validated for this split.
   The cost of one sweep is timed separately: an ALS sweep of CMF and an epoch of DCMF
   (every member of every entity type encoded once, every matrix entry visited), each the
   best of ``--repeat`` short fits.
2. mfeat (UCI digits), the ``pix`` and ``fou`` views as two relations with the digits,
   standardised on the training digits: the main job's protocol (stratified 80/20 split,
   random_state=0; each model fitted on the training digits, the test digits embedded with
   ``transform``; RandomForest(max_depth=2, random_state=0) on the embeddings; macro-F1
   and accuracy on the test digits). PCA of the concatenated views is the reference.

    python benchmarks/bench_dcmf.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, timed, write_results  # noqa: E402

from mmfactor import CMF, DCMF, MultiModal  # noqa: E402
from mmfactor.datasets import fetch_movielens_100k, load_mfeat  # noqa: E402

RELATIONS = [("user", "movie"), ("user", "occupation"), ("movie", "genre")]
# chosen on a validation split of the training ratings (see the report in the docs)
DCMF_MOVIELENS = dict(hidden_layer_sizes=(64,), learning_rate_init=3e-3, early_stopping=True,
                      weights={"ratings": 3.0, "occupation": 0.3, "genres": 0.3},
                      max_iter=100)
# bench_cmf.py's validated regularisation for rank 10 with side features
CMF_MOVIELENS = dict(alpha=12.0, alpha_bias=3.0, weights={"occupation": 3.0, "genres": 3.0})
CMFREC_LAMBDA = 12.0
DCMF_MFEAT = dict(hidden_layer_sizes=(128,), learning_rate_init=1e-3, max_iter=20, tol=0,
                  batch_size=128, weights=[0.2, 0.2])
CMF_MFEAT = dict(alpha=30.0, max_iter=30)  # the main job's CMF


def rmse(pred, truth):
    return float(np.sqrt(np.mean((np.clip(pred, 1, 5) - truth) ** 2)))


def cmfrec_fit(d, k, sweeps, threads):
    import pandas as pd
    from cmfrec import CMF as CmfrecCMF

    coo = d.train.tocoo()
    ratings = pd.DataFrame({"UserId": coo.row, "ItemId": coo.col, "Rating": coo.data})
    U = pd.DataFrame(d.user_occupation).assign(UserId=np.arange(d.train.shape[0]))
    Ig = pd.DataFrame(d.movie_genres).assign(ItemId=np.arange(d.train.shape[1]))
    U.columns = [str(c) for c in U.columns]
    Ig.columns = [str(c) for c in Ig.columns]
    model = CmfrecCMF(k=k, lambda_=CMFREC_LAMBDA, niter=sweeps, nthreads=threads,
                      verbose=False, random_state=0, use_float=True)
    return model.fit(ratings, U=U, I=Ig)


def movielens(args):
    d = fetch_movielens_100k(args.data_home)
    X = MultiModal(ratings=d.train, occupation=d.user_occupation,
                   shared={"genres": d.movie_genres})
    te = d.test.tocoo()
    coords = np.c_[te.row, te.col]
    k, sweeps = args.rank, args.sweeps

    def dcmf(**kw):
        return DCMF(k, relations=RELATIONS, random_state=0, devices=args.device,
                    **{**DCMF_MOVIELENS, **kw}).fit(X)

    def cmf(n):
        return CMF(k, relations=RELATIONS, max_iter=n, tol=0, random_state=0,
                   devices=args.device, **CMF_MOVIELENS).fit(X)

    rows = []
    t = time.perf_counter()
    model = dcmf()
    fit_s = time.perf_counter() - t
    rows.append({"model": "mmfactor DCMF", "test_rmse": rmse(
        model.predict_entries(coords, relation="ratings"), te.data), "fit_s": fit_s,
        "iterations": f"{model.n_iter_} epochs (early stopping)"})
    model, fit_s = timed(lambda: cmf(sweeps), args.repeat)
    rows.append({"model": "mmfactor CMF", "test_rmse": rmse(
        model.predict_entries(coords, relation="ratings"), te.data), "fit_s": fit_s,
        "iterations": f"{sweeps} ALS sweeps"})
    model, fit_s = timed(lambda: cmfrec_fit(d, k, sweeps, args.threads), args.repeat)
    rows.append({"model": "cmfrec CMF", "test_rmse": rmse(
        model.predict(user=te.row, item=te.col), te.data), "fit_s": fit_s,
        "iterations": f"{sweeps} ALS sweeps"})
    # the cost of one sweep: (fit of 4 sweeps - fit of 1 sweep) / 3, so that the set-up
    # (validation, standardisation, initialisation) is not counted; best of `repeat`,
    # the two models interleaved
    def per_sweep(fit):
        t0 = time.perf_counter()
        fit(1)
        t1 = time.perf_counter()
        fit(4)
        return max((time.perf_counter() - t1) - (t1 - t0), 0.0) / 3

    epoch_s, sweep_s = np.inf, np.inf
    for _ in range(args.repeat):
        epoch_s = min(epoch_s, per_sweep(lambda n: dcmf(max_iter=n, tol=0,
                                                        early_stopping=False)))
        sweep_s = min(sweep_s, per_sweep(cmf))
    rows[0]["sweep_s"], rows[1]["sweep_s"] = epoch_s, sweep_s
    rows[0]["sweep_vs_cmf"], rows[1]["sweep_vs_cmf"] = epoch_s / sweep_s, 1.0
    return rows


def mfeat(args):
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_mfeat(views=["pix", "fou"], image=False, return_X_y=True)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    scalers = [StandardScaler().fit(v[tr]) for v in X.views]
    Xtr = MultiModal(*[s.transform(v[tr]) for s, v in zip(scalers, X.views, strict=True)])
    Xte = MultiModal(*[s.transform(v[te]) for s, v in zip(scalers, X.views, strict=True)])
    k = args.mfeat_rank
    models = {
        "PCA (reference)": None,
        "mmfactor DCMF": DCMF(k, random_state=0, devices=args.device, **DCMF_MFEAT),
        "mmfactor CMF": CMF(k, random_state=0, devices=args.device, **CMF_MFEAT),
    }
    rows = []
    for name, est in models.items():
        t = time.perf_counter()
        if est is None:
            pca = PCA(k, random_state=0).fit(np.hstack(Xtr.views))
            Z_tr = pca.transform(np.hstack(Xtr.views))
            Z_te = pca.transform(np.hstack(Xte.views))
        else:
            Z_tr = est.fit_transform(Xtr)
            Z_te = est.transform(Xte)
        fit_s = time.perf_counter() - t
        pred = RandomForestClassifier(max_depth=2, random_state=0).fit(Z_tr, y[tr]).predict(Z_te)
        rows.append({"model": name, "macro_f1": float(f1_score(y[te], pred, average="macro")),
                     "accuracy": float(accuracy_score(y[te], pred)), "fit_s": fit_s})
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rank", type=int, default=10, help="rank on MovieLens")
    p.add_argument("--mfeat-rank", type=int, default=50, help="embedding width on mfeat")
    p.add_argument("--sweeps", type=int, default=15, help="ALS sweeps of CMF and cmfrec")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--data-home", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    load = os.getloadavg()[0]
    ml = movielens(args)
    for r in ml:
        print(r, flush=True)
    mf = mfeat(args)
    md = (
        f"**MovieLens-100K**, Monti `split_1` (80,000 training / 20,000 test ratings) plus user "
        f"occupations and movie genres as relations, rank {args.rank}, {args.threads} threads. "
        "Sweep = one ALS sweep (CMF) or one epoch (DCMF: every member encoded once, every "
        f"entry visited), timed as (4-sweep fit - 1-sweep fit) / 3, best of {args.repeat}, "
        f"interleaved. Load average at the start: {load:.1f}, at the end: "
        f"{os.getloadavg()[0]:.1f} (other jobs shared the machine).\n\n"
        + markdown_table(ml, [("model", "model", None), ("test_rmse", "test RMSE", "{:.4f}"),
                              ("fit_s", "fit time (s)", "{:.2f}"),
                              ("iterations", "iterations", None),
                              ("sweep_s", "one sweep (s)", "{:.3f}"),
                              ("sweep_vs_cmf", "sweep / CMF sweep", "{:.2f}x")])
        + f"\n\n**mfeat** (`pix` + `fou` as two relations with the digits, standardised), "
        f"{args.mfeat_rank} components; RandomForest(max_depth=2, random_state=0) on the "
        "embeddings, stratified 80/20 split (random_state=0), test digits embedded with "
        "`transform`.\n\n"
        + markdown_table(mf, [("model", "model", None), ("macro_f1", "macro-F1", "{:.4f}"),
                              ("accuracy", "accuracy", "{:.4f}"),
                              ("fit_s", "fit time (s)", "{:.2f}")])
    )
    payload = {"movielens": {"rank": args.rank, "sweeps": args.sweeps, "dcmf": DCMF_MOVIELENS,
                             "cmf": CMF_MOVIELENS, "cmfrec_lambda": CMFREC_LAMBDA, "rows": ml},
               "mfeat": {"n_components": args.mfeat_rank, "dcmf": DCMF_MFEAT, "cmf": CMF_MFEAT,
                         "rows": mf}}
    write_results("dcmf", payload, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
