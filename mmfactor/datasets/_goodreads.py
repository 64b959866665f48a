"""The MMEDA paper's Goodreads sample: book descriptions and covers, fiction or not."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch, check_random_state

from .._multimodal import MultiModal
from ._base import RemoteFile, fetch_file, get_data_home

__all__ = ["fetch_goodreads_books"]

SUBDIR = "goodreads"
#: Where the UCSD book graph is served: the lab's current address, then the older one.
_ORIGINS = ("https://mcauleylab.ucsd.edu/public_datasets/gdrive/goodreads/",
            "https://datarepo.eng.ucsd.edu/mcauley_group/gdrive/goodreads/")


def _ucsd(name, md5):
    """The UCSD file ``name``. No SHA-256 of it is published, so ``sha256=None``: the
    download is checked against its published MD5, then its SHA-256 is recorded when it
    enters the cache and checked on every later use (see :mod:`mmfactor.datasets._base`).
    """
    return RemoteFile(f"{SUBDIR}/{name}", _ORIGINS[0] + name, None,
                      mirrors=tuple(o + name for o in _ORIGINS[1:]), md5=md5)


#: The MD5s are those the PIReT Book Data Tools (Ekstrand et al., Boise State University)
#: publish for these UCSD files, in their DVC records ``data/goodreads/*.dvc``.
FILES = {"books": _ucsd("goodreads_books.json.gz", "01b40c70a00fb6aa321ee478f0fd0d6b"),
         "genres": _ucsd("goodreads_book_genres_initial.json.gz",
                         "99ee3d1cadd68818c3dd0ef0d2f10602")}

#: Section 4.1 of the paper: these genres are fiction, every other genre non-fiction. The
#: UCSD genre file groups "fantasy, paranormal" into one category.
FICTION_GENRES = frozenset({"fiction", "romance", "fantasy, paranormal", "young-adult"})
ENGLISH = ("eng", "en-US", "en-GB", "en-CA", "en")


def _open_lines(path):
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(
        path, encoding="utf-8")


def _candidates(books_path, languages, drop_missing_covers, progress):
    """Books with a description, average rating > 0, an English language code, a cover."""
    from tqdm.auto import tqdm

    out = []
    with _open_lines(books_path) as f:
        for line in tqdm(f, desc="goodreads books", unit=" books", disable=not progress,
                         leave=False):
            if not line.strip():
                continue
            b = json.loads(line)
            desc = (b.get("description") or "").strip()
            try:
                rating = float(b.get("average_rating") or 0)
            except ValueError:
                continue
            url = b.get("image_url") or ""
            if not desc or rating <= 0 or b.get("language_code") not in languages or not url:
                continue
            if drop_missing_covers and "nophoto" in url:
                continue
            out.append({"book_id": str(b["book_id"]), "title": b.get("title", ""),
                        "description": desc, "average_rating": rating, "image_url": url})
    return out


def _cached_candidates(cache, books_path, languages, drop_missing_covers, progress):
    """The candidate books, from the cache file when it is intact and newer than the
    books file; else (absent, stale, or changed since it was written: its SHA-256 no
    longer matches the record beside it) rebuilt from the verified books file."""
    from ._base import _check_regular, _recorded_sha256, _write_record, file_digests

    if os.path.lexists(cache):
        try:
            _check_regular(cache)
            intact = (_recorded_sha256(cache) == file_digests(cache)["sha256"]
                      and cache.stat().st_mtime >= books_path.stat().st_mtime)
        except ValueError:
            intact = False
        if intact:
            with open(cache, encoding="utf-8") as f:
                return json.load(f)
    cands = _candidates(books_path, set(languages), drop_missing_covers, progress)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".part-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(cands, f)
    os.replace(tmp, cache)
    _write_record(cache, file_digests(cache)["sha256"])
    return cands


def _genres(genres_path, wanted, progress):
    """The most voted genre category of each wanted book."""
    from tqdm.auto import tqdm

    out = {}
    with _open_lines(genres_path) as f:
        for line in tqdm(f, desc="goodreads genres", unit=" books", disable=not progress,
                         leave=False):
            if not line.strip():
                continue
            g = json.loads(line)
            bid = str(g["book_id"])
            votes = g.get("genres") or {}
            if bid in wanted and votes:
                # ties broken by name so that the label does not depend on dict order
                out[bid] = max(sorted(votes), key=lambda k: votes[k])
    return out


def _cover(url, path, data_home, image_size, download_if_missing):
    """The cover resized to ``image_size`` as a float32 (3, H, W) array in [0, 1], or None.

    The cover is fetched like any data file (atomically, its SHA-256 recorded on first use
    and checked afterwards); an unreachable cover or one that is not an image (an error
    page) gives None and the book is skipped.
    """
    from PIL import Image

    remote = RemoteFile(path.relative_to(data_home).as_posix(), url, None)
    try:
        path = fetch_file(remote, data_home, download_if_missing=download_if_missing,
                          progress=False)
    except OSError:
        if not download_if_missing:
            raise
        return None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((image_size[1], image_size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except OSError:  # not an image (an error page), or truncated
        return None
    return arr.transpose(2, 0, 1)


def fetch_goodreads_books(data_home=None, *, n_samples=5000, random_state=0,
                          image_size=(64, 64), languages=ENGLISH, drop_missing_covers=True,
                          download_if_missing=True, return_X_y=False, progress=True):
    """The MMEDA paper's Goodreads sample: descriptions and covers of fiction/non-fiction.

    Reproduces section 4.1 of the paper from the public UCSD Goodreads book graph
    (Wan and McAuley 2018; Wan et al. 2019): books with a description, an average rating
    above zero and an English language code are kept, ``n_samples`` of them are drawn
    with ``random_state``, and each book's most voted genre category becomes a binary
    label, fiction (1) when it is fiction, romance, fantasy/paranormal or young-adult and
    non-fiction (0) otherwise. The covers are downloaded from their Goodreads URLs and
    resized to ``image_size``. A book whose genre is unknown or whose cover cannot be
    read is skipped and the next one of the seeded order taken instead, so the sample is
    the same as long as the sources are.

    Everything is cached under ``data_home/goodreads/``: the two UCSD files
    (``goodreads_books.json.gz``, about 2 GB, and
    ``goodreads_book_genres_initial.json.gz``), the filtered candidate list and each
    cover, with progress bars while they are read or fetched.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The cache folder (see :func:`get_data_home`).
    n_samples : int, default=5000
        Books in the sample (the paper: 5,000).
    random_state : int, RandomState instance or None, default=0
        Seeds the sample.
    image_size : tuple of int, default=(64, 64)
        ``(height, width)`` of every cover.
    languages : tuple of str, default=("eng", "en-US", "en-GB", "en-CA", "en")
        Language codes counted as English.
    drop_missing_covers : bool, default=True
        Leave out books whose cover is Goodreads' "no photo" placeholder.
    download_if_missing : bool, default=True
        Download what is not cached; otherwise raise ``OSError``.
    return_X_y : bool, default=False
        Return ``(X, y)``: ``X`` a :class:`~mmfactor.MultiModal` with views ``image``
        ``(n, 3, H, W)`` and ``text`` (the raw descriptions; turn them into vectors with
        :class:`~mmfactor.text.Word2VecMean`), ``y`` the fiction label.
    progress : bool, default=True
        Show progress bars.

    Returns
    -------
    data : Bunch
        ``images`` (float32 ``(n, 3, H, W)`` in [0, 1]), ``descriptions`` (list of str),
        ``target`` (1 = fiction), ``target_names``, ``genre`` (the most voted category),
        ``average_rating`` (for the paper's regression task), ``book_id``, ``title``,
        ``X`` (the MultiModal above), ``DESCR``.

    Notes
    -----
    The UCSD Goodreads data is for academic use; mmfactor never ships it. M. Wan and
    J. McAuley, "Item recommendation on monotonic behavior chains", RecSys 2018;
    M. Wan, R. Misra, N. Nakashole and J. McAuley, "Fine-grained spoiler detection from
    large-scale review corpora", ACL 2019. Every download is atomic. The two UCSD files
    must match the MD5s published for them by the PIReT Book Data Tools (no SHA-256 is
    published); the covers have no published checksum and are checked for completeness
    only. The SHA-256 of each file is recorded beside it when it enters the cache, and
    every later call refuses a cached file that no longer matches its record.
    """
    from tqdm.auto import tqdm

    if not (isinstance(n_samples, int) and n_samples >= 1):
        raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
    if (len(image_size) != 2 or not all(isinstance(s, int) and s >= 1 for s in image_size)):
        raise ValueError(f"image_size must be (height, width) positive integers; got "
                         f"{image_size!r}.")
    data_home = Path(get_data_home(data_home)).resolve()
    home = data_home / SUBDIR
    home.mkdir(parents=True, exist_ok=True)
    books_path, genres_path = (
        fetch_file(FILES[k], data_home, download_if_missing=download_if_missing,
                   progress=progress) for k in ("books", "genres"))
    key = f"candidates-{'-'.join(sorted(languages))}-{int(drop_missing_covers)}.json"
    cands = _cached_candidates(home / key, books_path, languages, drop_missing_covers,
                               progress)
    cands.sort(key=lambda b: (len(b["book_id"]), b["book_id"]))
    genre = _genres(genres_path, {b["book_id"] for b in cands}, progress)
    cands = [b for b in cands if b["book_id"] in genre]
    if len(cands) < n_samples:
        raise ValueError(f"Only {len(cands)} books pass the paper's filters; n_samples="
                         f"{n_samples} is too many.")
    order = check_random_state(random_state).permutation(len(cands))
    picked, images = [], []
    bar = tqdm(total=n_samples, desc="goodreads covers", disable=not progress, leave=False)
    for i in order:
        b = cands[i]
        ext = os.path.splitext(b["image_url"].split("?")[0])[1] or ".jpg"
        covers = (home / "covers").resolve()
        path = (covers / f"{b['book_id']}{ext}").resolve()
        if path.parent != covers:
            raise ValueError(f"Book id {b['book_id']!r} would put its cover at {path}, "
                             f"outside the cache {covers}; refusing it.")
        img = _cover(b["image_url"], path, data_home, image_size, download_if_missing)
        if img is None:
            continue
        picked.append(b)
        images.append(img)
        bar.update(1)
        if len(picked) == n_samples:
            break
    bar.close()
    if len(picked) < n_samples:
        raise ValueError(f"Only {len(picked)} covers could be read; n_samples={n_samples}.")
    images = np.stack(images).astype(np.float32)
    descriptions = [b["description"] for b in picked]
    genres = [genre[b["book_id"]] for b in picked]
    target = np.array([g in FICTION_GENRES for g in genres], dtype=np.int64)
    X = MultiModal(image=images, text=descriptions)
    if return_X_y:
        return X, target
    return Bunch(
        X=X, images=images, descriptions=descriptions, target=target,
        target_names=np.array(["non-fiction", "fiction"]), genre=genres,
        average_rating=np.array([b["average_rating"] for b in picked]),
        book_id=[b["book_id"] for b in picked], title=[b["title"] for b in picked],
        DESCR=fetch_goodreads_books.__doc__,
    )
