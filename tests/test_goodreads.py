"""fetch_goodreads_books on small files in the UCSD format, made here (no download)."""

import dataclasses
import gzip
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

import mmfactor.datasets._goodreads as gr
from mmfactor import MultiModal
from mmfactor.datasets import fetch_goodreads_books

# small files in the UCSD format made here (tests/test_reliability.py checks the MD5 pin)
pytestmark = pytest.mark.usefixtures("made_up_goodreads_files")


GENRES = ["fiction", "romance", "fantasy, paranormal", "young-adult", "non-fiction",
          "history, historical fiction, biography", "poetry", "children"]


def _make_source(root, n=40):
    """UCSD-format gz files for ``n`` books plus a few that the filters must drop."""
    covers = root / "src"
    covers.mkdir()
    books, genres = [], []
    rng = np.random.RandomState(0)
    for i in range(n):
        path = covers / f"c{i}.png"
        Image.fromarray(rng.randint(0, 255, (20 + i % 3, 14, 3), dtype=np.uint8)).save(path)
        books.append({"book_id": str(100 + i), "title": f"Book {i}",
                      "description": f"a story number {i} about things",
                      "average_rating": f"{3 + (i % 10) / 10:.2f}",
                      "language_code": "eng" if i % 2 else "en-US",
                      "image_url": path.as_uri(), "isbn": "", "popular_shelves": []})
        g = GENRES[i % len(GENRES)]
        genres.append({"book_id": str(100 + i), "genres": {g: 10, "poetry": 1}})
    # dropped: no description, zero rating, French, placeholder cover, no genre
    bad = [dict(books[0], book_id="900", description=""),
           dict(books[0], book_id="901", average_rating="0.00"),
           dict(books[0], book_id="902", language_code="fre"),
           dict(books[0], book_id="903",
                image_url="https://s.gr-assets.com/assets/nophoto/book/111x148.png"),
           dict(books[0], book_id="904")]
    # a broken cover: skipped, and the next book of the seeded order taken instead
    broken = covers / "broken.png"
    broken.write_bytes(b"not an image")
    bad.append(dict(books[0], book_id="905", image_url=broken.as_uri()))
    genres.append({"book_id": "905", "genres": {"fiction": 3}})
    home = root / "home" / gr.SUBDIR
    home.mkdir(parents=True)
    with gzip.open(home / "goodreads_books.json.gz", "wt", encoding="utf-8") as f:
        for b in books + bad:
            f.write(json.dumps(b) + "\n")
    with gzip.open(home / "goodreads_book_genres_initial.json.gz", "wt",
                   encoding="utf-8") as f:
        for g in genres:
            f.write(json.dumps(g) + "\n")
    return root / "home", books


def test_sample_labels_and_covers(tmp_path):
    home, books = _make_source(tmp_path)
    data = fetch_goodreads_books(home, n_samples=30, image_size=(12, 10), progress=False)
    assert data.images.shape == (30, 3, 12, 10) and data.images.dtype == np.float32
    assert 0 <= data.images.min() and data.images.max() <= 1
    assert len(data.descriptions) == len(data.book_id) == len(set(data.book_id)) == 30
    # the filters of section 4.1
    assert not set(data.book_id) & {"900", "901", "902", "903", "904", "905"}
    # the label: most voted genre, fiction for fiction/romance/fantasy/young-adult
    by_id = {b["book_id"]: i for i, b in enumerate(books)}
    for bid, genre, t in zip(data.book_id, data.genre, data.target, strict=True):
        assert genre == GENRES[by_id[bid] % len(GENRES)]
        assert t == (genre in {"fiction", "romance", "fantasy, paranormal", "young-adult"})
    assert set(np.unique(data.target)) == {0, 1}
    # the cover is the source image resized
    i = 0
    src = Image.open(tmp_path / "src" / f"c{by_id[data.book_id[i]]}.png").convert("RGB")
    expect = np.asarray(src.resize((10, 12), Image.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_allclose(data.images[i], expect.transpose(2, 0, 1))
    assert (home / gr.SUBDIR / "covers").is_dir()


def test_seeded_and_cached(tmp_path):
    home, _ = _make_source(tmp_path)
    a = fetch_goodreads_books(home, n_samples=10, random_state=1, progress=False)
    # the second call reads only the cache: the source covers are gone
    for p in (tmp_path / "src").iterdir():
        p.unlink()
    b = fetch_goodreads_books(home, n_samples=10, random_state=1, progress=False,
                              download_if_missing=False)
    assert a.book_id == b.book_id
    np.testing.assert_array_equal(a.images, b.images)
    X, y = fetch_goodreads_books(home, n_samples=10, random_state=1, progress=False,
                                 return_X_y=True, download_if_missing=False)
    assert isinstance(X, MultiModal) and X.names == ["image", "text"] and len(y) == 10


def test_download_is_atomic_and_used(tmp_path, monkeypatch):
    home, _ = _make_source(tmp_path)
    # serve the UCSD files from a file:// URL: the loader downloads them into a fresh cache
    # (the first origin unreachable, so the mirror is used)
    src = home / gr.SUBDIR
    for key, remote in gr.FILES.items():
        name = remote.path.split("/")[-1]
        monkeypatch.setitem(gr.FILES, key, dataclasses.replace(
            remote, url=(tmp_path / "nowhere" / name).as_uri(),
            mirrors=((src / name).as_uri(),)))
    fresh = tmp_path / "fresh"
    data = fetch_goodreads_books(fresh, n_samples=5, progress=False)
    assert len(data.book_id) == 5
    for name in ("goodreads_books.json.gz", "goodreads_book_genres_initial.json.gz"):
        path = fresh / gr.SUBDIR / name
        assert path.read_bytes() == (src / name).read_bytes()
        record = (fresh / gr.SUBDIR / (name + ".sha256")).read_text()
        assert record.split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not list((fresh / gr.SUBDIR).rglob(".part-*"))


def test_errors(tmp_path):
    with pytest.raises(OSError, match="download_if_missing=False"):
        fetch_goodreads_books(tmp_path, download_if_missing=False, progress=False)
    home, _ = _make_source(tmp_path)
    with pytest.raises(ValueError, match="Only 41 books pass"):
        fetch_goodreads_books(home, n_samples=42, progress=False)
    with pytest.raises(ValueError, match="Only 40 covers could be read"):
        fetch_goodreads_books(home, n_samples=41, progress=False)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        fetch_goodreads_books(home, n_samples=0, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        fetch_goodreads_books(home, image_size=(0, 3), progress=False)
