"""mmfactor: unsupervised multimodal representation learning with the scikit-learn API.

Collective matrix/tensor factorization and multimodal autoencoders that learn one vector
per entity from several views of the same entities, in torch (CPU or CUDA).
"""

from ._graph import knn_graph, normalized_laplacian
from ._multimodal import MultiModal
from .factorization import CMF, DFMF
from .neural import DCMF, MMEDA
from .factorization import HyperLearn, SparseTensor
from . import distributed  # noqa: F401 (mmfactor.distributed.run / fit: torch.distributed ranks)

__version__ = "0.1.0.dev0"

__all__ = ["CMF", "DFMF", "MultiModal", "__version__"]
__all__ += ["HyperLearn", "SparseTensor", "knn_graph", "normalized_laplacian"]
__all__ += ["MMEDA"]
__all__ += ["DCMF"]

from ._persistence import load, save  # noqa: E402 (the safe model format)

__all__ += ["load", "save"]
