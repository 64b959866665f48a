"""The one training loop every mmfactor model runs.

A model supplies ``step(epoch) -> dict`` that performs one sweep (an ALS sweep, a
multiplicative update, an epoch of mini-batches) and returns the loss terms of that sweep,
with the total under ``"loss"``. :func:`fit_loop` owns everything around it: the progress
bar, the stopping rule (``tol`` and ``n_iter_no_change``), the NaN/inf guard, the
``ConvergenceWarning``, the loss history, and the faults:

* **Ctrl-C** (``KeyboardInterrupt``) after at least one complete sweep stops the loop,
  sets ``History.interrupted`` and warns (:class:`FitInterruptedWarning`); the model
  then finishes its ``fit`` as after convergence, with the best parameters so far (the
  state saved by ``on_improvement`` and put back by ``on_interrupt``, or, for a model
  that keeps no snapshot, the state when the interrupt arrived, whose last complete
  sweep is the best one for the monotone solvers). A ``KeyboardInterrupt`` before any
  sweep completed propagates, and the estimator is left **unfitted**.
* A **non-finite loss** raises :class:`NonFiniteLossError` with what to change.
* **Out of memory** (``torch.OutOfMemoryError``, the CPU allocator's ``RuntimeError``,
  ``MemoryError``) raises :class:`FitOutOfMemoryError` naming the sweep, the size torch
  tried to allocate, the memory in use on each CUDA device and the model's size
  parameters.

Whenever an exception (interrupt, non-finite loss, out of memory, a bug) escapes the
loop during a ``fit``, every fitted attribute (``name_``) the estimator set so far is
removed, so that it is never half-fitted: :func:`sklearn.utils.validation.check_is_fitted`
then fails as it does before ``fit``. The estimator is the one passed as ``estimator=``
(an estimator object), or else the ``self`` of the ``fit*`` method that called
:func:`fit_loop` (found on the call stack).
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning

__all__ = [
    "fit_loop",
    "History",
    "NonFiniteLossError",
    "FitInterruptedWarning",
    "FitOutOfMemoryError",
    "clear_fitted",
    "Rows",
    "row_batches",
    "schedule_lr",
    "DeviceCSR",
]


class NonFiniteLossError(FloatingPointError, ValueError):
    """The training loss became NaN or infinite."""


class FitInterruptedWarning(UserWarning):
    """``fit`` was stopped by a ``KeyboardInterrupt``; the best parameters so far are kept."""


class FitOutOfMemoryError(MemoryError):
    """A device ran out of memory during training; the message gives the sizes."""


@dataclass
class History:
    """What :func:`fit_loop` recorded.

    ``loss`` (one total per sweep), ``terms`` (per-term losses), ``n_iter``, ``converged``,
    ``interrupted`` (a ``KeyboardInterrupt`` stopped the loop) and ``best_iter`` (the
    1-based sweep with the best monitored loss, 0 before any sweep).
    """

    loss: list = field(default_factory=list)
    terms: dict = field(default_factory=dict)
    n_iter: int = 0
    converged: bool = False
    interrupted: bool = False
    best_iter: int = 0

    def record(self, losses):
        self.loss.append(float(losses["loss"]))
        for k, v in losses.items():
            if k != "loss":
                self.terms.setdefault(k, []).append(float(v))


def _is_estimator(obj):
    from sklearn.base import BaseEstimator

    return isinstance(obj, BaseEstimator)


def _calling_estimator(max_depth=6):
    """``(estimator, in_fit)``: the ``self`` of the nearest estimator method on the stack.

    ``in_fit`` is whether that method's name contains ``"fit"``: a loop run by
    ``transform`` (a fold-in) must never unfit the model, and a Ctrl-C there aborts the
    call instead of returning a half-solved result.
    """
    frame = sys._getframe(2)
    for _ in range(max_depth):
        if frame is None:
            break
        obj = frame.f_locals.get("self")
        if _is_estimator(obj):
            return obj, "fit" in frame.f_code.co_name
        frame = frame.f_back
    return None, True


def _user_stacklevel():
    """``stacklevel`` for a warning raised in :func:`fit_loop` that points at the user's
    call (``model.fit(X)``, ``pipe.fit(X, y)``, the main job's fit): the first frame
    outside mmfactor's modules and scikit-learn's (wrappers, pipelines, searches)."""
    import os

    import sklearn

    inside = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
              os.path.dirname(os.path.abspath(sklearn.__file__)) + os.sep)
    frame, level = sys._getframe(1), 1  # level 1: fit_loop, the caller of warnings.warn
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(inside) or path.endswith(os.sep + "__main__.py"):
            return level
        frame, level = frame.f_back, level + 1
    return level


def clear_fitted(estimator):
    """Remove every fitted attribute (``name_``) of ``estimator``: it is unfitted again.

    The criterion is scikit-learn's ``check_is_fitted``: an attribute whose name ends
    with ``_`` and does not start with ``__``.
    """
    for key in [k for k in vars(estimator) if k.endswith("_") and not k.startswith("__")]:
        delattr(estimator, key)


_OOM_PATTERNS = ("out of memory", "can't allocate memory", "cannot allocate memory",
                 "failed to allocate")


def _is_oom(exc):
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda,
                                                                   "OutOfMemoryError", ())
    if isinstance(exc, MemoryError) or (oom_type and isinstance(exc, oom_type)):
        return True
    return isinstance(exc, RuntimeError) and any(p in str(exc).lower() for p in _OOM_PATTERNS)


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _oom_message(name, epoch, exc, est):
    import torch

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    parts = [f"{name}: out of memory during iteration {epoch + 1}"]
    m = re.search(r"[Tt]ried to allocate ([0-9.]+ ?[KMGTP]?i?B)", text)
    if m:
        parts.append(f"torch tried to allocate {m.group(1)}")
    else:
        m = re.search(r"allocate (?:memory: you tried to allocate )?(\d+) bytes", text)
        if m:
            parts.append(f"torch tried to allocate {_fmt_bytes(int(m.group(1)))}")
    detail = [f"({text})"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            try:
                free, total = torch.cuda.mem_get_info(i)
                detail.append(
                    f"cuda:{i}: {_fmt_bytes(torch.cuda.memory_allocated(i))} allocated by "
                    f"tensors, {_fmt_bytes(torch.cuda.memory_reserved(i))} reserved, "
                    f"{_fmt_bytes(free)} free of {_fmt_bytes(total)}"
                )
            except Exception:  # noqa: BLE001 - the report must not fail
                pass
    if est is not None:
        sizes = {k: v for k, v in est.get_params(deep=False).items()
                 if k in ("n_components", "batch_size", "hidden_layer_sizes", "hidden_size",
                          "view_components", "devices", "dtype")}
        detail.append("parameters " + ", ".join(f"{k}={v!r}" for k, v in sizes.items()))
    return (
        "; ".join(parts) + ". " + "; ".join(detail) + ". Lower n_components or batch_size, "
        "use dtype='float32', or place the views on other devices with devices=..."
    )


def fit_loop(
    step,
    *,
    max_iter,
    tol=1e-4,
    n_iter_no_change=1,
    verbose=0,
    desc="fit",
    estimator=None,
    validation=None,
    on_improvement=None,
    on_interrupt=None,
    hint=None,
):
    """Run ``step`` until convergence and return a :class:`History`.

    Parameters
    ----------
    step : callable
        ``step(epoch)`` performs one sweep and returns a dict of floats with at least
        ``"loss"``.
    max_iter : int
        Maximum number of sweeps.
    tol : float
        Stop when the relative decrease of the monitored loss is below ``tol`` for
        ``n_iter_no_change`` consecutive sweeps. ``tol=0`` runs all ``max_iter`` sweeps.
    n_iter_no_change : int
        Patience of the stopping rule.
    verbose : int
        ``> 0`` shows a tqdm progress bar with the current loss; in a ``fit`` it stays
        as one summary line (iterations, time, final loss, converged or not).
    desc : str
        Label of the progress bar and of the messages.
    estimator : str or estimator, optional
        Name used in warnings and errors, or the estimator itself (its class name is
        then used, and it is unfitted when an exception escapes the loop). With a
        string, the estimator is the ``self`` of the calling ``fit*`` method.
    validation : callable, optional
        ``validation() -> float``: a held-out loss monitored instead of the training loss
        (early stopping); recorded in ``terms["validation"]``.
    on_improvement : callable, optional
        Called after a sweep that improved the monitored loss (to keep the best state).
    on_interrupt : callable, optional
        Called when a ``KeyboardInterrupt`` stops the loop after at least one complete
        sweep, before returning: put back the state saved by ``on_improvement``.
    hint : str, optional
        What the model's user should change when the loss becomes non-finite (the
        default suggests scaling the views, a lower learning rate or a larger alpha).

    Returns
    -------
    History
        ``interrupted`` is True when a ``KeyboardInterrupt`` stopped the loop.

    Raises
    ------
    NonFiniteLossError
        The loss became NaN or infinite.
    FitOutOfMemoryError
        A device ran out of memory in a sweep.
    KeyboardInterrupt
        Interrupted before the first sweep completed (the estimator is left unfitted).
    """
    if estimator is not None and not isinstance(estimator, str):
        est, name, in_fit = estimator, type(estimator).__name__, True
    else:
        est, in_fit = _calling_estimator()
        name = estimator or desc
        if not in_fit:
            est = None  # transform/score: never unfit the model
    hist = History()
    best = math.inf
    no_change = 0
    epoch = 0
    bar = None
    try:
        from tqdm.auto import tqdm  # inside the try: a Ctrl-C here also unfits

        # a fit leaves its bar as one summary line; a fold-in (transform) leaves nothing
        bar = tqdm(total=max_iter, desc=desc, disable=not verbose, leave=in_fit)
        for epoch in range(max_iter):
            try:
                losses = dict(step(epoch))
                if validation is not None:
                    losses["validation"] = float(validation())
            except KeyboardInterrupt:
                if hist.n_iter == 0 or not in_fit:
                    raise
                hist.interrupted = True
                break
            monitored = losses["validation"] if validation is not None else losses["loss"]
            bad = {k: v for k, v in losses.items() if not math.isfinite(float(v))}
            if bad:
                raise NonFiniteLossError(
                    f"{name}: the loss became non-finite at iteration {epoch + 1} "
                    f"({', '.join(f'{k}={v}' for k, v in bad.items())}). " + (
                        hint or "Scale the input views (e.g. StandardScaler), lower "
                        "learning_rate_init, or raise alpha.")
                )
            hist.record(losses)
            hist.n_iter = epoch + 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.5g}")
            improved = not math.isfinite(best) or monitored < best - tol * max(abs(best), 1e-12)
            if improved:
                no_change = 0
            else:
                no_change += 1
            if monitored < best:
                best = monitored
                hist.best_iter = epoch + 1
                if on_improvement is not None:
                    try:
                        on_improvement()
                    except KeyboardInterrupt:
                        # the snapshot may be incomplete: the previous one stays valid
                        if not in_fit:
                            raise
                        hist.interrupted = True
                        break
            if tol > 0 and no_change >= n_iter_no_change:
                hist.converged = True
                break
    except BaseException as exc:
        if est is not None:
            clear_fitted(est)
        if not isinstance(exc, KeyboardInterrupt) and _is_oom(exc):
            raise FitOutOfMemoryError(_oom_message(name, epoch, exc, est)) from exc
        raise
    finally:
        if bar is not None:
            if hist.loss:
                state = ("converged" if hist.converged else "interrupted" if hist.interrupted
                         else "stopped" if sys.exc_info()[0] is not None
                         else f"max_iter={max_iter} reached")
                bar.set_postfix_str(f"loss={hist.loss[-1]:.5g}, {state}", refresh=False)
            bar.close()
    if hist.interrupted:
        if on_interrupt is not None:
            on_interrupt()
        kept = (f"the parameters of iteration {hist.best_iter}, the best so far"
                if on_improvement is not None
                else f"the parameters reached when interrupted (last complete iteration "
                     f"{hist.n_iter})")
        warnings.warn(
            f"{name}: fit interrupted by KeyboardInterrupt after {hist.n_iter} complete "
            f"iteration(s) of max_iter={max_iter}; the model keeps {kept}. Call fit again "
            "to train to convergence.",
            FitInterruptedWarning,
            stacklevel=_user_stacklevel(),
        )
        return hist
    if not hist.converged and tol > 0:
        warnings.warn(
            f"{name}: maximum number of iterations max_iter={max_iter} reached before "
            f"convergence (tol={tol}). Increase max_iter or tol.",
            ConvergenceWarning,
            stacklevel=_user_stacklevel(),
        )
    return hist


# --------------------------------------------------------------------------------------
# Mini-batches built on the device
# --------------------------------------------------------------------------------------
#
# The neural models (MMEDA, DCMF) move their training data to its device once, before the
# first epoch (a dense view as one float32 tensor, a sparse one as a DeviceCSR), and
# draw each epoch's row order once: the permutation goes to every device in one copy
# per epoch, and every batch is a slice of it. Inside the batch loop nothing crosses
# between host and device: batches are gathered by indexing tensors already there, and
# the losses are summed there (read back once per epoch).


class Rows:
    """The row indices of one mini-batch: on the host and on each device that needs them.

    ``host`` (a NumPy int64 array) serves host-side bookkeeping only (sizes, counts of
    stored entries); ``on(device)`` is the same indices as a tensor already on
    ``device`` (a slice of the epoch's permutation, moved there once).
    """

    __slots__ = ("host", "_on")

    def __init__(self, host, on):
        self.host, self._on = host, on

    def __len__(self):
        return len(self.host)

    def on(self, device):
        """The indices as an int64 tensor on ``device``."""
        import torch

        device = torch.device(device)
        t = self._on.get(device)
        if t is None:  # a device the batches were not drawn for: moved now, kept
            t = self._on[device] = torch.as_tensor(self.host, device=device)
        return t


def schedule_lr(optimizers, schedule, lr0, epoch, n_epochs):
    """Set every optimizer's step size for ``epoch`` (counted from 0) of ``n_epochs``.

    ``"constant"`` leaves ``lr0`` in place; ``"cosine"`` sets
    ``lr0 * (1 + cos(pi * epoch / n_epochs)) / 2``, from ``lr0`` down towards 0.
    """
    if schedule != "cosine":
        return
    lr = lr0 * 0.5 * (1 + math.cos(math.pi * epoch / n_epochs))
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def row_batches(n, batch_size, devices, *, generator=None, index=None):
    """One epoch's mini-batches of row indices, as :class:`Rows`.

    ``generator`` (a CPU :class:`torch.Generator`) shuffles the rows (``None``: in order,
    as for gradient-free passes over the data); ``index`` maps positions to rows (e.g.
    the training rows of a split). The permutation is drawn on the host, so a fit draws
    the same batches on every device, and moved to each of ``devices`` in one copy.
    """
    import torch

    order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
    if index is not None:
        order = torch.as_tensor(index)[order]
    moved = {torch.device(d): order.to(d) for d in devices}
    host = order.numpy()
    return [Rows(host[s: s + batch_size], {d: t[s: s + batch_size] for d, t in moved.items()})
            for s in range(0, n, batch_size)]


#: On the CPU the host is the device: a DeviceCSR there gathers rows with SciPy (about
#: 3x faster per batch than the indexing kernels, measured on MovieLens batches); the
#: tests turn this off to run the device path on the CPU.
HOST_GATHER_ON_CPU = True


class DeviceCSR:
    """A sparse matrix moved to a device once (its CSR arrays), gathered there by rows.

    ``rows(batch)`` returns the stored entries of the batch's rows; ``dense(batch)`` the
    batch densified on the device. The row pointers stay on the host too, so the size of
    a batch is known without reading anything back from the device. On the CPU (see
    :data:`HOST_GATHER_ON_CPU`) the rows are gathered by SciPy, with no copy to a device.
    """

    def __init__(self, matrix, device, dtype=None):
        import scipy.sparse as sp
        import torch

        csr = sp.csr_matrix(matrix)
        if not csr.has_canonical_format:
            csr = csr.copy()
            csr.sum_duplicates()
        self.shape = csr.shape
        self.device = torch.device(device)
        self.indptr_host = csr.indptr.astype(np.int64)
        self.indptr = torch.as_tensor(self.indptr_host, device=device)
        self.indices = torch.as_tensor(csr.indices.astype(np.int64), device=device)
        self.data = torch.as_tensor(csr.data, dtype=dtype or torch.float32, device=device)
        self._host = (csr.astype(self.data.numpy().dtype)
                      if HOST_GATHER_ON_CPU and self.device.type == "cpu" else None)

    def nnz(self, batch):
        """Stored entries in the rows of ``batch`` (from the host copy of the pointers)."""
        return int((self.indptr_host[batch.host + 1] - self.indptr_host[batch.host]).sum())

    def rows(self, batch):
        """``(row, col, val, offsets)`` of the stored entries of ``batch``'s rows.

        ``row`` is the position in the batch, entries come row by row in column order,
        and ``offsets`` is where each row's entries start.
        """
        import torch

        if self._host is not None:
            sub = self._host[batch.host]
            counts = np.diff(sub.indptr)
            return (torch.from_numpy(np.repeat(np.arange(len(counts)), counts)),
                    torch.from_numpy(sub.indices.astype(np.int64)), torch.from_numpy(sub.data),
                    torch.from_numpy(sub.indptr[:-1].astype(np.int64)))
        idx = batch.on(self.device)
        start = self.indptr[idx]
        counts = self.indptr[idx + 1] - start
        offsets = torch.cumsum(counts, 0) - counts
        total = self.nnz(batch)
        row = torch.repeat_interleave(torch.arange(len(idx), device=self.device), counts,
                                      output_size=total)
        pos = torch.arange(total, device=self.device) - offsets[row] + start[row]
        return row, self.indices[pos], self.data[pos], offsets

    def dense(self, batch, *, mask=False):
        """The rows of ``batch`` as a dense tensor (and its 0/1 mask of stored entries)."""
        import torch

        if self._host is not None:
            sub = self._host[batch.host]
            out = torch.from_numpy(sub.toarray())
            if not mask:
                return out
            ones = np.ones(sub.nnz, dtype=sub.dtype)
            M = type(sub)((ones, sub.indices, sub.indptr), shape=sub.shape)
            return out, torch.from_numpy(M.toarray())
        row, col, val, _ = self.rows(batch)
        out = torch.zeros((len(batch), self.shape[1]), dtype=self.data.dtype,
                          device=self.device)
        out[row, col] = val
        if not mask:
            return out
        M = torch.zeros_like(out)
        M[row, col] = 1.0
        return out, M
