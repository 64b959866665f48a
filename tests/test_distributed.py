"""mmfactor.distributed: gloo ranks on 127.0.0.1 against the single-process Jacobi fit.

Multi-process tests fork one process per rank with the variables torchrun sets (RANK,
WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT), wait with a timeout and kill whatever is
left, so a hang fails the test instead of blocking CI; one slow test runs the real
``torchrun`` command line. In-process tests use a
one-rank gloo group.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.pipeline import Pipeline

import mmfactor
import mmfactor.distributed as mmd
from mmfactor import CMF, HyperLearn
from mmfactor.datasets import make_collective, make_hypergraph

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT = 120  # seconds for a whole multi-process launch (startup included)

# float64 fits; the ranks run the same arithmetic as one process, so the factors agree to
# summation order (observed: bit-identical with one torch thread per process)
ATOL = 1e-9


def cmf_problem():
    d = make_collective(60, (12, 9, 7), 3, missing_rate=0.2, noise=0.05, random_state=0)
    X = mmfactor.MultiModal(d.X.views[0], d.X.views[1],
                            shared={"side": np.random.RandomState(1).rand(12, 5)})
    relations = [("sample", "a"), ("sample", "b"), ("a", "side_col")]
    est = CMF(3, relations=relations, update="jacobi", dtype="float64", random_state=0,
              max_iter=80, tol=1e-4)
    return est, X


def hyperlearn_problem(solver="adam"):
    d = make_hypergraph((30, 20, 10), n_communities=3, n_hyperedges=600, random_state=0)
    if solver == "als":  # the closed-form per-mode solver; returns the estimator only
        return HyperLearn(3, graphs=d.graphs, diffusion_steps=0, solver="als", max_iter=6,
                          tol=0, dtype="float64", random_state=0)
    est = HyperLearn(3, graphs=d.graphs, diffusion_steps=2, cheb_order=3, max_iter=8, tol=0,
                     dtype="float64", random_state=0)
    return est, d.X


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, out, fault, timeout):
    """One rank (a forked child): fit both models inside ``run()``, dump them or the error."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # also keeps the child off the parent's OpenMP pool
    if fault is not None and rank == fault[0]:
        calls, original = [0], CMF._solve_entity

        def faulty(self, *a, **k):
            calls[0] += 1
            if calls[0] == fault[2]:
                if fault[1] == "die":
                    os._exit(17)
                time.sleep(600)  # "stall"
            return original(self, *a, **k)

        CMF._solve_entity = faulty
    try:
        with mmd.run(backend="gloo", timeout=timeout) as info:
            cmf, X = cmf_problem()
            if fault is not None and rank == fault[0] and fault[1] == "data":
                v = X.views[0]  # one observed entry differs on this rank
                v.flat[np.flatnonzero(np.isfinite(v))[0]] += 1e-9
            if fault is not None and rank == fault[0] and fault[1] == "params":
                cmf.set_params(n_components=4)
            cmf.fit(X)
            hl, T = hyperlearn_problem()
            hl.fit(T)
            als = hyperlearn_problem(solver="als").fit(T)
            owned = sorted({str(u) for rec in info["profile"] for u in rec["owned"]})
            joblib.dump({"cmf": cmf, "hl": hl, "als": als, "owned": owned},
                        f"{out}.rank{rank}")
        # after the block (its group destroyed): still this process's rank
        Path(f"{out}.rank{rank}.after").write_text(f"{mmd.rank()} {mmd.world_size()}")
    except BaseException:
        Path(f"{out}.rank{rank}.err").write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)


def launch(world, out, *, fault=None, timeout=60, wait=LAUNCH_TIMEOUT, until_rank0=False):
    """Fork ``world`` ranks; wait at most ``wait`` seconds, kill what is left.

    ``until_rank0``: stop waiting (and kill the others) as soon as rank 0 has exited.

    Returns each rank's exit code (negative: killed by the signal) and error text.
    Forked children start in milliseconds (the parent has imported torch and mmfactor).
    """
    ctx = mp.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, str(out), fault, timeout))
             for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline and any(p.is_alive() for p in procs):
            if until_rank0 and not procs[0].is_alive():
                break
            time.sleep(0.05)
    finally:
        for p in procs:  # a hang fails the test, never blocks it
            if p.is_alive():
                p.kill()
                p.join(10)
    errs = [Path(f"{out}.rank{r}.err") for r in range(world)]
    return [(p.exitcode, e.read_text() if e.exists() else "") for p, e in zip(procs, errs,
                                                                              strict=True)]


@pytest.fixture(scope="module")
def reference():
    cmf, X = cmf_problem()
    hl, T = hyperlearn_problem()
    return cmf.fit(X), hl.fit(T), X, T, hyperlearn_problem(solver="als").fit(T)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_match_single_process_jacobi(world, tmp_path, reference):
    ref_cmf, ref_hl, X, T, ref_als = reference
    results = launch(world, tmp_path / "fit")
    for r, (code, err) in enumerate(results):
        assert code == 0, f"rank {r} failed ({code}):\n{err[-3000:]}"
    fitted = [joblib.load(tmp_path / f"fit.rank{r}") for r in range(world)]
    # the work was split: every rank owned some unit
    assert all(f["owned"] for f in fitted)
    # rank() after the run() block is still each process's own rank (issue 18)
    assert [(tmp_path / f"fit.rank{r}.after").read_text() for r in range(world)] == [
        f"{r} {world}" for r in range(world)]
    for f in fitted:
        cmf, hl = f["cmf"], f["hl"]
        # the same sweeps (rank 0's objective decides when to stop, tol > 0 here)
        assert cmf.n_iter_ == ref_cmf.n_iter_ < ref_cmf.max_iter
        np.testing.assert_allclose(cmf.loss_curve_, ref_cmf.loss_curve_, rtol=1e-12)
        for e, u in ref_cmf.factors_.items():
            np.testing.assert_allclose(cmf.factors_[e], u, atol=ATOL, rtol=0)
        for name, b in ref_cmf.biases_.items():
            for side in ("row", "col"):
                np.testing.assert_allclose(cmf.biases_[name][side], b[side], atol=ATOL)
        assert hl.n_iter_ == ref_hl.n_iter_
        for a, b in zip(hl.factors_, ref_hl.factors_, strict=True):
            np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
        np.testing.assert_allclose(hl.loss_curve_, ref_hl.loss_curve_, rtol=1e-12)
        for a, b in zip(f["als"].factors_, ref_als.factors_, strict=True):
            np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
    # rank 0's model is an ordinary fitted estimator: no hooks left, transform works
    cmf = fitted[0]["cmf"]
    assert "_solve_entity" not in cmf.__dict__ and "_objective" not in cmf.__dict__
    np.testing.assert_allclose(cmf.transform(X), ref_cmf.transform(X), atol=1e-8)
    np.testing.assert_allclose(fitted[0]["hl"].transform(T), ref_hl.transform(T), atol=1e-8)


@pytest.mark.slow
def test_torchrun_command_line(tmp_path, reference):
    """``torchrun -m mmfactor.distributed EST DATA -o OUT``: the documented launch."""
    ref_cmf, _, X, _, _ = reference
    est, _ = cmf_problem()
    joblib.dump(est, tmp_path / "est.joblib")
    joblib.dump(X, tmp_path / "X.joblib")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
           str(free_port()), "-m", "mmfactor.distributed", str(tmp_path / "est.joblib"),
           str(tmp_path / "X.joblib"), "-o", str(tmp_path / "fitted.joblib"), "--threads", "1",
           "--timeout", "60", "--profile", str(tmp_path / "prof")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    fitted = joblib.load(tmp_path / "fitted.joblib")
    for e, u in ref_cmf.factors_.items():
        np.testing.assert_allclose(fitted.factors_[e], u, atol=ATOL, rtol=0)
    prof = [json.loads((tmp_path / f"prof.rank{r}.json").read_text()) for r in range(2)]
    assert [p["n_iter"] for p in prof] == [ref_cmf.n_iter_] * 2
    owned = [set(p["sweeps"][0]["owned"]) for p in prof]
    assert owned[0] and owned[1] and not owned[0] & owned[1]
    assert owned[0] | owned[1] == set(ref_cmf.factors_)


@pytest.mark.parametrize("what, match", [
    ("data", r"the ranks hold different data \(X\): ranks \[0\] vs \[1\]"),
    ("params", r"the ranks hold different parameters: ranks \[0\] vs \[1\]"),
])
def test_ranks_with_different_data_or_parameters_refuse_to_fit(what, match, tmp_path):
    """Rank 1 has one entry changed by 1e-9, or n_components=4: every rank raises a clear
    ValueError before fitting (it was a blend of both, or a C++ abort in gloo)."""
    results = launch(2, tmp_path / "fit", fault=(1, what), timeout=30, wait=60)
    for r, (code, err) in enumerate(results):
        assert code == 1, f"rank {r}: {code}"
        assert "ValueError" in err and re.search(match, err), err[-2000:]
        assert "nothing was fitted" in err


def test_dead_rank_stops_the_others(tmp_path):
    """Rank 1 dies in its third solve: rank 0 raises RankFailedError, it does not hang."""
    start = time.monotonic()
    (code0, err0), (code1, _) = launch(2, tmp_path / "fit", fault=(1, "die", 3), timeout=60,
                                       wait=90)
    elapsed = time.monotonic() - start
    assert code1 == 17
    assert code0 == 1, err0[-3000:]  # exited by itself, with an error
    assert "RankFailedError" in err0 and "another rank has died or stalled" in err0, err0
    assert elapsed < 50  # well within the 60 s timeout: the closed connection is seen


def test_stalled_rank_times_out(tmp_path):
    """Rank 1 hangs in a solve: rank 0 gives up after the group's timeout (3 s)."""
    start = time.monotonic()
    (code0, err0), (code1, _) = launch(2, tmp_path / "fit", fault=(1, "stall", 2), timeout=3,
                                       wait=40, until_rank0=True)
    assert code0 == 1, err0[-3000:]
    assert "RankFailedError" in err0 and "Timed out" in err0, err0
    assert code1 == -9  # the stalled rank was killed by the launcher
    assert time.monotonic() - start < 30


# ---- in process: a one-rank gloo group -----------------------------------------------


@pytest.fixture
def group():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1, timeout=datetime.timedelta(seconds=30))
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_one_rank_fit_equals_plain_fit_and_leaves_no_hooks(group):
    from mmfactor.factorization import _hyperlearn

    est, X = cmf_problem()
    ref = cmf_problem()[0].fit(X)
    profile = []
    assert mmd.fit(est, X, profile=profile) is est
    for e, u in ref.factors_.items():
        np.testing.assert_allclose(est.factors_[e], u, atol=ATOL)
    assert len(profile) == est.n_iter_ and profile[0]["owned"] == sorted(est.factors_)
    assert "_objective" not in est.__dict__ and "_solve_entity" not in est.__dict__
    update = _hyperlearn.update_mode
    hl, T = hyperlearn_problem()
    mmd.fit(hl, T)
    assert _hyperlearn.update_mode is update


def test_random_state_none_is_made_common_and_restored(group):
    est, X = cmf_problem()
    est.set_params(random_state=None, max_iter=3, tol=0)
    mmd.fit(est, X)
    assert est.random_state is None
    assert est.n_iter_ == 3


def test_run_routes_fit_and_restores(group):
    original = CMF._fit
    est, X = cmf_problem()
    with mmd.run() as info:  # the group exists: run() uses it, does not destroy it
        assert info["world_size"] == 1 and info["backend"] == "gloo"
        assert CMF._fit is not original
        emb = est.fit_transform(X)
        assert len(info["profile"]) == est.n_iter_
        # fit() inside run() hooks once; a Pipeline step is routed too
        again = mmd.fit(cmf_problem()[0], X)
        np.testing.assert_array_equal(again.factors_["a"], est.factors_["a"])
        n = len(info["profile"])
        Pipeline([("emb", cmf_problem()[0])]).fit(X)
        assert len(info["profile"]) == n + est.n_iter_
    assert CMF._fit is original
    assert dist.is_initialized()
    assert emb.shape == (60, 3)


def test_errors_need_a_group(monkeypatch):
    est, X = cmf_problem()
    with pytest.raises(RuntimeError, match="needs an initialised torch.distributed"):
        mmd.fit(est, X)
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match=r"are not set; launch the script with torchrun"):
        with mmd.run():
            pass
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with pytest.raises(ValueError, match=r"backend='mpi'; expected 'gloo'"):
        with mmd.run(backend="mpi"):
            pass
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="backend='nccl' needs CUDA"):
            with mmd.run(backend="nccl"):
                pass
    assert mmd.rank() == 0 and mmd.world_size() == 1


def test_errors_in_a_group(group):
    est, X = cmf_problem()
    with pytest.raises(ValueError, match="CMF fit needs update='jacobi'"):
        mmd.fit(est.set_params(update="gauss-seidel"), X)
    with pytest.raises(ValueError, match="solver='lbfgs' cannot be distributed"):
        mmd.fit(cmf_problem()[0].set_params(solver="lbfgs"), X)
    binary = [(np.random.RandomState(0).rand(20, 5) > 0.5).astype(float)]
    with pytest.raises(ValueError, match="uses the L-BFGS solver"):
        mmd.fit(CMF(2, link="sigmoid", update="jacobi", max_iter=2), binary)
    hl, T = hyperlearn_problem()
    with pytest.raises(ValueError, match="HyperLearn fit needs update='jacobi'"):
        mmd.fit(hl.set_params(update="gauss-seidel"), T)
    bpr = hyperlearn_problem()[0].set_params(loss="bpr", max_iter=2)
    with pytest.raises(ValueError, match="loss='bpr' trains every mode at once"):
        mmd.fit(bpr, T)
    assert not hasattr(bpr, "factors_")  # refused before any training
    with pytest.raises(TypeError, match="fits CMF and HyperLearn; got DFMF"):
        mmd.fit(mmfactor.DFMF(), X)
    with pytest.raises(ValueError, match=r"owners names \['nope'\]"):
        mmd.fit(cmf_problem()[0], X, owners={"nope": 0})
    with pytest.raises(ValueError, match=r"owners\['a'\]=1 is not a rank of this group"):
        mmd.fit(cmf_problem()[0], X, owners={"a": 1})


def test_assign_longest_first_to_least_loaded():
    units = ["u", "m", "g", "o"]
    costs = {"u": 10.0, "m": 6.0, "g": 5.0, "o": 1.0}
    assert mmd._assign(units, costs, None, 2) == {"u": 0, "m": 1, "g": 1, "o": 0}
    assert mmd._assign(units, costs, {"o": 0}, 2) == {"o": 0, "u": 1, "m": 0, "g": 0}
    assert mmd._assign(units, costs, None, 5) == {"u": 0, "m": 1, "g": 2, "o": 3}
