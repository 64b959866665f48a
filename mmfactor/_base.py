"""What every mmfactor estimator shares beyond the input contract and the training loop."""

from __future__ import annotations

from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin

from ._device import state_to_cpu

__all__ = ["MultiModalTransformer"]


class MultiModalTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class: feature names ``<model>0..``, CPU-safe pickling and the input tags.

    Subclasses set ``_n_features_out`` (the embedding width) in ``fit``.
    """

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

    def _restore_devices(self):
        """Move fitted tensors back to ``devices_`` after unpickling (no-op by default)."""
