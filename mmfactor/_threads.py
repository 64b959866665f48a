"""``n_jobs``: the CPU threads of one estimator call, set for that call only.

Every public method that computes (``fit``, ``fit_transform``, ``transform``,
``inverse_transform``, ``reconstruct``, ``score``, ``score_heldout``, ``predict_entries``,
``recommend``) runs inside :func:`thread_limits` with the estimator's ``n_jobs``:
torch's intra-op threads (:func:`torch.set_num_threads`) and the BLAS/OpenMP pools of
NumPy and SciPy (threadpoolctl's :class:`~threadpoolctl.threadpool_limits`) are set for
the call and put back as they were when it returns or raises. ``n_jobs=None`` changes
nothing.

Both settings are per process, as they are in scikit-learn: two estimators called at the
same time from two Python threads of one process share them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import numbers

__all__ = ["THREADED_METHODS", "resolve_n_jobs", "thread_limits", "threaded"]

#: The methods of an estimator that run under its ``n_jobs``.
THREADED_METHODS = ("fit", "fit_transform", "transform", "inverse_transform", "reconstruct",
                    "score", "score_heldout", "predict_entries", "recommend")

# set while a limit is in force: a method called from another (fit_transform -> _fit ->
# transform) runs under the outer call's limit instead of setting it again
_ACTIVE = contextvars.ContextVar("mmfactor_thread_limits", default=False)


def resolve_n_jobs(n_jobs):
    """The number of threads ``n_jobs`` asks for, or ``None`` to leave them as they are.

    scikit-learn's convention: ``None`` changes nothing, a positive integer is that many
    threads, ``-1`` all the CPUs this process may use, ``-2`` all but one, and so on
    (at least one). Anything else (0, a float, a string) also gives ``None``: the
    estimator's parameter validation reports it.
    """
    if n_jobs is None or isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral):
        return None
    n_jobs = int(n_jobs)
    if n_jobs > 0:
        return n_jobs
    if n_jobs < 0:
        from joblib import cpu_count

        return max(cpu_count() + 1 + n_jobs, 1)
    return None


@contextlib.contextmanager
def thread_limits(n_jobs):
    """Limit torch, BLAS and OpenMP to ``n_jobs`` threads inside the ``with`` block.

    Parameters
    ----------
    n_jobs : int or None
        See :func:`resolve_n_jobs`. ``None`` (or inside another ``thread_limits``)
        changes nothing.

    Yields
    ------
    n_threads : int or None
        The limit in force, ``None`` when nothing was changed.
    """
    n = resolve_n_jobs(n_jobs)
    if n is None or _ACTIVE.get():
        yield None
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    token = _ACTIVE.set(True)
    try:
        with threadpool_limits(limits=n):
            # after threadpoolctl: torch's own setting is the one its kernels read
            torch.set_num_threads(n)
            try:
                yield n
            finally:
                torch.set_num_threads(before)
    finally:
        _ACTIVE.reset(token)


def threaded(method):
    """Decorate an estimator method so that it runs under ``thread_limits(self.n_jobs)``."""
    if getattr(method, "_mmfactor_threaded", False):
        return method

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with thread_limits(getattr(self, "n_jobs", None)):
            return method(self, *args, **kwargs)

    wrapper._mmfactor_threaded = True
    return wrapper
