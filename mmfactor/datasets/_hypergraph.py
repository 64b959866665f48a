"""Synthetic K-partite hypergraphs with planted communities and intra-modal graphs."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch, check_random_state

__all__ = ["make_hypergraph"]


def make_hypergraph(
    n_nodes=(200, 150, 100),
    *,
    n_communities=5,
    n_hyperedges=10_000,
    p_in=0.9,
    graph_degree=5,
    graph_p_in=0.9,
    weighted=False,
    random_state=None,
):
    """A K-partite hypergraph (a sparse K-order tensor) with planted communities.

    Every node of every mode belongs to one of ``n_communities`` communities (balanced,
    in random order). Each hyperedge picks a community, then one node per mode: a member
    of that community with probability ``p_in``, any node otherwise. Each mode also gets
    an intra-modal graph in which every node links to ``graph_degree`` others, of its own
    community with probability ``graph_p_in``. The planted CP factors are the community
    indicator matrices: the expected tensor is ``[[Z_1, ..., Z_K]]`` up to scaling.

    Parameters
    ----------
    n_nodes : sequence of int, default=(200, 150, 100)
        Nodes per mode (its length is the order K >= 2).
    n_communities : int, default=5
        Planted communities.
    n_hyperedges : int, default=10000
        Hyperedges drawn; the tensor stores at most this many entries (repeats merge:
        counted with ``weighted=True``, kept once otherwise). Memory and time are linear
        in it; no dense tensor is formed.
    p_in : float, default=0.9
        Probability that a hyperedge's node in a mode comes from its community.
    graph_degree : int, default=5
        Edges drawn per node in each intra-modal graph (0: no graphs).
    graph_p_in : float, default=0.9
        Probability that such an edge stays inside the community.
    weighted : bool, default=False
        Count repeated hyperedges instead of keeping binary values.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    data : Bunch
        ``X`` (:class:`~mmfactor.SparseTensor`), ``graphs`` (list of K symmetric binary
        CSR adjacencies, or ``None`` entries when ``graph_degree=0``), ``labels`` (list
        of K community arrays), ``factors`` (list of K planted indicator matrices).

    Examples
    --------
    >>> from mmfactor.datasets import make_hypergraph
    >>> data = make_hypergraph((20, 15, 10), n_communities=2, n_hyperedges=100,
    ...                        random_state=0)
    >>> data.X.shape, data.X.nnz <= 100, data.graphs[0].shape
    ((20, 15, 10), True, (20, 20))
    """
    from ..factorization._cp import SparseTensor

    n_nodes = tuple(int(n) for n in n_nodes)
    if len(n_nodes) < 2:
        raise ValueError(f"n_nodes={n_nodes} must give at least 2 modes.")
    if not isinstance(n_communities, numbers.Integral) or n_communities < 1:
        raise ValueError(f"n_communities must be an integer >= 1; got {n_communities!r}.")
    if min(n_nodes) < n_communities:
        raise ValueError(
            f"Every mode needs at least n_communities={n_communities} nodes; got {n_nodes}."
        )
    if not isinstance(n_hyperedges, numbers.Integral) or n_hyperedges < 1:
        raise ValueError(f"n_hyperedges must be an integer >= 1; got {n_hyperedges!r}.")
    for name, p in (("p_in", p_in), ("graph_p_in", graph_p_in)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be in [0, 1]; got {p!r}.")
    if not isinstance(graph_degree, numbers.Integral) or graph_degree < 0:
        raise ValueError(f"graph_degree must be an integer >= 0; got {graph_degree!r}.")
    rng = check_random_state(random_state)
    C = n_communities
    labels, members = [], []
    for n in n_nodes:
        lab = rng.permutation(np.arange(n) % C)
        labels.append(lab)
        order = np.argsort(lab, kind="stable")
        counts = np.bincount(lab, minlength=C)
        members.append((order, np.concatenate([[0], np.cumsum(counts)]), counts))
    comm = rng.randint(C, size=n_hyperedges)
    idx = np.empty((n_hyperedges, len(n_nodes)), dtype=np.int64)
    for t, (n, (order, start, counts)) in enumerate(zip(n_nodes, members, strict=True)):
        inside = rng.rand(n_hyperedges) < p_in
        pick = start[comm] + (rng.rand(n_hyperedges) * counts[comm]).astype(np.int64)
        idx[:, t] = np.where(inside, order[pick], rng.randint(n, size=n_hyperedges))
    X = SparseTensor(idx, np.ones(n_hyperedges), n_nodes)  # sums repeats
    if not weighted:
        X.values = np.ones_like(X.values)
    graphs = []
    for n, lab, (order, start, counts) in zip(n_nodes, labels, members, strict=True):
        if graph_degree == 0:
            graphs.append(None)
            continue
        src = np.repeat(np.arange(n), graph_degree)
        inside = rng.rand(len(src)) < graph_p_in
        c = lab[src]
        pick = start[c] + (rng.rand(len(src)) * counts[c]).astype(np.int64)
        dst = np.where(inside, order[pick], rng.randint(n, size=len(src)))
        keep = src != dst
        W = sp.csr_matrix((np.ones(keep.sum()), (src[keep], dst[keep])), shape=(n, n))
        W = W.maximum(W.T).tocsr()
        W.data[:] = 1.0
        graphs.append(W)
    factors = [np.eye(C)[lab] for lab in labels]
    return Bunch(X=X, graphs=graphs, labels=labels, factors=factors)
