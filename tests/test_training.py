import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from mmfactor._training import NonFiniteLossError, fit_loop


def test_stops_on_tol_and_records_terms():
    losses = [10.0, 5.0, 4.99999, 4.99998]
    hist = fit_loop(lambda e: {"loss": losses[e], "a": 2 * losses[e]}, max_iter=4, tol=1e-3)
    assert hist.converged and hist.n_iter == 3
    assert hist.loss == losses[:3] and hist.terms["a"] == [20.0, 10.0, 9.99998]


def test_patience():
    seq = [10, 9.99999, 9.99998, 5, 4.9999999, 4.9999998, 4.9999997]
    hist = fit_loop(lambda e: {"loss": seq[e]}, max_iter=7, tol=1e-3, n_iter_no_change=3)
    assert hist.n_iter == 7 and hist.converged


def test_convergence_warning_names_max_iter():
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        hist = fit_loop(lambda e: {"loss": 10.0 / (e + 1)}, max_iter=3, tol=1e-6,
                        estimator="M")
    assert not hist.converged


def test_tol_zero_runs_all_iterations_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = fit_loop(lambda e: {"loss": 1.0}, max_iter=5, tol=0)
    assert hist.n_iter == 5


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_stops_with_actionable_message(bad):
    seq = [3.0, 2.0, bad]
    with pytest.raises(NonFiniteLossError, match="non-finite at iteration 3.*learning_rate_init"):
        fit_loop(lambda e: {"loss": seq[e]}, max_iter=3, tol=0, estimator="M")


def test_validation_drives_early_stopping_and_best_state():
    val = iter([5.0, 4.0, 4.5, 4.6, 4.7])
    epochs, improved = [], []

    def step(e):
        epochs.append(e)
        return {"loss": 1.0 / (e + 1)}  # the training loss keeps falling

    hist = fit_loop(step, max_iter=5, tol=1e-4, n_iter_no_change=2,
                    validation=lambda: next(val),
                    on_improvement=lambda: improved.append(epochs[-1]))
    assert hist.terms["validation"] == [5.0, 4.0, 4.5, 4.6]
    assert hist.converged and hist.n_iter == 4  # stopped by the validation loss
    assert improved == [0, 1]  # the best state is the one after epoch 1


# ---- faults: KeyboardInterrupt, out of memory, the estimator left unfitted -------------

from sklearn.base import BaseEstimator  # noqa: E402

from mmfactor._training import (  # noqa: E402
    FitInterruptedWarning,
    FitOutOfMemoryError,
    clear_fitted,
)


def _steps(seq, interrupt_at):
    def step(e):
        if e == interrupt_at:
            raise KeyboardInterrupt
        return {"loss": seq[e]}

    return step


def test_interrupt_after_a_sweep_returns_the_history_and_warns():
    with pytest.warns(FitInterruptedWarning, match=r"M: fit interrupted by KeyboardInterrupt "
                                                   r"after 2 complete iteration\(s\) of "
                                                   r"max_iter=5.*interrupted \(last complete "
                                                   r"iteration 2\)"):
        hist = fit_loop(_steps([3.0, 2.0, 1.0], 2), max_iter=5, tol=0, estimator="M")
    assert hist.interrupted and not hist.converged and hist.n_iter == 2
    assert hist.loss == [3.0, 2.0] and hist.best_iter == 2


def test_interrupt_restores_the_best_snapshot():
    state = {"w": None}
    snaps, restored = [], []
    losses = [3.0, 1.0, 2.0, 2.5]

    def step(e):
        if e == 3:
            raise KeyboardInterrupt
        state["w"] = e
        return {"loss": losses[e]}

    def on_improvement():
        snaps.append(state["w"])

    with pytest.warns(FitInterruptedWarning, match=r"parameters of iteration 2, the best"):
        hist = fit_loop(step, max_iter=10, tol=0, on_improvement=on_improvement,
                        on_interrupt=lambda: restored.append(snaps[-1]))
    assert hist.best_iter == 2 and restored == [1] and hist.interrupted


def test_interrupt_before_any_sweep_propagates():
    with pytest.raises(KeyboardInterrupt):
        fit_loop(_steps([1.0], 0), max_iter=3, tol=0)


class _Est(BaseEstimator):
    def __init__(self, interrupt_at=0, fault=KeyboardInterrupt):
        self.interrupt_at = interrupt_at
        self.fault = fault

    def fit(self, X=None):
        self.devices_ = ["cpu"]  # set before training, as the models do
        self._private = 1

        def step(e):
            if e == self.interrupt_at:
                raise self.fault()
            return {"loss": 1.0 / (e + 1)}

        hist = fit_loop(step, max_iter=3, tol=0, estimator="E")
        self.n_iter_ = hist.n_iter
        return self

    def transform(self, X=None):
        return fit_loop(lambda e: (_ for _ in ()).throw(KeyboardInterrupt()) if e else
                        {"loss": 1.0}, max_iter=3, tol=0, estimator="E")


def test_the_calling_estimator_is_unfitted_when_the_first_sweep_is_interrupted():
    est = _Est()
    with pytest.raises(KeyboardInterrupt):
        est.fit()
    assert not [k for k in vars(est) if k.endswith("_")]
    assert est.interrupt_at == 0  # parameters untouched


def test_an_estimator_object_is_unfitted_on_a_non_finite_loss():
    est = _Est()
    est.devices_, est.n_iter_ = ["cpu"], 4
    with pytest.raises(NonFiniteLossError, match="_Est: the loss became non-finite"):
        fit_loop(lambda e: {"loss": np.nan}, max_iter=2, estimator=est)
    assert not [k for k in vars(est) if k.endswith("_")]


def test_an_interrupt_in_transform_propagates_and_keeps_the_model():
    with pytest.warns(FitInterruptedWarning):
        est = _Est(interrupt_at=2).fit()
    assert est.n_iter_ == 2
    with pytest.raises(KeyboardInterrupt):
        est.transform()
    assert est.n_iter_ == 2 and est.devices_ == ["cpu"]


def test_clear_fitted_follows_check_is_fitted():
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    est = _Est()
    est.a_, est._b_, est._c = 1, 2, 3
    clear_fitted(est)
    assert vars(est) == {"interrupt_at": 0, "fault": KeyboardInterrupt, "_c": 3}
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


def test_cpu_out_of_memory_reports_the_size():
    import torch

    with pytest.raises(FitOutOfMemoryError, match=r"M: out of memory during iteration 1; "
                                                  r"torch tried to allocate 128.0 TiB.*"
                                                  r"DefaultCPUAllocator.*Lower n_components"):
        fit_loop(lambda e: {"loss": float(torch.empty((2**20, 2**25)).sum())}, max_iter=2,
                 estimator="M")


def test_cuda_out_of_memory_reports_the_size_and_the_parameters():
    import torch

    class Big(_Est):
        def __init__(self, n_components=512, batch_size=4096):
            self.n_components = n_components
            self.batch_size = batch_size

    def step(e):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.50 GiB. GPU 0")

    est = Big()
    est.devices_ = ["cuda:0"]
    with pytest.raises(FitOutOfMemoryError, match=r"Big: out of memory during iteration 1; "
                                                  r"torch tried to allocate 3.50 GiB.*"
                                                  r"batch_size=4096, n_components=512"):
        fit_loop(step, max_iter=2, estimator=est)
    assert not hasattr(est, "devices_")


def test_other_errors_pass_through_unchanged():
    with pytest.raises(ZeroDivisionError):
        fit_loop(lambda e: {"loss": 1 / 0}, max_iter=2)


def test_convergence_warning_points_at_the_users_call():
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import Pipeline

    from mmfactor import CMF, DFMF

    X = np.random.RandomState(0).rand(30, 6)
    for fit in (lambda: DFMF(2, max_iter=2).fit(X),
                lambda: CMF(2, max_iter=1).fit_transform(X),
                lambda: Pipeline([("emb", DFMF(2, max_iter=2))]).fit(X)):
        with pytest.warns(ConvergenceWarning, match="max_iter") as record:
            fit()
        assert {w.filename for w in record} == {__file__}


# ---- mini-batches built on the device (issue 19) ---------------------------------------

import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from mmfactor._training import DeviceCSR, Rows, row_batches  # noqa: E402


def test_row_batches_cover_the_rows_once_in_the_generators_order():
    gen = torch.Generator().manual_seed(3)
    index = np.arange(100, 130)
    batches = row_batches(30, 7, ["cpu"], generator=gen, index=torch.as_tensor(index))
    expected = index[torch.randperm(30, generator=torch.Generator().manual_seed(3)).numpy()]
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    np.testing.assert_array_equal(np.concatenate([b.host for b in batches]), expected)
    for b in batches:  # the device copy is the same indices, a slice of one tensor
        assert b.on("cpu").dtype == torch.int64
        np.testing.assert_array_equal(b.on("cpu").numpy(), b.host)
    in_order = row_batches(5, 2, ["cpu"])
    np.testing.assert_array_equal(np.concatenate([b.host for b in in_order]), np.arange(5))


@pytest.mark.parametrize("host_gather", [True, False])
def test_device_csr_gathers_the_rows_scipy_would(monkeypatch, host_gather):
    import mmfactor._training as training

    monkeypatch.setattr(training, "HOST_GATHER_ON_CPU", host_gather)
    rng = np.random.RandomState(0)
    X = sp.random(20, 9, density=0.3, random_state=rng, format="csr", dtype=np.float64)
    X[3] = 0  # an empty row
    X.eliminate_zeros()
    D = DeviceCSR(X, "cpu")
    assert (D._host is not None) == host_gather
    idx = np.array([3, 17, 0, 3, 11])
    rows = Rows(idx, {})
    sub = X[idx].tocoo()
    row, col, val, offsets = D.rows(rows)
    got = sorted(zip(row.tolist(), col.tolist(), val.tolist(), strict=True))
    want = sorted(zip(sub.row.tolist(), sub.col.tolist(), sub.data.astype(np.float32).tolist(),
                      strict=True))
    assert got == want
    np.testing.assert_array_equal(offsets.numpy(), X[idx].indptr[:-1])
    assert D.nnz(rows) == X[idx].nnz
    dense, mask = D.dense(rows, mask=True)
    np.testing.assert_array_equal(dense.numpy(), X[idx].toarray().astype(np.float32))
    np.testing.assert_array_equal(mask.numpy(), (X[idx] != 0).toarray())


def _count_host_traffic(monkeypatch, module, fit):
    """Calls that move data between host and device, or build batches on the host, made
    inside each training epoch (``step``) of ``fit()``; a list with one count per epoch."""
    counts, active = [], [False]

    def counting(fn):
        def wrapper(*args, **kwargs):
            if active[0]:
                counts[-1] += 1
            return fn(*args, **kwargs)
        return wrapper

    for owner, name in [(torch, "as_tensor"), (torch, "tensor"), (torch, "from_numpy"),
                        (torch.Tensor, "__float__"),
                        (torch.Tensor, "numpy"), (torch.Tensor, "cpu"),
                        (sp.csr_matrix, "__getitem__"), (sp.csr_matrix, "toarray")]:
        monkeypatch.setattr(owner, name, counting(getattr(owner, name)))
    loop = module.fit_loop

    def spy_loop(step, **kwargs):
        def counted(epoch):
            counts.append(0)
            active[0] = True
            try:
                return step(epoch)
            finally:
                active[0] = False
        return loop(counted, **{**kwargs, "validation": None, "on_improvement": None})

    monkeypatch.setattr(module, "fit_loop", spy_loop)
    fit()
    return counts


@pytest.mark.parametrize("model", ["DCMF", "MMEDA"])
def test_an_epoch_moves_nothing_per_batch(monkeypatch, model):
    """The host-device traffic of an epoch does not grow with its number of batches.

    Run on the CPU with the device path of DeviceCSR (what a GPU runs), so that every
    conversion between NumPy/SciPy and torch counts as host-device traffic.
    """
    import mmfactor._training as training
    import mmfactor.neural._dcmf as dcmf_module
    import mmfactor.neural._mmeda as mmeda_module
    from mmfactor import DCMF, MMEDA, MultiModal

    rng = np.random.RandomState(0)
    R = sp.random(80, 30, density=0.2, random_state=rng, format="csr")
    X = MultiModal(R, rng.randn(80, 6), sp.random(80, 12, density=0.3, random_state=rng,
                                                     format="csr"))
    per_epoch = {}
    for bs in (8, 40):
        monkeypatch.setattr(training, "HOST_GATHER_ON_CPU", False)
        if model == "DCMF":
            est = DCMF(2, hidden_layer_sizes=(4,), batch_size=bs, max_iter=2, tol=0,
                       random_state=0)
            module = dcmf_module
        else:
            est = MMEDA(2, encoder="neural", hidden_layer_sizes=(4,), batch_size=bs,
                        max_iter=2, tol=0, random_state=0)
            module = mmeda_module
        per_epoch[bs] = _count_host_traffic(monkeypatch, module, lambda e=est: e.fit(X))
        monkeypatch.undo()
    # 10 batches per entity against 2: the same count (the first epoch also has the
    # optimizer's state being created); after it, a few per epoch (the permutations,
    # the loss read back once)
    assert per_epoch[8] == per_epoch[40]
    assert per_epoch[8][1] <= 20


def test_schedule_lr_sets_the_cosine_step_size_of_every_optimizer():
    import math

    import torch

    from mmfactor._training import schedule_lr

    opts = [torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=0.1) for _ in range(2)]
    schedule_lr(opts, "constant", 0.1, 3, 10)
    assert [o.param_groups[0]["lr"] for o in opts] == [0.1, 0.1]
    for epoch in (0, 5, 9):
        schedule_lr(opts, "cosine", 0.1, epoch, 10)
        want = 0.05 * (1 + math.cos(math.pi * epoch / 10))
        assert all(abs(o.param_groups[0]["lr"] - want) < 1e-15 for o in opts)
    assert opts[0].param_groups[0]["lr"] < 0.01  # near 0 at the last epoch
