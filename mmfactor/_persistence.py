"""A safe file format for fitted estimators: :func:`save` and :func:`load`.

``pickle``/``joblib`` work for every mmfactor estimator (tensors go to the CPU first, so a
model fitted on CUDA unpickles on a machine without a GPU), but unpickling a file runs
whatever code the file names: never unpickle a model you did not write yourself.
:func:`save` writes a format that loading cannot turn into code execution:

* one zip archive with three members: ``header.json`` (format and mmfactor versions, the
  class, SHA-256 digests), ``state.json`` (every value that is not an array, as typed
  JSON) and ``tensors.pt`` (every array and tensor, in one dict saved by
  :func:`torch.save` and read back with ``torch.load(weights_only=True)``, which
  unpickles tensors only);
* ``state.json`` is the estimator's ``__getstate__()`` walked recursively. Each value
  carries a type tag; the tags are a closed list (None, bool, int, float including
  NaN/inf, str, list, tuple, set, dict with any of these as keys, NumPy arrays and
  scalars and dtypes, torch tensors, parameters, devices and dtypes, SciPy sparse
  matrices, ``numpy.random.RandomState``) plus objects of a class that must resolve
  inside ``mmfactor`` or be a ``torch.nn.Module`` subclass inside ``torch.nn``
  (rebuilt with ``cls.__new__`` and their state, as pickle would, but without ever
  importing a module outside those packages or calling anything the file names);
  anything else is refused, at save time and at load time. An ``nn.Module`` is stored
  as its own ``__dict__`` (parameters, buffers, submodules, constructor attributes), so
  every network of the models is rebuilt exactly, with no per-model ``_rebuild`` hook;
  tensors shared between attributes stay shared;
* :func:`load` refuses a file whose digest does not match its content (corrupted or
  edited: "tampered"), whose format version it does not know, or that was written by an
  mmfactor whose ``major.minor`` differs from the running one, each with a clear error.

The digest is stored in the file itself, so it detects corruption and edits made
without recomputing it. Against a deliberate attacker who can rewrite the file, pass a
secret ``key`` to both :func:`save` and :func:`load`: the digest is then an HMAC-SHA256
that cannot be recomputed without the key. Either way loading never executes code from
the file; the worst a forged file can do is hold wrong numbers.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import io
import json
import math
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["save", "load", "ModelFormatError", "FORMAT_VERSION"]

FORMAT = "mmfactor-safe"
FORMAT_VERSION = 1
_MEMBERS = ("header.json", "state.json", "tensors.pt")
_ALLOWED_ROOTS = ("mmfactor",)
_TORCH_NN = "torch.nn"


class ModelFormatError(ValueError):
    """A file that :func:`load` refuses: not a model file, tampered, or incompatible."""


# --------------------------------------------------------------------------------------
# Encoding: Python values -> (JSON tree, dict of tensors)
# --------------------------------------------------------------------------------------


def _qualname(cls):
    return f"{cls.__module__}:{cls.__qualname__}"


def _allowed_module(modname):
    return (modname in _ALLOWED_ROOTS or modname.startswith(tuple(r + "." for r in _ALLOWED_ROOTS))
            or modname == _TORCH_NN or modname.startswith(_TORCH_NN + "."))


class _Encoder:
    def __init__(self):
        self.tensors = {}
        self._memo = {}  # id(tensor or array) -> key: shared tensors stay shared
        self._keep = []  # keep the memoised objects alive while encoding

    def _store(self, obj, tensor):
        key = self._memo.get(id(obj))
        if key is None:
            key = str(len(self.tensors))
            self.tensors[key] = tensor.detach().cpu().contiguous().clone()
            self._memo[id(obj)] = key
            self._keep.append(obj)
        return key

    def encode(self, obj, path):
        if obj is None or isinstance(obj, bool | str):
            return obj
        if isinstance(obj, int) and type(obj) is int:
            return obj
        if type(obj) is float:
            if math.isfinite(obj):
                return obj
            return {"__t__": "float", "v": repr(obj)}
        if isinstance(obj, torch.nn.Parameter):
            return {"__t__": "parameter", "key": self._store(obj, obj.data),
                    "requires_grad": bool(obj.requires_grad)}
        if isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided:
                raise TypeError(f"save: {path} is a {obj.layout} torch tensor; only dense "
                                "(strided) tensors are supported.")
            return {"__t__": "tensor", "key": self._store(obj, obj),
                    "requires_grad": bool(obj.requires_grad)}
        if isinstance(obj, np.ndarray):
            return self._ndarray(obj, path)
        if isinstance(obj, np.generic):
            return {"__t__": "npscalar", "dtype": obj.dtype.str,
                    "v": self.encode(obj.item(), path)}
        if isinstance(obj, np.dtype):
            return {"__t__": "npdtype", "v": obj.str}
        if isinstance(obj, torch.device):
            return {"__t__": "device", "v": str(obj)}
        if isinstance(obj, torch.dtype):
            return {"__t__": "torch_dtype", "v": str(obj).removeprefix("torch.")}
        if sp.issparse(obj):
            csr = obj.tocsr()
            return {"__t__": "sparse", "format": obj.format, "shape": list(obj.shape),
                    "array": isinstance(obj, sp.sparray),
                    "data": self._ndarray(csr.data, path),
                    "indices": self._ndarray(csr.indices, path),
                    "indptr": self._ndarray(csr.indptr, path)}
        if isinstance(obj, np.random.RandomState):
            name, keys, pos, has_gauss, gauss = obj.get_state()
            return {"__t__": "RandomState", "keys": self._ndarray(keys, path), "pos": int(pos),
                    "has_gauss": int(has_gauss), "gauss": float(gauss)}
        if type(obj) in (list, tuple, set, frozenset):
            items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
            return {"__t__": type(obj).__name__,
                    "v": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(items)]}
        if type(obj) in (dict, collections.OrderedDict):
            return {"__t__": "dict" if type(obj) is dict else "OrderedDict",
                    "v": [[self.encode(k, f"{path} key"), self.encode(v, f"{path}[{k!r}]")]
                          for k, v in obj.items()]}
        cls = type(obj)
        if isinstance(obj, type) or callable(obj) and not isinstance(obj, torch.nn.Module):
            raise TypeError(
                f"save: {path} is {obj!r} (a {cls.__name__}); functions, classes and other "
                "callables cannot be stored in the safe format. Use pickle/joblib for such "
                "models, or set that parameter to a plain value."
            )
        if not _allowed_module(cls.__module__) or not hasattr(obj, "__dict__"):
            raise TypeError(
                f"save: {path} holds a {cls.__module__}.{cls.__qualname__}, which the safe "
                "format does not store (only plain values, arrays, tensors, sparse matrices "
                "and mmfactor / torch.nn objects). Use pickle/joblib for such models."
            )
        if isinstance(obj, torch.nn.Module) and cls.__module__.startswith(_TORCH_NN) and (
                not issubclass(cls, torch.nn.Module)):
            raise TypeError(f"save: {path}: {cls} is not allowed.")  # pragma: no cover
        state = obj.__getstate__() if isinstance(obj, torch.nn.Module) else vars(obj)
        return {"__t__": "object", "cls": _qualname(cls),
                "state": {k: self.encode(v, f"{path}.{k}") for k, v in state.items()}}

    def _ndarray(self, arr, path):
        if arr.dtype.kind in "US" or (arr.dtype == object and all(
                isinstance(x, str) for x in arr.ravel())):
            return {"__t__": "ndarray_str", "dtype": arr.dtype.str, "shape": list(arr.shape),
                    "v": [str(x) for x in arr.ravel()]}
        if arr.dtype == object:
            raise TypeError(f"save: {path} is a NumPy array of dtype object holding "
                            "non-strings; the safe format stores numeric arrays only.")
        a = np.ascontiguousarray(arr)
        try:
            t = torch.from_numpy(a.view(np.uint8) if a.dtype.kind == "u" and a.itemsize > 1
                                 else a)
        except TypeError as exc:
            raise TypeError(f"save: {path} has dtype {arr.dtype}, which torch cannot "
                            f"store ({exc}).") from None
        return {"__t__": "ndarray", "dtype": a.dtype.str, "shape": list(a.shape),
                "key": self._store(arr, t)}


# --------------------------------------------------------------------------------------
# Decoding: (JSON tree, tensors) -> Python values, refusing every unknown tag or class
# --------------------------------------------------------------------------------------


def _resolve_class(name):
    """A class from ``"module:qualname"``, only inside mmfactor or torch.nn."""
    if not isinstance(name, str) or name.count(":") != 1:
        raise ModelFormatError(f"load: invalid class name {name!r} in the model file.")
    modname, qual = name.split(":")
    if not _allowed_module(modname):
        raise ModelFormatError(
            f"load: the file names the class {modname}.{qual}, outside mmfactor and "
            "torch.nn; refusing to import it."
        )
    if not modname.startswith(_TORCH_NN) and modname.split(".")[0] not in _ALLOWED_ROOTS:
        raise ModelFormatError(f"load: refusing module {modname!r}.")  # pragma: no cover
    # only modules that are already loaded (``import mmfactor`` loads every estimator's
    # module, ``import torch`` every torch.nn module): loading never imports anything
    obj = sys.modules.get(modname)
    try:
        if obj is None:
            raise AttributeError(modname)
        for part in qual.split("."):
            if part.startswith("__") or part == "<locals>":
                raise AttributeError(part)
            obj = getattr(obj, part)
    except AttributeError:
        raise ModelFormatError(
            f"load: the class {modname}.{qual} does not exist in this mmfactor; the file "
            "was written by an incompatible version."
        ) from None
    if not isinstance(obj, type):
        raise ModelFormatError(f"load: {modname}.{qual} is not a class.")
    if not _allowed_module(obj.__module__):
        # a class merely imported into an mmfactor module (pathlib.Path, ...)
        raise ModelFormatError(
            f"load: {modname}.{qual} is {obj.__module__}.{obj.__qualname__}, defined "
            "outside mmfactor and torch.nn; refusing it."
        )
    if modname.startswith(_TORCH_NN) and not issubclass(obj, torch.nn.Module):
        raise ModelFormatError(f"load: {modname}.{qual} is not a torch.nn.Module.")
    return obj


_NP_DTYPE_OK = set("biufcUS?")


class _Decoder:
    def __init__(self, tensors):
        self.tensors = tensors
        self._memo = {}

    def _tensor(self, key):
        if key not in self.tensors:
            raise ModelFormatError(f"load: tensor {key!r} is missing from the model file.")
        return self.tensors[key]

    def _np_dtype(self, s):
        dt = np.dtype(s)
        if dt.kind not in _NP_DTYPE_OK:
            raise ModelFormatError(f"load: refusing NumPy dtype {s!r}.")
        return dt

    def decode(self, node):
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if isinstance(node, list):
            raise ModelFormatError("load: untagged list in the model file.")
        if not isinstance(node, dict) or "__t__" not in node:
            raise ModelFormatError(f"load: untagged value {str(node)[:80]!r} in the model file.")
        tag = node["__t__"]
        method = getattr(self, "_d_" + str(tag), None)
        if method is None:
            raise ModelFormatError(f"load: unknown value type {tag!r} in the model file.")
        return method(node)

    def _d_float(self, node):
        v = node["v"]
        if v not in ("nan", "inf", "-inf"):
            raise ModelFormatError(f"load: invalid float {v!r}.")
        return float(v)

    def _d_parameter(self, node):
        key = ("p", node["key"])
        if key not in self._memo:
            self._memo[key] = torch.nn.Parameter(self._tensor(node["key"]),
                                                 requires_grad=bool(node["requires_grad"]))
        return self._memo[key]

    def _d_tensor(self, node):
        key = ("t", node["key"])
        if key not in self._memo:
            t = self._tensor(node["key"])
            self._memo[key] = t.requires_grad_(True) if node["requires_grad"] else t
        return self._memo[key]

    def _d_ndarray(self, node):
        key = ("a", node["key"])
        if key not in self._memo:
            dt = self._np_dtype(node["dtype"])
            arr = self._tensor(node["key"]).numpy()
            if dt.kind == "u" and dt.itemsize > 1:
                arr = arr.view(dt)
            arr = arr.reshape(node["shape"])
            if arr.dtype != dt:
                raise ModelFormatError(f"load: array dtype {arr.dtype} != declared {dt}.")
            self._memo[key] = arr
        return self._memo[key]

    def _d_ndarray_str(self, node):
        dt = np.dtype(node["dtype"])
        if dt.kind not in "USO":
            raise ModelFormatError(f"load: refusing string dtype {dt}.")
        if not all(isinstance(x, str) for x in node["v"]):
            raise ModelFormatError("load: a string array holds non-strings.")
        return np.array(node["v"], dtype=dt).reshape(node["shape"])

    def _d_npscalar(self, node):
        return self._np_dtype(node["dtype"]).type(self.decode(node["v"]))

    def _d_npdtype(self, node):
        return self._np_dtype(node["v"])

    def _d_device(self, node):
        return torch.device(str(node["v"]))

    def _d_torch_dtype(self, node):
        dt = getattr(torch, str(node["v"]), None)
        if not isinstance(dt, torch.dtype):
            raise ModelFormatError(f"load: unknown torch dtype {node['v']!r}.")
        return dt

    def _d_sparse(self, node):
        data, indices, indptr = (self.decode(node[k]) for k in ("data", "indices", "indptr"))
        cls = sp.csr_array if node["array"] else sp.csr_matrix
        m = cls((data, indices, indptr), shape=tuple(node["shape"]))
        if node["format"] not in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia"):
            raise ModelFormatError(f"load: unknown sparse format {node['format']!r}.")
        return m.asformat(node["format"])

    def _d_RandomState(self, node):
        rs = np.random.RandomState()
        rs.set_state(("MT19937", self.decode(node["keys"]), int(node["pos"]),
                      int(node["has_gauss"]), float(node["gauss"])))
        return rs

    def _d_list(self, node):
        return [self.decode(v) for v in node["v"]]

    def _d_tuple(self, node):
        return tuple(self.decode(v) for v in node["v"])

    def _d_set(self, node):
        return {self.decode(v) for v in node["v"]}

    def _d_frozenset(self, node):
        return frozenset(self.decode(v) for v in node["v"])

    def _d_dict(self, node, factory=dict):
        return factory((self.decode(k), self.decode(v)) for k, v in node["v"])

    def _d_OrderedDict(self, node):
        return self._d_dict(node, collections.OrderedDict)

    def _d_object(self, node):
        cls = _resolve_class(node["cls"])
        state = {str(k): self.decode(v) for k, v in node["state"].items()}
        obj = cls.__new__(cls)
        if hasattr(cls, "__setstate__"):  # nn.Module and classes that define one
            obj.__setstate__(state)
        else:
            obj.__dict__.update(state)
        return obj


# --------------------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------------------


def _digest(parts, key):
    if key is None:
        h = hashlib.sha256()
        for p in parts:
            h.update(hashlib.sha256(p).digest())
        return "sha256:" + h.hexdigest()
    if isinstance(key, str):
        key = key.encode()
    mac = hmac.new(key, digestmod="sha256")
    for p in parts:
        mac.update(hashlib.sha256(p).digest())
    return "hmac-sha256:" + mac.hexdigest()


def _version_key(version):
    nums = []
    for part in str(version).split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        nums.append(int(digits) if digits else 0)
    return tuple(nums)


def save(estimator, path, *, key=None):
    """Save a (fitted or not) mmfactor estimator in the safe format.

    Parameters
    ----------
    estimator : estimator
        An mmfactor estimator (or any object of a class defined in mmfactor).
    path : str or path-like
        The file to write (conventionally ``*.mmf``); written atomically (a temporary
        file in the same folder, then renamed), so a failed save never leaves a
        half-written file.
    key : str or bytes, optional
        A secret: the file's digest becomes an HMAC-SHA256 that :func:`load` checks with
        the same key (protection against deliberate tampering, not only corruption).

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    TypeError
        The estimator holds a value the safe format does not store (a function, an
        object of a class outside mmfactor/torch.nn); the message names its attribute.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from mmfactor import CMF, load, save
    >>> model = CMF(n_components=2, random_state=0).fit(np.random.RandomState(0).rand(8, 4))
    >>> path = save(model, os.path.join(tempfile.mkdtemp(), "cmf.mmf"))
    >>> np.allclose(load(path).factors_["sample"], model.factors_["sample"])
    True
    """
    from . import __version__

    cls = type(estimator)
    if cls.__module__.split(".")[0] not in _ALLOWED_ROOTS:
        raise TypeError(f"save: {cls.__module__}.{cls.__qualname__} is not an mmfactor "
                        "estimator; the safe format stores mmfactor estimators only.")
    state = estimator.__getstate__() if hasattr(estimator, "__getstate__") else vars(estimator)
    if not isinstance(state, dict):
        raise TypeError(f"save: {cls.__name__}.__getstate__() returned a "
                        f"{type(state).__name__}; expected a dict.")
    enc = _Encoder()
    tree = {k: enc.encode(v, f"{cls.__name__}.{k}") for k, v in state.items()}
    state_bytes = json.dumps({"cls": _qualname(cls), "state": tree}, allow_nan=False,
                             separators=(",", ":")).encode()
    buf = io.BytesIO()
    torch.save(enc.tensors, buf)
    tensor_bytes = buf.getvalue()
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mmfactor_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "class": _qualname(cls),
        "digest": _digest([state_bytes, tensor_bytes], key),
    }
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".",
                               prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("header.json", json.dumps(header, indent=1))
            zf.writestr("state.json", state_bytes)
            zf.writestr("tensors.pt", tensor_bytes)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path, *, key=None):
    """Load an estimator written by :func:`save`, without executing code from the file.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    key : str or bytes, optional
        The secret given to :func:`save`, if any.

    Returns
    -------
    estimator
        The estimator, its tensors on the CPU; the devices it was fitted on are kept in
        ``devices_`` where present, replaced by the CPU when they are not available.

    Raises
    ------
    ModelFormatError
        (a ``ValueError``) The file is not an mmfactor model file, its content does not
        match its digest (corrupted or tampered with), it needs a key or the key is
        wrong, it was written by an incompatible format or mmfactor version, or it names
        a class or value type that is not allowed.

    See Also
    --------
    save : Write the file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from mmfactor import DFMF, load
    >>> X = np.random.RandomState(0).rand(6, 3)
    >>> model = DFMF(n_components=2, max_iter=5, random_state=0).fit(X)
    >>> path = model.save(os.path.join(tempfile.mkdtemp(), "dfmf.mmf"))
    >>> type(load(path)).__name__
    'DFMF'
    """
    from . import __version__

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if not set(_MEMBERS) <= names:
                raise ModelFormatError(
                    f"load: {path} is not an mmfactor model file (members {sorted(names)}; "
                    f"expected {list(_MEMBERS)})."
                )
            header_bytes, state_bytes, tensor_bytes = (zf.read(m) for m in _MEMBERS)
    except zipfile.BadZipFile:
        raise ModelFormatError(
            f"load: {path} is not an mmfactor model file (not a zip archive written by "
            "mmfactor.save; a pickle/joblib file is loaded with joblib.load, only if you "
            "trust it)."
        ) from None
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise ModelFormatError(f"load: {path} has an unreadable header.") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFormatError(f"load: {path} is not an mmfactor model file.")
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"load: {path} uses format version {header.get('format_version')!r}; this "
            f"mmfactor {__version__} reads version {FORMAT_VERSION} only. Load it with the "
            f"mmfactor version that wrote it ({header.get('mmfactor_version')})."
        )
    written = header.get("mmfactor_version")
    if _version_key(written) != _version_key(__version__):
        raise ModelFormatError(
            f"load: {path} was written by mmfactor {written}, incompatible with the "
            f"running mmfactor {__version__} (the major.minor versions differ). Load it "
            f"with mmfactor {written} and refit, or refit with {__version__}."
        )
    digest = str(header.get("digest", ""))
    if digest.startswith("hmac-sha256:") and key is None:
        raise ModelFormatError(f"load: {path} is signed with a key (HMAC-SHA256); pass "
                               "key=... to load it.")
    if digest.startswith("sha256:") and key is not None:
        raise ModelFormatError(f"load: {path} was saved without a key but key= was given; "
                               "refusing an unsigned file where a signed one is expected.")
    if not hmac.compare_digest(digest, _digest([state_bytes, tensor_bytes], key)):
        raise ModelFormatError(
            f"load: {path} does not match its {digest.split(':')[0].upper()} digest: the "
            "file was corrupted or tampered with" + (" (or the key is wrong)" if key else "")
            + "; refusing to load it."
        )
    try:
        tensors = torch.load(io.BytesIO(tensor_bytes), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the weights-only unpickler refused it
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0][:200]
        raise ModelFormatError(f"load: the tensors of {path} are not plain tensors; "
                               f"torch.load(weights_only=True) refused them ({first}).") from None
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor)
                                                for t in tensors.values()):
        raise ModelFormatError(f"load: the tensors of {path} are not a dict of tensors.")
    try:
        payload = json.loads(state_bytes)
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"load: {path} holds a malformed state "
                               f"({type(exc).__name__}).") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state"), dict):
        raise ModelFormatError(f"load: {path} holds a malformed state.")
    if payload.get("cls") != header.get("class"):
        raise ModelFormatError(f"load: {path}: header and state name different classes.")
    cls = _resolve_class(payload["cls"])
    from sklearn.base import BaseEstimator

    if cls.__module__.split(".")[0] not in _ALLOWED_ROOTS or not issubclass(cls,
                                                                             BaseEstimator):
        raise ModelFormatError(f"load: {payload['cls']} is not an mmfactor estimator.")
    dec = _Decoder(tensors)
    try:
        state = {str(k): dec.decode(v) for k, v in payload["state"].items()}
        est = cls.__new__(cls)
        est.__setstate__(state)
    except ModelFormatError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError,
            RecursionError) as exc:
        raise ModelFormatError(
            f"load: {path} holds a malformed state ({type(exc).__name__}: {exc})."
        ) from None
    return est
