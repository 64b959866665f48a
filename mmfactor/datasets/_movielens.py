"""MovieLens-100K with Monti et al.'s split and graphs, fetched into the cache."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch

from .._optional import import_optional
from ._base import RemoteFile, fetch_file

__all__ = ["fetch_movielens_100k"]

_GROUPLENS = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
FILES = {
    "split": RemoteFile(
        "movielens_monti/split_1.mat",
        "https://github.com/fmonti/mgcnn/raw/master/Data/movielens/split_1.mat",
        "a8c053a1d697b82c341cb2ad593af2495db7b50f721ae51af5534cc7b217747e",
    ),
    "data": RemoteFile("ml-100k/u.data", _GROUPLENS,
                       "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
                       archive=True, member="ml-100k/u.data"),
    "item": RemoteFile("ml-100k/u.item", _GROUPLENS,
                       "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
                       archive=True, member="ml-100k/u.item"),
    "user": RemoteFile("ml-100k/u.user", _GROUPLENS,
                       "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
                       archive=True, member="ml-100k/u.user"),
    "genre": RemoteFile("ml-100k/u.genre", _GROUPLENS,
                        "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
                        archive=True, member="ml-100k/u.genre"),
    "occupation": RemoteFile("ml-100k/u.occupation", _GROUPLENS,
                             "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
                             archive=True, member="ml-100k/u.occupation"),
}


def _read_matlab_sparse(group):
    """A MATLAB sparse matrix stored in HDF5 (v7.3): CSC arrays ``data``, ``ir``, ``jc``.

    Read by hand with h5py because scipy.io.loadmat reads MATLAB files up to v7.2 only,
    and the v7.3 format has no reader of its own in our dependencies."""
    data, ir, jc = group["data"][()], group["ir"][()], group["jc"][()]
    n = len(jc) - 1
    return sp.csc_matrix((data, ir, jc), shape=(int(ir.max()) + 1 if len(ir) else n, n)).tocsr()


def fetch_movielens_100k(data_home=None, *, download_if_missing=True):
    """MovieLens-100K with Monti et al. (2017)'s split and nearest-neighbour graphs.

    943 users rate 1,682 movies (100,000 ratings, 1 to 5). The split is ``split_1`` of
    the sRGCNN paper (80,000 training ratings; the 20,000 test ratings are GroupLens'
    ``u1.test``), with its 10-nearest-neighbour user and movie graphs; the side
    features come from GroupLens' raw files. Files are downloaded once into the cache
    (see :func:`get_data_home`), checked against their SHA-256, and read from there
    afterwards; nothing is downloaded when they are cached.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The cache folder (default: ``$MMFACTOR_DATA``, then ``~/mmfactor_data``).
    download_if_missing : bool, default=True
        Download what is not cached; otherwise raise.

    Returns
    -------
    data : Bunch
        ``ratings`` (943 x 1682 CSR, every rating), ``train`` and ``test`` (CSR of the
        training and test ratings), ``train_mask`` and ``test_mask`` (boolean arrays),
        ``user_graph`` and ``movie_graph`` (symmetric binary CSR adjacency),
        ``user_age`` (int), ``user_sex`` (0 = F, 1 = M), ``user_occupation`` (943 x 21
        one-hot), ``occupations``, ``movie_genres`` (1682 x 19 binary), ``genres``,
        ``movie_titles``.

    Notes
    -----
    MovieLens is distributed by GroupLens under terms that allow research use and forbid
    redistribution; mmfactor never ships it. F. M. Harper and J. A. Konstan, "The
    MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015. F. Monti, M. Bronstein
    and X. Bresson, "Geometric matrix completion with recurrent multi-graph neural
    networks", NeurIPS 2017.
    """
    h5py = import_optional("h5py", "fetch_movielens_100k")
    paths = {k: fetch_file(f, data_home, download_if_missing=download_if_missing)
             for k, f in FILES.items()}
    with h5py.File(paths["split"], "r") as f:
        M = f["M"][()].T
        train_mask = f["Otraining"][()].T > 0
        test_mask = f["Otest"][()].T > 0
        user_graph = _read_matlab_sparse(f["W_users"])
        movie_graph = _read_matlab_sparse(f["W_movies"])
    ratings = sp.csr_matrix(M)
    train = sp.csr_matrix(np.where(train_mask, M, 0))
    test = sp.csr_matrix(np.where(test_mask, M, 0))

    occupations = paths["occupation"].read_text().split()
    users = [line.split("|") for line in paths["user"].read_text().strip().splitlines()]
    age = np.array([int(u[1]) for u in users])
    sex = np.array([1 if u[2] == "M" else 0 for u in users])
    occ = np.zeros((len(users), len(occupations)))
    occ[np.arange(len(users)), [occupations.index(u[3]) for u in users]] = 1.0
    genres = [line.split("|")[0] for line in paths["genre"].read_text().strip().splitlines()
              if line.strip()]
    items = [line.split("|") for line in
             paths["item"].read_text(encoding="latin-1").strip().splitlines()]
    movie_genres = np.array([[float(x) for x in it[5:]] for it in items])
    return Bunch(
        ratings=ratings, train=train, test=test, train_mask=train_mask, test_mask=test_mask,
        user_graph=user_graph, movie_graph=movie_graph, user_age=age, user_sex=sex,
        user_occupation=occ, occupations=occupations, movie_genres=movie_genres,
        genres=genres, movie_titles=[it[1] for it in items],
        DESCR=fetch_movielens_100k.__doc__,
    )
