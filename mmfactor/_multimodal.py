"""The multimodal input contract: :class:`MultiModal`, view validation and relation schemas.

Everything an estimator needs to know about its input goes through this module:

* :class:`MultiModal` is a row-aligned container of named views that scikit-learn's
  splitters can index like an array;
* :func:`check_views` turns whatever the user passed (a ``MultiModal``, a list or tuple
  of arrays, one array) into validated :class:`View` objects, without copying or
  densifying the user's data and before any training starts;
* :func:`resolve_relations` turns a ``relations`` schema into one :class:`RelationSpec`
  per matrix for the collective models.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["MultiModal", "View", "check_views", "resolve_relations", "RelationSpec"]


def _is_pandas(view):
    """A pandas DataFrame or Series (duck-typed: pandas is not a dependency)."""
    return hasattr(view, "iloc") and hasattr(view, "index")


def _n_rows(view):
    if _is_pandas(view):
        return len(view)
    if hasattr(view, "__array__") and not isinstance(view, np.ndarray | torch.Tensor):
        view = np.asarray(view)
    if sp.issparse(view) or isinstance(view, np.ndarray | torch.Tensor):
        return view.shape[0] if view.ndim >= 1 else None
    return len(view)


def _take_rows(view, key):
    """Rows ``key`` of one view (NumPy, SciPy sparse, torch, pandas or a sequence such as
    texts), by position."""
    if isinstance(view, torch.Tensor):
        if isinstance(key, slice):
            return view[key]
        key = np.asarray(key)
        return view[torch.as_tensor(key, device=view.device)]
    if sp.issparse(view):
        return sp.csr_array(view)[key] if isinstance(view, sp.sparray) else sp.csr_matrix(view)[key]
    if _is_pandas(view):  # by position: view[key] would select columns, or rows by label
        return view.iloc[key]
    if isinstance(view, np.ndarray) or not isinstance(view, list | tuple):
        return view[key]  # arrays, and objects with row indexing of their own (SparseTensor)
    if isinstance(key, slice):
        return view[key]
    key = np.asarray(key)
    if key.dtype == bool:
        key = np.flatnonzero(key)
    return [view[int(i)] for i in key]


class MultiModal:
    """Row-aligned views of the same samples, indexable like an array.

    Each view describes the same ``n_samples`` entities (row ``i`` of every view is
    sample ``i``): a NumPy array of any order >= 2 (matrices, images ``(n, C, H, W)``,
    tensors), a SciPy sparse matrix, a torch tensor, a pandas DataFrame or Series (rows
    taken by position, whatever its index), or a sequence of ``n`` objects (raw texts).
    Indexing with a slice, a boolean mask or an index array returns a ``MultiModal`` of
    those rows, so that scikit-learn's cross-validation splitters,
    :class:`~sklearn.model_selection.GridSearchCV` and
    :class:`~sklearn.pipeline.Pipeline` work unchanged. Data that is not per sample
    (a graph over the columns, a relation between two other entity types) rides along
    unsliced in ``shared``.

    Parameters
    ----------
    *views : array-like
        Unnamed views; they are named ``"view0"``, ``"view1"``, ...
    shared : dict, default=None
        Context that is not indexed by sample: name -> array, sparse matrix or any object.
    **named_views : array-like
        Views by name, after the unnamed ones.

    Attributes
    ----------
    views : list
        The views, in order.
    names : list of str
        Their names.
    shared : dict
        The unsliced context.

    Examples
    --------
    >>> import numpy as np
    >>> from mmfactor import MultiModal
    >>> X = MultiModal(np.ones((4, 3)), text=np.zeros((4, 2)))
    >>> X.names, len(X), X.shape
    (['view0', 'text'], 4, (4,))
    >>> X[[0, 2]].views[1].shape
    (2, 2)
    """

    def __init__(self, *views, shared=None, **named_views):
        names = [f"view{i}" for i in range(len(views))] + list(named_views)
        all_views = list(views) + list(named_views.values())
        if not all_views:
            raise ValueError("MultiModal needs at least one view; got none.")
        if len(set(names)) != len(names):
            raise ValueError(f"View names must be unique; got {names}.")
        n = None
        for name, view in zip(names, all_views, strict=True):
            if isinstance(view, MultiModal):
                raise TypeError(f"View {name!r} is itself a MultiModal; pass its views instead.")
            if isinstance(view, str | bytes) or np.isscalar(view):
                raise TypeError(
                    f"View {name!r} must be an array, a sparse matrix, a tensor or a sequence "
                    f"with one entry per sample; got {type(view).__name__}."
                )
            rows = _n_rows(view)
            if rows is None:
                raise ValueError(f"View {name!r} is a 0-d array; expected one row per sample.")
            if rows == 0:
                raise ValueError(f"View {name!r} is empty (0 rows); expected at least one sample.")
            if n is None:
                n = rows
            elif rows != n:
                raise ValueError(
                    f"Views have mismatched numbers of rows: view {names[0]!r} has {n} rows "
                    f"but view {name!r} has {rows}; every view needs one row per sample."
                )
        self.views = all_views
        self.names = names
        self.shared = dict(shared or {})
        self._n = n

    def __len__(self):
        return self._n

    @property
    def shape(self):
        """``(n_samples,)``: one entry per sample, as scikit-learn's indexing expects."""
        return (self._n,)

    @property
    def ndim(self):
        """``1``: a ``MultiModal`` is indexed along its samples only."""
        return 1

    def __getitem__(self, key):
        # scikit-learn's _safe_indexing calls X[key, ...] on objects that have a shape.
        if isinstance(key, tuple):
            if len(key) == 2 and key[1] is Ellipsis:
                key = key[0]
            else:
                raise IndexError("MultiModal supports row indexing only: X[rows] or X[rows, ...].")
        if isinstance(key, numbers.Integral) or (isinstance(key, np.ndarray) and key.ndim == 0):
            raise IndexError(
                "MultiModal cannot be indexed by a scalar; use a slice, a boolean mask or an "
                "index array (X[[i]]) to keep the sample axis."
            )
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        if not isinstance(key, slice):
            key = np.asarray(key)
            if key.dtype == bool:
                if key.shape != (self._n,):
                    raise IndexError(
                        f"Boolean mask of shape {key.shape} does not match {self._n} samples."
                    )
            elif key.size == 0:
                key = key.astype(np.intp)
            elif not np.issubdtype(key.dtype, np.integer):
                raise IndexError(f"Row indices must be integers or booleans; got {key.dtype}.")
            elif key.size and (key.max() >= self._n or key.min() < -self._n):
                raise IndexError(f"Row index out of range for {self._n} samples.")
        out = object.__new__(MultiModal)
        out.views = [_take_rows(v, key) for v in self.views]
        out.names = list(self.names)
        out.shared = self.shared
        out._n = _n_rows(out.views[0])
        return out

    def __iter__(self):
        raise TypeError(
            "MultiModal is not iterable over samples; index it with X[rows] or use X.views."
        )

    def __getattr__(self, name):
        # named access: X.text; only reached when normal lookup fails
        if name.startswith("_") or name in ("views", "names", "shared"):
            raise AttributeError(name)
        try:
            return self.views[self.names.index(name)]
        except ValueError:
            raise AttributeError(f"MultiModal has no view named {name!r}") from None

    def __repr__(self):
        parts = []
        for name, v in zip(self.names, self.views, strict=True):
            shape = tuple(v.shape) if hasattr(v, "shape") else (len(v),)
            kind = "sparse" if sp.issparse(v) else type(v).__name__
            parts.append(f"{name}={kind}{shape}")
        if self.shared:
            parts.append(f"shared={sorted(self.shared)}")
        return f"MultiModal(n_samples={self._n}, {', '.join(parts)})"


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


@dataclass
class View:
    """One validated view, ready for a model; the user's array is referenced, not copied.

    ``data`` is a float NumPy array (dense, any order >= 2, NaN = missing), a CSR matrix
    (``missing`` says what an unstored entry means) or a torch tensor.
    """

    name: str
    data: object
    kind: str  # "dense", "sparse" or "tensor"
    missing: str = "unobserved"
    has_nan: bool = False

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self):
        return len(self.data.shape)


def as_multimodal(X):
    """Wrap a list/tuple of views or a single array into a :class:`MultiModal`."""
    if isinstance(X, MultiModal):
        return X
    if isinstance(X, list | tuple):
        if len(X) == 0:
            raise ValueError("Expected at least one view; got an empty list.")
        if all(isinstance(x, list | tuple) or (isinstance(x, np.ndarray) and x.ndim == 1)
               for x in X) and all(np.ndim(x) == 1 for x in X):
            # a nested list of numbers is one 2-D array (rows = samples), as in
            # scikit-learn; a list of views holds arrays of order >= 2
            return MultiModal(np.asarray(X))
        return MultiModal(*X)
    if X is None:
        raise ValueError("Expected a MultiModal, a list of views or an array; got None.")
    return MultiModal(X)


def _check_numeric_dtype(name, dtype):
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(
            f"Complex data not supported: view {name!r} has dtype {dtype}; expected real "
            "numbers."
        )
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(f"View {name!r} has dtype {dtype}; expected a numeric array.")


def check_view(name, view, *, missing="unobserved", allow_nan=True, min_ndim=2, max_ndim=None):
    """Validate one view and return a :class:`View`; never modifies or densifies it.

    The returned data is the user's array itself where it can be (a float NumPy array, a
    CSR matrix in canonical form, a float torch tensor), or else a converted copy: an
    integer or boolean array becomes float32 (up to 16 bits, exact) or float64; a
    NumPy masked array becomes a float array with NaN under the mask (masked = missing,
    for every model); a pandas DataFrame with nullable columns has ``pd.NA`` as NaN; an
    array with negative strides or not
    in C order is copied; a sparse matrix with unsorted indices or
    duplicate entries is copied with the duplicates summed (as SciPy's
    ``sum_duplicates`` does: one observation per entry); a bfloat16/float16 tensor
    becomes float32 and a tensor made under ``torch.inference_mode`` is cloned. A meta
    tensor (no data) is refused.
    """
    if missing not in ("unobserved", "zero"):
        raise ValueError(f"missing must be 'unobserved' or 'zero'; got {missing!r}.")
    if sp.issparse(view):
        _check_numeric_dtype(name, view.dtype)
        if view.ndim != 2:
            raise ValueError(f"Sparse view {name!r} must be 2-D; got shape {view.shape}.")
        csr = sp.csr_matrix(view)  # no copy for CSR input; other formats are converted
        if csr.dtype.kind != "f":
            csr = csr.astype(np.float64)
        if not csr.has_canonical_format:  # duplicates summed, indices sorted: on a copy
            csr = csr.copy()
            csr.sum_duplicates()
        if not np.isfinite(csr.data).all():
            raise ValueError(
                f"Sparse view {name!r} of shape {view.shape} has NaN or infinite stored "
                "values; for a sparse view, leave missing entries unstored and set "
                "missing='unobserved'."
            )
        _check_shape(name, csr.shape, min_ndim, max_ndim)
        _check_float32_range(name, csr.shape, np.abs(csr.data).max() if csr.nnz else 0.0)
        return View(name, csr, "sparse", missing=missing)
    if isinstance(view, torch.Tensor):
        if view.is_complex():
            raise TypeError(f"View {name!r} has a complex dtype ({view.dtype}); expected real.")
        if view.device.type == "meta":
            raise ValueError(f"View {name!r} of shape {tuple(view.shape)} is a tensor on the "
                             "meta device: it has a shape but no data. Pass a tensor that "
                             "holds values (on the CPU or a GPU).")
        if view.layout != torch.strided:
            raise TypeError(f"View {name!r} is a {view.layout} torch tensor; pass a dense "
                            "tensor, or a SciPy sparse matrix / SparseTensor.")
        _check_shape(name, tuple(view.shape), min_ndim, max_ndim)
        t = view.detach()
        if t.is_inference():  # made under torch.inference_mode: autograd cannot use it
            with torch.inference_mode(False):
                t = t.clone()
        if not t.is_floating_point():
            t = t.to(torch.float32)
        elif t.dtype in (torch.bfloat16, torch.float16):  # the models compute in >= 32 bits
            t = t.to(torch.float32)
        bad = ~torch.isfinite(t)
        has_nan = bool(torch.isnan(t).any())
        if bool((bad & ~torch.isnan(t)).any()):
            raise ValueError(f"View {name!r} of shape {tuple(view.shape)} has infinite values.")
        if t.numel():
            _check_float32_range(name, tuple(view.shape),
                                 float(torch.nan_to_num(t.abs(), nan=0.0).max()))
        if has_nan and not allow_nan:
            raise ValueError(
                f"View {name!r} of shape {tuple(view.shape)} has NaN values; this model "
                "needs complete views."
            )
        return View(name, t, "tensor", has_nan=has_nan)
    if isinstance(view, list | tuple) and view and isinstance(view[0], str):
        raise TypeError(
            f"View {name!r} is a sequence of strings; turn texts into vectors first, e.g. "
            "with mmfactor.text.Word2VecMean."
        )
    arr = _as_array(view)
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"View {name!r} has dtype object with entries that are not numbers ({exc}); "
                "expected a numeric array."
            ) from None
    _check_numeric_dtype(name, arr.dtype)
    _check_shape(name, arr.shape, min_ndim, max_ndim)
    if arr.dtype.kind != "f":  # integers, booleans: finite; float32 is exact to 16 bits
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        arr = arr.astype(np.float32 if arr.dtype.itemsize <= 2 else np.float64)
        has_nan = False
    else:
        if not arr.flags.c_contiguous:  # negative strides (torch cannot view them),
            arr = np.ascontiguousarray(arr)  # Fortran order (a DataFrame's), slices
        has_nan = bool(np.isnan(arr).any()) if arr.size else False
        # fmin/fmax reductions skip NaN without a temporary copy of the array
        lo, hi = ((float(np.fmin.reduce(arr, axis=None)), float(np.fmax.reduce(arr, axis=None)))
                  if arr.size else (0.0, 0.0))
    if np.isinf(lo) or np.isinf(hi):
        raise ValueError(
            f"View {name!r} of shape {arr.shape} has infinite values; use NaN for missing "
            "entries."
        )
    _check_float32_range(name, arr.shape, max(abs(lo), abs(hi)))
    if has_nan and not allow_nan:
        raise ValueError(
            f"View {name!r} of shape {arr.shape} has NaN values; this model needs complete "
            "views."
        )
    return View(name, arr, "dense", has_nan=has_nan)


def _as_array(view):
    """A NumPy array of ``view``: masked entries and ``pd.NA`` as NaN (on a copy)."""
    if np.ma.isMaskedArray(view):
        if not np.ma.getmaskarray(view).any():
            return np.asarray(view.data)
        dtype = np.result_type(view.dtype, np.float32) if view.dtype.kind in "biuf" \
            else view.dtype
        return np.ma.filled(view.astype(dtype), np.nan)
    if hasattr(view, "to_numpy") and hasattr(view, "dtypes"):  # a pandas DataFrame
        try:
            return view.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            pass  # non-numeric columns: refused below with the usual message
    return np.asarray(view)


def check_non_negative(view, estimator, hint):
    """Refuse a :class:`View` with a negative observed entry; ``hint`` says what to do.

    The message starts as scikit-learn's ("Negative values in data passed to ...").
    """
    d = view.data
    if view.kind == "tensor":  # on its device; NaN < 0 is False
        n_neg, low = int((d < 0).sum()), float(torch.nan_to_num(d, nan=0.0).min())
    else:
        vals = d.data if view.kind == "sparse" else d
        n_neg = int(np.count_nonzero(vals < 0))
        low = float(np.nanmin(vals)) if n_neg else 0.0
    if n_neg:
        raise ValueError(f"Negative values in data passed to {estimator}: view {view.name!r} "
                         f"of shape {view.shape} has {n_neg} negative entries (min "
                         f"{low:.4g}). {hint}")


_F32_MAX = float(np.finfo(np.float32).max)
# the largest magnitude whose square is still a float32: every model's loss is a sum of
# squared errors, and the solvers form products of values (normal equations, Gram
# matrices), so larger values overflow inside the fit (CMF's lstsq then fails with an
# internal assert) or the transform (a NaN embedding), at fit and transform alike
_VALUE_LIMIT = float(np.sqrt(_F32_MAX))


def _check_float32_range(name, shape, max_abs):
    """Values the models' float32 computations would turn into infinities."""
    if np.isfinite(max_abs) and max_abs > _VALUE_LIMIT:
        raise ValueError(
            f"View {name!r} of shape {tuple(shape)} has values up to {max_abs:.3g} in "
            f"magnitude; the models compute squared errors in float32, so values must stay "
            f"below {_VALUE_LIMIT:.3g} (whose square is the float32 maximum, "
            f"{_F32_MAX:.3g}); rescale the view (e.g. StandardScaler) before fitting or "
            "transforming."
        )


def _check_shape(name, shape, min_ndim, max_ndim):
    if len(shape) < min_ndim:
        raise ValueError(
            f"View {name!r} has shape {shape}; expected at least {min_ndim} dimensions "
            "(n_samples, n_features, ...). Reshape your data: x.reshape(-1, 1) for a single "
            "feature, x.reshape(1, -1) for a single sample."
        )
    if max_ndim is not None and len(shape) > max_ndim:
        raise ValueError(
            f"View {name!r} has shape {shape}; this model accepts at most {max_ndim} "
            "dimensions."
        )
    if any(s == 0 for s in shape[1:]):
        raise ValueError(
            f"View {name!r} has shape {shape}: 0 feature(s) (shape={shape}) while a minimum "
            "of 1 is required."
        )


def check_views(
    X,
    *,
    missing="unobserved",
    allow_nan=True,
    min_ndim=2,
    max_ndim=None,
    min_samples=1,
    n_views=None,
    names=None,
):
    """Validate the input of ``fit``/``transform``.

    Parameters
    ----------
    X : MultiModal, list or tuple of views, or one array
        The input.
    missing : {"unobserved", "zero"}
        Meaning of the unstored entries of sparse views.
    allow_nan : bool
        Whether NaN (missing entries) may appear in dense views.
    min_ndim, max_ndim : int
        Allowed orders of each view.
    min_samples : int
        Minimum number of rows.
    n_views, names : int, list of str
        When given (at ``transform`` time), the views must match those seen in ``fit``.

    Returns
    -------
    mm : MultiModal
        The input as a ``MultiModal`` (the user's object when it was one).
    views : list of View
    """
    mm = as_multimodal(X)
    if len(mm) < min_samples:
        raise ValueError(
            f"Got {len(mm)} sample(s); at least {min_samples} are required to fit this model."
        )
    if n_views is not None and len(mm.views) != n_views:
        raise ValueError(
            f"X has {len(mm.views)} view(s) {mm.names} but the model was fitted on {n_views} "
            f"view(s) {names}."
        )
    out = [
        check_view(
            name, v, missing=missing, allow_nan=allow_nan, min_ndim=min_ndim, max_ndim=max_ndim
        )
        for name, v in zip(mm.names, mm.views, strict=True)
    ]
    return mm, out


def _constant_columns(keys, vals, n_rows, n_keys, zeros_observed, rows=None):
    """Whether every column of an ``n_rows``-row matrix, given by its stored entries
    (column ``keys`` in ``[0, n_keys)``, ``vals``, optionally their ``rows``), holds one
    value across the rows: the observed rows only, or every row when the unstored
    entries are zeros. Exact; O(nnz) when the keys are dense, a sort otherwise."""
    vals = np.asarray(vals, np.float64)
    if zeros_observed:
        nonzero = vals != 0
        keys, vals = keys[nonzero], vals[nonzero]
        if len(vals) == 0:
            return True  # every entry zero
        if rows is not None:  # identical rows have the same number of non-zeros
            degree = np.bincount(rows[nonzero], minlength=n_rows)
            if degree.min() != degree.max():
                return False
    elif len(vals) == 0 or vals.min() == vals.max():
        return True  # every observed entry has one value
    if n_keys is None or n_keys > 4 * len(vals) + 1024:  # sparse key space: renumber
        keys = torch.unique(torch.as_tensor(keys), return_inverse=True)[1].numpy()
        n_keys = int(keys.max()) + 1
    counts = np.bincount(keys, minlength=n_keys)
    low = np.full(n_keys, np.inf)
    high = np.full(n_keys, -np.inf)
    np.minimum.at(low, keys, vals)
    np.maximum.at(high, keys, vals)
    present = counts > 0
    same = low[present] == high[present]
    if zeros_observed:  # a column with a non-zero must have it, the same, in every row
        same &= counts[present] == n_rows
    return bool(same.all())


def check_variation(view, *, coords=None):
    """Refuse a view whose samples (its rows, or mode-0 slices) all have the same values,
    or that has no observed entry at all (``fit`` only).

    ``view`` is a :class:`View`, or, with ``coords=(idx, vals, shape, zeros_observed)``,
    the name of a tensor given by its stored entries (``idx`` of shape (nnz, K)).
    Missing entries (NaN, or unstored with ``missing="unobserved"``) are ignored.
    """
    if coords is not None:
        name = view
        idx, vals, shape, zeros_observed = coords
        idx, n = np.asarray(idx), shape[0]
        others = [int(s) for s in shape[1:]]
        if float(np.prod(others, dtype=np.float64)) < 2.0**62:  # one int64 key per column
            keys = np.ravel_multi_index(tuple(idx[:, 1:].T), others)
            n_keys = int(np.prod(others))
        else:
            keys = np.unique(idx[:, 1:], axis=0, return_inverse=True)[1].ravel()
            n_keys = None
        constant = _constant_columns(keys, vals, n, n_keys, zeros_observed, rows=idx[:, 0])
        hint = "" if zeros_observed else _UNOBSERVED_HINT
    else:
        name, shape, n, d = view.name, view.shape, view.shape[0], view.data
        hint = ""
        if view.has_nan and (bool(torch.isnan(d).all()) if view.kind == "tensor"
                             else bool(np.isnan(d).all())):
            # at fit only: at transform a sample with nothing observed in a view is
            # embedded from its other views (or the model's prior), one row or many
            raise ValueError(f"View {name!r} of shape {tuple(shape)} has no observed entry "
                             "(all NaN).")
        if n < 2:
            return
        if view.kind == "sparse":
            zero = view.missing == "zero"
            rows = np.repeat(np.arange(n), np.diff(d.indptr)) if zero else None
            constant = _constant_columns(d.indices, d.data, n, d.shape[1], zero, rows=rows)
            hint = "" if zero else _UNOBSERVED_HINT
        elif view.kind == "tensor":
            flat = d.reshape(n, -1)
            nan = torch.isnan(flat)
            high = torch.where(nan, -torch.inf, flat).amax(0)
            low = torch.where(nan, torch.inf, flat).amin(0)
            constant = bool(((high <= low) | nan.all(0)).all())
        else:
            flat = d.reshape(n, -1)
            high, low = np.fmax.reduce(flat, axis=0), np.fmin.reduce(flat, axis=0)
            constant = bool(((high == low) | np.isnan(high)).all())
    if constant:
        raise ValueError(
            f"View {name!r} of shape {tuple(shape)} has zero variance: all {n} samples have "
            "the same values, so it tells the model nothing about them. Drop the view, or "
            f"check how it was built.{hint}"
        )


_UNOBSERVED_HINT = (" With missing='unobserved' only the stored entries are compared; if "
                    "the unstored entries are zeros (implicit feedback), pass missing='zero'.")


# --------------------------------------------------------------------------------------
# Relation schemas for the collective models
# --------------------------------------------------------------------------------------


@dataclass
class RelationSpec:
    """One matrix of a collective model: its name, row and column entity types, source.

    ``source`` is ``"view"`` (rows are samples; sliced across folds) or ``"shared"``
    (a relation between entity types, taken whole from ``MultiModal.shared``).
    """

    name: str
    row: str
    col: str
    source: str
    index: int = 0
    extra: dict = field(default_factory=dict)


def resolve_relations(relations, mm, *, sample_entity=None):
    """Resolve a ``relations`` schema against the input.

    ``relations`` is ``None`` (every view is a relation between the sample entity and a
    column entity of its own, named ``"<view>_col"``), a list with one
    ``(row_entity, col_entity)`` pair per view followed by one per shared matrix (in the
    order of ``MultiModal.shared``), or a dict keyed by view/shared name. The rows of every
    view must be the sample entity.

    Returns
    -------
    specs : list of RelationSpec
    sample_entity : str
    entities : list of str
        Entity types in order of first appearance (the sample entity first).
    """
    view_names = list(mm.names)
    shared_names = [k for k, v in mm.shared.items() if _is_matrix(v)]
    if relations is None:
        sample = sample_entity if sample_entity is not None else "sample"
        pairs = {name: (sample, f"{name}_col") for name in view_names}
        if shared_names:
            raise ValueError(
                f"X.shared holds matrices {shared_names} but relations=None does not say "
                "which entity types they relate; pass relations=... naming a "
                "(row_entity, col_entity) pair for each view and shared matrix."
            )
    elif isinstance(relations, dict):
        unknown = [k for k in relations if k not in view_names and k not in mm.shared]
        if unknown:
            raise ValueError(
                f"relations names {unknown}, which are neither views {view_names} nor shared "
                f"matrices {shared_names} of X."
            )
        missing = [k for k in view_names if k not in relations]
        if missing:
            raise ValueError(f"relations gives no (row, col) entity types for views {missing}.")
        pairs = {k: tuple(v) for k, v in relations.items()}
    elif isinstance(relations, list | tuple):
        expected = len(view_names) + len(shared_names)
        if len(relations) not in (len(view_names), expected):
            raise ValueError(
                f"relations has {len(relations)} entries; expected one (row, col) pair per "
                f"view ({len(view_names)}: {view_names}) plus one per shared matrix "
                f"({len(shared_names)}: {shared_names})."
            )
        names = (view_names + shared_names)[: len(relations)]
        pairs = {n: tuple(r) for n, r in zip(names, relations, strict=True)}
    else:
        raise TypeError(
            f"relations must be None, a list of (row, col) pairs or a dict; got "
            f"{type(relations).__name__}."
        )
    for name, pair in pairs.items():
        if len(pair) != 2 or not all(isinstance(e, str) for e in pair):
            raise ValueError(
                f"relations[{name!r}] = {pair!r}; expected a (row_entity, col_entity) pair of "
                "strings."
            )
    view_rows = {pairs[n][0] for n in view_names}
    if len(view_rows) != 1:
        raise ValueError(
            f"Every view's rows are the samples, so every view must have the same row entity; "
            f"got {sorted(view_rows)} for views {view_names}."
        )
    (sample,) = view_rows
    if sample_entity is not None and sample_entity != sample:
        raise ValueError(
            f"sample_entity={sample_entity!r} but the views' row entity in relations is "
            f"{sample!r}."
        )
    specs, entities = [], [sample]
    for i, name in enumerate(view_names):
        specs.append(RelationSpec(name, pairs[name][0], pairs[name][1], "view", index=i))
    for name in shared_names:
        if name in pairs:
            specs.append(RelationSpec(name, pairs[name][0], pairs[name][1], "shared"))
    for s in specs:
        for e in (s.row, s.col):
            if e not in entities:
                entities.append(e)
    return specs, sample, entities


def _is_matrix(v):
    return sp.issparse(v) or (hasattr(v, "shape") and len(getattr(v, "shape", ())) == 2)


def relation_data(mm, views, specs, *, missing="unobserved"):
    """The matrix of every relation and the size of every entity type.

    Views are taken as validated; shared matrices are validated here (named
    ``shared['name']`` in errors). Every entity type must have one size across the
    relations that mention it.

    Returns
    -------
    data : list of View
        One per spec, in order.
    sizes : dict of str -> int
        Number of members of each entity type.
    """
    by_name = dict(zip(mm.names, views, strict=True))
    data = [
        by_name[s.name] if s.source == "view"
        else check_view(f"shared[{s.name!r}]", mm.shared[s.name], missing=missing, max_ndim=2)
        for s in specs
    ]
    sizes = {}
    for s, v in zip(specs, data, strict=True):
        for ent, n in ((s.row, v.shape[0]), (s.col, v.shape[1])):
            known, where = sizes.setdefault(ent, (n, s.name))
            if known != n:
                raise ValueError(
                    f"Entity type {ent!r} has {known} members in relation {where!r} but {n} "
                    f"in relation {s.name!r} (shape {v.shape}); relations sharing an entity "
                    "type must agree on its size."
                )
    return data, {e: n for e, (n, _) in sizes.items()}


def per_relation(value, names, what, default):
    """A per-relation option (``weights=``, ``link=``) as a list in relation order.

    ``value`` is ``None`` (the default for all), one value for all, a list with one entry
    per relation, or a dict by relation name (missing names take the default).
    """
    if value is None:
        return [default] * len(names)
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"{what} names unknown relations {unknown}; known: {names}.")
        return [value.get(n, default) for n in names]
    if isinstance(value, list | tuple):
        if len(value) != len(names):
            raise ValueError(
                f"{what} has {len(value)} entries; expected one per relation "
                f"({len(names)}: {names})."
            )
        return list(value)
    return [value] * len(names)


def relation_weights(weights, names):
    """``weights=`` resolved and checked: one finite number >= 0 per relation."""
    out = per_relation(weights, names, "weights", 1.0)
    for n, w in zip(names, out, strict=True):
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not np.isfinite(w) or w < 0:
            raise ValueError(f"weight of relation {n!r} is {w!r}; expected a finite number >= 0.")
    return [float(w) for w in out]


def check_entries(coords, relation, relations, sizes):
    """Validate ``predict_entries`` arguments against the fitted relations.

    Parameters
    ----------
    coords : array-like of shape (n_entries, 2)
        Integer (row, column) indices.
    relation : int or str
        A fitted relation, by position or name.
    relations : list of (name, row_entity, col_entity)
        The fitted relations (``relations_``).
    sizes : dict of str -> int
        Number of members of each entity type.

    Returns
    -------
    index : int
        Position of the relation.
    coords : ndarray of shape (n_entries, 2)
    """
    names = [r[0] for r in relations]
    if isinstance(relation, str) and relation in names:
        index = names.index(relation)
    elif (isinstance(relation, numbers.Integral) and not isinstance(relation, bool)
          and -len(names) <= relation < len(names)):
        index = int(relation) % len(names)
    else:
        raise ValueError(f"relation={relation!r} is neither the name nor the position of a "
                         f"fitted relation; the relations are {names}.")
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2 or not np.issubdtype(coords.dtype, np.integer):
        raise ValueError(f"coords must be an integer array of shape (n_entries, 2); got shape "
                         f"{coords.shape} and dtype {coords.dtype}.")
    name, row, col = relations[index]
    shape = (sizes[row], sizes[col])
    if coords.size and ((coords < 0).any() or (coords.max(0) >= shape).any()):
        raise ValueError(f"coords out of range for relation {name!r} of shape {shape}.")
    return index, coords
