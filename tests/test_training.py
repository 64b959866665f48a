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
                    validation=lambda: next(val), on_improvement=lambda: improved.append(epochs[-1]))
    assert hist.terms["validation"] == [5.0, 4.0, 4.5, 4.6]
    assert hist.converged and hist.n_iter == 4  # stopped by the validation loss
    assert improved == [0, 1]  # the best state is the one after epoch 1
