import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import laplacian as scipy_laplacian

from mmfactor import knn_graph, normalized_laplacian
from mmfactor._graph import (
    chebyshev_basis,
    check_adjacency,
    rescaled_laplacian,
    to_torch_sparse,
)


def _ring(n):
    rows = np.arange(n)
    W = sp.csr_matrix((np.ones(n), (rows, (rows + 1) % n)), shape=(n, n))
    return W.maximum(W.T).tocsr()


def test_knn_graph_symmetric_binary_without_self_loops():
    rng = np.random.RandomState(0)
    F = rng.randn(40, 3)
    W = knn_graph(F, n_neighbors=4)
    assert W.shape == (40, 40)
    assert (W != W.T).nnz == 0
    assert set(np.unique(W.data)) == {1.0}
    assert W.diagonal().sum() == 0
    assert (np.asarray(W.sum(1)).ravel() >= 4).all()
    # the nearest neighbour of every point is linked to it
    d = ((F[:, None] - F[None]) ** 2).sum(-1) + np.diag(np.full(40, np.inf))
    nn = d.argmin(1)
    assert all(W[i, nn[i]] == 1 for i in range(40))


def test_knn_graph_errors():
    with pytest.raises(ValueError, match="must be smaller than the number of nodes"):
        knn_graph(np.ones((3, 2)), n_neighbors=3)
    with pytest.raises(ValueError, match="NaN or infinite"):
        knn_graph(np.array([[0.0], [np.nan], [1.0]]), n_neighbors=1)
    with pytest.raises(ValueError, match="must be a 2-D array"):
        knn_graph(np.ones(5), n_neighbors=1)
    with pytest.raises(ValueError, match="n_neighbors must be an integer >= 1"):
        knn_graph(np.ones((5, 2)), n_neighbors=0)


def test_normalized_laplacian_is_psd_and_matches_scipy():
    rng = np.random.RandomState(1)
    W = knn_graph(rng.randn(30, 2), n_neighbors=3)
    L = normalized_laplacian(W)
    ev = np.linalg.eigvalsh(L.toarray())
    assert ev.min() > -1e-10 and ev.max() < 2 + 1e-10
    np.testing.assert_allclose(L.toarray(), scipy_laplacian(W.toarray(), normed=True),
                               atol=1e-12)
    # the paper's eq. (5) matrix D^-1/2 W D^-1/2 is not PSD: it has negative eigenvalues
    d = np.asarray(W.sum(1)).ravel()
    paper = W.toarray() / np.sqrt(np.outer(d, d))
    assert np.linalg.eigvalsh(paper).min() < -0.1
    # the null space holds D^1/2 1 (constant signals are not penalised)
    np.testing.assert_allclose(L @ np.sqrt(d), 0, atol=1e-10)


def test_normalized_laplacian_isolated_node_and_self_loops():
    W = np.array([[1.0, 1, 0], [1, 0, 0], [0, 0, 0]])  # self-loop on 0, node 2 isolated
    L = normalized_laplacian(W).toarray()
    np.testing.assert_allclose(L, [[1, -1, 0], [-1, 1, 0], [0, 0, 0]])


def test_check_adjacency_errors():
    with pytest.raises(ValueError, match=r"square adjacency matrix; got shape \(2, 3\)"):
        check_adjacency(np.ones((2, 3)), name="g")
    with pytest.raises(ValueError, match=r"g has shape \(2, 2\) but its mode has 3 items"):
        check_adjacency(np.ones((2, 2)), 3, name="g")
    with pytest.raises(ValueError, match="is not symmetric"):
        check_adjacency(np.array([[0, 1.0], [0, 0]]), name="g")
    with pytest.raises(ValueError, match="negative weights"):
        check_adjacency(np.array([[0, -1.0], [-1, 0]]), name="g")
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_adjacency(np.array([[0, np.nan], [np.nan, 0]]), name="g")
    with pytest.raises(TypeError, match="numeric adjacency"):
        check_adjacency(np.array([["a", "b"], ["b", "a"]], dtype=object), name="g")


def test_rescaled_laplacian_spectrum_in_unit_interval():
    L = normalized_laplacian(_ring(20))
    ev = np.linalg.eigvalsh(rescaled_laplacian(L).toarray())
    assert ev.min() >= -1 - 1e-6 and ev.max() <= 1 + 1e-6
    assert ev.max() > 0.99  # lambda_max is really used (the ring's is 2)


def test_chebyshev_basis_matches_spectral_definition():
    L = normalized_laplacian(knn_graph(np.random.RandomState(2).randn(25, 2), 3))
    Lt = rescaled_laplacian(L).toarray()
    lam, U = np.linalg.eigh(Lt)
    X = np.random.RandomState(3).randn(25, 4)
    out = chebyshev_basis(to_torch_sparse(sp.csr_matrix(Lt), dtype=torch.float64),
                          torch.as_tensor(X), 5)
    assert len(out) == 5
    for k, Tk in enumerate(out):
        expected = U @ np.diag(np.cos(k * np.arccos(np.clip(lam, -1, 1)))) @ U.T @ X
        np.testing.assert_allclose(Tk.numpy(), expected, atol=1e-8)
    assert len(chebyshev_basis(None, torch.as_tensor(X), 5)) == 1
