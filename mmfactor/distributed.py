"""Fit CMF and HyperLearn as ``torch.distributed`` ranks, on one machine or many.

Both models have a Jacobi form of their alternating updates (``update="jacobi"``): in a
sweep, every entity type (CMF) or tensor mode (HyperLearn) is updated from the previous
sweep's factors only, so the updates are independent. Here each rank of a
``torch.distributed`` process group owns some of them: it runs their updates, then the
ranks exchange only the new factors (and biases) by broadcast collectives, and every
rank starts the next sweep with the complete set. The arithmetic is the single-process
Jacobi fit's, so the fitted factors are the same up to floating-point summation order.

Every rank loads the same ``X`` (data parallelism by ownership: a rank only touches the
relations or the tensor entries that its entity types or modes need). The stopping
decision is rank 0's objective, broadcast, so all ranks run the same number of sweeps.
At the end every rank holds the complete fitted estimator, an ordinary one: pickle it
from rank 0, ``transform`` with it, put it in a ``Pipeline``.

Launch one process per rank with ``torchrun`` (gloo on CPUs, NCCL on GPUs), in a script::

    import mmfactor.distributed as mmd
    with mmd.run():                       # reads RANK, WORLD_SIZE, MASTER_ADDR, ... from torchrun
        model = CMF(20, update="jacobi", random_state=0).fit(X)
    if mmd.rank() == 0:
        joblib.dump(model, "model.joblib")

or with the module's own command line, which fits a pickled estimator on pickled data::

    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d \\
        --rdzv-endpoint node0:29500 -m mmfactor.distributed est.joblib X.joblib -o fitted.joblib

Only ``torch.distributed`` collectives move data (``broadcast``, ``all_reduce``,
``broadcast_object_list``); there is no other channel between the ranks. A rank that dies
or stalls makes the others raise :class:`RankFailedError` at their next collective (at
once when its connection closes, after ``timeout`` seconds when it hangs) instead of
waiting forever.

How it hooks into the estimators: during a distributed fit, the estimator's per-unit
update (``CMF._solve_entity``, ``mmfactor.factorization._hyperlearn.update_mode``) is
replaced by one that runs only the units this rank owns, and the estimator's
``_objective`` (called once at the end of every sweep, after the updates) by one that
first exchanges the factors. Nothing else of the fit changes; the hooks are removed when
the fit returns or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import numbers
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["RankFailedError", "fit", "rank", "run", "world_size"]

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class RankFailedError(RuntimeError):
    """A collective failed: another rank died, stalled past the timeout, or disagreed."""


# --------------------------------------------------------------------------------------
# The process group
# --------------------------------------------------------------------------------------


def _require_group():
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "mmfactor.distributed needs an initialised torch.distributed process group: fit "
            "inside `with mmfactor.distributed.run():` in a script launched by torchrun, or "
            "call torch.distributed.init_process_group first."
        )


# this process's rank and the group's size in the last ``run()`` block, kept after the
# block has destroyed its group: ``if rank() == 0: joblib.dump(...)`` after the block
# must still run on rank 0 only
_LAST_RUN = {}


def rank():
    """Return this process's rank in the default group.

    Returns
    -------
    rank : int
        The rank; after a :func:`run` block has ended (and destroyed the group it
        created), the rank this process had in it; 0 when no group was ever used.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _LAST_RUN.get("rank", 0)


def world_size():
    """Return the number of ranks in the default group.

    Returns
    -------
    world_size : int
        The number of ranks; after a :func:`run` block, the size of its group; 1 when no
        group was ever used.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _LAST_RUN.get("world_size", 1)


def _comm_device():
    """Where collective buffers live: this rank's CUDA device for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _collective(what, fn, *args, **kwargs):
    """Run one collective; turn a transport failure into a :class:`RankFailedError`."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:  # DistBackendError, gloo "Connection closed by peer", timeouts
        raise RankFailedError(
            f"mmfactor.distributed: rank {dist.get_rank()} of {dist.get_world_size()} could "
            f"not complete {what}: another rank has died or stalled past the process group's "
            f"timeout (see that rank's output). Cause: {str(exc).strip()[:500]}"
        ) from exc


@contextlib.contextmanager
def run(backend=None, *, timeout=300.0, init_method="env://", owners=None):
    """Fit CMF and HyperLearn as distributed ranks inside this ``with`` block.

    Initialises the default process group if none is (from the ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` variables that ``torchrun``
    sets), and destroys it on exit if it created it. Inside the block, ``fit`` and
    ``fit_transform`` of :class:`~mmfactor.CMF` and :class:`~mmfactor.HyperLearn` run
    through :func:`fit`; every other estimator fits as usual. Every rank must run the
    same code on the same data.

    Parameters
    ----------
    backend : {"gloo", "nccl"} or None, default=None
        ``None``: NCCL when CUDA is available, else gloo. With NCCL the rank's device is
        ``cuda:LOCAL_RANK`` (set as the current device); give the estimator
        ``devices=f"cuda:{local_rank}"`` (or per view/mode) to compute there.
    timeout : float, default=300
        Seconds a collective waits for the other ranks before failing (a stalled rank).
    init_method : str, default="env://"
        ``torch.distributed.init_process_group``'s ``init_method``.
    owners : dict, optional
        Passed to :func:`fit`: which rank owns which entity type / mode.

    Yields
    ------
    info : dict
        ``{"rank", "world_size", "backend", "profile"}``; ``profile`` collects one
        record per sweep of every distributed fit in the block (seconds spent computing
        this rank's updates, exchanging factors and in the objective).
    """
    from .factorization import CMF, HyperLearn

    created = False
    if not (dist.is_available() and dist.is_initialized()):
        if not dist.is_available():
            raise RuntimeError("torch.distributed is not available in this torch build.")
        if init_method == "env://":
            missing = [v for v in _TORCHRUN_ENV if v not in os.environ]
            if missing:
                raise RuntimeError(
                    f"mmfactor.distributed.run: environment variables {missing} are not set; "
                    "launch the script with torchrun (which sets RANK, WORLD_SIZE, "
                    "MASTER_ADDR and MASTER_PORT), or initialise the process group yourself."
                )
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend={backend!r}; expected 'gloo' (CPU) or 'nccl' (CUDA).")
        if backend == "nccl":
            if not torch.cuda.is_available():
                raise ValueError("backend='nccl' needs CUDA, which is not available; use "
                                 "backend='gloo'.")
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, init_method=init_method,
                                timeout=datetime.timedelta(seconds=float(timeout)))
        created = True
    profile = []
    originals = {}

    def route(cls):  # fit and fit_transform both train through _fit
        original = cls._fit
        originals[cls] = original

        def routed(self, X):
            _fit(self, X, owners=owners, profile=profile, call=lambda: original(self, X))

        routed._mmfactor_original = original
        cls._fit = routed

    for cls in (CMF, HyperLearn):
        route(cls)
    _LAST_RUN.update(rank=dist.get_rank(), world_size=dist.get_world_size())
    try:
        yield {"rank": dist.get_rank(), "world_size": dist.get_world_size(),
               "backend": dist.get_backend(), "profile": profile}
    finally:
        for cls, original in originals.items():
            cls._fit = original
        if created:
            dist.destroy_process_group()


# --------------------------------------------------------------------------------------
# Ownership and exchange
# --------------------------------------------------------------------------------------


def _assign(units, costs, owners, world):
    """``{unit: rank}``: ``owners`` where given, the rest by longest-processing-time first."""
    owners = dict(owners or {})
    unknown = [u for u in owners if u not in units]
    if unknown:
        raise ValueError(f"owners names {unknown}, which are not among {list(units)}.")
    for u, r in owners.items():
        if not isinstance(r, numbers.Integral) or not 0 <= r < world:
            raise ValueError(f"owners[{u!r}]={r!r} is not a rank of this group "
                             f"(0 .. {world - 1}).")
    load = np.zeros(world)
    out = {}
    for u, r in owners.items():
        out[u] = int(r)
        load[r] += costs[u]
    # greedy LPT: the costliest free unit to the least loaded rank (ties: lowest rank)
    free = [u for u in units if u not in out]
    for u in sorted(free, key=lambda u: (-costs[u], units.index(u))):
        r = int(np.argmin(load))
        out[u] = r
        load[r] += costs[u]
    return out


def _exchange(items, owner_of, what):
    """Broadcast every item from its owner, packed into one buffer per owning rank.

    ``items`` is a list of ``(key, tensor)`` with the same dtype everywhere; returns
    ``{key: tensor}`` with each owner's values, on each tensor's original device.
    """
    dev = _comm_device()
    world = dist.get_world_size()
    me = dist.get_rank()
    out = {}
    for src in range(world):
        mine = [(k, t) for k, t in items if owner_of[k] == src]
        if not mine:
            continue
        sizes = [t.numel() for _, t in mine]
        dtype = mine[0][1].dtype
        if me == src:
            buf = torch.cat([t.detach().reshape(-1).to(dev) for _, t in mine])
        else:
            buf = torch.empty(sum(sizes), dtype=dtype, device=dev)
        _collective(f"the exchange of {what} owned by rank {src}", dist.broadcast, buf, src)
        for (k, t), piece in zip(mine, torch.split(buf, sizes), strict=True):
            out[k] = piece.reshape(t.shape).to(t.device)
    return out


def _broadcast_terms(terms):
    """Rank 0's objective terms to every rank (all ranks then stop on the same sweep)."""
    box = [terms if dist.get_rank() == 0 else None]
    _collective("the broadcast of the objective", dist.broadcast_object_list, box, 0,
                device=_comm_device())
    return box[0]


def _common_seed(estimator):
    """Make ``random_state`` identical on every rank; returns the value to restore."""
    rs = estimator.random_state
    if isinstance(rs, numbers.Integral):
        return None
    from sklearn.utils import check_random_state

    seed = torch.zeros(1, dtype=torch.int64, device=_comm_device())
    if dist.get_rank() == 0:
        seed[0] = int(check_random_state(rs).randint(0, 2**31 - 1))
    _collective("the broadcast of the random seed", dist.broadcast, seed, 0)
    estimator.random_state = int(seed[0])
    return ("restore", rs)


# --------------------------------------------------------------------------------------
# CMF: one unit per entity type
# --------------------------------------------------------------------------------------


class _CMFHooks:
    def __init__(self, est, owners, profile):
        self.est, self.owners, self.profile = est, owners, profile
        self.solve = est._solve_entity  # the bound methods, before the hooks shadow them
        self.objective = est._objective
        self.assignment = None
        self.units = {}

    def install(self):
        self.est._solve_entity = self.solve_entity
        self.est._objective = self.sweep_end

    def remove(self):
        for name in ("_solve_entity", "_objective"):
            self.est.__dict__.pop(name, None)

    def _assign(self, rels, U):
        k = self.est.n_components
        costs = {}
        for e, u in U.items():
            n = u.shape[0]
            cost = n * k**2  # the solve
            for r in rels:
                if e in (r.row, r.col):
                    other = U[r.col if r.row == e else r.row].shape[0]
                    per_row = r.mode == "observed"
                    cost += (r.n_obs * k**2 if per_row else n * other * k) + (
                        n * k**3 if per_row else 0)
            costs[e] = float(cost)
        return _assign(list(U), costs, self.owners, dist.get_world_size())

    def solve_entity(self, e, rels, U, bias, n_rows):
        if getattr(self.est, "_solver", "als") != "als":
            raise ValueError("mmfactor.distributed runs CMF's ALS sweeps; this fit uses the "
                             "L-BFGS solver (a sigmoid link). Use identity links.")
        if self.assignment is None:
            self.assignment = self._assign(rels, U)
        if self.assignment[e] != dist.get_rank():
            # not ours: unchanged (the damped update of an unchanged factor is itself);
            # the owner's result arrives in the exchange
            return U[e], {}
        t = time.perf_counter()
        out = self.solve(e, rels, U, bias, n_rows)
        self.units[e] = time.perf_counter() - t
        return out

    def sweep_end(self, rels, U, bias):
        if self.assignment is None:  # an L-BFGS step never calls _solve_entity
            raise ValueError("mmfactor.distributed runs CMF's ALS sweeps; this fit uses the "
                             "L-BFGS solver (a sigmoid link). Use identity links.")
        t0 = time.perf_counter()
        items = [(("U", e), u) for e, u in U.items()]
        owner_of = {("U", e): r for e, r in self.assignment.items()}
        for r in rels:
            if r.biased:
                for side, ent in (("row", r.row), ("col", r.col)):
                    items.append((("b", r.name, side), bias[r.name][side]))
                    owner_of[("b", r.name, side)] = self.assignment[ent]
        new = _exchange(items, owner_of, "the CMF factors")
        for key, v in new.items():
            if key[0] == "U":
                U[key[1]] = v
            else:
                bias[key[1]][key[2]] = v
        t1 = time.perf_counter()
        terms = self.objective(rels, U, bias) if dist.get_rank() == 0 else None
        terms = _broadcast_terms(terms)
        t2 = time.perf_counter()
        self.profile.append({"model": "CMF", "rank": dist.get_rank(),
                             "compute_s": sum(self.units.values()),
                             "unit_s": {str(u): v for u, v in self.units.items()},
                             "exchange_s": t1 - t0, "objective_s": t2 - t1,
                             "owned": sorted(e for e, r in self.assignment.items()
                                             if r == dist.get_rank())})
        self.units = {}
        return terms


# --------------------------------------------------------------------------------------
# HyperLearn: one unit per tensor mode
# --------------------------------------------------------------------------------------


class _HyperLearnHooks:
    def __init__(self, est, owners, profile):
        from .factorization import _hyperlearn

        self.module = _hyperlearn
        self.est, self.owners, self.profile = est, owners, profile
        self.update = _hyperlearn.update_mode
        self.objective = est._objective
        self.assignment = None
        self.units = {}
        self.losses = {}

    def install(self):
        self.module.update_mode = self.update_mode
        self.est._objective = self.sweep_end

    def remove(self):
        self.module.update_mode = self.update
        self.est.__dict__.pop("_objective", None)

    def update_mode(self, t, factors, state, n_steps=1):
        if self.assignment is None:
            K = len(factors)
            # a mode's cost: the MTTKRP over every entry (the same for all modes) plus
            # its own rows (graph convolution, LSTM): round-robin with ties by size
            costs = {m: float(factors[m].shape[0]) for m in range(K)}
            if self.owners is None:
                owners = {m: m % dist.get_world_size() for m in range(K)}
            else:
                owners = self.owners
            self.assignment = _assign(list(range(K)), costs, owners, dist.get_world_size())
        if self.assignment[t] != dist.get_rank():
            return factors[t], None
        t0 = time.perf_counter()
        new, loss = self.update(t, factors, state, n_steps)
        self.units[t] = time.perf_counter() - t0
        return new, loss

    def sweep_end(self, states, factors, losses):
        if self.est.update != "jacobi":  # checked before the fit; kept as a guard
            raise ValueError("mmfactor.distributed needs update='jacobi'.")
        t0 = time.perf_counter()
        K = len(factors)
        owner_of = dict(self.assignment)
        new = _exchange(list(enumerate(factors)), owner_of, "the HyperLearn factors")
        for t, v in new.items():
            factors[t] = v  # the estimator's own list: the next sweep starts from these
        me = dist.get_rank()
        vec = torch.zeros(K, dtype=torch.float64, device=_comm_device())
        for t in range(K):
            if self.assignment[t] == me:
                vec[t] = float(losses[t])
        _collective("the exchange of the per-mode losses", dist.all_reduce, vec)
        losses = [float(v) for v in vec.cpu()]
        t1 = time.perf_counter()
        terms = self.objective(states, factors, losses) if me == 0 else None
        terms = _broadcast_terms(terms)
        t2 = time.perf_counter()
        self.profile.append({"model": "HyperLearn", "rank": me,
                             "compute_s": sum(self.units.values()),
                             "unit_s": {str(u): v for u, v in self.units.items()},
                             "exchange_s": t1 - t0, "objective_s": t2 - t1,
                             "owned": sorted(t for t, r in self.assignment.items() if r == me)})
        self.units = {}
        return terms


# --------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------


def _hooks_for(estimator, owners, profile):
    from .factorization import CMF, HyperLearn

    if isinstance(estimator, CMF):
        if estimator.update != "jacobi":
            raise ValueError(
                f"A distributed CMF fit needs update='jacobi' (independent per-entity "
                f"solves); got update={estimator.update!r}."
            )
        if estimator.solver == "lbfgs":
            raise ValueError("mmfactor.distributed runs CMF's ALS sweeps; solver='lbfgs' "
                             "cannot be distributed. Use solver='als' or 'auto'.")
        return _CMFHooks(estimator, owners, profile)
    if isinstance(estimator, HyperLearn):
        if estimator.update != "jacobi":
            raise ValueError(
                f"A distributed HyperLearn fit needs update='jacobi' (independent per-mode "
                f"updates); got update={estimator.update!r}."
            )
        if estimator.loss == "bpr":
            raise ValueError(
                "mmfactor.distributed runs HyperLearn's per-mode updates; loss='bpr' trains "
                "every mode at once by Adam on mini-batches of hyperedges and cannot be "
                "split by mode. Fit it in one process, or use loss='squared'."
            )
        return _HyperLearnHooks(estimator, owners, profile)
    raise TypeError(
        f"mmfactor.distributed fits CMF and HyperLearn; got {type(estimator).__name__}."
    )


def _digest(obj, h):
    """Feed ``obj`` (parameters, views, shared data) into the hash ``h``, by value."""
    import scipy.sparse as sp

    from .factorization import SparseTensor

    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if sp.issparse(obj):
        csr = sp.csr_matrix(obj, copy=True)
        csr.sum_duplicates()
        h.update(f"sparse{csr.shape}{csr.dtype}".encode())
        for a in (csr.data, csr.indices, csr.indptr):
            h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    elif isinstance(obj, np.ndarray) and obj.dtype != object:
        h.update(f"array{obj.shape}{obj.dtype}".encode())
        h.update(np.ascontiguousarray(obj).reshape(-1).view(np.uint8))
    elif isinstance(obj, SparseTensor):
        h.update(f"sparsetensor{obj.shape}".encode())
        _digest(obj.indices, h)
        _digest(obj.values, h)
    elif isinstance(obj, np.random.RandomState):
        _digest(list(obj.get_state()), h)
    elif isinstance(obj, dict):
        h.update(b"dict")
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _digest(obj[k], h)
    elif isinstance(obj, list | tuple) or (hasattr(obj, "views") and hasattr(obj, "names")):
        if hasattr(obj, "views"):  # a MultiModal
            obj = [list(obj.names), list(obj.views), dict(obj.shared)]
        h.update(f"seq{len(obj)}".encode())
        for v in obj:
            _digest(v, h)
    elif hasattr(obj, "to_numpy") and hasattr(obj, "columns"):  # a DataFrame
        _digest([list(map(str, obj.columns)), obj.to_numpy()], h)
    else:
        h.update(repr(obj).encode())


# parameters that may differ between ranks: where each rank computes, how verbose it is
_RANK_LOCAL_PARAMS = ("devices", "verbose", "n_jobs")


def _check_agreement(estimator, X):
    """Refuse, on every rank alike, a fit whose ranks hold different parameters or data.

    The ranks exchange only SHA-256 digests (``all_gather_object``); without this check
    ranks given different data would each return "ok" with a blend of both, and ranks
    given different ``n_components`` would abort inside gloo's C++ collectives.
    """
    import hashlib

    params = {k: v for k, v in estimator.get_params(deep=False).items()
              if k not in _RANK_LOCAL_PARAMS}
    mine = []
    for what in (params, X):
        h = hashlib.sha256()
        _digest(what, h)
        mine.append(h.hexdigest())
    everyone = [None] * dist.get_world_size()
    _collective("the check that every rank holds the same parameters and data",
                dist.all_gather_object, everyone, mine)
    for i, what in enumerate(("parameters", "data (X)")):
        groups = {}
        for r, d in enumerate(everyone):
            groups.setdefault(d[i], []).append(r)
        if len(groups) > 1:
            ranks = sorted(groups.values(), key=lambda g: g[0])
            raise ValueError(
                f"mmfactor.distributed: the ranks hold different {what}: ranks "
                f"{' vs '.join(map(str, ranks))} (SHA-256 digests differ"
                + (f"; parameters compared: {sorted(params)}" if i == 0 else
                   "; every view and shared matrix, by value") + "). Every rank must fit "
                "the same estimator on the same X; nothing was fitted."
            )


def _fit(estimator, X, *, owners, profile, call):
    _require_group()
    _check_agreement(estimator, X)
    hooks = _hooks_for(estimator, owners, profile)
    restore = _common_seed(estimator)
    hooks.install()
    try:
        out = call()
    finally:
        hooks.remove()
        if restore is not None:
            estimator.random_state = restore[1]
    return estimator, out


def fit(estimator, X, y=None, *, owners=None, profile=None):
    """Fit ``estimator`` on ``X`` with its Jacobi updates spread over the ranks.

    Call it on every rank of an initialised process group with the same estimator
    parameters and the same ``X``. Every rank returns the same fitted estimator.

    Parameters
    ----------
    estimator : CMF or HyperLearn
        With ``update="jacobi"`` (CMF: the ALS solver, identity links; HyperLearn: the
        squared loss, as ``loss="bpr"`` trains all modes together on mini-batches).
    X : MultiModal, list of array-like, array-like or SparseTensor
        What ``estimator.fit`` takes.
    y : Ignored
        Not used, present for API consistency.
    owners : dict, optional
        Rank of some or all units: CMF entity types by name (``{"user": 0, "movie": 1}``),
        HyperLearn modes by index (``{0: 0, 1: 1, 2: 1}``). CMF's free units go to ranks
        by estimated cost (longest first, to the least loaded rank); HyperLearn's default
        is mode ``t`` on rank ``t % world_size``.
    profile : list, optional
        One record per sweep is appended: seconds of this rank's updates (in total,
        ``compute_s``, and per unit, ``unit_s``), of the exchange (including the wait
        for slower ranks) and of the objective, and the units this rank owns.

    Returns
    -------
    estimator
        The fitted estimator (complete on every rank).

    Raises
    ------
    RankFailedError
        When another rank dies or stalls past the group's timeout.
    """
    method = type(estimator)._fit
    method = getattr(method, "_mmfactor_original", method)  # inside run(): the class's own
    return _fit(estimator, X, owners=owners, profile=profile if profile is not None else [],
                call=lambda: method(estimator, X))[0]


# --------------------------------------------------------------------------------------
# python -m mmfactor.distributed ESTIMATOR DATA -o OUT   (run by torchrun on every rank)
# --------------------------------------------------------------------------------------


def main(argv=None):
    """Command line: fit a pickled estimator on pickled data, one process per rank."""
    import json

    import joblib

    p = argparse.ArgumentParser(
        prog="python -m mmfactor.distributed",
        description="Fit a joblib-pickled CMF or HyperLearn (update='jacobi') on joblib-pickled "
                    "data as torch.distributed ranks; launch with torchrun. Rank 0 writes the "
                    "fitted estimator.",
    )
    p.add_argument("estimator", help="joblib file of the unfitted estimator")
    p.add_argument("data", help="joblib file of X (MultiModal, list of arrays, SparseTensor)")
    p.add_argument("-o", "--output", required=True, help="where rank 0 writes the fitted model")
    p.add_argument("--backend", default=None, choices=["gloo", "nccl"])
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a collective waits for a stalled rank (default 300)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per rank")
    p.add_argument("--profile", default=None,
                   help="write each rank's per-sweep timings to PROFILE.rank<r>.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    est = joblib.load(args.estimator)
    X = joblib.load(args.data)
    with run(args.backend, timeout=args.timeout) as info:
        t = time.perf_counter()
        est.fit(X)
        wall = time.perf_counter() - t
        if args.profile:
            with open(f"{args.profile}.rank{info['rank']}.json", "w") as f:
                json.dump({"rank": info["rank"], "world_size": info["world_size"],
                           "fit_s": wall, "n_iter": int(est.n_iter_),
                           "sweeps": info["profile"]}, f)
        if info["rank"] == 0:
            joblib.dump(est, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
