"""The Dictyostelium data fusion example of DFMF (Zitnik & Zupan 2015), fetched into the cache."""

from __future__ import annotations

import gzip

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch

from ._base import RemoteFile, fetch_file

__all__ = ["fetch_dicty"]

_ORIGIN = (
    "https://raw.githubusercontent.com/marinkaz/scikit-fusion/master/skfusion/datasets/data/"
    "dicty/"
)
FILES = {
    "annotations": RemoteFile(
        "dicty/dicty.gene_annnotations.csv.gz",
        _ORIGIN + "dicty.gene_annnotations.csv.gz",
        "cfbee9766e6bf8d244874089e77fe87a9f4a58e25d6430c70eb3127283edf0e9",
    ),
    "expression": RemoteFile(
        "dicty/dicty.gene_expression.csv.gz",
        _ORIGIN + "dicty.gene_expression.csv.gz",
        "296127f0a90346a0f14eeeb4f045009279c2197ea7d875c54feacf9ca2fdeebf",
    ),
    "ppi": RemoteFile(
        "dicty/dicty.ppi.csv.gz",
        _ORIGIN + "dicty.ppi.csv.gz",
        "f4c77795cbdc2dd0bc47e6a5871d00ae090a78a3de0db98561ac8eb32a60102e",
    ),
}


def _read_matrix(path):
    """One gzip CSV of scikit-fusion: row names, column names, then the matrix (empty = 0)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = fh.readline().strip().split(",")
        cols = fh.readline().strip().split(",")
        data = np.genfromtxt(fh, delimiter=",", missing_values=[""], filling_values=0.0)
    data = np.atleast_2d(data)
    if data.shape != (len(rows), len(cols)):
        raise ValueError(f"{path}: the matrix has shape {data.shape} but the file names "
                         f"{len(rows)} rows and {len(cols)} columns; the file is damaged.")
    return data, rows, cols


def fetch_dicty(data_home=None, *, download_if_missing=True):
    """The Dictyostelium gene function data of the DFMF paper (three relations, 1,219 genes).

    The fusion example of Zitnik & Zupan (2015): 1,219 genes of the social amoeba
    *Dictyostelium discoideum* annotated with 116 slim Gene Ontology terms, their
    expression in 282 experimental conditions, and a gene-gene protein interaction
    network (STRING) stored as a DFMF constraint matrix (negative entries are must-link
    constraints of strength up to 0.1, zero means no constraint). The three files are
    downloaded once from the scikit-fusion repository into the cache (see
    :func:`get_data_home`), checked against their SHA-256 and read from there afterwards.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The cache folder (default: ``$MMFACTOR_DATA``, then ``~/mmfactor_data``).
    download_if_missing : bool, default=True
        Download what is not cached; otherwise raise.

    Returns
    -------
    data : Bunch
        ``annotations`` (1219 x 116 float array of 0/1: gene i has GO term j),
        ``expression`` (1219 x 282 float array, raw non-negative expression levels; the
        scikit-fusion example fuses their logarithm), ``ppi`` (1219 x 1219 CSR matrix,
        values in [-0.1, 0], not exactly symmetric), ``gene_names`` (1219 dictyBase ids),
        ``go_terms`` (116 GO ids), ``conditions`` (282 condition names) and ``DESCR``.
        Rows of the three matrices are the same genes, in the same order.

    Notes
    -----
    The files come from the data folder of scikit-fusion 0.2.1 (BSD-3-Clause licence);
    mmfactor does not ship them. M. Zitnik and B. Zupan, "Data fusion by matrix
    factorization", IEEE TPAMI 37(1), 2015.

    Examples
    --------
    >>> from mmfactor.datasets import fetch_dicty
    >>> dicty = fetch_dicty()  # doctest: +SKIP
    >>> dicty.annotations.shape, dicty.expression.shape, dicty.ppi.shape  # doctest: +SKIP
    ((1219, 116), (1219, 282), (1219, 1219))
    """
    paths = {k: fetch_file(f, data_home, download_if_missing=download_if_missing)
             for k, f in FILES.items()}
    ann, genes, terms = _read_matrix(paths["annotations"])
    expr, genes_e, conds = _read_matrix(paths["expression"])
    ppi, genes_p, genes_p2 = _read_matrix(paths["ppi"])
    if not (genes == genes_e == genes_p == genes_p2):
        raise ValueError("The dicty files do not list the same genes in the same order; the "
                         "cache holds files from different versions.")
    return Bunch(
        annotations=ann,
        expression=expr,
        ppi=sp.csr_matrix(ppi),
        gene_names=genes,
        go_terms=terms,
        conditions=conds,
        DESCR=fetch_dicty.__doc__,
    )
