"""The cache and the download machinery shared by every ``fetch_*`` loader.

A loader names its files as :class:`RemoteFile` records (where the file lies in the cache,
where it comes from, its SHA-256). :func:`fetch_file` returns the cached copy when it is
there and intact, and otherwise downloads it to a temporary file in the same folder,
checks the hash and renames it into place, so no half-written file ever survives a
failure. Archives are extracted member by member, refusing any member whose path would
escape the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["get_data_home", "clear_data_home", "RemoteFile", "fetch_file"]

ENV_VAR = "MMFACTOR_DATA"


def get_data_home(data_home=None):
    """The folder where ``fetch_*`` loaders cache data sets.

    By order of precedence: the ``data_home`` argument, the environment variable
    ``MMFACTOR_DATA``, then ``~/mmfactor_data``. The folder is created if needed.

    Parameters
    ----------
    data_home : str or path-like, default=None
        An explicit folder.

    Returns
    -------
    data_home : pathlib.Path
        The cache folder.
    """
    if data_home is None:
        data_home = os.environ.get(ENV_VAR, os.path.join("~", "mmfactor_data"))
    path = Path(data_home).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def clear_data_home(data_home=None):
    """Delete every cached data set.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The cache folder (see :func:`get_data_home`).
    """
    shutil.rmtree(get_data_home(data_home))


@dataclass(frozen=True)
class RemoteFile:
    """A file of a data set: its path in the cache, its origin and its SHA-256.

    ``archive``/``member``: the file is ``member`` of the zip archive at ``url``.
    """

    path: str
    url: str
    sha256: str
    archive: bool = False
    member: str | None = None


def sha256sum(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download(url, dest, *, progress=True):
    """Download ``url`` to ``dest`` atomically (temporary file + rename)."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-", suffix=dest.name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress, leave=False) as bar:
                while block := resp.read(1 << 16):
                    out.write(block)
                    bar.update(len(block))
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return dest


def safe_extract(archive, member, dest_root, dest_path):
    """Extract one zip ``member`` to ``dest_path``, refusing paths that escape ``dest_root``."""
    root = Path(dest_root).resolve()
    target = Path(dest_path).resolve()
    if root not in target.parents and target != root:
        raise ValueError(f"Refusing to extract {member!r} to {target}: outside the cache {root}.")
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        for name in names:  # refuse archives that carry escaping paths at all
            p = (root / name).resolve()
            if root not in p.parents and p != root:
                raise ValueError(f"Archive {archive} holds a member {name!r} that would be "
                                 f"extracted outside the cache {root}; refusing it.")
        if member not in names:
            raise ValueError(f"Archive {archive} has no member {member!r}.")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, zf.open(member) as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def fetch_file(remote, data_home=None, *, download_if_missing=True, progress=True):
    """The local path of ``remote``, downloading and verifying it when needed.

    Raises
    ------
    OSError
        When the file is not cached and ``download_if_missing`` is False.
    ValueError
        When the downloaded (or extracted) file does not have the expected SHA-256.
    """
    home = get_data_home(data_home)
    path = home / remote.path
    if path.exists():
        if sha256sum(path) == remote.sha256:
            return path
        if not download_if_missing:
            raise ValueError(f"Cached file {path} does not match its SHA-256 checksum; delete "
                             "it to download it again.")
    elif not download_if_missing:
        raise OSError(f"Data file {path} is not in the cache and download_if_missing=False.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if remote.archive:
        archive = home / (Path(remote.path).parent.name + ".zip")
        if not archive.exists():
            _download(remote.url, archive, progress=progress)
        safe_extract(archive, remote.member, home, path)
    else:
        _download(remote.url, path, progress=progress)
    digest = sha256sum(path)
    if digest != remote.sha256:
        os.remove(path)
        raise ValueError(f"Checksum mismatch for {remote.url}: expected SHA-256 "
                         f"{remote.sha256}, got {digest}. The file was removed.")
    return path
