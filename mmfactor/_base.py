"""What every mmfactor estimator shares beyond the input contract and the training loop."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval

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
        """Record the views seen in ``fit``: their names and per-sample shapes.

        ``n_features_in_`` is the total number of features over the views (a view of
        shape ``(n, C, H, W)`` counts ``C * H * W``), which for a single 2-D array is
        ``X.shape[1]`` as scikit-learn expects.
        """
        self.view_names_ = list(mm.names)
        self._view_shapes = [tuple(v.shape[1:]) for v in views]
        self.n_features_in_ = int(sum(np.prod(s) for s in self._view_shapes))

    def _check_input_signature(self, mm, views):
        """Check that ``transform``-time views match those seen in ``fit``."""
        shapes = [tuple(v.shape[1:]) for v in views]
        if shapes == self._view_shapes:
            return
        total = int(sum(np.prod(s) for s in shapes))
        name = type(self).__name__
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
