"""HetRec 2011 Last.fm-2k: a user x artist x tag hypergraph with a friendship graph."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch

from ._base import RemoteFile, fetch_file

__all__ = ["fetch_lastfm_hetrec"]

SUBDIR = "hetrec2011-lastfm-2k"
_GROUPLENS = "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip"


def _member(name, sha256):
    """File ``name`` of GroupLens' archive. GroupLens publishes no checksum of the archive
    or its files: these SHA-256s were recorded from a copy whose content was checked
    against the published statistics (1,892 users, 17,632 artists, 11,946 tags, 186,479
    tag assignments, 92,834 user-artist relations, 12,717 friendships), which
    :func:`fetch_lastfm_hetrec` also checks on every read."""
    return RemoteFile(f"{SUBDIR}/{name}", _GROUPLENS, sha256, archive=True, member=name)


FILES = {
    "tagged": _member("user_taggedartists.dat",
                      "d31fe938fcfeed6f0059f37a36b156f63674d073fc2553e5cc9dc1595e365bc7"),
    "friends": _member("user_friends.dat",
                       "9a3a8f7fa5f5ec832335e5b58ed69a4cf27c6f6f6afcde62134810eea46445a7"),
    "listening": _member("user_artists.dat",
                         "001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b"),
    "tags": _member("tags.dat",
                    "e95175f259be4c0c47644ae23d66131cd6d5767142a1405000e79f5584691d70"),
    "artists": _member("artists.dat",
                       "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648"),
}

#: The published statistics of the full data (GroupLens' readme): rows of each file.
PUBLISHED = {"tagged": 186_479, "friends": 25_434, "listening": 92_834, "tags": 11_946,
             "artists": 17_632}


def _read_table(path, n_cols, *, numeric=True):
    """The rows of a tab-separated HetRec file after its header (ISO-8859-1 text)."""
    with open(path, encoding="latin-1") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        rows = [line.rstrip("\r\n").split("\t") for line in f if line.strip()]
    if len(header) != n_cols or any(len(r) != n_cols for r in rows):
        bad = next((i for i, r in enumerate(rows) if len(r) != n_cols), -1)
        raise ValueError(f"{path} is not a HetRec file of {n_cols} tab-separated columns "
                         f"(header {header!r}, data row {bad + 1}).")
    if numeric:
        return np.array(rows, dtype=np.int64).reshape(-1, n_cols)
    return rows


def _check_min_count(name, value):
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")


def _filter(edges, min_tag_count, min_artist_count, min_user_count):
    """Drop rare tags, artists and users until every one left is used often enough
    (counts are recomputed after each pass: a k-core)."""
    while True:
        keep = np.ones(len(edges), dtype=bool)
        for col, minimum in ((2, min_tag_count), (1, min_artist_count), (0, min_user_count)):
            _, inv, counts = np.unique(edges[:, col], return_inverse=True, return_counts=True)
            keep &= counts[inv] >= minimum
        if keep.all():
            return edges
        edges = edges[keep]


def fetch_lastfm_hetrec(data_home=None, *, min_tag_count=1, min_artist_count=1,
                        min_user_count=1, check_counts=True, download_if_missing=True):
    """HetRec 2011 Last.fm-2k: (user, artist, tag) hyperedges, friendships, listening counts.

    Users of Last.fm put tags on artists: each of the 186,479 tag assignments is a
    hyperedge of a 3-partite hypergraph, held as a binary ``users x artists x tags``
    :class:`~mmfactor.SparseTensor`. The users also form a friendship graph (12,717
    symmetric friendships) and listen to artists (92,834 listening counts). The files
    are downloaded once from GroupLens into the cache (see :func:`get_data_home`),
    checked against their SHA-256 and read from there afterwards.

    Filtering keeps the tag assignments whose tag is used at least ``min_tag_count``
    times, whose artist is tagged at least ``min_artist_count`` times and whose user
    made at least ``min_user_count`` assignments, recounting until all three hold (a
    k-core). Only users, artists and tags with an assignment left are indexed. With
    ``min_tag_count=5, min_artist_count=5`` the tensor is 1,734 x 6,956 x 2,163 with
    163,211 hyperedges.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The cache folder (default: ``$MMFACTOR_DATA``, then ``~/mmfactor_data``).
    min_tag_count, min_artist_count, min_user_count : int, default=1
        The filter above (1: keep everything).
    check_counts : bool, default=True
        Check that the files hold as many rows as the published statistics say (the
        archive has no published checksum); ``False`` only for files of the same format
        that are not the published ones.
    download_if_missing : bool, default=True
        Download what is not cached; otherwise raise ``OSError``.

    Returns
    -------
    data : Bunch
        ``X`` (:class:`~mmfactor.SparseTensor` of shape ``(n_users, n_artists,
        n_tags)``, ones at the tag assignments), ``friends`` (symmetric binary CSR
        ``n_users x n_users``), ``listening`` (CSR ``n_users x n_artists`` of listening
        counts, zero where none is recorded), ``user_ids``, ``artist_ids``, ``tag_ids``
        (the original ids of each index), ``artist_names`` (``None`` for the artist ids
        that ``artists.dat`` does not name: about 0.8% of the assignments, a property of
        the original data), ``tag_names``, ``DESCR``.

    Notes
    -----
    GroupLens HetRec 2011 terms: research use only, no redistribution; mmfactor never
    ships the data. Credit: I. Cantador, P. Brusilovsky and T. Kuflik, "2nd Workshop on
    Information Heterogeneity and Fusion in Recommender Systems (HetRec 2011)", ACM
    RecSys 2011; GroupLens (University of Minnesota); Last.fm (http://www.last.fm).

    Examples
    --------
    >>> from mmfactor.datasets import fetch_lastfm_hetrec
    >>> d = fetch_lastfm_hetrec(min_tag_count=5, min_artist_count=5)  # doctest: +SKIP
    >>> d.X.shape, d.X.nnz, d.friends.shape  # doctest: +SKIP
    ((1734, 6956, 2163), 163211, (1734, 1734))
    """
    for name, value in (("min_tag_count", min_tag_count),
                        ("min_artist_count", min_artist_count),
                        ("min_user_count", min_user_count)):
        _check_min_count(name, value)
    paths = {k: fetch_file(f, data_home, download_if_missing=download_if_missing)
             for k, f in FILES.items()}
    tagged = _read_table(paths["tagged"], 6)
    friends = _read_table(paths["friends"], 2)
    listening = _read_table(paths["listening"], 3)
    tags = _read_table(paths["tags"], 2, numeric=False)
    artists = _read_table(paths["artists"], 4, numeric=False)
    if check_counts:
        got = {"tagged": len(tagged), "friends": len(friends), "listening": len(listening),
               "tags": len(tags), "artists": len(artists)}
        wrong = {k: v for k, v in got.items() if v != PUBLISHED[k]}
        if wrong:
            raise ValueError(
                "The HetRec Last.fm files do not match the published statistics: "
                + ", ".join(f"{FILES[k].member} has {v} rows, published {PUBLISHED[k]}"
                            for k, v in wrong.items()) + ".")
    edges = np.unique(tagged[:, :3], axis=0)  # (user, artist, tag) once each
    edges = _filter(edges, min_tag_count, min_artist_count, min_user_count)
    if len(edges) == 0:
        raise ValueError(f"No tag assignment is left by min_tag_count={min_tag_count}, "
                         f"min_artist_count={min_artist_count}, min_user_count="
                         f"{min_user_count}.")
    ids, coords = [], []
    for col in range(3):
        uniq, inv = np.unique(edges[:, col], return_inverse=True)
        ids.append(uniq)
        coords.append(inv)
    user_ids, artist_ids, tag_ids = ids
    from ..factorization._cp import SparseTensor

    X = SparseTensor(np.column_stack(coords), np.ones(len(edges)),
                     (len(user_ids), len(artist_ids), len(tag_ids)))

    def lookup(known, values):
        pos = np.searchsorted(known, values).clip(0, len(known) - 1)
        return np.where(known[pos] == values, pos, -1)

    u, v = lookup(user_ids, friends[:, 0]), lookup(user_ids, friends[:, 1])
    ok = (u >= 0) & (v >= 0) & (u != v)
    W = sp.csr_matrix((np.ones(ok.sum()), (u[ok], v[ok])), shape=(len(user_ids),) * 2)
    W = W.maximum(W.T).tocsr()
    W.data[:] = 1.0
    u, a = lookup(user_ids, listening[:, 0]), lookup(artist_ids, listening[:, 1])
    ok = (u >= 0) & (a >= 0)
    listen = sp.csr_matrix((listening[ok, 2].astype(np.float64), (u[ok], a[ok])),
                           shape=(len(user_ids), len(artist_ids)))
    tag_name = {int(r[0]): r[1] for r in tags}
    artist_name = {int(r[0]): r[1] for r in artists}
    return Bunch(
        X=X, friends=W, listening=listen, user_ids=user_ids, artist_ids=artist_ids,
        tag_ids=tag_ids, artist_names=[artist_name.get(int(i)) for i in artist_ids],
        tag_names=[tag_name.get(int(i)) for i in tag_ids], DESCR=fetch_lastfm_hetrec.__doc__,
    )
