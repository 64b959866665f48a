"""Neural models: autoencoder-based collective and multimodal representation learning."""

from ._dcmf import DCMF

__all__ = ["DCMF"]
