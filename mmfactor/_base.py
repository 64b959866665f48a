"""What every mmfactor estimator shares beyond the input contract and the training loop.

:class:`MultiModalTransformer` wraps, once for every subclass, the two entry points that
run the models' torch code (``_fit``, which ``fit`` and ``fit_transform`` call, and
``transform``), so that no estimator has to remember:

* gradients are enabled inside them, even when the caller runs under
  :func:`torch.no_grad` or :func:`torch.inference_mode` (an evaluation loop around a
  pipeline): the models train, and some fold in, by autograd;
* a ``_fit`` that raises (a bad input, a Ctrl-C before the first complete sweep, an
  error) and leaves the estimator unfitted also drops every attribute it set that is
  not a constructor parameter: the training state (relations, factors, networks, the
  user's data) never stays behind in private attributes of an unfitted estimator, which
  then pickles and saves as small as a fresh one;
* ``transform`` holds a per-estimator lock (several threads may call it on one fitted
  model; fold-ins keep working state on the estimator) and refuses to return a
  non-finite embedding (values within float32 whose computations still overflow).
"""

from __future__ import annotations

import functools
import numbers
import threading
import weakref
from types import SimpleNamespace

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _check_feature_names

from ._device import state_to_cpu
from ._threads import THREADED_METHODS, threaded

__all__ = ["N_JOBS_CONSTRAINT", "MultiModalTransformer"]

#: ``_parameter_constraints["n_jobs"]`` of every estimator: None or a non-zero integer.
N_JOBS_CONSTRAINT = [None, Interval(numbers.Integral, None, -1, closed="right"),
                     Interval(numbers.Integral, 1, None, closed="left")]


class MultiModalTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class: feature names ``<model>0..``, CPU-safe pickling and the input tags.

    Subclasses set ``_n_features_out`` (the embedding width) in ``fit``, and take an
    ``n_jobs`` parameter: every method of ``THREADED_METHODS`` that a subclass defines
    runs under :func:`~mmfactor._threads.thread_limits` with it (the threads of torch,
    BLAS and OpenMP set for the call, and put back afterwards).
    """

    def __init_subclass__(cls, **kwargs):
        # ours first, so that scikit-learn's set_output wrapping (in super()) wraps them
        if "_fit" in vars(cls):
            cls._fit = _guard_fit(vars(cls)["_fit"])
        if "transform" in vars(cls):
            cls.transform = _guard_transform(vars(cls)["transform"])
        for name in ("transform", "score", "score_heldout", "reconstruct"):
            if name in vars(cls):
                setattr(cls, name, _names_first(vars(cls)[name]))
        super().__init_subclass__(**kwargs)
        for name in THREADED_METHODS:
            if name in cls.__dict__:
                setattr(cls, name, threaded(cls.__dict__[name]))

    @threaded
    def fit(self, X, y=None):
        """Fit the model to the views of ``X``.

        Parameters
        ----------
        X : MultiModal, list of array-like or array-like
            The views (rows = samples), plus shared matrices or graphs the model uses.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._fit(X)
        return self

    def _fit(self, X):
        """Train on ``X`` and set the fitted attributes (every estimator defines it).

        ``fit`` and ``fit_transform`` both call it once; ``fit_transform`` then returns
        the training rows' embedding, so ``fit`` never computes an embedding it would
        throw away.
        """
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = []
        # a MultiModal is not a 2-D array: the first-class input is a list of views
        tags.input_tags.two_d_array = True
        return tags

    def __getstate__(self):
        # tensors and modules go to the CPU so that a CUDA-fitted model loads anywhere
        state = super().__getstate__()
        return state_to_cpu(state)

    def __setstate__(self, state):
        super().__setstate__(state)
        devices = getattr(self, "devices_", None)
        if devices:
            # a model unpickled on a machine without the fit devices computes on the CPU
            import torch

            self.devices_ = [
                d if d.type == "cpu" or (d.type == "cuda" and torch.cuda.is_available()
                                         and (d.index or 0) < torch.cuda.device_count())
                else torch.device("cpu")
                for d in devices
            ]
            self._restore_devices()

    def _set_input_signature(self, mm, views):
        """Record the views seen in ``fit``: their names, per-sample shapes and columns.

        ``n_features_in_`` is the total number of features over the views (a view of
        shape ``(n, C, H, W)`` counts ``C * H * W``), which for a single 2-D array is
        ``X.shape[1]`` as scikit-learn expects. The column names of pandas DataFrame
        views are recorded too; for a single DataFrame they are ``feature_names_in_``,
        as in scikit-learn.
        """
        self.view_names_ = list(mm.names)
        self._view_shapes = [tuple(v.shape[1:]) for v in views]
        self._view_names_in = [v.name for v in views]
        self._view_columns = {v.name: cols for v in views
                              if (cols := _column_names(mm, v.name)) is not None}
        self.n_features_in_ = int(sum(np.prod(s) for s in self._view_shapes))
        if len(views) == 1 and views[0].name in self._view_columns:
            self.feature_names_in_ = np.asarray(self._view_columns[views[0].name],
                                                dtype=object)

    def _check_input_signature(self, mm, views):
        """Check that ``transform``-time views match those seen in ``fit``: the same
        names in the same order (when both are named), the same DataFrame columns in
        the same order, the same per-sample shapes."""
        name = type(self).__name__
        names = [v.name for v in views]
        fitted_names = getattr(self, "_view_names_in", names)
        if (len(names) == len(fitted_names) and names != fitted_names
                and not _auto_named(names) and not _auto_named(fitted_names)):
            order = " (in another order)" if sorted(names) == sorted(fitted_names) else ""
            raise ValueError(
                f"X has views {names}{order} but {name} was fitted on views {fitted_names}; "
                "pass the views under the names, and in the order, seen in fit."
            )
        for v in views:
            fitted_cols = getattr(self, "_view_columns", {}).get(v.name)
            cols = _column_names(mm, v.name)
            if fitted_cols is not None and cols is not None and cols != fitted_cols:
                # scikit-learn's own message (names unseen, missing, or reordered), which
                # tools and its estimator checks look for; then the view
                fitted = SimpleNamespace(feature_names_in_=np.asarray(fitted_cols, dtype=object))
                try:
                    _check_feature_names(fitted, mm.views[mm.names.index(v.name)], reset=False)
                except ValueError as exc:
                    raise ValueError(
                        f"{exc}(view {v.name!r} has columns {cols[:10]} but {name} was "
                        f"fitted on {fitted_cols[:10]})."
                    ) from None
        shapes = [tuple(v.shape[1:]) for v in views]
        if shapes == self._view_shapes:
            return
        total = int(sum(np.prod(s) for s in shapes))
        if len(shapes) != len(self._view_shapes):
            detail = (f"got {len(shapes)} view(s) {list(mm.names)}, fitted on "
                      f"{len(self._view_shapes)} view(s) {self.view_names_}")
        else:
            bad = next(i for i, (a, b) in enumerate(zip(shapes, self._view_shapes,
                                                         strict=True)) if a != b)
            detail = (f"view {mm.names[bad]!r} has shape (n_samples, "
                      f"{', '.join(map(str, shapes[bad]))}) but the model was fitted on "
                      f"(n_samples, {', '.join(map(str, self._view_shapes[bad]))})")
        raise ValueError(
            f"X has {total} features, but {name} is expecting {self.n_features_in_} "
            f"features as input: {detail}."
        )

    def _check_embedding(self, X, width):
        """``inverse_transform``'s input: a finite float64 array of shape (n, ``width``)."""
        Z = np.asarray(X, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != width:
            raise ValueError(f"inverse_transform expects an array of shape (n_samples, "
                             f"{width}); got {Z.shape}.")
        if not np.isfinite(Z).all():
            raise ValueError("inverse_transform: the embeddings contain NaN or inf.")
        return Z

    def save(self, path, *, key=None):
        """Save the estimator in mmfactor's safe format (see :func:`mmfactor.save`).

        Parameters
        ----------
        path : str or path-like
            The file to write; :func:`mmfactor.load` reads it back.
        key : str or bytes, optional
            A secret that signs the file (HMAC-SHA256); ``load`` then needs it.

        Returns
        -------
        path : pathlib.Path
            The file written.
        """
        from ._persistence import save

        return save(self, path, key=key)

    def _restore_devices(self):
        """Move fitted tensors back to ``devices_`` after unpickling (no-op by default)."""


def _auto_named(names):
    """Views named by position (``view0``, ``view1``, ...: a plain list or one array)."""
    return names == [f"view{i}" for i in range(len(names))]


def _column_names(mm, name):
    """The column names of view ``name`` when it is a DataFrame with string columns."""
    try:
        view = mm.views[mm.names.index(name)]
    except ValueError:
        return None  # a shared relation, not a view
    cols = getattr(view, "columns", None)
    if cols is None or not hasattr(view, "iloc"):
        return None
    cols = list(cols)
    return cols if all(isinstance(c, str) for c in cols) else None


# the scikit-learn attributes that are configuration, not fitted state
_CONFIG_ATTRS = ("_sklearn_output_config", "_sklearn_auto_wrap_output_keys",
                 "_metadata_request")
# what scikit-learn's meta-estimators set on a sub-estimator around its fit (1.9's
# callbacks: ``_parent_callback_ctx``, deleted by the caller after the fit returns)
_CALLER_PREFIXES = ("_sklearn", "_parent_callback", "_callback")


def _drop_training_state(est):
    """After a failed ``_fit`` that left ``est`` unfitted: keep only its parameters,
    its scikit-learn configuration and what the caller set on it."""
    from ._training import clear_fitted

    clear_fitted(est)
    keep = set(est.get_params(deep=False)) | set(_CONFIG_ATTRS)
    for k in [k for k in vars(est) if k not in keep and not k.startswith(_CALLER_PREFIXES)]:
        delattr(est, k)


def _is_fitted(est):
    return any(k.endswith("_") and not k.startswith("__") for k in vars(est))


def _grad_enabled():
    """Gradients on and inference mode off, whatever the caller's context."""
    import contextlib

    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    return stack


def _check_no_bool_numbers(est):
    """Refuse ``True``/``False`` for a numeric parameter (``n_components=True``):
    scikit-learn's ``Interval(Integral, ...)`` admits them, as ``bool`` is an ``int``."""
    from sklearn.utils._param_validation import Interval, InvalidParameterError

    for key, constraints in getattr(est, "_parameter_constraints", {}).items():
        value = getattr(est, key, None)
        if (isinstance(value, bool | np.bool_) and "boolean" not in constraints
                and bool not in constraints
                and any(isinstance(c, Interval) for c in constraints)):
            raise InvalidParameterError(
                f"The {key!r} parameter of {type(est).__name__} must be a number, not a "
                f"bool; got {value!r} instead."
            )


def _guard_fit(fit):
    @functools.wraps(fit)
    def _fit(self, *args, **kwargs):
        try:
            _check_no_bool_numbers(self)
            with _grad_enabled():
                return fit(self, *args, **kwargs)
        except BaseException:
            if not _is_fitted(self):
                _drop_training_state(self)
            raise

    return _fit


def _names_first(method):
    """Check a DataFrame's column names against ``feature_names_in_`` before anything
    else (its values, its shape), with scikit-learn's message, as scikit-learn does."""

    @functools.wraps(method)
    def wrapper(self, X, *args, **kwargs):
        if hasattr(self, "feature_names_in_") and hasattr(X, "columns"):
            _check_feature_names(self, X, reset=False)
        return method(self, X, *args, **kwargs)

    return wrapper


_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _lock(est):
    with _LOCKS_LOCK:
        lock = _LOCKS.get(est)
        if lock is None:
            lock = _LOCKS[est] = threading.RLock()
        return lock


def _guard_transform(transform):
    @functools.wraps(transform)
    def wrapper(self, *args, **kwargs):
        with _lock(self), _grad_enabled():
            out = transform(self, *args, **kwargs)
        if isinstance(out, np.ndarray) and out.dtype.kind == "f" and not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).any(axis=tuple(range(1, out.ndim))).sum())
            raise ValueError(
                f"{type(self).__name__}.transform: the embedding of {bad} sample(s) is not "
                "finite: their values, though within the range fit accepts, overflow the "
                "model's float32 computations (or the model is broken). Rescale the views "
                "(e.g. StandardScaler, as for fit) before transform."
            )
        return out

    return wrapper
