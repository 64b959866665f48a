"""The cache and the download machinery shared by every ``fetch_*`` loader.

A loader names its files as :class:`RemoteFile` records (where the file lies in the cache,
where it comes from, its SHA-256). :func:`fetch_file` returns the cached copy when it is
there and intact, and otherwise downloads it to a temporary file in the same folder,
checks its length and its hash and only then renames it into place, so no half-written
or corrupted file ever survives a failure. Archives are extracted member by member,
refusing any member whose path would escape the cache.

A file with no published SHA-256 (``sha256=None``) has its SHA-256 recorded beside it
(``<file>.sha256``) when it enters the cache, after a check against a published MD5
where there is one (``md5=``); every later use checks the cached file against that
record, so a cached file that was truncated, corrupted or edited afterwards is refused.
Without any published checksum the first copy is trusted.

Why not a library: pooch (the download cache of SciPy, scikit-image and MNE) would do
most of this, but it is not a dependency, and it falls short here on three points we
need: with no published hash (``known_hash=None``) it checks nothing on later use,
where we record the SHA-256 on first use and refuse a cache edited afterwards; it has no
MD5-then-SHA-256 step for origins that publish only an MD5; and it does not verify a
gzip stream to its end before accepting an unhashed download. scikit-learn's own
``_fetch_remote`` is private API. The downloading itself is the standard library's
(``urllib``), the progress bar tqdm's.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
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

    ``sha256=None``: no SHA-256 is published; the SHA-256 is recorded on first use (see
    the module docstring), after checking ``md5`` where an MD5 is published.
    ``mirrors``: further URLs of the same file, tried in order when ``url`` cannot be
    reached. ``archive``/``member``: the file is ``member`` of the zip archive at ``url``.
    """

    path: str
    url: str
    sha256: str | None
    archive: bool = False
    member: str | None = None
    mirrors: tuple = ()
    md5: str | None = None


def file_digests(path, algorithms=("sha256",), chunk=1 << 20):
    """``{algorithm: hex digest}`` of the file at ``path``, in one pass over it."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while block := f.read(chunk):
            for h in hashes.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def _needed(remote):
    """The digests to compute of ``remote``: its SHA-256, and its MD5 when that is the
    checksum published for it."""
    return ("sha256", "md5") if remote.sha256 is None and remote.md5 else ("sha256",)


def _download(url, dest, *, progress=True, check=None):
    """Download ``url`` to ``dest`` atomically (temporary file + rename).

    ``check(tmp_path)``, if given, runs on the complete temporary file before the rename
    and raises to refuse it (the temporary file is then removed).
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-", suffix=dest.name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress, leave=False) as bar:
                got = 0
                while block := resp.read(1 << 16):
                    out.write(block)
                    got += len(block)
                    bar.update(len(block))
        if total is not None and got != total:
            raise OSError(f"Incomplete download of {url}: {got} of {total} bytes.")
        if check is not None:
            check(tmp)
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


def _record_path(path):
    return path.with_name(path.name + ".sha256")


def _check_regular(path, what="Cached file"):
    """Refuse a cache entry that is not a regular file (a link to ``/dev/zero``, a FIFO,
    a folder): hashing or reading it would never end, or fail obscurely."""
    import stat

    try:
        mode = os.stat(path).st_mode  # follows links: the file they point to
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read ({exc}); delete it.") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{what} {path} is not a regular file (it is or links to a device, "
                         "a pipe or a folder); refusing to read it. Delete it to download "
                         "the file again.")


def _recorded_sha256(path):
    """The SHA-256 recorded when ``path`` entered the cache (trust on first use), or None.

    The record is ``sha256sum`` output: 64 hexadecimal digits (either case) then the
    name; an empty or malformed record is refused (it cannot vouch for the file).
    """
    record = _record_path(path)
    if not os.path.lexists(record):
        return None
    _check_regular(record, "The SHA-256 record")
    with open(record, "rb") as f:
        text = f.read(4096).decode("utf-8", "replace")
    token = text.split()[0].lower() if text.split() else ""
    if len(token) != 64 or any(c not in "0123456789abcdef" for c in token):
        raise ValueError(f"The SHA-256 record {record} is empty or malformed (expected 64 "
                         f"hexadecimal digits, got {token[:80]!r}); it cannot vouch for "
                         f"{path.name}. Delete both to download the file again.")
    return token


def _write_record(path, digest):
    """Record ``digest`` beside ``path`` atomically, in ``sha256sum`` format.

    A cache that cannot be written (read-only) gets a warning, not an error: the file is
    used, unchecked, as it would be without a record.
    """
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{digest}  {path.name}\n")
        os.replace(tmp, _record_path(path))
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        warnings.warn(f"Could not record the SHA-256 of {path} beside it ({exc}); it will "
                      "not be checked on later use.", UserWarning, stacklevel=3)


def _check_gzip(path):
    """Refuse a gzip file that does not decompress to its end (its CRC-32 and length)."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"Downloaded file {path} is not a complete gzip stream: {exc}") from exc


def _download_any(remote, path, progress):
    """Download ``remote`` to ``path`` from its URL, then each mirror, until one works;
    return the file's SHA-256.

    A file with a published checksum is checked before it is renamed into place; a
    gzip file without one is decompressed to its end first, so that the hash recorded
    on first use is the hash of a complete file.
    """
    digests = {}

    def check(tmp):
        digests.update(file_digests(tmp, _needed(remote)))
        if remote.sha256 is not None:
            if digests["sha256"] != remote.sha256:
                raise ValueError(f"Checksum mismatch for {url}: expected SHA-256 "
                                 f"{remote.sha256}, got {digests['sha256']}. The file was "
                                 "removed.")
        elif remote.md5 is not None:
            if digests["md5"] != remote.md5:
                raise ValueError(f"Checksum mismatch for {url}: expected the published MD5 "
                                 f"{remote.md5}, got {digests['md5']}. The file was removed.")
        elif path.name.endswith(".gz"):
            _check_gzip(tmp)

    errors, last = [], None
    for url in (remote.url, *remote.mirrors):
        try:
            _download(url, path, progress=progress, check=check)
            return digests["sha256"]
        except OSError as exc:  # unreachable (URLError is an OSError): try the next one
            errors.append(f"{url}: {exc}")
            last = exc
    raise OSError(f"Could not download {path.name} from any of its origins:\n  "
                  + "\n  ".join(errors)) from last


def _extract_checked(remote, archive, home, path, download_if_missing, progress):
    """Extract ``remote.member`` of ``archive`` to ``path`` and check its SHA-256.

    A cached archive that is stale or damaged (another release, truncated, not a zip)
    is deleted and downloaded once more before the origin is blamed.
    """
    cached = os.path.lexists(archive)
    for attempt in ("cached", "fresh") if cached else ("fresh",):
        if attempt == "fresh":
            if not download_if_missing:
                raise OSError(f"The cached archive {archive} is stale or damaged and "
                              "download_if_missing=False; delete it to download it again.")
            if os.path.lexists(archive):
                os.remove(archive)
            _download_any(dataclasses.replace(remote, sha256=None), archive, progress)
        try:
            _check_regular(archive, "Cached archive")
            safe_extract(archive, remote.member, home, path)
        except (ValueError, zipfile.BadZipFile, EOFError) as exc:
            if attempt == "cached" and "outside the cache" not in str(exc):
                continue  # stale: download it again
            raise
        digest = file_digests(path)["sha256"]
        if digest == remote.sha256:
            return digest
        os.remove(path)
        if attempt == "fresh":
            raise ValueError(f"Checksum mismatch for {remote.member} of {remote.url}: "
                             f"expected SHA-256 {remote.sha256}, got {digest}. The file "
                             "was removed.")
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_file(remote, data_home=None, *, download_if_missing=True, progress=True):
    """The local path of ``remote``, downloading and verifying it when needed.

    A cached file is checked against the published SHA-256, or, for a file whose origin
    publishes none, against the SHA-256 recorded when it entered the cache (a file found
    in the cache without a record, put there by hand, is recorded on this first use).

    Raises
    ------
    OSError
        When the file is not cached and ``download_if_missing`` is False, or when no
        origin can be reached.
    ValueError
        When the downloaded (or extracted) file does not have the expected SHA-256, or a
        cached file no longer matches it.
    """
    home = get_data_home(data_home)
    path = home / remote.path
    if os.path.lexists(path):
        _check_regular(path)
        expected = remote.sha256 or _recorded_sha256(path)
        digests = file_digests(path, _needed(remote) if expected is None else ("sha256",))
        digest = digests["sha256"]
        if expected is None:  # found without a record: checked against a published MD5
            if remote.md5 is not None:  # where there is one, then recorded
                md5 = digests["md5"]
                if md5 != remote.md5:
                    raise ValueError(
                        f"Cached file {path} does not match its published MD5 checksum: "
                        f"expected {remote.md5}, got {md5}. It is not the file published at "
                        f"{remote.url}; delete it to download it again.")
            _write_record(path, digest)
            return path
        if digest == expected:
            return path
        if remote.sha256 is None or not download_if_missing:
            if remote.sha256:
                what, fix = "its SHA-256 checksum", "delete it"
            else:
                what = f"the SHA-256 recorded when it entered the cache ({path.name}.sha256)"
                fix = "delete it and its record"
            raise ValueError(f"Cached file {path} does not match {what}: expected "
                             f"{expected}, got {digest}. It was truncated, corrupted or "
                             f"edited; {fix} to download it again.")
    elif not download_if_missing:
        raise OSError(f"Data file {path} is not in the cache and download_if_missing=False.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if remote.archive:
        archive = home / (Path(remote.path).parent.name + ".zip")
        digest = _extract_checked(remote, archive, home, path, download_if_missing, progress)
    else:
        digest = _download_any(remote, path, progress)
    if remote.sha256 is None:
        _write_record(path, digest)
    return path
