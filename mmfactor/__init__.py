"""mmfactor: unsupervised multimodal representation learning with the scikit-learn API.

Collective matrix/tensor factorization and multimodal autoencoders that learn one vector
per entity from several views of the same entities, in torch (CPU or CUDA).
"""

from ._multimodal import MultiModal
from .factorization import CMF
from .neural import DCMF

__version__ = "0.1.0.dev0"

__all__ = ["CMF", "MultiModal", "__version__"]
__all__ += ["DCMF"]
