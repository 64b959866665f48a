"""Factorization models: collective matrix factorization and its relatives."""

from ._cmf import CMF

__all__ = ["CMF"]
