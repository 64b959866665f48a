"""Factorization models: collective matrix factorization and its relatives."""

from ._cmf import CMF
from ._cp import SparseTensor
from ._dfmf import DFMF
from ._hyperlearn import HyperLearn

__all__ = ["CMF", "DFMF", "HyperLearn", "SparseTensor"]
