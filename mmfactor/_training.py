"""The one training loop every mmfactor model runs.

A model supplies ``step(epoch) -> dict`` that performs one sweep (an ALS sweep, a
multiplicative update, an epoch of mini-batches) and returns the loss terms of that sweep,
with the total under ``"loss"``. :func:`fit_loop` owns everything around it: the progress
bar, the stopping rule (``tol`` and ``n_iter_no_change``), the NaN/inf guard, the
``ConvergenceWarning`` and the loss history.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from sklearn.exceptions import ConvergenceWarning

__all__ = ["fit_loop", "History", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError, ValueError):
    """The training loss became NaN or infinite."""


@dataclass
class History:
    """What :func:`fit_loop` recorded: ``loss`` (one total per sweep), the terms, n_iter."""

    loss: list = field(default_factory=list)
    terms: dict = field(default_factory=dict)
    n_iter: int = 0
    converged: bool = False
    interrupted: bool = False

    def record(self, losses):
        self.loss.append(float(losses["loss"]))
        for k, v in losses.items():
            if k != "loss":
                self.terms.setdefault(k, []).append(float(v))


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
        ``> 0`` shows a tqdm progress bar with the current loss.
    desc : str
        Label of the progress bar and of the messages.
    estimator : str, optional
        Name used in warnings and errors.
    validation : callable, optional
        ``validation() -> float``: a held-out loss monitored instead of the training loss
        (early stopping); recorded in ``terms["validation"]``.
    on_improvement : callable, optional
        Called after a sweep that improved the monitored loss (to keep the best state).
    """
    from tqdm.auto import tqdm

    name = estimator or desc
    hist = History()
    best = math.inf
    no_change = 0
    bar = tqdm(total=max_iter, desc=desc, disable=not verbose, leave=False)
    try:
        for epoch in range(max_iter):
            losses = dict(step(epoch))
            if validation is not None:
                losses["validation"] = float(validation())
            monitored = losses["validation"] if validation is not None else losses["loss"]
            bad = {k: v for k, v in losses.items() if not math.isfinite(float(v))}
            if bad:
                raise NonFiniteLossError(
                    f"{name}: the loss became non-finite at iteration {epoch + 1} "
                    f"({', '.join(f'{k}={v}' for k, v in bad.items())}). Scale the input "
                    "views (e.g. StandardScaler), lower learning_rate_init, or raise alpha."
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
                if on_improvement is not None:
                    on_improvement()
            if tol > 0 and no_change >= n_iter_no_change:
                hist.converged = True
                break
    finally:
        bar.close()
    if not hist.converged and tol > 0:
        warnings.warn(
            f"{name}: maximum number of iterations max_iter={max_iter} reached before "
            f"convergence (tol={tol}). Increase max_iter or tol.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return hist
