"""mmfactor: unsupervised multimodal representation learning with the scikit-learn API.

Collective matrix/tensor factorization and multimodal autoencoders that learn one vector
per entity from several views of the same entities, in torch (CPU or CUDA).
"""

import importlib

__version__ = "0.1.0.dev0"

#: Public name -> the submodule that defines it. They are imported on first use (PEP 562),
#: so that ``import mmfactor`` and ``mmfactor --help`` do not import torch; the names, the
#: objects and ``from mmfactor import X`` are the same as with eager imports.
_LAZY = {
    "distributed": ".distributed",  # mmfactor.distributed.run / fit: torch.distributed ranks
    "knn_graph": "._graph",
    "normalized_laplacian": "._graph",
    "MultiModal": "._multimodal",
    "load": "._persistence",
    "save": "._persistence",
    "CMF": ".factorization",
    "DFMF": ".factorization",
    "HyperLearn": ".factorization",
    "SparseTensor": ".factorization",
    "DCMF": ".neural",
    "MMEDA": ".neural",
}

__all__ = sorted([*_LAZY, "__version__"], key=lambda n: (n.islower(), n))


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'mmfactor' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name], __name__)
    value = module if _LAZY[name] == f".{name}" else getattr(module, name)
    globals()[name] = value  # later lookups find it directly
    return value


def __dir__():
    return sorted({*globals(), *_LAZY})
