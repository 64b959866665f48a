"""HyperLearn on a real hypergraph: tag recommendation on HetRec 2011 Last.fm-2k.

The protocol (fixed seeds, stated here and in the table):

* the (user, artist, tag) tag assignments with tags used >= 5 times and artists tagged
  >= 5 times (a k-core: 1,734 x 6,956 x 2,163, 163,211 hyperedges);
* 10% of the hyperedges held out at random (seed 0) as the test set; the settings of
  every model are chosen on a validation split (10% of the training hyperedges, seed 1)
  by fitting on the rest, then the chosen setting is refitted on every training edge;
* each held-out (user, artist, tag) is ranked against 100 tags drawn uniformly (seed 2)
  among those the user did not put on that artist (in any split): AUC (the share of the
  100 negatives scored below the positive, ties counting one half) and hit rate @10
  (the positive among the 10 best of the 101; ties counting one half).

Models: three count baselines, CP without graphs from pyttb (``cp_als`` on the sparse
tensor) as the peer, and HyperLearn's variants. Fit CPU seconds are the process CPU time
of one fit (both cores). A second table scores the user embeddings downstream: the
users' friendship links are not a label, so the downstream task is predicting held-out
friendships from embedding similarity (AUC), see ``downstream``.

    python benchmarks/bench_hypergraph.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, write_results  # noqa: E402

from mmfactor import HyperLearn, SparseTensor  # noqa: E402
from mmfactor.datasets import fetch_lastfm_hetrec  # noqa: E402

N_NEG = 100


# ---- the protocol ---------------------------------------------------------------------


def split(X, fraction, seed):
    """``(train_idx, test_idx)``: a random ``fraction`` of the hyperedges held out."""
    rng = np.random.RandomState(seed)
    perm = rng.permutation(X.nnz)
    n = int(round(fraction * X.nnz))
    return np.sort(perm[n:]), np.sort(perm[:n])


def negatives(X, test_coords, seed, n_neg=N_NEG):
    """``(n_test, n_neg)`` tags per held-out triple, none put by its user on its artist."""
    rng = np.random.RandomState(seed)
    n_tags = X.shape[2]
    pair = X.indices[:, 0] * X.shape[1] + X.indices[:, 1]
    used = set((pair * n_tags + X.indices[:, 2]).tolist())
    out = np.empty((len(test_coords), n_neg), dtype=np.int64)
    for i, (u, a, _) in enumerate(test_coords):
        base = (u * X.shape[1] + a) * n_tags
        got = []
        while len(got) < n_neg:
            for t in rng.randint(n_tags, size=2 * n_neg):
                if base + t not in used:
                    got.append(t)
                    if len(got) == n_neg:
                        break
        out[i] = got
    return out


def candidates(test_coords, negs):
    """The ``(n_test * (1 + n_neg), 3)`` coordinates to score: the positive first."""
    n, m = negs.shape
    tags = np.column_stack([test_coords[:, 2], negs])
    coords = np.repeat(test_coords, m + 1, axis=0)
    coords[:, 2] = tags.ravel()
    return coords


def metrics(scores, n_neg=N_NEG):
    """AUC and hit rate @10 from the scores of ``candidates`` (ties counting one half)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1, n_neg + 1)
    pos, neg = s[:, :1], s[:, 1:]
    above = (neg > pos).sum(1) + 0.5 * (neg == pos).sum(1)
    auc = 1.0 - above / n_neg
    return float(auc.mean()), float((above < 10).mean())


# ---- count baselines ------------------------------------------------------------------


def _counts(train, modes):
    """A CSR of how often each (mode a, tag) pair occurs in the training edges."""
    a = train.indices[:, modes]
    return sp.csr_matrix((np.ones(len(a)), (a[:, 0], a[:, 1])),
                         shape=(train.shape[modes[0]], train.shape[modes[1]]))


def count_baselines(train):
    """Score functions ``coords -> scores`` of the three count baselines."""
    pop = np.bincount(train.indices[:, 2], minlength=train.shape[2]).astype(np.float64)
    at = _counts(train, [1, 2])
    ut = _counts(train, [0, 2])
    # each count normalised by its row's largest count (a share in [0, 1])
    at_n = sp.diags(1.0 / np.maximum(at.max(1).toarray().ravel(), 1)) @ at
    ut_n = sp.diags(1.0 / np.maximum(ut.max(1).toarray().ravel(), 1)) @ ut

    def lookup(M, r, c):
        return np.asarray(M[r, c]).ravel()

    return {
        "global tag popularity": lambda c: pop[c[:, 2]],
        "tag frequency on the artist": lambda c: lookup(at, c[:, 1], c[:, 2])
        + 1e-9 * pop[c[:, 2]],
        "tag frequency on the artist + the user's own tag frequency": lambda c: (
            lookup(at_n, c[:, 1], c[:, 2]) + lookup(ut_n, c[:, 0], c[:, 2])
            + 1e-9 * pop[c[:, 2]]),
    }
