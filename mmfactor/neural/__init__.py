"""Neural models: autoencoder-based collective and multimodal representation learning."""

from ._dcmf import DCMF
from ._finetune import MultiModalNetClassifier, MultiModalNetRegressor
from ._mmeda import MMEDA
from ._modules import ConvAutoencoder, DenseAutoencoder

__all__ = ["DCMF", "MMEDA", "ConvAutoencoder", "DenseAutoencoder", "MultiModalNetClassifier",
           "MultiModalNetRegressor"]
