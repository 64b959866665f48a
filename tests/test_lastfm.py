"""fetch_lastfm_hetrec: parsing, filtering, download, checksums and offline use on small
files in the HetRec format written here, and the published statistics on the real copy."""

import dataclasses
import hashlib
import zipfile

import numpy as np
import pytest

from mmfactor import SparseTensor
from mmfactor.datasets import _lastfm, fetch_lastfm_hetrec

# (user, artist, tag) assignments; user 9 names an artist absent from artists.dat (77)
TAGGED = [(2, 51, 1), (2, 51, 2), (2, 52, 1), (3, 51, 1), (3, 52, 1), (3, 52, 3),
          (4, 53, 2), (9, 77, 1), (9, 51, 1)]
FRIENDS = [(2, 3), (3, 2), (3, 4), (4, 3), (2, 9), (9, 2), (5, 2), (2, 5)]  # 5 never tags
LISTENING = [(2, 51, 100), (2, 53, 7), (3, 52, 40), (4, 60, 3)]  # artist 60: untagged
TAGS = [(1, "rock"), (2, "electrónica"), (3, "jazz")]
ARTISTS = [(51, "Björk"), (52, "Motörhead"), (53, "Air"), (60, "Silent")]


def _write_files(folder):
    """The five HetRec files (tab separated, a header, ISO-8859-1), as the archive has."""
    tables = {
        "user_taggedartists.dat": ("userID\tartistID\ttagID\tday\tmonth\tyear",
                                   [(*r, 1, 4, 2009) for r in TAGGED]),
        "user_friends.dat": ("userID\tfriendID", FRIENDS),
        "user_artists.dat": ("userID\tartistID\tweight", LISTENING),
        "tags.dat": ("tagID\ttagValue", TAGS),
        "artists.dat": ("id\tname\turl\tpictureURL",
                        [(i, n, f"http://www.last.fm/music/{i}", "") for i, n in ARTISTS]),
    }
    paths = {}
    for name, (header, rows) in tables.items():
        path = folder / name
        text = header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows)
        path.write_bytes(text.encode("latin-1"))
        paths[name] = path
    return paths


@pytest.fixture
def made_up_archive(tmp_path, monkeypatch):
    """A zip in the GroupLens layout served from a file:// URL; FILES pinned to it."""
    src = tmp_path / "src"
    src.mkdir()
    paths = _write_files(src)
    archive = tmp_path / "hetrec2011-lastfm-2k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, path in paths.items():
            zf.write(path, name)
    files = {k: dataclasses.replace(
        f, url=archive.as_uri(),
        sha256=hashlib.sha256(paths[f.member].read_bytes()).hexdigest())
        for k, f in _lastfm.FILES.items()}
    monkeypatch.setattr(_lastfm, "FILES", files)
    return tmp_path / "home"


def test_parses_the_hetrec_files(made_up_archive):
    d = fetch_lastfm_hetrec(made_up_archive, check_counts=False)
    assert isinstance(d.X, SparseTensor)
    assert d.X.shape == (4, 4, 3) and d.X.nnz == len(TAGGED)
    assert list(d.user_ids) == [2, 3, 4, 9] and list(d.artist_ids) == [51, 52, 53, 77]
    assert list(d.tag_ids) == [1, 2, 3]
    got = {(d.user_ids[u], d.artist_ids[a], d.tag_ids[t]) for u, a, t in d.X.indices}
    assert got == set(TAGGED)
    assert np.all(d.X.values == 1.0)
    assert d.artist_names == ["Björk", "Motörhead", "Air", None]  # 77 has no name
    assert d.tag_names == ["rock", "electrónica", "jazz"]
    # friendships between indexed users only (user 5 never tags), symmetric, binary
    W = d.friends.toarray()
    assert (W == W.T).all() and set(np.unique(W)) == {0.0, 1.0}
    assert W.sum() == 6  # 2-3, 3-4, 2-9 both ways
    # listening counts of indexed users and artists (artist 60 is untagged)
    L = d.listening.toarray()
    assert L.shape == (4, 4) and L[0, 0] == 100 and L[0, 2] == 7 and L[1, 1] == 40
    assert L.sum() == 147
    assert "Cantador" in d.DESCR


def test_filter_is_a_k_core(made_up_archive):
    # tags used >= 2 times and artists tagged >= 2 times, recounted until stable:
    # tag 3 (once) and artist 53 (once) go, then tag 2 is left once and goes, then
    # artist 77 (once) goes
    d = fetch_lastfm_hetrec(made_up_archive, check_counts=False, min_tag_count=2,
                            min_artist_count=2)
    got = {(d.user_ids[u], d.artist_ids[a], d.tag_ids[t]) for u, a, t in d.X.indices}
    assert got == {(2, 51, 1), (2, 52, 1), (3, 51, 1), (3, 52, 1), (9, 51, 1)}
    assert d.X.shape == (3, 2, 1)
    counts_t = np.bincount(d.X.indices[:, 2])
    counts_a = np.bincount(d.X.indices[:, 1])
    assert counts_t.min() >= 2 and counts_a.min() >= 2
    with pytest.raises(ValueError, match="No tag assignment is left by min_tag_count=99"):
        fetch_lastfm_hetrec(made_up_archive, check_counts=False, min_tag_count=99)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5"])
def test_min_counts_are_checked(made_up_archive, bad):
    with pytest.raises(ValueError, match=r"min_artist_count must be an integer >= 1"):
        fetch_lastfm_hetrec(made_up_archive, min_artist_count=bad)


def test_published_statistics_are_checked(made_up_archive):
    with pytest.raises(ValueError, match=r"user_taggedartists.dat has 9 rows, published "
                                         r"186479"):
        fetch_lastfm_hetrec(made_up_archive)


def test_offline_cache_and_corruption(made_up_archive):
    with pytest.raises(OSError, match="not in the cache and download_if_missing=False"):
        fetch_lastfm_hetrec(made_up_archive, check_counts=False, download_if_missing=False)
    fetch_lastfm_hetrec(made_up_archive, check_counts=False)  # downloads and extracts
    folder = made_up_archive / "hetrec2011-lastfm-2k"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f.member for f in _lastfm.FILES.values())
    # offline from the cache now
    d = fetch_lastfm_hetrec(made_up_archive, check_counts=False, download_if_missing=False)
    assert d.X.nnz == len(TAGGED)
    # a cached file edited afterwards is refused
    path = folder / "tags.dat"
    path.write_bytes(path.read_bytes().replace(b"jazz", b"jizz"))
    with pytest.raises(ValueError, match="tags.dat does not match its SHA-256"):
        fetch_lastfm_hetrec(made_up_archive, check_counts=False, download_if_missing=False)


def test_a_file_that_is_not_hetrec_is_refused(made_up_archive):
    fetch_lastfm_hetrec(made_up_archive, check_counts=False)
    path = made_up_archive / "hetrec2011-lastfm-2k" / "user_friends.dat"
    with pytest.raises(ValueError, match=r"not a HetRec file of 2 tab-separated columns"):
        _lastfm._read_table(path.with_name("user_artists.dat"), 2)


@pytest.mark.realdata("hetrec2011-lastfm-2k")
def test_real_copy_matches_the_published_statistics(data_home):
    d = fetch_lastfm_hetrec(data_home, download_if_missing=False)
    assert d.X.shape == (1892, 12523, 9749) and d.X.nnz == 186_479
    assert d.friends.nnz == 2 * 12_717
    f = fetch_lastfm_hetrec(data_home, min_tag_count=5, min_artist_count=5,
                            download_if_missing=False)
    assert f.X.shape == (1734, 6956, 2163) and f.X.nnz == 163_211
    unnamed = sum(n is None for n in d.artist_names)
    assert 0 < unnamed < 0.1 * len(d.artist_names)
