"""fetch_dicty: the DFMF paper's Dictyostelium relations.

The loader's logic (parsing, checksums, offline use, a damaged cache) runs on small files
in scikit-fusion's format, made here; the shapes and values of the real files run where a
copy of them is (``realdata``).
"""

import dataclasses
import gzip
import hashlib

import numpy as np
import pytest
import scipy.sparse as sp

from mmfactor.datasets import _dicty, fetch_dicty
from mmfactor.datasets._dicty import FILES, _read_matrix


@pytest.fixture(scope="module")
def dicty():
    return fetch_dicty(download_if_missing=False)


@pytest.mark.realdata("dicty")
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


def _write_matrix(path, rows, cols, data):
    """One gzip CSV in scikit-fusion's format: row names, column names, the matrix with
    zeros left empty."""
    lines = [",".join(rows), ",".join(cols)]
    lines += [",".join("" if v == 0 else repr(float(v)) for v in r) for r in data]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


@pytest.fixture
def made_up_dicty(tmp_path, monkeypatch):
    """A cache holding small dicty files; FILES pinned to their SHA-256."""
    rng = np.random.RandomState(0)
    genes = [f"DDB_G{i:07d}" for i in range(7)]
    truth = {"annotations": (rng.rand(7, 4) < .4).astype(float),
             "expression": np.round(rng.rand(7, 5) * 100, 3),
             "ppi": -0.1 * (rng.rand(7, 7) < .3)}
    cols = {"annotations": [f"GO:{i:07d}" for i in range(4)],
            "expression": [f"cond{i}" for i in range(5)], "ppi": genes}
    home = tmp_path / "cache"
    (home / "dicty").mkdir(parents=True)
    pins = {}
    for key, remote in FILES.items():
        _write_matrix(home / remote.path, genes, cols[key], truth[key])
        pins[key] = dataclasses.replace(
            remote, sha256=hashlib.sha256((home / remote.path).read_bytes()).hexdigest())
    monkeypatch.setattr(_dicty, "FILES", pins)
    return home, truth, genes, cols


def test_made_up_files_are_read_offline(made_up_dicty, monkeypatch):
    home, truth, genes, cols = made_up_dicty
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: 1 / 0)  # no network
    d = fetch_dicty(home)
    np.testing.assert_array_equal(d.annotations, truth["annotations"])
    np.testing.assert_array_equal(d.expression, truth["expression"])
    np.testing.assert_array_equal(d.ppi.toarray(), truth["ppi"])
    assert sp.issparse(d.ppi) and d.gene_names == genes
    assert d.go_terms == cols["annotations"] and d.conditions == cols["expression"]


def test_files_are_checked_against_their_sha256(made_up_dicty, tmp_path):
    # a cache holding a damaged copy is refused without downloading
    home = made_up_dicty[0]
    with open(home / FILES["ppi"].path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        fetch_dicty(home, download_if_missing=False)
    with pytest.raises(OSError, match="not in the cache and download_if_missing=False"):
        fetch_dicty(tmp_path / "empty", download_if_missing=False)


def test_files_from_different_versions_are_refused(made_up_dicty, monkeypatch):
    home, truth, genes, cols = made_up_dicty
    remote = _dicty.FILES["expression"]
    _write_matrix(home / remote.path, genes[::-1], cols["expression"], truth["expression"])
    monkeypatch.setitem(_dicty.FILES, "expression", dataclasses.replace(
        remote, sha256=hashlib.sha256((home / remote.path).read_bytes()).hexdigest()))
    with pytest.raises(ValueError, match="do not list the same genes in the same order"):
        fetch_dicty(home, download_if_missing=False)


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
