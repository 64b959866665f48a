import hashlib
import zipfile

import numpy as np
import pytest

from mmfactor import MultiModal
from mmfactor.datasets import (
    _base,
    fetch_movielens_100k,
    get_data_home,
    load_mfeat,
    make_collective,
)
from mmfactor.datasets import _movielens as mlens
from mmfactor.datasets._base import RemoteFile, fetch_file, safe_extract  # noqa: I001


def test_load_mfeat_views_labels_and_image_orientation():
    data = load_mfeat()
    X, y = data.X, data.y
    assert isinstance(X, MultiModal) and len(X) == 2000
    assert X.names == ["pix", "fou", "fac", "kar", "zer", "mor"]
    assert [v.shape[1:] for v in X.views] == [(1, 16, 15), (76,), (216,), (64,), (47,), (6,)]
    assert np.bincount(y).tolist() == [200] * 10
    pix = X.pix[:, 0]
    assert pix.min() == 0 and pix.max() == 6
    # upright digits: a "1" (class 1) is a tall stroke, so its ink spans more rows than
    # columns; the image must not be transposed or flipped sideways
    ones = pix[y == 1].mean(0) > 1
    rows, cols = np.nonzero(ones)
    assert np.ptp(rows) > np.ptp(cols)
    X2, y2 = load_mfeat(views=["fou", "pix"], image=False, return_X_y=True)
    assert X2.views[1].shape == (2000, 240) and np.array_equal(y2, y)
    with pytest.raises(ValueError, match="Unknown mfeat views \\['abc'\\]"):
        load_mfeat(views=["abc"])


@pytest.mark.realdata("ml-100k", "movielens_monti")
def test_fetch_movielens_100k_from_cache(data_home):
    d = fetch_movielens_100k(data_home, download_if_missing=False)
    assert d.ratings.shape == (943, 1682) and d.ratings.nnz == 100_000
    assert d.train.nnz == 80_000 and d.test.nnz == 20_000
    assert not (d.train_mask & d.test_mask).any()
    for g, n in ((d.user_graph, 943), (d.movie_graph, 1682)):
        assert g.shape == (n, n) and (g != g.T).nnz == 0
    assert d.user_occupation.shape == (943, 21) and (d.user_occupation.sum(1) == 1).all()
    assert d.movie_genres.shape == (1682, 19) and len(d.genres) == 19
    assert d.user_age.min() > 0 and set(np.unique(d.user_sex)) == {0, 1}
    assert set(np.unique(d.ratings.data)) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_make_collective_known_factors():
    data = make_collective(30, (5, 4), 2, missing_rate=0.2, random_state=0)
    U, V = data.factors["sample"], data.factors["view0_col"]
    np.testing.assert_allclose(data.complete[0], U @ V.T)
    obs = ~np.isnan(data.X.views[0])
    np.testing.assert_allclose(data.X.views[0][obs], data.complete[0][obs])
    assert 0.1 < (~obs).mean() < 0.3


def test_data_home_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MMFACTOR_DATA", str(tmp_path / "cache"))
    assert get_data_home() == tmp_path / "cache" and (tmp_path / "cache").is_dir()
    assert get_data_home(tmp_path / "x") == tmp_path / "x"


class _Resp:
    """An HTTP response serving ``payload`` and announcing ``length`` bytes."""

    def __init__(self, payload, length=None):
        self.data = payload
        self.headers = {"Content-Length": str(len(payload) if length is None else length)}

    def read(self, n):
        out, self.data = self.data[:n], self.data[n:]
        return out

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _serve(monkeypatch, payload, length=None):
    """Make downloads return ``payload`` (no network in tests)."""
    monkeypatch.setattr(_base.urllib.request, "urlopen",
                        lambda url, timeout: _Resp(payload, length))


def test_fetch_file_checks_sha256_and_leaves_no_partial_file(monkeypatch, tmp_path):
    payload = b"hello data"
    good = RemoteFile("d/f.bin", "https://example.invalid/f", hashlib.sha256(payload).hexdigest())
    _serve(monkeypatch, payload)
    path = fetch_file(good, tmp_path, progress=False)
    assert path.read_bytes() == payload
    # offline from a populated cache
    monkeypatch.setattr(_base.urllib.request, "urlopen", lambda *a, **k: 1 / 0)
    assert fetch_file(good, tmp_path, progress=False) == path
    bad = RemoteFile("d/g.bin", "https://example.invalid/g", "0" * 64)
    _serve(monkeypatch, payload)
    with pytest.raises(ValueError, match="Checksum mismatch"):
        fetch_file(bad, tmp_path, progress=False)
    assert not (tmp_path / "d" / "g.bin").exists()
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.startswith(".part-")]
    with pytest.raises(OSError, match="not in the cache and download_if_missing=False"):
        fetch_file(RemoteFile("d/h.bin", "u", "0" * 64), tmp_path, download_if_missing=False)


def test_interrupted_download_leaves_nothing(monkeypatch, tmp_path):
    def broken(url, timeout):
        raise ConnectionResetError("network went away")

    monkeypatch.setattr(_base.urllib.request, "urlopen", broken)
    with pytest.raises(OSError, match="network went away") as err:
        fetch_file(RemoteFile("d/f.bin", "u", "0" * 64), tmp_path, progress=False)
    assert isinstance(err.value.__cause__, ConnectionResetError)
    assert list((tmp_path / "d").iterdir()) == []


def test_short_download_is_refused_and_leaves_nothing(monkeypatch, tmp_path):
    payload = b"0123456789"
    _serve(monkeypatch, payload, length=len(payload) + 5)  # the connection closed early
    with pytest.raises(OSError, match="Incomplete download of u: 10 of 15 bytes"):
        fetch_file(RemoteFile("d/f.bin", "u", None), tmp_path, progress=False)
    assert list((tmp_path / "d").iterdir()) == []


def test_without_published_checksum_the_first_download_is_recorded_and_checked(
        monkeypatch, tmp_path):
    payload = b"data with no published checksum"
    remote = RemoteFile("d/f.bin", "https://example.invalid/f", None)
    _serve(monkeypatch, payload)
    path = fetch_file(remote, tmp_path, progress=False)
    digest = hashlib.sha256(payload).hexdigest()
    assert path.read_bytes() == payload
    assert (tmp_path / "d" / "f.bin.sha256").read_text() == f"{digest}  f.bin\n"
    _serve(monkeypatch, b"a changed origin")  # the record, not the origin, is the reference
    assert fetch_file(remote, tmp_path, progress=False).read_bytes() == payload
    for edited in (payload[:-3], payload[:-1] + b"X"):  # truncated, then corrupted
        path.write_bytes(edited)
        with pytest.raises(ValueError, match="does not match the SHA-256 recorded when it "
                                             "entered the cache"):
            fetch_file(remote, tmp_path, progress=False)
        assert path.read_bytes() == edited  # refused, and not silently replaced


def test_a_file_put_in_the_cache_by_hand_is_recorded_on_first_use(tmp_path):
    path = tmp_path / "d" / "f.bin"
    path.parent.mkdir()
    path.write_bytes(b"copied by hand")
    remote = RemoteFile("d/f.bin", "https://example.invalid/f", None)
    assert fetch_file(remote, tmp_path, download_if_missing=False) == path
    path.write_bytes(b"copied by hanD")
    with pytest.raises(ValueError, match="SHA-256 recorded"):
        fetch_file(remote, tmp_path, download_if_missing=False)


def test_a_published_md5_is_checked_before_the_sha256_is_recorded(monkeypatch, tmp_path):
    payload = b"a file whose origin publishes only an MD5"
    md5 = hashlib.md5(payload).hexdigest()
    good = RemoteFile("d/f.bin", "https://example.invalid/f", None, md5=md5)
    _serve(monkeypatch, payload)
    path = fetch_file(good, tmp_path, progress=False)
    record = (tmp_path / "d" / "f.bin.sha256").read_text().split()[0]
    assert record == hashlib.sha256(payload).hexdigest()
    _serve(monkeypatch, b"something else")
    bad = RemoteFile("d/g.bin", "https://example.invalid/g", None, md5=md5)
    with pytest.raises(ValueError, match="expected the published MD5 " + md5):
        fetch_file(bad, tmp_path, progress=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin", "f.bin.sha256"]
    (tmp_path / "d" / "h.bin").write_bytes(b"copied by hand, not the published file")
    hand = RemoteFile("d/h.bin", "https://example.invalid/h", None, md5=md5)
    with pytest.raises(ValueError, match="does not match its published MD5 checksum"):
        fetch_file(hand, tmp_path, download_if_missing=False)
    assert not (tmp_path / "d" / "h.bin.sha256").exists()


def test_a_read_only_cache_warns_that_it_cannot_record(tmp_path, monkeypatch):
    path = tmp_path / "d" / "f.bin"
    path.parent.mkdir()
    path.write_bytes(b"copied by hand")

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(_base.tempfile, "mkstemp", refuse)
    remote = RemoteFile("d/f.bin", "https://example.invalid/f", None)
    with pytest.warns(UserWarning, match="Could not record the SHA-256 of .*f.bin.*read-only"):
        assert fetch_file(remote, tmp_path, download_if_missing=False) == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]


def test_truncated_gzip_without_published_checksum_is_refused(monkeypatch, tmp_path):
    import gzip

    whole = gzip.compress(b"line\n" * 10_000)
    _serve(monkeypatch, whole[: len(whole) // 2])  # the server itself sent half a file
    with pytest.raises(ValueError, match="not a complete gzip stream"):
        fetch_file(RemoteFile("d/f.json.gz", "u", None), tmp_path, progress=False)
    assert list((tmp_path / "d").iterdir()) == []
    _serve(monkeypatch, whole)
    path = fetch_file(RemoteFile("d/f.json.gz", "u", None), tmp_path, progress=False)
    assert gzip.decompress(path.read_bytes()) == b"line\n" * 10_000


def test_mirrors_are_tried_in_order(monkeypatch, tmp_path):
    payload = b"from the mirror"
    tried = []

    def urlopen(url, timeout):
        tried.append(url)
        if url != "https://mirror.invalid/f":
            raise ConnectionRefusedError(f"{url} is down")
        return _Resp(payload)

    monkeypatch.setattr(_base.urllib.request, "urlopen", urlopen)
    remote = RemoteFile("d/f.bin", "https://origin.invalid/f", hashlib.sha256(payload).hexdigest(),
                        mirrors=("https://old.invalid/f", "https://mirror.invalid/f"))
    assert fetch_file(remote, tmp_path, progress=False).read_bytes() == payload
    assert tried == ["https://origin.invalid/f", "https://old.invalid/f",
                     "https://mirror.invalid/f"]
    monkeypatch.setattr(_base.urllib.request, "urlopen",
                        lambda url, timeout: (_ for _ in ()).throw(TimeoutError(url)))
    with pytest.raises(OSError, match="any of its origins:\n  https://origin.invalid/g"):
        fetch_file(RemoteFile("d/g.bin", "https://origin.invalid/g", None,
                              mirrors=("https://old.invalid/g",)), tmp_path, progress=False)


def test_archive_extraction_refuses_escaping_paths(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/file.txt", "fine")
        zf.writestr("../../escape.txt", "evil")
    (tmp_path / "cache").mkdir()
    with pytest.raises(ValueError, match="outside the cache"):
        safe_extract(archive, "ok/file.txt", tmp_path / "cache", tmp_path / "cache" / "f.txt")
    assert not (tmp_path / "escape.txt").exists()


# --------------------------------------------------------------------------------------
# fetch_movielens_100k's logic on small files in the real formats, made here: Monti's
# split_1.mat (MATLAB v7.3 = HDF5, column-major, graphs as MATLAB sparse groups) and the
# GroupLens ml-100k.zip archive
# --------------------------------------------------------------------------------------


def _serve_files(monkeypatch, files):
    """Make downloads return ``files[url]``, recording the URLs asked for."""
    asked = []

    def urlopen(url, timeout):
        asked.append(url)
        return _Resp(files[url])

    monkeypatch.setattr(_base.urllib.request, "urlopen", urlopen)
    return asked


def _matlab_sparse(group, W):
    """Store ``W`` as MATLAB does in a v7.3 file: CSC ``data``, ``ir``, ``jc``."""
    import scipy.sparse as sp

    W = sp.csc_matrix(W)
    group["data"], group["ir"], group["jc"] = W.data, W.indices, W.indptr


def _made_up_movielens(root):
    """Small MovieLens files in the real formats; returns (served files, truth)."""
    import io

    import h5py

    rng = np.random.RandomState(0)
    n_users, n_movies = 6, 9
    M = rng.randint(1, 6, (n_users, n_movies)).astype(float) * (rng.rand(n_users, n_movies) < .6)
    observed = np.argwhere(M > 0)
    test = np.zeros_like(M, dtype=bool)
    test[tuple(observed[::4].T)] = True
    train = (M > 0) & ~test
    Wu = (rng.rand(n_users, n_users) < .4).astype(float)
    Wu = np.triu(Wu, 1) + np.triu(Wu, 1).T
    Wm = np.eye(n_movies, k=1) + np.eye(n_movies, k=-1)
    mat = root / "split_1.mat"
    with h5py.File(mat, "w") as f:  # MATLAB writes column-major: the loader transposes
        f["M"], f["Otraining"], f["Otest"] = M.T, train.T.astype(float), test.T.astype(float)
        _matlab_sparse(f.create_group("W_users"), Wu)
        _matlab_sparse(f.create_group("W_movies"), Wm)
    occupations = ["artist", "doctor", "writer"]
    genres = ["unknown", "Action", "Comedy"]
    members = {
        "ml-100k/u.data": "".join(f"{u + 1}\t{m + 1}\t{int(M[u, m])}\t8811{u}{m}\n"
                                  for u, m in observed),
        "ml-100k/u.user": "".join(f"{u + 1}|{20 + u}|{'MF'[u % 2]}|{occupations[u % 3]}|"
                                  f"0{u}000\n" for u in range(n_users)),
        "ml-100k/u.occupation": "\n".join(occupations) + "\n",
        "ml-100k/u.genre": "".join(f"{g}|{i}\n" for i, g in enumerate(genres)) + "\n",
        "ml-100k/u.item": "".join(
            f"{m + 1}|Caf\xe9 {m} (1995)|01-Jan-1995||http://x|"
            + "|".join("1" if g == m % 3 else "0" for g in range(3)) + "\n"
            for m in range(n_movies)),
    }
    encoded = {k: v.encode("latin-1") for k, v in members.items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in encoded.items():
            zf.writestr(name, data)
    served = {mlens.FILES["split"].url: mat.read_bytes(), mlens._GROUPLENS: buf.getvalue()}
    digests = {"split": hashlib.sha256(mat.read_bytes()).hexdigest()}
    for key, remote in mlens.FILES.items():
        if remote.member:
            digests[key] = hashlib.sha256(encoded[remote.member]).hexdigest()
    truth = dict(M=M, train=train, test=test, Wu=Wu, Wm=Wm, occupations=occupations,
                 genres=genres)
    return served, digests, truth


@pytest.fixture
def made_up_movielens(monkeypatch, tmp_path):
    import dataclasses

    served, digests, truth = _made_up_movielens(tmp_path)
    monkeypatch.setattr(mlens, "FILES", {k: dataclasses.replace(v, sha256=digests[k])
                                         for k, v in mlens.FILES.items()})
    return served, truth


def test_fetch_movielens_parses_the_real_formats(made_up_movielens, monkeypatch, tmp_path):
    served, t = made_up_movielens
    asked = _serve_files(monkeypatch, served)
    d = fetch_movielens_100k(tmp_path / "cache")
    assert sorted(set(asked)) == sorted(served)  # the archive is downloaded once
    assert asked.count(mlens._GROUPLENS) == 1
    np.testing.assert_array_equal(d.ratings.toarray(), t["M"])
    np.testing.assert_array_equal(d.train_mask, t["train"])
    np.testing.assert_array_equal(d.test_mask, t["test"])
    np.testing.assert_array_equal(d.train.toarray(), np.where(t["train"], t["M"], 0))
    np.testing.assert_array_equal(d.test.toarray(), np.where(t["test"], t["M"], 0))
    np.testing.assert_array_equal(d.user_graph.toarray(), t["Wu"])
    np.testing.assert_array_equal(d.movie_graph.toarray(), t["Wm"])
    assert d.occupations == t["occupations"] and d.genres == t["genres"]
    np.testing.assert_array_equal(d.user_occupation.argmax(1), np.arange(6) % 3)
    np.testing.assert_array_equal(d.user_age, 20 + np.arange(6))
    np.testing.assert_array_equal(d.user_sex, np.arange(6) % 2 == 0)  # "M" at even users
    np.testing.assert_array_equal(d.movie_genres.argmax(1), np.arange(9) % 3)
    assert d.movie_titles[2] == "Caf\xe9 2 (1995)"  # u.item is latin-1


def test_fetch_movielens_offline_and_a_corrupted_cache(made_up_movielens, monkeypatch,
                                                       tmp_path):
    served, t = made_up_movielens
    _serve_files(monkeypatch, served)
    home = tmp_path / "cache"
    fetch_movielens_100k(home)
    monkeypatch.setattr(_base.urllib.request, "urlopen", lambda *a, **k: 1 / 0)
    d = fetch_movielens_100k(home, download_if_missing=False)  # offline, from the cache
    np.testing.assert_array_equal(d.ratings.toarray(), t["M"])
    item = home / "ml-100k" / "u.item"
    item.write_bytes(item.read_bytes().replace(b"(1995)", b"(1996)"))
    with pytest.raises(ValueError, match=r"Cached file .*u.item does not match its SHA-256 "
                                         r"checksum: .* delete it"):
        fetch_movielens_100k(home, download_if_missing=False)
    # allowed to fetch again, the damaged member is extracted anew from the cached archive
    d = fetch_movielens_100k(home)
    assert d.movie_titles[0] == "Caf\xe9 0 (1995)" and b"(1996)" not in item.read_bytes()
    (home / "movielens_monti" / "split_1.mat").unlink()
    with pytest.raises(OSError, match="split_1.mat is not in the cache and "
                                      "download_if_missing=False"):
        fetch_movielens_100k(home, download_if_missing=False)


def test_realdata_tests_are_deselected_without_a_copy_and_required_in_ci(tmp_path):
    """tests/conftest.py: a clone without ../shared/ passes, deselecting the realdata
    tests with one line that says how to run them; MMFACTOR_DATA runs them; CI's
    MMFACTOR_REQUIRE_REALDATA=1 fails a run where none ran; no ~/mmfactor_data is left."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    clone = tmp_path / "clone"
    (clone / "tests").mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), clone / "tests")
    (clone / "pytest.ini").write_text("[pytest]\nmarkers =\n    realdata(*folders): real\n")
    (clone / "tests" / "test_x.py").write_text(
        "import pytest\nfrom mmfactor.datasets import get_data_home\n\n"
        "def test_plain():\n    assert get_data_home().is_dir()\n\n"
        "@pytest.mark.realdata('dicty')\n"
        "def test_real(data_home):\n    assert (data_home / 'dicty').is_dir()\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MMFACTOR_DATA", "MMFACTOR_REQUIRE_REALDATA")}
    env.update(HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                           env.get("PYTHONPATH", "")]))

    def pytest_run(**extra):
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                             cwd=clone, env={**env, **extra}, capture_output=True, text=True)
        return out.returncode, out.stdout

    rc, out = pytest_run()
    assert rc == 0 and "1 passed, 1 deselected" in out, out
    lines = [line for line in out.splitlines() if line.startswith("realdata:")]
    assert len(lines) == 1 and "MMFACTOR_DATA=/path/to/data python -m pytest -m realdata" \
        in lines[0] and "dicty" in lines[0]
    assert not (tmp_path / "home" / "mmfactor_data").exists()
    rc, out = pytest_run(MMFACTOR_REQUIRE_REALDATA="1")
    assert rc == 1 and "no realdata test ran" in out
    (tmp_path / "data" / "dicty").mkdir(parents=True)
    rc, out = pytest_run(MMFACTOR_REQUIRE_REALDATA="1", MMFACTOR_DATA=str(tmp_path / "data"))
    assert rc == 0 and "2 passed" in out and "realdata:" not in out, out
