"""fetch_dicty: the DFMF paper's Dictyostelium relations, read from the cache (no download)."""

import gzip
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from mmfactor.datasets import fetch_dicty
from mmfactor.datasets._dicty import FILES, _read_matrix


@pytest.fixture(scope="module")
def dicty():
    return fetch_dicty(download_if_missing=False)


def test_shapes_names_and_values(dicty):
    assert dicty.annotations.shape == (1219, 116)
    assert dicty.expression.shape == (1219, 282)
    assert dicty.ppi.shape == (1219, 1219) and sp.issparse(dicty.ppi)
    assert len(dicty.gene_names) == 1219 and dicty.gene_names[0].startswith("DDB_G")
    assert len(dicty.go_terms) == 116 and all(t.startswith("GO:") for t in dicty.go_terms)
    assert len(dicty.conditions) == 282
    assert set(np.unique(dicty.annotations)) == {0.0, 1.0}
    assert (dicty.annotations.sum(0) > 0).all()  # every GO term annotates some gene
    assert (dicty.expression >= 0).all()
    # the interactions are must-link constraints: values in [-0.1, 0]
    assert dicty.ppi.data.min() >= -0.1 and dicty.ppi.data.max() < 0
    assert "Zitnik" in dicty.DESCR


def test_files_are_checked_against_their_sha256(data_home, tmp_path):
    # a cache holding a damaged copy is refused without downloading
    shutil.copytree(f"{data_home}/dicty", tmp_path / "dicty")
    with open(tmp_path / FILES["ppi"].path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        fetch_dicty(tmp_path, download_if_missing=False)
    with pytest.raises(OSError, match="not in the cache and download_if_missing=False"):
        fetch_dicty(tmp_path / "empty", download_if_missing=False)


def test_a_matrix_that_does_not_match_its_names_is_refused(tmp_path):
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("g1,g2,g3\nc1,c2\n1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"matrix has shape \(2, 2\) but the file names 3 rows"):
        _read_matrix(path)
    with gzip.open(path, "wt") as f:
        f.write("g1,g2\nc1,c2\n1,\n,4\n")
    data, rows, cols = _read_matrix(path)
    np.testing.assert_array_equal(data, [[1, 0], [0, 4]])  # empty cell = 0
    assert rows == ["g1", "g2"] and cols == ["c1", "c2"]
