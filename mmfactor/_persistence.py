"""A safe file format for fitted estimators: :func:`save` and :func:`load`.

``pickle``/``joblib`` work for every mmfactor estimator (tensors go to the CPU first, so a
model fitted on CUDA unpickles on a machine without a GPU), but unpickling a file runs
whatever code the file names: never unpickle a model you did not write yourself.
:func:`save` writes a format that loading cannot turn into code execution, and
:func:`load` treats every file as untrusted input:

* one zip archive with exactly three *stored* (uncompressed) members: ``header.json``
  (format and mmfactor versions, the class, the digest), ``state.json`` (every value that
  is not an array, as typed JSON) and ``tensors.safetensors`` (every array and tensor, in
  the `safetensors <https://huggingface.co/docs/safetensors>`_ format: a JSON header of
  names, dtypes, shapes and offsets followed by raw bytes; reading it runs no
  unpickler, so the format cannot execute code on any torch version, unlike
  ``torch.load(weights_only=True)``, which had code-execution bypasses below torch 2.6
  and 2.10);
* ``state.json`` is the estimator's ``__getstate__()`` walked recursively. Each value
  carries a type tag; the tags are a closed list (None, bool, int, float including
  NaN/inf, str, list, tuple, set, dict with any of these as keys, NumPy arrays and
  scalars and dtypes, torch tensors, parameters, devices and dtypes, SciPy sparse
  matrices, ``numpy.random.RandomState``) plus objects of an explicit list of classes:
  the estimators, networks and records defined in ``mmfactor``, and the ``torch.nn``
  layers the models are built from. A class is resolved to the object and its own
  ``__module__``/``__qualname__`` must be the name written in the file and be on the
  list (a name re-exported through another module is refused); objects are rebuilt
  with ``cls.__new__`` and their state, as pickle would, but without importing a module
  or calling anything the file names. An ``nn.Module`` is stored as its own
  ``__dict__``, so every network is rebuilt exactly; tensors shared between attributes
  stay shared;
* nothing is allocated from a size the file declares without a bound: the archive
  members must be stored, not compressed (no decompression bomb), and lie inside the
  file; arrays and tensors take their bytes from the file (their dtype must be one the
  writer produces; their shape must match those bytes); sparse matrices have their
  index arrays checked against their shape before any matrix is built; string arrays
  and format conversions are charged to a budget proportional to the file size;
* :func:`load` refuses a file whose digest does not match its content (corrupted or
  edited: "tampered"), whose format version it does not know, or that was written by an
  mmfactor whose ``major.minor`` differs from the running one, each with a clear error.

The digest covers the header's fields as well as the state and the tensors, and is
stored in the file itself, so it detects corruption and edits made without recomputing
it. Against a deliberate attacker who can rewrite the file, pass a secret ``key`` (a
non-empty string or bytes) to both :func:`save` and :func:`load`: the digest is then an
HMAC-SHA256 that cannot be recomputed without the key. Either way loading never executes
code from the file; the worst a forged file can do is hold wrong numbers, or be refused.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import math
import os
import re
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["save", "load", "ModelFormatError", "FORMAT_VERSION"]

FORMAT = "mmfactor-safe"
FORMAT_VERSION = 2  # 1 stored the tensors with torch.save (a pickle): no longer read
_MEMBERS = ("header.json", "state.json", "tensors.safetensors")
_ALLOWED_ROOTS = ("mmfactor",)
_TORCH_NN = "torch.nn"
_MAX_HEADER = 1 << 16  # bytes of header.json
# the torch.nn classes the models are built from (their own module:qualname)
_TORCH_NN_CLASSES = frozenset(
    f"torch.nn.modules.{mod}:{name}" for mod, names in {
        "linear": ("Linear", "Identity", "Bilinear"),
        "conv": ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                 "ConvTranspose3d"),
        "pooling": ("MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d",
                    "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
                    "AdaptiveAvgPool3d"),
        "upsampling": ("Upsample",),
        "container": ("Sequential", "ModuleList", "ModuleDict", "ParameterList",
                      "ParameterDict"),
        "activation": ("ReLU", "Tanh", "Sigmoid", "ELU", "GELU", "LeakyReLU", "SELU",
                       "SiLU", "Softplus", "Softmax", "LogSoftmax", "Hardtanh", "ReLU6",
                       "PReLU", "Mish"),
        "rnn": ("LSTMCell", "GRUCell", "RNNCell", "LSTM", "GRU", "RNN"),
        "dropout": ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d"),
        "batchnorm": ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"),
        "normalization": ("LayerNorm", "GroupNorm"),
        "sparse": ("Embedding",),
        "flatten": ("Flatten", "Unflatten"),
    }.items() for name in names)
# plain records of mmfactor that estimators hold (besides estimators and nn.Modules)
_MMFACTOR_RECORDS = frozenset({"mmfactor._multimodal:RelationSpec",
                               "mmfactor._multimodal:View",
                               "mmfactor.factorization._cp:SparseTensor"})
# the dtypes the writer produces (native little-endian NumPy, and torch)
_NP_DTYPES = frozenset(np.dtype(t).str for t in (
    "?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"))
_TORCH_DTYPES = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                           torch.int64, torch.float16, torch.bfloat16, torch.float32,
                           torch.float64})
_STR_DTYPE = re.compile(r"^[<>|=]?[US]\d{1,9}$|^\|O$")
_DEVICE = re.compile(r"^(cpu|cuda|mps)(:\d{1,4})?$")


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
            if obj.layout != torch.strided or obj.dtype not in _TORCH_DTYPES:
                raise TypeError(f"save: {path} is a {obj.layout} {obj.dtype} torch tensor; "
                                "only dense (strided) real or boolean tensors are "
                                "supported.")
            return {"__t__": "tensor", "key": self._store(obj, obj),
                    "requires_grad": bool(obj.requires_grad)}
        if isinstance(obj, np.ndarray):
            return self._ndarray(obj, path)
        if isinstance(obj, np.generic):
            if obj.dtype.str not in _NP_DTYPES:
                raise TypeError(f"save: {path} is a NumPy {obj.dtype} scalar; the safe "
                                "format stores boolean, integer and real scalars only.")
            return {"__t__": "npscalar", "dtype": obj.dtype.str,
                    "v": self.encode(obj.item(), path)}
        if isinstance(obj, np.dtype):
            return {"__t__": "npdtype", "v": obj.str}
        if isinstance(obj, torch.device):
            return {"__t__": "device", "v": str(obj)}
        if isinstance(obj, torch.dtype):
            return {"__t__": "torch_dtype", "v": str(obj).removeprefix("torch.")}
        if sp.issparse(obj):
            csr = obj.tocsr(copy=True)
            csr.sum_duplicates()  # a copy: the estimator's matrix is left as it is
            extra = {"blocksize": list(obj.blocksize)} if obj.format == "bsr" else {}
            return {"__t__": "sparse", "format": obj.format, "shape": list(obj.shape),
                    "array": isinstance(obj, sp.sparray), **extra,
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
        if a.dtype.kind in "biuf" and not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        if a.dtype.str not in _NP_DTYPES:
            raise TypeError(f"save: {path} has dtype {arr.dtype}; the safe format stores "
                            "boolean, integer and real arrays up to 64 bits.")
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


def _allowed_class(obj):
    """Whether a class, by its own module and qualified name, is on the explicit list."""
    from sklearn.base import BaseEstimator

    own = _qualname(obj)
    if own in _TORCH_NN_CLASSES:
        return True
    if obj.__module__.split(".")[0] not in _ALLOWED_ROOTS or "<locals>" in obj.__qualname__:
        return False
    return own in _MMFACTOR_RECORDS or issubclass(obj, torch.nn.Module | BaseEstimator)


# the mmfactor packages whose classes a model file may name: imported by load itself (a
# fixed list; ``import mmfactor`` imports them lazily), never because a file names them
_MODEL_PACKAGES = ("mmfactor._multimodal", "mmfactor.factorization", "mmfactor.neural")


def _import_model_packages():
    import importlib

    for name in _MODEL_PACKAGES:
        importlib.import_module(name)


def _resolve_class(name):
    """A class from ``"module:qualname"``: the class defined there, and on the list.

    Only modules that are already loaded are looked in (:func:`load` imports the
    estimators' packages, a fixed list; ``import torch`` loads every torch.nn module):
    a name in the file never makes anything be imported. The object found must be a
    class whose own ``__module__:__qualname__`` is ``name`` (so a name re-exported by
    another module, ``mmfactor._persistence:torch.x``, is refused) and that is on the
    explicit list (:func:`_allowed_class`).
    """
    if not isinstance(name, str) or name.count(":") != 1:
        raise ModelFormatError(f"load: invalid class name {str(name)[:80]!r} in the model file.")
    modname, qual = name.split(":")
    if not _allowed_module(modname):
        raise ModelFormatError(
            f"load: the file names the class {modname}.{qual}, outside mmfactor and "
            "torch.nn; refusing to import it."
        )
    obj = sys.modules.get(modname)
    try:
        if obj is None:
            raise AttributeError(modname)
        for part in qual.split("."):
            if part.startswith("_") and part.endswith("_") or part == "<locals>":
                raise AttributeError(part)
            obj = getattr(obj, part)
    except AttributeError:
        raise ModelFormatError(
            f"load: the class {modname}.{qual} does not exist in this mmfactor; the file "
            "was written by an incompatible version."
        ) from None
    if not isinstance(obj, type):
        raise ModelFormatError(f"load: {modname}.{qual} is not a class.")
    if _qualname(obj) != name:
        # a class merely imported into an allowed module (pathlib.Path, torch classes
        # reached through ``mmfactor._persistence:torch...``)
        raise ModelFormatError(
            f"load: {modname}.{qual} is {obj.__module__}.{obj.__qualname__}, a name "
            "re-exported from elsewhere; the file must name a class where it is defined, "
            "and only the allowed classes; refusing it."
        )
    if not _allowed_class(obj):
        raise ModelFormatError(
            f"load: {modname}.{qual} is not one of the classes a model file may hold "
            "(mmfactor estimators, networks and records, and the torch.nn layers they "
            "use); refusing it."
        )
    return obj


def _shape(value, what):
    if (not isinstance(value, list) or len(value) > 32 or not all(
            type(s) is int and 0 <= s < 2**62 for s in value)):
        raise ModelFormatError(f"load: invalid shape {str(value)[:80]} for {what}.")
    return tuple(value)


class _Decoder:
    """Rebuilds values from the JSON tree; every allocation the tree can ask for beyond
    the bytes of the file is charged to ``budget`` (bytes)."""

    def __init__(self, tensors, budget):
        self.tensors = tensors
        self.budget = budget
        self._memo = {}

    def _charge(self, nbytes, what):
        if nbytes > self.budget:
            raise ModelFormatError(
                f"load: {what} would allocate {nbytes:.3g} bytes, out of proportion to the "
                "file's size; refusing it (a forged size).")
        self.budget -= nbytes

    def _tensor(self, key):
        if not isinstance(key, str) or key not in self.tensors:
            raise ModelFormatError(f"load: tensor {str(key)[:40]!r} is missing from the "
                                   "model file.")
        return self.tensors[key]

    def _np_dtype(self, s):
        if not isinstance(s, str) or s not in _NP_DTYPES:
            raise ModelFormatError(f"load: refusing NumPy dtype {str(s)[:40]!r} (the writer "
                                   "stores boolean, integer and real dtypes only).")
        return np.dtype(s)

    def decode(self, node):
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if isinstance(node, list):
            raise ModelFormatError("load: untagged list in the model file.")
        if not isinstance(node, dict) or "__t__" not in node:
            raise ModelFormatError(f"load: untagged value {str(node)[:80]!r} in the model file.")
        tag = node["__t__"]
        method = getattr(self, "_d_" + tag, None) if isinstance(tag, str) and tag.isalnum() \
            or tag in ("npdtype", "torch_dtype", "ndarray_str") else None
        if method is None:
            raise ModelFormatError(f"load: unknown value type {str(tag)[:40]!r} in the model "
                                   "file.")
        return method(node)

    def _d_float(self, node):
        v = node["v"]
        if v not in ("nan", "inf", "-inf"):
            raise ModelFormatError(f"load: invalid float {str(v)[:40]!r}.")
        return float(v)

    def _d_parameter(self, node):
        key = ("p", node["key"])
        if key not in self._memo:
            t = self._tensor(node["key"])
            if not t.is_floating_point():
                raise ModelFormatError(f"load: parameter {node['key']!r} has dtype {t.dtype}.")
            self._memo[key] = torch.nn.Parameter(t, requires_grad=bool(node["requires_grad"]))
        return self._memo[key]

    def _d_tensor(self, node):
        key = ("t", node["key"])
        if key not in self._memo:
            t = self._tensor(node["key"])
            grad = bool(node["requires_grad"])
            if grad and not t.is_floating_point():
                raise ModelFormatError(f"load: tensor {node['key']!r} of dtype {t.dtype} "
                                       "cannot require grad.")
            self._memo[key] = t.requires_grad_(True) if grad else t
        return self._memo[key]

    def _d_ndarray(self, node):
        key = ("a", node["key"])
        if key not in self._memo:
            dt = self._np_dtype(node["dtype"])
            shape = _shape(node["shape"], "an array")
            t = self._tensor(node["key"])
            if t.dtype == torch.bfloat16:
                raise ModelFormatError("load: an array stored as bfloat16.")
            arr = t.numpy()
            if dt.kind == "u" and dt.itemsize > 1:
                if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size % dt.itemsize:
                    raise ModelFormatError(f"load: array bytes do not hold {dt} values.")
                arr = arr.view(dt)
            if arr.dtype != dt:
                raise ModelFormatError(f"load: array dtype {arr.dtype} != declared {dt}.")
            if math.prod(shape) != arr.size:
                raise ModelFormatError(f"load: array of {arr.size} values declared with "
                                       f"shape {shape}.")
            self._memo[key] = arr.reshape(shape)
        return self._memo[key]

    def _d_ndarray_str(self, node):
        s, v = node["dtype"], node["v"]
        if not isinstance(s, str) or not _STR_DTYPE.match(s):
            raise ModelFormatError(f"load: refusing string dtype {str(s)[:40]!r}.")
        shape = _shape(node["shape"], "a string array")
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ModelFormatError("load: a string array holds non-strings.")
        if math.prod(shape) != len(v):
            raise ModelFormatError(f"load: {len(v)} strings declared with shape {shape}.")
        dt = np.dtype(s)
        self._charge(len(v) * (dt.itemsize or 8), f"a string array of dtype {dt}")
        return np.array(v, dtype=dt).reshape(shape)

    def _d_npscalar(self, node):
        dt = self._np_dtype(node["dtype"])
        v = node["v"]
        if isinstance(v, dict):
            v = self._d_float(v)
        if not isinstance(v, bool | int | float):
            raise ModelFormatError(f"load: invalid NumPy scalar {str(v)[:40]!r}.")
        try:
            return dt.type(v)
        except OverflowError:
            raise ModelFormatError(f"load: {str(v)[:40]} does not fit {dt}.") from None

    def _d_npdtype(self, node):
        s = node["v"]
        if isinstance(s, str) and _STR_DTYPE.match(s):
            return np.dtype(s)
        return self._np_dtype(s)

    def _d_device(self, node):
        v = node["v"]
        if not isinstance(v, str) or not _DEVICE.match(v):
            raise ModelFormatError(f"load: invalid device {str(v)[:40]!r}.")
        return torch.device(v)

    def _d_torch_dtype(self, node):
        dt = getattr(torch, str(node["v"]), None) if str(node["v"]).isidentifier() else None
        if dt not in _TORCH_DTYPES:
            raise ModelFormatError(f"load: refusing torch dtype {str(node['v'])[:40]!r}.")
        return dt

    def _d_sparse(self, node):
        fmt = node["format"]
        if fmt not in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia"):
            raise ModelFormatError(f"load: unknown sparse format {str(fmt)[:40]!r}.")
        shape = _shape(node["shape"], "a sparse matrix")
        data, indices, indptr = (self.decode(node[k]) for k in ("data", "indices", "indptr"))
        if len(shape) != 2 or not all(isinstance(a, np.ndarray) and a.ndim == 1
                                      for a in (data, indices, indptr)):
            raise ModelFormatError("load: a malformed sparse matrix.")
        if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
            raise ModelFormatError("load: sparse index arrays must be integers.")
        n_rows, n_cols = shape
        nnz = len(data)
        # the CSR invariants, checked before any matrix is built: SciPy and torch index
        # with these arrays without bounds checks
        if (len(indptr) != n_rows + 1 or len(indices) != nnz or indptr[0] != 0
                or indptr[-1] != nnz or (np.diff(indptr.astype(np.int64)) < 0).any()
                or (nnz and (indices.min() < 0 or indices.max() >= n_cols))):
            raise ModelFormatError(
                f"load: a sparse matrix of shape {shape} has index arrays that do not fit "
                "it (indptr must run from 0 to nnz without decreasing, column indices must "
                "lie in [0, n_cols)); refusing it.")
        if max(shape) >= 2**31 and (indices.dtype.itemsize < 8 or indptr.dtype.itemsize < 8):
            raise ModelFormatError("load: sparse indices too narrow for the shape.")
        cls = sp.csr_array if node["array"] else sp.csr_matrix
        m = cls((data, indices, indptr), shape=shape)
        item = max(data.dtype.itemsize, 1)
        if fmt == "csc":
            self._charge(8 * (n_cols + 1), "a sparse matrix's column pointers")
        elif fmt == "dia":
            rows = np.repeat(np.arange(n_rows), np.diff(indptr))
            n_diag = len(np.unique(indices.astype(np.int64) - rows))
            self._charge(n_diag * n_cols * item, "a DIA sparse matrix")
        elif fmt == "bsr":
            bs = node.get("blocksize")
            if (not isinstance(bs, list) or len(bs) != 2 or not all(
                    type(b) is int and b >= 1 for b in bs) or n_rows % bs[0] or n_cols % bs[1]):
                raise ModelFormatError(f"load: invalid BSR blocksize {str(bs)[:40]}.")
            self._charge(nnz * bs[0] * bs[1] * item, "a BSR sparse matrix")
            return m.tobsr(blocksize=tuple(bs))
        return m.asformat(fmt)

    def _d_RandomState(self, node):
        keys = self.decode(node["keys"])
        if (not isinstance(keys, np.ndarray) or keys.shape != (624,) or keys.dtype != np.uint32
                or type(node["pos"]) is not int or not 0 <= node["pos"] <= 624):
            raise ModelFormatError("load: a malformed RandomState.")
        rs = np.random.RandomState()
        rs.set_state(("MT19937", keys, node["pos"], int(node["has_gauss"]),
                      float(node["gauss"])))
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
        if not isinstance(node["state"], dict):
            raise ModelFormatError("load: an object's state is not a dict.")
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


def _check_key(key, where):
    if key is None:
        return None
    if not isinstance(key, str | bytes | bytearray):
        raise TypeError(f"{where}: key must be a non-empty str or bytes; got "
                        f"{type(key).__name__}.")
    if len(key) == 0:
        raise ValueError(f"{where}: key is empty; an empty key signs nothing (anyone can "
                         "compute the HMAC). Pass a secret, or key=None for an unsigned file.")
    return key.encode() if isinstance(key, str) else bytes(key)


def _signed_header(header):
    """The header's fields, except the digest, as canonical bytes (they are signed too)."""
    return json.dumps({k: v for k, v in header.items() if k != "digest"}, sort_keys=True,
                      separators=(",", ":")).encode()


def _digest(parts, key):
    """The digest of ``parts`` (byte strings): SHA-256, or HMAC-SHA256 with ``key``."""
    if isinstance(key, str):
        key = key.encode()
    h = hashlib.sha256() if key is None else hmac.new(key, digestmod="sha256")
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return ("sha256:" if key is None else "hmac-sha256:") + h.hexdigest()


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
    from safetensors.torch import save as save_tensors

    from . import __version__

    key = _check_key(key, "save")
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
    tensor_bytes = save_tensors(enc.tensors)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mmfactor_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "class": _qualname(cls),
    }
    header["digest"] = _digest([_signed_header(header), state_bytes, tensor_bytes], key)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".",
                               prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("header.json", json.dumps(header, indent=1))
            zf.writestr("state.json", state_bytes)
            zf.writestr("tensors.safetensors", tensor_bytes)
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

    key = _check_key(key, "load")
    path = Path(path)
    _import_model_packages()
    header_bytes, state_bytes, tensor_bytes = _read_members(path)
    try:
        header = json.loads(header_bytes)
    except (ValueError, RecursionError):
        raise ModelFormatError(f"load: {path} has an unreadable header.") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFormatError(f"load: {path} is not an mmfactor model file.")
    if header.get("format_version") != FORMAT_VERSION:
        old = header.get("format_version") == 1
        raise ModelFormatError(
            f"load: {path} uses format version {str(header.get('format_version'))[:20]}; "
            f"this mmfactor {__version__} reads version {FORMAT_VERSION} only"
            + (" (version 1 stored its tensors as a torch pickle, which is no longer "
               "read for safety; load it with the mmfactor that wrote it, only if you "
               "trust it, and save it again)" if old else
               f". Load it with the mmfactor version that wrote it "
               f"({str(header.get('mmfactor_version'))[:20]})") + "."
        )
    written = str(header.get("mmfactor_version"))[:40]
    if _version_key(written) != _version_key(__version__):
        raise ModelFormatError(
            f"load: {path} was written by mmfactor {written}, incompatible with the "
            f"running mmfactor {__version__} (the major.minor versions differ). Load it "
            f"with mmfactor {written} and refit, or refit with {__version__}."
        )
    digest = header.get("digest")
    if not isinstance(digest, str):
        raise ModelFormatError(f"load: {path} has no digest.")
    if digest.startswith("hmac-sha256:") and key is None:
        raise ModelFormatError(f"load: {path} is signed with a key (HMAC-SHA256); pass "
                               "key=... to load it.")
    if not digest.startswith("hmac-sha256:") and key is not None:
        raise ModelFormatError(f"load: {path} was saved without a key but key= was given; "
                               "refusing an unsigned file where a signed one is expected.")
    expected = _digest([_signed_header(header), state_bytes, tensor_bytes], key)
    if not hmac.compare_digest(digest.encode(), expected.encode()):
        raise ModelFormatError(
            f"load: {path} does not match its {expected.split(':')[0].upper()} digest: the "
            "file (its header, state or tensors) was corrupted or tampered with"
            + (" (or the key is wrong)" if key else "") + "; refusing to load it."
        )
    tensors = _read_tensors(path, tensor_bytes)
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
    # what decoding may allocate beyond the file's own bytes (strings, conversions)
    dec = _Decoder(tensors, budget=16 * (len(state_bytes) + len(tensor_bytes)) + (1 << 24))
    try:
        state = {str(k): dec.decode(v) for k, v in payload["state"].items()}
        est = cls.__new__(cls)
        est.__setstate__(state)
    except ModelFormatError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError,
            RecursionError, OverflowError, MemoryError) as exc:
        raise ModelFormatError(
            f"load: {path} holds a malformed state ({type(exc).__name__}: "
            f"{str(exc)[:200]})."
        ) from None
    return est


def _read_members(path):
    """The three members' bytes, refusing anything :func:`save` never writes.

    Every member must be stored (not compressed: a compressed member is a decompression
    bomb in waiting), appear once, and lie within the file; no other member may exist.
    """
    not_model = (f"load: {path} is not an mmfactor model file (not a zip archive written "
                 "by mmfactor.save; a pickle/joblib file is loaded with joblib.load, only if "
                 "you trust it).")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a device (/dev/zero), a FIFO: never read
            raise ModelFormatError(f"load: {path} is not a regular file; refusing to read it.")
        size = st.st_size
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if sorted(names) != sorted(_MEMBERS):
                if "tensors.pt" in names:
                    raise ModelFormatError(
                        f"load: {path} uses format version 1 (tensors stored as a torch "
                        "pickle), which this mmfactor no longer reads for safety; load it "
                        "with the mmfactor that wrote it, only if you trust it, and save it "
                        "again.")
                raise ModelFormatError(
                    f"load: {path} is not an mmfactor model file (members "
                    f"{[n[:40] for n in names[:10]]}; expected exactly {list(_MEMBERS)}).")
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ModelFormatError(
                        f"load: {path}: member {info.filename} is compressed (method "
                        f"{info.compress_type}); mmfactor.save stores members uncompressed, "
                        "so this file was not written by it; refusing to decompress it.")
                if (info.file_size != info.compress_size or info.file_size > size
                        or info.filename == "header.json" and info.file_size > _MAX_HEADER):
                    raise ModelFormatError(
                        f"load: {path}: member {info.filename} declares {info.file_size} "
                        f"bytes in a file of {size}; refusing it.")
            return tuple(zf.read(m) for m in _MEMBERS)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError) as exc:
        if isinstance(exc, ModelFormatError):
            raise
        if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
            raise
        raise ModelFormatError(not_model) from None


def _read_tensors(path, tensor_bytes):
    """The tensors, from safetensors bytes: no unpickler; dtypes the writer produces."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    try:
        tensors = load_tensors(tensor_bytes)
    except (SafetensorError, ValueError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ModelFormatError(f"load: the tensors of {path} are not a valid safetensors "
                               f"block ({first}).") from None
    bad = {k: t.dtype for k, t in tensors.items() if t.dtype not in _TORCH_DTYPES}
    if bad:
        raise ModelFormatError(f"load: the tensors of {path} have dtypes the writer never "
                               f"produces ({str(bad)[:100]}); refusing them.")
    return tensors
