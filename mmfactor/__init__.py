"""mmfactor: unsupervised multimodal representation learning with the scikit-learn API.

Collective matrix/tensor factorization and multimodal autoencoders that learn one vector
per entity from several views of the same entities, in torch (CPU or CUDA).
"""

from . import distributed  # mmfactor.distributed.run / fit: torch.distributed ranks
from ._graph import knn_graph, normalized_laplacian
from ._multimodal import MultiModal
from ._persistence import load, save
from .factorization import CMF, DFMF, HyperLearn, SparseTensor
from .neural import DCMF, MMEDA

__version__ = "0.1.0.dev0"

__all__ = [
    "CMF",
    "DCMF",
    "DFMF",
    "HyperLearn",
    "MMEDA",
    "MultiModal",
    "SparseTensor",
    "__version__",
    "distributed",
    "knn_graph",
    "load",
    "normalized_laplacian",
    "save",
]
