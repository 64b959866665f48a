"""The shared bad-input and fault suite: every estimator, every bad input.

One parametrised module (as scikit-learn's ``parametrize_with_checks`` and implicit's
``RecommenderBase`` tests do): ``ESTIMATORS`` lists a small, fast configuration of each
model, ``BAD_INPUTS`` the bad inputs (each a builder of ``(X, params)``, the error it must
raise and a regex of the message, which names the view or parameter and what was
expected). For every (estimator, bad input) pair the test checks that

* ``fit`` raises that error before any training (the training loop is patched to fail
  the test if it is reached),
* the input arrays are unchanged afterwards (compared with copies taken before),
* the estimator is left unfitted.

A gap in the library's validation is kept as a test marked ``xfail(strict=True)`` with
the file and the behaviour in its reason (``KNOWN_GAPS``), never removed.

The faults (KeyboardInterrupt, a non-finite loss, out of memory) are injected into the
one training loop of every estimator at the end of the module.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

import mmfactor
from mmfactor import CMF, DCMF, DFMF, MMEDA, HyperLearn, MultiModal, SparseTensor
from mmfactor._training import FitInterruptedWarning, FitOutOfMemoryError, NonFiniteLossError

# --------------------------------------------------------------------------------------
# The estimators, in small fast configurations
# --------------------------------------------------------------------------------------

N_CUDA = torch.cuda.device_count()  # "cuda:N_CUDA" is absent on this machine

ESTIMATORS = {
    "CMF": lambda **kw: CMF(**{"n_components": 2, "max_iter": 3, "random_state": 0, **kw}),
    "DFMF": lambda **kw: DFMF(**{"n_components": 2, "max_iter": 3, "random_state": 0, **kw}),
    "DCMF": lambda **kw: DCMF(**{"n_components": 2, "hidden_layer_sizes": (4,), "max_iter": 2,
                                 "random_state": 0, **kw}),
    "MMEDA": lambda **kw: MMEDA(**{"n_components": 2, "encoder": "neural", "conv_channels": (2,),
                                   "hidden_layer_sizes": (4,), "view_components": 3,
                                   "fusion_layer_sizes": (4,), "max_iter": 2,
                                   "batch_size": 8, "random_state": 0, **kw}),
    "HyperLearn": lambda **kw: HyperLearn(**{"n_components": 2, "max_iter": 2,
                                             "diffusion_steps": 1, "cheb_order": 2,
                                             "hidden_size": 4, "random_state": 0, **kw}),
}
# the modules whose ``fit_loop`` the estimators call (patched by the fault tests)
LOOP_MODULES = {
    "CMF": "mmfactor.factorization._cmf",
    "DFMF": "mmfactor.factorization._dfmf",
    "DCMF": "mmfactor.neural._dcmf",
    "MMEDA": "mmfactor.neural._mmeda",
    "HyperLearn": "mmfactor.factorization._hyperlearn",
}
COMPLETION = ["CMF", "DFMF", "DCMF", "HyperLearn"]  # models with predict_entries
MATRIX_ONLY = ["CMF", "DFMF", "DCMF"]  # views must be 2-D


def test_every_public_estimator_is_covered():
    from sklearn.base import BaseEstimator

    public = {n for n in mmfactor.__all__ if isinstance(getattr(mmfactor, n), type)
              and issubclass(getattr(mmfactor, n), BaseEstimator)}
    assert public <= set(ESTIMATORS), f"not in the reliability suite: {public - set(ESTIMATORS)}"


def base_views(rng=None, n=12):
    """Two non-negative matrix views of ``n`` samples (valid input for every model)."""
    rng = np.random.RandomState(0) if rng is None else rng
    return {"a": rng.rand(n, 5), "b": rng.rand(n, 4)}


def base_input(name, n=12):
    return MultiModal(**base_views(n=n))


def fitted(name, n=12, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ESTIMATORS[name](**kw).fit(base_input(name, n))


def fitted_attributes(est):
    return sorted(k for k in vars(est) if k.endswith("_") and not k.startswith("__"))


# --------------------------------------------------------------------------------------
# The bad inputs
# --------------------------------------------------------------------------------------


@dataclass
class Bad:
    """One bad input: ``make(name) -> (X, params)``, the error and a regex of its message."""

    id: str
    make: object
    exc: object
    match: str
    only: list = field(default_factory=lambda: list(ESTIMATORS))
    method: str = "fit"  # or "transform", "predict_entries": then run on a fitted model
    kwargs: dict = field(default_factory=dict)  # keyword arguments of the call


def with_view(**changes):
    """The base input with some views replaced (``None`` drops a view)."""

    def make(name):
        views = base_views()
        views.update(changes)
        # a thunk: building the MultiModal is part of what must raise
        return lambda: MultiModal(**{k: v for k, v in views.items() if v is not None}), {}

    return make


def with_params(**params):
    return lambda name: (base_input(name), params)


def _with_entry(value, row=1, col=2, view="a"):
    views = base_views()
    views[view] = views[view].copy()
    views[view][row, col] = value
    return views[view]


def _sparse_with(value):
    m = sp.random(12, 4, density=0.5, random_state=0, format="csr")
    m.data[0] = value
    return m


def _as_input(x):
    return lambda name: (x, {})  # a callable x is built inside pytest.raises


NAN_A = _with_entry(np.nan)

BAD_INPUTS = [
    # ---- non-finite values ------------------------------------------------------------
    Bad("inf-dense", with_view(a=_with_entry(np.inf)), ValueError, r"'a'.*infinite"),
    Bad("-inf-dense", with_view(b=_with_entry(-np.inf, view="b")), ValueError, r"'b'.*infinite"),
    Bad("inf-torch", with_view(a=torch.as_tensor(_with_entry(np.inf))), ValueError,
        r"'a'.*infinite"),
    Bad("nan-sparse-stored", with_view(b=_sparse_with(np.nan)), ValueError,
        r"'b'.*NaN or infinite stored"),
    Bad("inf-sparse-stored", with_view(b=_sparse_with(np.inf)), ValueError,
        r"'b'.*NaN or infinite stored"),
    Bad("overflow-float32", with_view(a=base_views()["a"] * 1e300), ValueError,
        r"'a'.*float32", only=["CMF", "DFMF", "MMEDA", "HyperLearn"]),
    Bad("all-nan-view", with_view(a=np.full((12, 5), np.nan)), ValueError,
        r"'a'.*(no observed entry|NaN)", only=["CMF", "DFMF", "DCMF", "MMEDA", "HyperLearn"]),
    Bad("nan-not-allowed", with_view(a=NAN_A), ValueError, r"'a'.*NaN values.*complete",
        only=["MMEDA"]),
    Bad("nan-not-allowed-torch", with_view(a=torch.as_tensor(NAN_A)), ValueError,
        r"'a'.*NaN values.*complete", only=["MMEDA"]),
    Bad("nan-in-feature-view", with_view(b=_with_entry(np.nan, view="b")), ValueError,
        r"'b'.*NaN values", only=["HyperLearn"]),
    # ---- order (number of dimensions) ---------------------------------------------------
    Bad("1d-view", with_view(a=np.arange(12.0)), ValueError, r"'a'.*at least 2 dimensions"),
    Bad("3d-view-matrix-model", with_view(a=np.ones((12, 2, 3))), ValueError,
        r"'a'.*at most 2 dimensions", only=MATRIX_ONLY),
    Bad("0d-array", _as_input(np.array(3.0)), ValueError, r"0-d array|at least 2 dimensions"),
    # ---- rows and columns ---------------------------------------------------------------
    Bad("mismatched-rows", with_view(b=np.ones((11, 4))), ValueError,
        r"mismatched numbers of rows.*'a' has 12.*'b' has 11"),
    Bad("empty-view", with_view(a=np.ones((0, 5)), b=None), ValueError, r"'a' is empty \(0 rows\)"),
    Bad("zero-columns", with_view(b=np.ones((12, 0))), ValueError, r"'b'.*0 feature"),
    Bad("one-row", lambda name: (MultiModal(a=np.ones((1, 5)), b=np.ones((1, 4))), {}),
        ValueError, r"1 sample.*at least 2|at least 2 items"),
    # ---- dtypes -------------------------------------------------------------------------
    Bad("object-strings", with_view(a=np.array([["x"] * 5] * 12, dtype=object)), TypeError,
        r"'a'.*dtype object.*not numbers"),
    Bad("unicode-dtype", with_view(a=np.array([["1"] * 5] * 12)), TypeError,
        r"'a'.*dtype <U1.*numeric"),
    Bad("complex-numpy", with_view(a=base_views()["a"] + 1j), ValueError,
        r"Complex data.*'a'.*real"),
    Bad("complex-torch", with_view(a=torch.as_tensor(base_views()["a"] + 1j)), TypeError,
        r"'a'.*complex.*real"),
    Bad("complex-sparse", with_view(b=sp.csr_matrix(base_views()["b"] + 1j)), ValueError,
        r"Complex data.*'b'.*real"),
    Bad("datetime-dtype", with_view(a=np.zeros((12, 5), dtype="datetime64[s]")), TypeError,
        r"'a'.*datetime64.*numeric"),
    Bad("list-of-texts", with_view(a=["some text"] * 12), TypeError,
        r"'a'.*sequence of strings.*Word2VecMean"),
    # ---- zero variance: every sample the same (fit only; transform takes any rows) ----
    Bad("zero-variance-constant", with_view(a=np.full((12, 5), 3.0)), ValueError,
        r"View 'a' of shape \(12, 5\) has zero variance: all 12 samples have the same "
        r"values"),
    Bad("zero-variance-identical-rows", with_view(a=np.tile(np.arange(5.0), (12, 1))),
        ValueError, r"View 'a' .* zero variance"),
    Bad("zero-variance-with-nan", with_view(a=np.where(np.eye(12, 5), np.nan, 2.0)),
        ValueError, r"View 'a' .* zero variance", only=["CMF", "DFMF", "DCMF", "HyperLearn"]),
    Bad("zero-variance-sparse-zero", with_view(b=sp.csr_matrix((12, 4))), ValueError,
        r"View 'b' .* zero variance", only=["CMF", "DFMF", "DCMF", "MMEDA"]),
    Bad("zero-variance-sparse-ones-unobserved",
        with_view(b=sp.csr_matrix(np.where(np.random.RandomState(0).rand(12, 4) < 0.5, 1.0,
                                           0.0))),
        ValueError, r"View 'b' .* zero variance.*pass missing='zero'",
        only=["CMF", "DFMF", "DCMF"]),
    Bad("zero-variance-torch", with_view(a=torch.ones(12, 5)), ValueError,
        r"View 'a' .* zero variance", only=["CMF", "DFMF", "DCMF", "MMEDA"]),
    Bad("zero-variance-image", with_view(a=np.ones((12, 1, 8, 8))), ValueError,
        r"View 'a' of shape \(12, 1, 8, 8\) has zero variance", only=["MMEDA"]),
    # ---- containers ---------------------------------------------------------------------
    Bad("none", _as_input(None), ValueError, r"got None"),
    Bad("empty-list", _as_input([]), ValueError, r"at least one view.*empty list"),
    Bad("string-input", _as_input("data.csv"), TypeError, r"must be an array.*got str"),
    Bad("nested-multimodal", _as_input(lambda: [MultiModal(np.ones((12, 3)))]), TypeError,
        r"itself a MultiModal"),
    # ---- index overflow / coordinates (predict_entries) --------------------------------
    Bad("coords-out-of-range", lambda name: (np.array([[0, 0], [12, 0]]), {}), ValueError,
        r"coords out of range", only=COMPLETION, method="predict_entries"),
    Bad("coords-negative", lambda name: (np.array([[0, 0], [-1, 0]]), {}), ValueError,
        r"coords out of range", only=COMPLETION, method="predict_entries"),
    Bad("coords-overflow-uint64", lambda name: (np.array([[2**63 + 5, 0]], dtype=np.uint64), {}),
        ValueError, r"coords out of range", only=COMPLETION, method="predict_entries"),
    Bad("coords-float", lambda name: (np.array([[0.5, 1.0]]), {}), ValueError,
        r"coords must be an integer array", only=["CMF", "DFMF", "DCMF"],
        method="predict_entries"),
    Bad("coords-wrong-width", lambda name: (np.array([[0, 0, 0]]), {}), ValueError,
        r"coords must be an integer array of shape \(n_entries, 2\)",
        only=["CMF", "DFMF", "DCMF"], method="predict_entries"),
    Bad("sparse-tensor-index-overflow",
        _as_input(lambda: SparseTensor(np.array([[2**63 + 5, 0, 0]], dtype=np.uint64),
                                       shape=(3, 2, 2))),
        ValueError, r"index 9223372036854775813.*(overflow|out of range)", only=["HyperLearn"]),
    Bad("sparse-tensor-coords-outside-shape",
        _as_input(lambda: SparseTensor([[0, 0, 0], [5, 1, 1]], shape=(3, 2, 2))),
        ValueError, r"index 5 in mode 0 is out of range for shape \(3, 2, 2\)",
        only=["HyperLearn"]),
    # ---- model-specific values -----------------------------------------------------------
    Bad("non-binary-sigmoid", with_params(link="sigmoid"), ValueError,
        r"Relation 'a'.*link='sigmoid'.*0 and 1", only=["CMF"]),
    Bad("negative-entries-dense", with_view(a=_with_entry(-0.5)), ValueError,
        r"Negative values in data passed to DFMF: view 'a' of shape \(12, 5\) has 1 negative "
        r"entries.*MinMaxScaler.*allow_negative=True", only=["DFMF"]),
    Bad("negative-entries-sparse", with_view(b=_sparse_with(-3.0)), ValueError,
        r"Negative values in data passed to DFMF: view 'b' of shape \(12, 4\).*min -3",
        only=["DFMF"]),
    Bad("negative-entries-torch", with_view(a=torch.as_tensor(_with_entry(-1.0))), ValueError,
        r"Negative values in data passed to DFMF: view 'a'", only=["DFMF"]),
    Bad("negative-entries-transform", with_view(a=_with_entry(-2.0)), ValueError,
        r"Negative values in data passed to DFMF: view 'a'.*min -2", only=["DFMF"],
        method="transform"),
    Bad("negative-weight", with_params(weights=[1.0, -1.0]), ValueError,
        r"weight of relation 'b'.*>= 0", only=["CMF", "DFMF", "DCMF"]),
    Bad("implicit-negative-entries", lambda name: (
        MultiModal(a=_with_entry(-1.0), b=base_views()["b"]), {"link": "implicit"}), ValueError,
        r"Relation 'a' has link='implicit' but NaN or negative values", only=["CMF"]),
    Bad("implicit-nan-entries", lambda name: (MultiModal(a=NAN_A, b=base_views()["b"]),
                                              {"link": "implicit"}), ValueError,
        r"Relation 'a' has link='implicit' but NaN or negative values", only=["CMF"]),
    Bad("nonneg-with-sigmoid", lambda name: (
        MultiModal(a=(base_views()["a"] > 0.5).astype(float), b=base_views()["b"]),
        {"nonneg": True, "link": ["sigmoid", "identity"]}), ValueError,
        r"nonneg=True needs solver='als'", only=["CMF"]),
    *[Bad(f"entry-weights-{bid}-{method}", with_params(), exc, match, only=["CMF"], method=method,
          kwargs={"entry_weights": ew})
      for method in ("fit", "transform") for bid, ew, exc, match in [
          ("not-dict", np.ones((12, 5)), TypeError, r"entry_weights must be a dict: view name"),
          ("unknown-view", {"c": np.ones((12, 5))}, ValueError,
           r"entry_weights names view 'c', which X does not have; its views are \['a', 'b'\]"),
          ("wrong-shape", {"a": np.ones((12, 4))}, ValueError,
           r"entry_weights\['a'\] has shape \(12, 4\); view 'a' has shape \(12, 5\)"),
          ("negative", {"a": np.where(np.eye(12, 5), -1.0, 1.0)}, ValueError,
           r"entry_weights\['a'\] has NaN, infinite or negative values"),
          ("nan", {"b": np.where(np.eye(12, 4), np.nan, 1.0)}, ValueError,
           r"entry_weights\['b'\] has NaN, infinite or negative values"),
          ("sparse-for-dense", {"a": sp.csr_matrix(np.ones((12, 5)))}, ValueError,
           r"entry_weights\['a'\] is sparse but view 'a' is dense")]],
    Bad("entry-weights-pattern", lambda name: (MultiModal(a=base_views()["a"], b=_sparse_with(1.0)),
                                               {}), ValueError,
        r"entry_weights\['b'\] does not store the same entries as view 'b'", only=["CMF"],
        kwargs={"entry_weights": {"b": sp.csr_matrix(np.ones((12, 4)))}}),
    Bad("entry-weights-implicit", with_params(link="implicit"), ValueError,
        r"entry_weights\['a'\]: view 'a' has link='implicit'", only=["CMF"],
        kwargs={"entry_weights": {"a": np.ones((12, 5))}}),
    Bad("implicit-with-lbfgs", with_params(link="implicit", solver="lbfgs"), ValueError,
        r"link='implicit' is fitted by ALS", only=["CMF"]),
    # ---- graphs ---------------------------------------------------------------------------
    Bad("graph-wrong-size", with_params(graphs=[np.eye(12), np.eye(4)]), ValueError,
        r"graphs\[1\].*(shape|size).*5", only=["HyperLearn"]),
    Bad("graph-asymmetric", with_params(graphs=[None, np.triu(np.ones((5, 5)), 1)]),
        ValueError, r"graphs\[1\].*symmetric", only=["HyperLearn"]),
    Bad("graph-negative-weights", with_params(graphs=[None, -np.ones((5, 5))]), ValueError,
        r"graphs\[1\].*negative", only=["HyperLearn"]),
    Bad("graphs-wrong-count", with_params(graphs=[None]), ValueError,
        r"graphs has 1 entries; expected one per mode", only=["HyperLearn"]),
    Bad("constraint-wrong-size", with_params(
        constraints={"sample": [np.eye(5)]}), ValueError, r"[Cc]onstraint.*(shape|size)",
        only=["DFMF"]),
    Bad("graph0-wrong-size", with_params(graphs=[np.eye(11), None]), ValueError,
        r"graphs\[0\] has shape \(11, 11\) but mode 0 has 12 items", only=["HyperLearn"]),
    Bad("graph-nan", with_params(graphs=[None, np.full((5, 5), np.nan)]), ValueError,
        r"graphs\[1\] of shape \(5, 5\) has NaN or infinite weights", only=["HyperLearn"]),
    Bad("graph-not-square", with_params(graphs=[None, np.ones((5, 4))]), ValueError,
        r"graphs\[1\] must be a square adjacency matrix; got shape \(5, 4\)",
        only=["HyperLearn"]),
    Bad("graph-strings", with_params(graphs=[None, "knn"]), TypeError,
        r"graphs\[1\] must be a numeric adjacency matrix", only=["HyperLearn"]),
    Bad("graphs-count-3-modes", lambda name: (np.random.RandomState(0).rand(6, 4, 3),
                                              {"graphs": [None, None]}), ValueError,
        r"graphs has 2 entries; expected one per mode of the tensor of shape \(6, 4, 3\)",
        only=["HyperLearn"]),
    Bad("features-wrong-rows",
        lambda name: (MultiModal(a=base_views()["a"],
                                 shared={"features": [None, np.ones((4, 3))]}), {}),
        ValueError, r"features of mode 1 have shape \(4, 3\); expected \(5, n_features\)",
        only=["HyperLearn"]),
    Bad("constraint-nan", with_params(constraints={"sample": [np.full((12, 12), np.nan)]}),
        ValueError, r"constraints\['sample'\]\[0\].*NaN values", only=["DFMF"]),
    Bad("constraint-inf", with_params(constraints={"sample": [np.full((12, 12), np.inf)]}),
        ValueError, r"constraints\['sample'\]\[0\].*infinite values", only=["DFMF"]),
    # ---- schemas and entity names -------------------------------------------------------
    Bad("relations-unknown-view", with_params(relations={"a": ("s", "x"), "zz": ("s", "y")}),
        ValueError, r"relations names \['zz'\].*neither views", only=MATRIX_ONLY),
    Bad("relations-wrong-length", with_params(relations=[("s", "x")] * 3), ValueError,
        r"relations has 3 entries; expected one", only=MATRIX_ONLY),
    Bad("relations-different-rows", with_params(relations=[("s", "x"), ("t", "y")]),
        ValueError, r"same row entity.*\['s', 't'\]", only=MATRIX_ONLY),
    Bad("relations-not-strings", with_params(relations=[("s", 1), ("s", "y")]), ValueError,
        r"relations\['a'\].*pair of\s+strings", only=MATRIX_ONLY),
    Bad("sample-entity-mismatch",
        with_params(relations=[("s", "x"), ("s", "y")], sample_entity="user"), ValueError,
        r"sample_entity='user'.*'s'", only=MATRIX_ONLY),
    Bad("entity-size-mismatch", with_params(relations=[("s", "x"), ("s", "x")]), ValueError,
        r"Entity type 'x' has 5 members in relation 'a' but 4 in relation 'b'",
        only=MATRIX_ONLY),
    Bad("n-components-unknown-entity", with_params(n_components={"nope": 2}), ValueError,
        r"n_components names entity types \['nope'\]", only=["DFMF"]),
    Bad("constraints-unknown-entity", with_params(constraints={"nope": [np.eye(3)]}),
        ValueError, r"constraints names entity type 'nope'", only=["DFMF"]),
    Bad("weights-unknown-relation", with_params(weights={"zz": 1.0}), ValueError,
        r"weights names unknown relations \['zz'\]", only=["CMF", "DFMF", "DCMF"]),
    Bad("loss-weights-unknown", with_params(loss_weights={"zz": 1.0}), ValueError,
        r"loss_weights.*'zz'", only=["MMEDA"]),
    Bad("loss-weights-negative", with_params(loss_weights={"view": -1.0}), ValueError,
        r"loss_weights\['view'\] must be a non-negative number; got -1.0", only=["MMEDA"]),
    Bad("contrastive-negative", with_params(contrastive=-0.1), InvalidParameterError,
        r"'contrastive' parameter", only=["MMEDA"]),
    Bad("temperature-zero", with_params(temperature=0.0), InvalidParameterError,
        r"'temperature' parameter", only=["MMEDA"]),
    Bad("encoder-unknown", with_params(encoder="deep"), InvalidParameterError,
        r"'encoder' parameter", only=["MMEDA", "DCMF"]),
    Bad("view-dropout-one", with_params(view_dropout=1.0), InvalidParameterError,
        r"'view_dropout' parameter.*range \[0(\.0)?, 1(\.0)?\)", only=["MMEDA"]),
    Bad("view-dropout-negative", with_params(view_dropout=-0.1), InvalidParameterError,
        r"'view_dropout' parameter", only=["MMEDA"]),
    Bad("lr-schedule-unknown", with_params(lr_schedule="linear"), InvalidParameterError,
        r"'lr_schedule' parameter.*'cosine'", only=["MMEDA", "DCMF"]),
    Bad("input-map-unknown", with_params(input_map="poly"), InvalidParameterError,
        r"'input_map' parameter.*'rbf'", only=["MMEDA"]),
    Bad("n-landmarks-zero", with_params(n_landmarks=0), InvalidParameterError,
        r"'n_landmarks' parameter.*range \[1, inf\)", only=["MMEDA"]),
    Bad("link-unknown-in-list", with_params(link=["identity", "probit"]), ValueError,
        r"link of relation 'b' is 'probit'; expected 'identity', 'sigmoid' or 'implicit'",
        only=["CMF"]),
    Bad("weights-wrong-length", with_params(weights=[1.0]), ValueError,
        r"weights has 1 entries; expected one per relation", only=["CMF", "DFMF", "DCMF"]),
    Bad("hidden-layer-zero", with_params(hidden_layer_sizes=(0,)), ValueError,
        r"hidden_layer_sizes must be (a possibly empty tuple of )?positive integers",
        only=["DCMF", "MMEDA"]),
    Bad("conv-channels-zero",
        lambda name: (MultiModal(img=np.random.RandomState(0).rand(12, 1, 4, 4),
                                 b=base_views()["b"]), {"conv_channels": (0,)}),
        ValueError, r"conv_channels must be a tuple of positive integers", only=["MMEDA"]),
    Bad("early-stopping-too-few-rows",
        lambda name: (MultiModal(a=base_views()["a"][:2], b=base_views()["b"][:2]),
                      {"early_stopping": True}),
        ValueError, r"validation_fraction=0.1 leaves 1 training row\(s\) of 2",
        only=["MMEDA"]),
    Bad("activation-unknown", with_params(activation="swish"), InvalidParameterError,
        r"'activation' parameter", only=["DCMF", "MMEDA"]),
    Bad("input-dropout-one", with_params(input_dropout=1.0), InvalidParameterError,
        r"'input_dropout' parameter", only=["DCMF", "MMEDA"]),
    Bad("input-dropout-negative", with_params(input_dropout=-0.1), InvalidParameterError,
        r"'input_dropout' parameter", only=["DCMF", "MMEDA"]),
    Bad("alpha-code-negative", with_params(alpha_code=-1.0), InvalidParameterError,
        r"'alpha_code' parameter", only=["DCMF"]),
    Bad("alpha-code-string", with_params(alpha_code="0.1"), InvalidParameterError,
        r"'alpha_code' parameter", only=["DCMF"]),
    Bad("row-scaling-unknown", with_params(row_scaling="mean"), InvalidParameterError,
        r"'row_scaling' parameter", only=["DCMF"]),
    Bad("pandas-string-column",
        lambda name: (pytest.importorskip("pandas").DataFrame({"a": ["x"] * 12,
                                                               "b": [1.0] * 12}), {}),
        TypeError, r"'view0' has dtype object with entries that are not numbers"),
    # ---- devices ------------------------------------------------------------------------
    # indices at and past this machine's CUDA device count: absent on every machine
    Bad("cuda-absent", with_params(devices=f"cuda:{N_CUDA}"), ValueError,
        rf"'cuda:{N_CUDA}' was requested but this machine has {N_CUDA} CUDA"),
    Bad("cuda-index-absent", with_params(devices=f"cuda:{N_CUDA + 7}"), ValueError,
        rf"'cuda:{N_CUDA + 7}' was requested but this machine has {N_CUDA} CUDA"),
    Bad("device-invalid-string", with_params(devices="gpu"), ValueError,
        r"'gpu' is not a valid torch device"),
    Bad("devices-wrong-length", with_params(devices=["cpu"] * 5), ValueError,
        r"devices has 5 entries; expected one per modality"),
    Bad("devices-dict-unknown-name", with_params(devices={"zz": "cpu"}), ValueError,
        r"devices names \['zz'\], which are not among", only=["CMF", "DFMF", "DCMF", "MMEDA"]),
    Bad("devices-list-cuda-absent",
        lambda name: (base_input(name), {"devices": ["cpu", f"cuda:{N_CUDA + 3}"]
                                         + ["cpu"] * (name == "DCMF")}),
        ValueError, rf"devices\[1\].*'cuda:{N_CUDA + 3}' was requested",
        only=["CMF", "DFMF", "DCMF", "MMEDA"]),
    # ---- parameters out of range ----------------------------------------------------------
    Bad("n-components-0", with_params(n_components=0), InvalidParameterError,
        r"'n_components' parameter.*range \[1, inf\)"),
    Bad("max-iter-0", with_params(max_iter=0), InvalidParameterError,
        r"'max_iter' parameter.*range \[1, inf\)"),
    Bad("tol-negative", with_params(tol=-1.0), InvalidParameterError,
        r"'tol' parameter.*range \[0\.0, inf\)"),
    Bad("dtype-float16", with_params(dtype="float16"), InvalidParameterError,
        r"'dtype' parameter.*float32", only=["CMF", "DFMF", "HyperLearn"]),
    Bad("missing-unknown", with_params(missing="maybe"), InvalidParameterError,
        r"'missing' parameter", only=["CMF", "DFMF", "DCMF", "HyperLearn"]),
    Bad("alpha-negative", with_params(alpha=-1.0), InvalidParameterError,
        r"'alpha' parameter.*range \[0\.0, inf\)", only=["CMF", "DCMF", "MMEDA", "HyperLearn"]),
    Bad("learning-rate-0", with_params(learning_rate_init=0.0), InvalidParameterError,
        r"'learning_rate_init' parameter", only=["DCMF", "MMEDA", "HyperLearn"]),
    Bad("batch-size-0", with_params(batch_size=0), InvalidParameterError,
        r"'batch_size' parameter", only=["DCMF", "MMEDA", "HyperLearn"]),
    Bad("als-solver-unknown", with_params(als_solver="lu"), InvalidParameterError,
        r"'als_solver' parameter.*'cholesky'", only=["CMF"]),
    Bad("cg-steps-0", with_params(cg_steps=0), InvalidParameterError,
        r"'cg_steps' parameter.*range \[1, inf\)", only=["CMF"]),
    Bad("cg-steps-float", with_params(cg_steps=2.5), InvalidParameterError,
        r"'cg_steps' parameter", only=["CMF"]),
    Bad("nonneg-with-cg", with_params(nonneg=True, als_solver="cg"), ValueError,
        r"nonneg=True needs als_solver='cholesky'", only=["CMF"]),
    Bad("hyperlearn-n-init-0", with_params(n_init=0), InvalidParameterError,
        r"'n_init' parameter", only=["HyperLearn"]),
    Bad("init-factor-wrong-shape",
        with_params(init=[np.ones((12, 2)), np.ones((5, 3))]), ValueError,
        r"init\[1\] has shape \(5, 3\); expected \(5, 2\)", only=["HyperLearn"]),
    Bad("init-not-factors", with_params(init={"a": 1}), TypeError,
        r"init must be 'svd', 'random', a list of 2 factor arrays", only=["HyperLearn"]),
    Bad("fixed-modes-past-the-modes", with_params(fixed_modes=[2]), ValueError,
        r"fixed_modes=\[2\] must list distinct modes of the tensor of shape \(12, 5\)",
        only=["HyperLearn"]),
    Bad("nonnegative-not-bool", with_params(nonnegative="yes"), InvalidParameterError,
        r"'nonnegative' parameter", only=["HyperLearn"]),
    Bad("nonnegative-with-diffusion", with_params(nonnegative=True), ValueError,
        r"nonnegative=True constrains the factors themselves and needs diffusion_steps=0",
        only=["HyperLearn"]),
    Bad("pairwise-components-negative", with_params(pairwise_components=-1),
        InvalidParameterError, r"'pairwise_components' parameter", only=["HyperLearn"]),
    Bad("loss-unknown", with_params(loss="hinge"), InvalidParameterError,
        r"'loss' parameter.*'bpr'", only=["HyperLearn"]),
    Bad("confidence-negative", with_params(confidence=-1.0), InvalidParameterError,
        r"'confidence' parameter.*range \[0\.0, inf\)", only=["HyperLearn"]),
    Bad("ranking-mode-negative", with_params(ranking_mode=-1), InvalidParameterError,
        r"'ranking_mode' parameter", only=["HyperLearn"]),
    Bad("ranking-mode-past-the-modes", with_params(loss="bpr", ranking_mode=7), ValueError,
        r"ranking_mode=7 but the tensor of shape \(12, 5\) has 2 modes", only=["HyperLearn"]),
    Bad("bpr-with-als", with_params(loss="bpr", solver="als", diffusion_steps=0), ValueError,
        r"loss='bpr' is trained by Adam on mini-batches; got solver='als'",
        only=["HyperLearn"]),
    Bad("confidence-with-missing-entries",
        lambda name: (MultiModal(a=_with_entry(np.nan), b=base_views()["b"]),
                      {"confidence": 1.0}),
        ValueError, r"confidence=1.0 weighs stored entries against the unstored zeros.*"
        r"view 'a' has observed entries only", only=["HyperLearn"]),
    Bad("coupling-not-a-dict", with_params(coupling=["b"]), InvalidParameterError,
        r"'coupling' parameter", only=["HyperLearn"]),
    Bad("coupling-unknown-view", with_params(coupling={"c": 0}, solver="als", diffusion_steps=0),
        ValueError, r"coupling names 'c', which is neither a view after the tensor \['b'\] "
        r"nor a matrix of X.shared", only=["HyperLearn"]),
    Bad("coupling-mode-past-the-modes",
        with_params(coupling={"b": 2}, solver="als", diffusion_steps=0), ValueError,
        r"coupling\['b'\] = 2 is not a mode of the tensor of shape \(12, 5\) \(an int, 0 to 1\)",
        only=["HyperLearn"]),
    Bad("coupling-rows-mismatch",
        with_params(coupling={"b": 1}, solver="als", diffusion_steps=0), ValueError,
        r"View 'b' has shape \(12, 4\) but is coupled to mode 1 of the tensor of shape "
        r"\(12, 5\): expected \(5, n_columns\)", only=["HyperLearn"]),
    Bad("coupling-shared-matrix-rows-mismatch",
        lambda name: (MultiModal(**base_views(), shared={"m": np.ones((4, 3))}),
                      {"coupling": {"m": 1}, "solver": "als", "diffusion_steps": 0}),
        ValueError, r"View \"shared\['m'\]\" has shape \(4, 3\) but is coupled to mode 1 "
        r".*expected \(5, n_columns\)", only=["HyperLearn"]),
    Bad("coupling-with-adam", with_params(coupling={"b": 0}), ValueError,
        r"coupling=\{'b': 0\} \(coupled matrices\) is solved by alternating least squares: "
        r"it needs solver='als'", only=["HyperLearn"]),
    Bad("coupling-view-with-nan",
        lambda name: (MultiModal(a=base_views()["a"], b=_with_entry(np.nan, view="b")),
                      {"coupling": {"b": 0}, "solver": "als", "diffusion_steps": 0}),
        ValueError, r"'b'.*NaN", only=["HyperLearn"]),
    Bad("validation-fraction-1.5", with_params(validation_fraction=1.5), InvalidParameterError,
        r"'validation_fraction' parameter", only=["DCMF", "MMEDA", "HyperLearn"]),
    Bad("devices-int", with_params(devices=0), InvalidParameterError, r"'devices' parameter"),
    Bad("verbose-negative", with_params(verbose=-1), InvalidParameterError,
        r"'verbose' parameter"),
    Bad("n-jobs-0", with_params(n_jobs=0), InvalidParameterError,
        r"'n_jobs' parameter.*Got 0"),
    Bad("n-jobs-float", with_params(n_jobs=1.5), InvalidParameterError,
        r"'n_jobs' parameter.*Got 1\.5"),
    Bad("n-components-float", with_params(n_components=2.5), InvalidParameterError,
        r"'n_components' parameter"),
    Bad("random-state-string", with_params(random_state="seed"), InvalidParameterError,
        r"'random_state' parameter"),
    Bad("weights-unknown-string", with_params(weights="balancd"), InvalidParameterError,
        r"'weights' parameter", only=["CMF", "DFMF"]),
    Bad("n-init-0", with_params(n_init=0), InvalidParameterError,
        r"'n_init' parameter.*range \[1, inf\)", only=["CMF", "DFMF"]),
    Bad("nonneg-string", with_params(nonneg="yes"), InvalidParameterError,
        r"'nonneg' parameter", only=["CMF"]),
    Bad("confidence-scale-negative", with_params(confidence_scale=-1.0), InvalidParameterError,
        r"'confidence_scale' parameter.*range \[0\.0, inf\)", only=["CMF"]),
    Bad("fit-intercept-unknown", with_params(fit_intercept="rows"), InvalidParameterError,
        r"'fit_intercept' parameter", only=["CMF"]),
    Bad("link-unknown", with_params(link="probit"), InvalidParameterError,
        r"'link' parameter", only=["CMF"]),
    # ---- transform-time mismatches (on a fitted model) -----------------------------------
    Bad("transform-wrong-width", lambda name: (MultiModal(a=np.ones((3, 6)), b=np.ones((3, 4))),
                                               {}),
        ValueError, r"(view 'a'|'a').*(6|shape)", method="transform",
        only=["CMF", "DFMF", "DCMF", "MMEDA"]),
    Bad("transform-wrong-view-count", lambda name: (MultiModal(a=np.ones((3, 5))), {}),
        ValueError, r"1 view", method="transform", only=["CMF", "DFMF", "DCMF", "MMEDA"]),
    Bad("transform-inf", lambda name: (MultiModal(a=np.full((3, 5), np.inf),
                                                  b=np.ones((3, 4))), {}),
        ValueError, r"'a'.*infinite", method="transform"),
]

# ---- issue 18: what an attacker and a careless user found -----------------------------
# (kept together below the original table so that other lanes' rows rebase cleanly)
NEAR_F32_MAX = 3e38  # finite in float32, but its square overflows every model's loss


def _pandas_na():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(base_views()["a"], columns=list("pqrst")).astype("Float64")
    df.iloc[1, 2] = pd.NA
    return df


BAD_INPUTS += [
    Bad("meta-tensor", with_view(a=torch.empty(12, 5, device="meta")), ValueError,
        r"View 'a' of shape \(12, 5\) is a tensor on the meta device: it has a shape but no "
        r"data"),
    Bad("n-components-bool", with_params(n_components=True), InvalidParameterError,
        r"The 'n_components' parameter of \w+ must be a number, not a bool; got True"),
    Bad("near-float32-max-dense", with_view(a=_with_entry(NEAR_F32_MAX)), ValueError,
        r"View 'a' of shape \(12, 5\) has values up to 3e\+38 in magnitude.*below 1.84e\+19"),
    Bad("near-float32-max-float32", with_view(a=_with_entry(NEAR_F32_MAX).astype(np.float32)),
        ValueError, r"View 'a' .* has values up to 3e\+38"),
    Bad("near-float32-max-torch", with_view(a=torch.as_tensor(_with_entry(NEAR_F32_MAX),
                                                             dtype=torch.float32)),
        ValueError, r"View 'a' .* has values up to 3e\+38"),
    Bad("near-float32-max-sparse", with_view(b=_sparse_with(-NEAR_F32_MAX)), ValueError,
        r"View 'b' .* has values up to 3e\+38", only=["CMF", "DCMF", "MMEDA", "HyperLearn"]),
    Bad("near-float32-max-transform",
        lambda name: (MultiModal(a=np.full((3, 5), NEAR_F32_MAX), b=np.ones((3, 4))), {}),
        ValueError, r"View 'a' of shape \(3, 5\) has values up to 3e\+38.*before fitting or "
                    r"transforming", method="transform"),
    Bad("masked-array-nan-not-allowed",
        with_view(a=np.ma.masked_array(base_views()["a"], mask=np.eye(12, 5, dtype=bool))),
        ValueError, r"View 'a' of shape \(12, 5\) has NaN values; this model needs complete",
        only=["MMEDA"]),
    Bad("pandas-na-nan-not-allowed",
        lambda name: (lambda: MultiModal(a=_pandas_na(), b=base_views()["b"]), {}), ValueError,
        r"View 'a' of shape \(12, 5\) has NaN values", only=["MMEDA"]),
    Bad("transform-views-renamed",
        lambda name: (MultiModal(a=np.ones((3, 5)), c=np.ones((3, 4))), {}), ValueError,
        r"X has views \['a', 'c'\] but \w+ was fitted on views \['a', 'b'\]",
        method="transform", only=["CMF", "DFMF", "DCMF", "MMEDA"]),
    Bad("transform-views-swapped",
        lambda name: (MultiModal(b=np.ones((3, 4)), a=np.ones((3, 5))), {}), ValueError,
        r"X has views \['b', 'a'\] \(in another order\) but \w+ was fitted on views "
        r"\['a', 'b'\]", method="transform", only=["CMF", "DFMF", "DCMF", "MMEDA"]),
    Bad("sparse-torch-tensor", with_view(a=torch.as_tensor(base_views()["a"]).to_sparse()),
        TypeError, r"View 'a' is a torch.sparse_coo torch tensor; pass a dense tensor"),
]

# Gaps in the library's validation, found by this suite: (bad input id, estimator) ->
# reason. Each one is a strict xfail: fixing the validation turns it into a failure
# that says "remove me from KNOWN_GAPS".
KNOWN_GAPS = {
}


def _copies(obj):
    """Deep copies of every array in ``obj`` (a MultiModal, a list, an array)."""
    if isinstance(obj, MultiModal):
        return [_copies(v) for v in obj.views] + [{k: _copies(v) for k, v in obj.shared.items()}]
    if isinstance(obj, list | tuple):
        return [_copies(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if sp.issparse(obj) or isinstance(obj, np.ndarray | SparseTensor):
        return copy.deepcopy(obj)
    if isinstance(obj, dict):
        return {k: _copies(v) for k, v in obj.items()}
    if hasattr(obj, "to_numpy") and hasattr(obj, "columns"):  # a pandas DataFrame
        return obj.copy(deep=True)
    return obj


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(
            torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))
    if sp.issparse(a):
        return (a.shape == b.shape and a.dtype == b.dtype and a.format == b.format
                and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
                and np.array_equal(a.data, b.data, equal_nan=True))
    if isinstance(a, SparseTensor):
        return (a.shape == b.shape and np.array_equal(a.indices, b.indices)
                and np.array_equal(a.values, b.values))
    if isinstance(a, np.ndarray):
        return (a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "to_numpy") and hasattr(a, "columns"):
        return bool(a.equals(b)) and list(a.dtypes) == list(b.dtypes)
    return a == b


def _loop_must_not_run(name):
    """A training loop that fails the test when a bad input reaches it."""

    def loop(*args, **kwargs):
        raise AssertionError(f"{name} started training on a bad input")

    return loop


def _cases():
    for bad in BAD_INPUTS:
        for name in bad.only:
            marks = []
            if (bad.id, name) in KNOWN_GAPS:
                marks = [pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[(bad.id, name)])]
            yield pytest.param(name, bad, id=f"{name}-{bad.id}", marks=marks)


@pytest.mark.parametrize("name, bad", list(_cases()))
def test_bad_input(name, bad, monkeypatch):
    if bad.method == "fit":
        est = ESTIMATORS[name]()
    else:
        est = fitted(name)
    state_before = {k: v for k, v in vars(est).items()}
    X, params = bad.make(name)
    est.set_params(**params)
    before = _copies(X)  # a thunk (an input whose construction must raise) copies as itself
    monkeypatch.setattr(f"{LOOP_MODULES[name]}.fit_loop", _loop_must_not_run(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(bad.exc, match=bad.match):
            getattr(est, bad.method)(X() if callable(X) else X, **bad.kwargs)
    assert _same(_copies(X), before), "the input was modified by a failed call"
    if bad.method == "fit":
        assert fitted_attributes(est) == [], f"half-fitted after a failed fit: {vars(est)}"
    else:
        assert set(vars(est)) == set(state_before), "a failed call changed the fitted model"


def test_bad_input_count():
    """At least 40 distinct bad inputs, and per estimator (the figure in RELIABILITY.md)."""
    per = {name: sum(name in b.only for b in BAD_INPUTS) for name in ESTIMATORS}
    assert len({b.id for b in BAD_INPUTS}) == len(BAD_INPUTS) >= 40
    assert min(per.values()) >= 30, per


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_fit_trains_once_and_computes_no_embedding(name, monkeypatch):
    """fit and fit_transform train once (``_fit``); fit never runs the fold-in whose
    result only fit_transform returns, and fit_transform returns what it documents."""
    cls = type(ESTIMATORS[name]())
    real_fit, real_transform = cls._fit, cls.transform
    calls = []
    monkeypatch.setattr(cls, "_fit", lambda self, X: calls.append("train") or real_fit(self, X))
    monkeypatch.setattr(cls, "transform",
                        lambda self, X: calls.append("transform") or real_transform(self, X))
    est = fitted(name)
    assert calls == ["train"]
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Z = ESTIMATORS[name]().fit_transform(base_input(name))
    assert calls[0] == "train" and calls.count("train") == 1
    if "transform" in calls:  # the embedding is the fold-in of the training rows
        np.testing.assert_array_equal(Z, real_transform(est, base_input(name)))


@pytest.mark.parametrize("name", MATRIX_ONLY)
def test_cold_start_rows_fold_in_from_the_other_views(name):
    """Issue 16: an all-NaN dense view at transform time (rows with no entry there) is
    not refused, warns nothing, and gives what the same rows as an empty sparse view
    give (``fit`` still refuses an all-NaN view: see BAD_INPUTS)."""
    est = fitted(name)
    b = base_views()["b"][:3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "All-NaN slice" or "Mean of empty slice"
        dense = est.transform(MultiModal(a=np.full((3, 5), np.nan), b=b))
    sparse = est.transform(MultiModal(a=sp.csr_matrix((3, 5)), b=b))
    assert dense.shape[0] == 3 and np.isfinite(dense).all()
    np.testing.assert_allclose(dense, sparse, rtol=1e-6, atol=1e-7)


def test_transform_before_fit_is_not_fitted_error():
    for name in ESTIMATORS:
        with pytest.raises(NotFittedError):
            ESTIMATORS[name]().transform(base_input(name))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_nearly_constant_view_fits_to_finite_output(name):
    """A view that varies by 1e-9 is not refused (only an exactly constant one is), and
    must not give 0/0 in any model's scaling: the fit stays finite."""
    views = base_views()
    views["b"] = 3.0 + 1e-9 * np.random.RandomState(1).rand(12, 4)
    X = MultiModal(**views)
    before = _copies(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Z = ESTIMATORS[name]().fit_transform(X)
    assert np.isfinite(Z).all()
    assert _same(_copies(X), before)


def test_dfmf_fits_negative_entries_only_when_allowed():
    """The bad input "negative entries" (refused by default, in the table above) is a
    semi-NMF with ``allow_negative=True``: the factors stay non-negative."""
    views = base_views()
    views["a"] = views["a"] - 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ESTIMATORS["DFMF"](max_iter=20, allow_negative=True).fit(MultiModal(**views))
    assert all((f >= 0).all() for f in model.factors_.values())


# --------------------------------------------------------------------------------------
# Faults injected into the one training loop of every estimator
# --------------------------------------------------------------------------------------

from mmfactor._training import fit_loop as _real_fit_loop  # noqa: E402


def faulty_loop(fault, at):
    """A ``fit_loop`` whose ``at``-th sweep (0-based) fails with ``fault()``, once: like
    one Ctrl-C, later loops (a fold-in) run normally. Also used by
    ``benchmarks/reliability.py``."""
    fired = []

    def loop(step, **kwargs):
        def faulty(epoch):
            if epoch == at and not fired:
                fired.append(epoch)
                return fault()
            return step(epoch)

        return _real_fit_loop(faulty, **kwargs)

    return loop


def _inject(monkeypatch, name, fault, at):
    """Make the ``at``-th sweep (0-based) of ``name``'s training fail with ``fault()``."""
    monkeypatch.setattr(f"{LOOP_MODULES[name]}.fit_loop", faulty_loop(fault, at))


def _raise(exc):
    def fault():
        raise exc

    return fault


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_interrupt_after_a_sweep_keeps_a_fitted_model_and_warns(name, monkeypatch):
    X = base_input(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ESTIMATORS[name](max_iter=1, tol=0)
        Z_ref = ref.fit_transform(X)  # the state after one sweep
    _inject(monkeypatch, name, _raise(KeyboardInterrupt()), at=1)
    est = ESTIMATORS[name](max_iter=3, tol=0)
    with pytest.warns(FitInterruptedWarning,
                      match=rf"{name}: fit interrupted by KeyboardInterrupt after 1 complete "
                            r"iteration\(s\) of max_iter=3.*keeps"):
        Z = est.fit_transform(X)
    monkeypatch.undo()  # DFMF's transform runs the loop too (a fold-in)
    assert est.n_iter_ == 1 and len(est.loss_curve_) == 1
    # fitted with the parameters of the last complete (and best) sweep: bit-identical
    # to a fit that stopped there, and usable
    if name == "DFMF":
        # DFMF's fit_transform returns its fold-in, which runs max_iter steps: the
        # reference folds in with the same max_iter as the interrupted estimator
        Z_ref = ref.set_params(max_iter=3).transform(X)
    np.testing.assert_array_equal(Z, Z_ref)
    assert np.isfinite(est.transform(X)).all()
    assert est.loss_curve_ == ref.loss_curve_


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("refit", [False, True])
def test_interrupt_in_the_first_sweep_leaves_the_estimator_unfitted(name, refit, monkeypatch):
    X = base_input(name)
    est = fitted(name) if refit else ESTIMATORS[name]()
    _inject(monkeypatch, name, _raise(KeyboardInterrupt()), at=0)
    with pytest.raises(KeyboardInterrupt):
        est.fit(X)
    assert fitted_attributes(est) == []  # not half-fitted: unfitted
    with pytest.raises(NotFittedError):
        est.transform(X)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_non_finite_loss_stops_with_an_actionable_message_and_unfits(name, monkeypatch):
    _inject(monkeypatch, name, lambda: {"loss": float("nan")}, at=1)
    est = ESTIMATORS[name](max_iter=3, tol=0)
    # DFMF refuses negative data: its hint names its real fix (issue 22), not a scaler
    hint = "constraint_form='laplacian'" if name == "DFMF" else "StandardScaler"
    with pytest.raises(NonFiniteLossError,
                       match=rf"{name}: the loss became non-finite at iteration 2 "
                             rf"\(loss=nan\).*{hint}"):
        est.fit(base_input(name))
    assert fitted_attributes(est) == []


# values whose squares overflow float32 are refused before training (check_view), so the
# real overflow comes from a diverging optimiser
@pytest.mark.parametrize("name", ["DCMF", "MMEDA", "HyperLearn"])
def test_real_overflow_stops_at_the_first_non_finite_loss(name):
    """No injection: a learning rate of 1e20 makes the real loss NaN or inf."""
    est = ESTIMATORS[name](learning_rate_init=1e20, max_iter=5, tol=0)
    with pytest.raises(NonFiniteLossError, match=rf"{name}: the loss became non-finite at "
                                                 r"iteration 1"):
        est.fit(base_input(name))
    assert fitted_attributes(est) == []
    assert set(vars(est)) == set(est.get_params(deep=False))  # no training state left


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_cuda_out_of_memory_is_reported_with_the_sizes(name, monkeypatch):
    oom = torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
        "79.10 GiB of which 3.10 GiB is free.")
    _inject(monkeypatch, name, _raise(oom), at=1)
    est = ESTIMATORS[name](max_iter=3, tol=0)
    with pytest.raises(FitOutOfMemoryError,
                       match=rf"{name}: out of memory during iteration 2; torch tried to "
                             r"allocate 20.00 GiB.*n_components=2.*Lower n_components") as info:
        est.fit(base_input(name))
    assert info.value.__cause__ is oom
    assert fitted_attributes(est) == []


@pytest.mark.parametrize("name", ["CMF", "HyperLearn"])
def test_cpu_allocator_failure_is_reported_with_the_size(name, monkeypatch):
    """A real allocation the CPU allocator refuses (128 TiB), inside a sweep."""
    _inject(monkeypatch, name, lambda: torch.empty((2**20, 2**25)), at=0)
    est = ESTIMATORS[name]()
    with pytest.raises(FitOutOfMemoryError,
                       match=rf"{name}: out of memory during iteration 1; torch tried to "
                             r"allocate 128.0 TiB"):
        est.fit(base_input(name))
    assert fitted_attributes(est) == []


def test_interrupt_during_a_fold_in_aborts_transform_and_keeps_the_model(monkeypatch):
    """DFMF.transform with constraints among the new rows runs the training loop (a
    fold-in; without them it solves one NNLS problem per row): Ctrl-C there aborts the
    call and leaves the fitted model as it was."""
    X = MultiModal(**base_views(), c=np.eye(12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = ESTIMATORS["DFMF"](constraints={"sample": "c"}).fit(X)
    state = copy.deepcopy(vars(est))
    _inject(monkeypatch, "DFMF", _raise(KeyboardInterrupt()), at=1)
    with pytest.raises(KeyboardInterrupt):
        est.transform(X)
    assert vars(est).keys() == state.keys()
    assert all(_same(vars(est)[k], state[k]) for k in ("factors_", "backbones_"))


def test_early_stopping_models_keep_their_best_snapshot_when_interrupted(monkeypatch):
    """HyperLearn with early stopping: the validation error rises, then Ctrl-C; the
    factors kept are those of the best sweep (on_improvement's snapshot), not the last."""
    rng = np.random.RandomState(0)
    M = rng.rand(20, 8)
    M[rng.rand(20, 8) < 0.3] = np.nan
    seen = {}

    def loop(step, **kwargs):
        on_improvement = kwargs["on_improvement"]
        val = iter([3.0, 2.0, 2.5])

        def step2(epoch):
            if epoch == 3:
                raise KeyboardInterrupt
            return step(epoch)

        def improve():
            seen["best"] = epoch_box[0]
            on_improvement()

        epoch_box = [0]

        def validation():
            epoch_box[0] += 1
            return next(val)

        kwargs.update(validation=validation, on_improvement=improve, n_iter_no_change=5)
        return _real_fit_loop(step2, **kwargs)

    monkeypatch.setattr(f"{LOOP_MODULES['HyperLearn']}.fit_loop", loop)
    est = ESTIMATORS["HyperLearn"](early_stopping=True, missing="unobserved", max_iter=10,
                                   tol=1e-6)
    with pytest.warns(FitInterruptedWarning, match="parameters of iteration 2, the best so far"):
        est.fit(M)
    assert seen["best"] == 2 and est.n_iter_ == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ESTIMATORS["HyperLearn"](early_stopping=True, missing="unobserved", max_iter=2,
                                       tol=0).fit(M)
    np.testing.assert_array_equal(est.factors_[1], ref.factors_[1])


# --------------------------------------------------------------------------------------
# Downloads: every fetch_* checks a SHA-256, writes atomically, refuses escaping paths and
# works offline from a populated cache
# --------------------------------------------------------------------------------------

import gzip  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import mmfactor.datasets as mds  # noqa: E402
from mmfactor.datasets import _goodreads  # noqa: E402

# fetch_* loaders that go through datasets._base.fetch_file (SHA-256, atomic, safe_extract)
VERIFIED_FETCHERS = {"fetch_dicty": ["dicty"], "fetch_movielens_100k": ["ml-100k",
                                                                        "movielens_monti"],
                     "fetch_lastfm_hetrec": ["hetrec2011-lastfm-2k"]}


def test_every_fetch_loader_is_accounted_for():
    fetchers = {n for n in mds.__all__ if n.startswith("fetch_")}
    assert fetchers == set(VERIFIED_FETCHERS) | {"fetch_goodreads_books"}


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _populated_cache(data_home, tmp_path, folders):
    home = tmp_path / "cache"
    for f in folders:
        shutil.copytree(data_home / f, home / f)
    return home


# copies of the real files ($MMFACTOR_DATA, default ../shared/data; see conftest.py)
REAL_FETCHERS = [pytest.param(f, marks=pytest.mark.realdata(*d))
                 for f, d in VERIFIED_FETCHERS.items()]


@pytest.mark.parametrize("fetch", REAL_FETCHERS)
def test_fetch_works_offline_from_a_populated_cache(fetch, data_home, tmp_path, monkeypatch):
    home = _populated_cache(data_home, tmp_path, VERIFIED_FETCHERS[fetch])
    _no_network(monkeypatch)
    data = getattr(mds, fetch)(home)
    assert data is not None


@pytest.mark.parametrize("fetch", REAL_FETCHERS)
def test_fetch_refuses_a_corrupted_cached_file(fetch, data_home, tmp_path, monkeypatch):
    home = _populated_cache(data_home, tmp_path, VERIFIED_FETCHERS[fetch])
    _no_network(monkeypatch)
    victim = sorted(p for p in (home / VERIFIED_FETCHERS[fetch][0]).iterdir()
                    if p.name.startswith(("dicty.gene_expression", "u.data",
                                           "user_taggedartists")))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"Cached file .*{victim.name} does not match its "
                                         r"SHA-256 checksum: expected [0-9a-f]{64}, got "
                                         r"[0-9a-f]{64}\. .* delete it"):
        getattr(mds, fetch)(home, download_if_missing=False)


def _goodreads_source(root, book_ids):
    """UCSD-format files for the given book ids, with local PNG covers (file:// URLs)."""
    from PIL import Image

    src = root / "src"
    src.mkdir()
    home = root / "cache" / "goodreads"
    home.mkdir(parents=True)
    books, genres = [], []
    for i, bid in enumerate(book_ids):
        path = src / f"c{i}.png"
        Image.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8)).save(path)
        books.append({"book_id": bid, "title": f"B{i}", "description": f"story {i}",
                      "average_rating": "4.0", "language_code": "eng",
                      "image_url": path.as_uri()})
        genres.append({"book_id": bid, "genres": {"fiction": 2}})
    for name, rows in (("goodreads_books.json.gz", books),
                       ("goodreads_book_genres_initial.json.gz", genres)):
        with gzip.open(home / name, "wt", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    return root / "cache"


_PUBLISHED_GOODREADS = dict(_goodreads.FILES)  # as shipped, before any test unpins them


@pytest.fixture(autouse=True)
def _made_up_goodreads(made_up_goodreads_files):
    """The Goodreads tests below read small files in the UCSD format made here."""


@pytest.mark.parametrize("how", ["cached", "downloaded"])
def test_goodreads_refuses_files_that_are_not_the_published_ones(tmp_path, monkeypatch, how):
    """The UCSD files must match the MD5s published for them (no SHA-256 is published):
    made-up files are refused, whether found in the cache or downloaded."""
    monkeypatch.setattr(_goodreads, "FILES", _PUBLISHED_GOODREADS)
    assert all(f.md5 for f in _PUBLISHED_GOODREADS.values())
    home = _goodreads_source(tmp_path, ["1", "2", "3"])  # not the published UCSD files
    if how == "downloaded":  # served from file:// URLs into an empty cache
        src = home / "goodreads"
        monkeypatch.setattr(_goodreads, "FILES", {
            k: dataclasses.replace(v, url=(src / v.path.split("/")[-1]).as_uri(), mirrors=())
            for k, v in _PUBLISHED_GOODREADS.items()})
        home = tmp_path / "fresh"
        match = "Checksum mismatch for file:.*goodreads_books.json.gz: expected the published MD5"
    else:
        match = (r"Cached file .*goodreads_books.json.gz does not match its published MD5 "
                 r"checksum: expected 01b40c70a00fb6aa321ee478f0fd0d6b")
    with pytest.raises(ValueError, match=match):
        mds.fetch_goodreads_books(home, n_samples=2, progress=False)
    if how == "downloaded":
        left = sorted(p.name for p in (home / "goodreads").iterdir())
        assert left == [], left  # nothing half-trusted stays in the cache
    else:  # refused files get no record: they stay unverified
        assert not list((home / "goodreads").glob("*.sha256"))


def test_goodreads_checks_a_pinned_sha256(tmp_path, monkeypatch):
    """Once a published SHA-256 is pinned in FILES, a different file is refused outright."""
    home = _goodreads_source(tmp_path, ["1", "2", "3"])
    pinned = dataclasses.replace(_goodreads.FILES["books"], sha256="0" * 64)
    monkeypatch.setitem(_goodreads.FILES, "books", pinned)
    _no_network(monkeypatch)
    with pytest.raises(ValueError, match="goodreads_books.json.gz does not match its SHA-256 "
                                         "checksum: expected 0{64}"):
        mds.fetch_goodreads_books(home, n_samples=2, progress=False, download_if_missing=False)


@pytest.mark.parametrize("victim", ["goodreads_books.json.gz",
                                    "goodreads_book_genres_initial.json.gz", "covers/1.png"])
def test_goodreads_refuses_a_cached_file_changed_after_first_use(tmp_path, victim):
    home = _goodreads_source(tmp_path, ["1", "2", "3"])
    mds.fetch_goodreads_books(home, n_samples=3, progress=False)  # records every SHA-256
    path = home / "goodreads" / victim
    assert (path.parent / (path.name + ".sha256")).exists()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"Cached file .*{path.name} does not match the "
                                         "SHA-256 recorded when it entered the cache"):
        mds.fetch_goodreads_books(home, n_samples=3, progress=False)
    assert path.read_bytes() == bytes(data)  # refused, not silently replaced


def test_goodreads_refuses_cover_paths_that_escape_the_cache(tmp_path):
    home = _goodreads_source(tmp_path, ["1", "../../../escape"])
    try:
        with pytest.raises(ValueError, match="outside the cache"):
            mds.fetch_goodreads_books(home, n_samples=2, progress=False)
    finally:
        escaped = list(tmp_path.glob("escape*"))
    assert not escaped, f"written outside the cache: {escaped}"


def test_goodreads_interrupted_cover_download_leaves_nothing(tmp_path, monkeypatch):
    home = _goodreads_source(tmp_path, ["1", "2"])

    class Interrupted:
        headers = {"Content-Length": "1000"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, *a):
            raise KeyboardInterrupt

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Interrupted())
    with pytest.raises(KeyboardInterrupt):
        mds.fetch_goodreads_books(home, n_samples=2, progress=False)
    covers = home / "goodreads" / "covers"
    assert not list(covers.glob(".part-*")), list(covers.iterdir())


def test_goodreads_works_offline_from_a_populated_cache(tmp_path, monkeypatch):
    home = _goodreads_source(tmp_path, ["1", "2", "3"])
    first = mds.fetch_goodreads_books(home, n_samples=3, progress=False)
    _no_network(monkeypatch)
    again = mds.fetch_goodreads_books(home, n_samples=3, progress=False,
                                      download_if_missing=False)
    np.testing.assert_array_equal(first.images, again.images)


def _overcommit_refuses_terabytes():
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() in ("0", "2")
    except OSError:
        return False


@pytest.mark.skipif(not _overcommit_refuses_terabytes(),
                    reason="needs Linux heuristic/strict overcommit to refuse a 4 TB malloc")
def test_a_real_out_of_memory_in_cmf_names_the_size_and_the_parameter():
    """No injection: n_components=10^6 makes CMF's normal equations 10^6 x 10^6 (4 TB)."""
    est = CMF(n_components=10**6, max_iter=2)
    with pytest.raises(FitOutOfMemoryError, match=r"CMF: out of memory during iteration 1; "
                                                  r"torch tried to allocate 3.6 TiB.*"
                                                  r"n_components=1000000"):
        est.fit(base_input("CMF"))
    assert fitted_attributes(est) == []


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_real_asynchronous_ctrl_c_never_leaves_a_half_fitted_model(name):
    """A KeyboardInterrupt raised by a signal handler (as Python's SIGINT handler does)
    1 s into a fit that cannot finish (max_iter=10^6): the estimator is fitted with a
    FitInterruptedWarning and usable, or unfitted with the KeyboardInterrupt raised.

    A warm-up fit first: on a cold process the first fit spends its first second in
    torch's lazy imports, before the training loop, where the models have already set
    ``devices_`` (the gap tested by ``test_ctrl_c_before_the_training_loop``)."""
    import signal

    from sklearn.utils.validation import check_is_fitted

    def ctrl_c(signum, frame):
        raise KeyboardInterrupt

    X = base_input(name)
    fitted(name)  # warm-up
    est = ESTIMATORS[name](max_iter=10**6, tol=0)
    old = signal.signal(signal.SIGALRM, ctrl_c)
    raised = False
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            try:
                est.fit(X)
            except KeyboardInterrupt:
                import traceback

                raised = traceback.format_exc(limit=-4)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
    if raised:
        assert fitted_attributes(est) == [], raised
    else:
        assert any(issubclass(x.category, FitInterruptedWarning) for x in w)
        check_is_fitted(est)
        assert 1 <= est.n_iter_ < 10**6 and len(est.loss_curve_) == est.n_iter_
        est.set_params(max_iter=5)  # DFMF's fold-in runs max_iter iterations
        assert np.isfinite(est.transform(X)).all()


_PREP = (
    "{file} {cls}.{where}: fitted attributes ({attrs}) are set before the training loop "
    "starts, so a Ctrl-C (or any exception) in the preparation between them and fit_loop "
    "(building relations, networks, lazy torch imports on a first fit: about 1 s measured) "
    "leaves a half-fitted estimator (check_is_fitted passes, transform fails with an "
    "AttributeError); fit_loop can only unfit from inside the loop. Expected: set fitted "
    "attributes after training (keep resolved devices in a local until then)"
)
PREP_GAPS = {
}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=PREP_GAPS[n]))
    if n in PREP_GAPS else n for n in ESTIMATORS])
def test_ctrl_c_before_the_training_loop_leaves_the_estimator_unfitted(name, monkeypatch):
    """Deterministic: the KeyboardInterrupt arrives just before the loop starts."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"{LOOP_MODULES[name]}.fit_loop", interrupted)
    est = ESTIMATORS[name]()
    with pytest.raises(KeyboardInterrupt):
        est.fit(base_input(name))
    assert fitted_attributes(est) == []


# --------------------------------------------------------------------------------------
# Issue 18: inputs that must just work (the same embedding as their plain equivalent),
# and the state, threads and memory of a model
# --------------------------------------------------------------------------------------


def _dup_csr():
    """View 'a' as a CSR with every stored entry split into two halves (duplicates), its
    column indices unsorted, and its plain (summed) equivalent."""
    a = base_views()["a"]
    coo = sp.coo_matrix(a)
    dup = sp.csr_matrix((np.r_[coo.data / 2, coo.data / 2],
                         (np.r_[coo.row, coo.row], np.r_[coo.col, coo.col])), shape=a.shape)
    # rebuild it without SciPy's summing: raw arrays, duplicates kept and reversed per row
    rows, cols, vals = [], [], []
    for i in range(a.shape[0]):
        for j in reversed(range(a.shape[1])):
            rows += [i, i]
            cols += [j, j]
            vals += [a[i, j] / 2, a[i, j] / 2]
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=a.shape[0]))]
    raw = sp.csr_matrix((np.array(vals), np.array(cols), indptr), shape=a.shape)
    assert not raw.has_canonical_format and raw.nnz == 2 * dup.nnz
    return raw, sp.csr_matrix(a)


def _unsorted_csr():
    a = sp.csr_matrix(base_views()["a"])
    perm = np.concatenate([np.arange(s, e)[::-1] for s, e in zip(a.indptr[:-1], a.indptr[1:],
                                                                 strict=True)])
    raw = sp.csr_matrix((a.data[perm], a.indices[perm], a.indptr), shape=a.shape)
    raw.has_sorted_indices = False
    return raw, a


def _inference_tensor():
    with torch.inference_mode():
        t = torch.as_tensor(base_views()["a"])
    return t, torch.as_tensor(base_views()["a"])


def _nan_a():
    a = base_views()["a"].copy()
    a[np.eye(12, 5, dtype=bool)] = np.nan
    return a


# name -> (variant of view 'a', its plain equivalent, estimators)
EQUIVALENT_INPUTS = {
    "negative-strides": (lambda: base_views()["a"][::-1], lambda: base_views()["a"][::-1].copy(),
                         list(ESTIMATORS)),
    "fortran-order": (lambda: np.asfortranarray(base_views()["a"]), lambda: base_views()["a"],
                      list(ESTIMATORS)),
    "masked-array": (lambda: np.ma.masked_array(base_views()["a"],
                                                mask=np.eye(12, 5, dtype=bool)), _nan_a,
                     ["CMF", "DFMF", "DCMF", "HyperLearn"]),
    "masked-array-nothing-masked": (lambda: np.ma.masked_array(base_views()["a"]),
                                    lambda: base_views()["a"], list(ESTIMATORS)),
    "pandas-na": (_pandas_na, lambda: np.where(np.arange(60).reshape(12, 5) == 7, np.nan,
                                               base_views()["a"]),
                  ["CMF", "DFMF", "DCMF", "HyperLearn"]),
    "bfloat16-tensor": (lambda: torch.as_tensor(base_views()["a"]).bfloat16(),
                        lambda: torch.as_tensor(base_views()["a"]).bfloat16().float(),
                        list(ESTIMATORS)),
    "inference-mode-tensor": (lambda: _inference_tensor()[0], lambda: _inference_tensor()[1],
                              list(ESTIMATORS)),
    "int8": (lambda: (base_views()["a"] * 100).astype(np.int8),
             lambda: (base_views()["a"] * 100).astype(np.int8).astype(np.float64),
             list(ESTIMATORS)),
    "csr-duplicates-summed": (lambda: _dup_csr()[0], lambda: _dup_csr()[1], list(ESTIMATORS)),
    "csr-unsorted": (lambda: _unsorted_csr()[0], lambda: _unsorted_csr()[1], list(ESTIMATORS)),
}


@pytest.mark.parametrize("name, case", [(n, c) for c, (_, _, only) in EQUIVALENT_INPUTS.items()
                                        for n in only])
def test_equivalent_inputs_give_the_same_embedding(name, case):
    """A view in an unusual form is read as its plain equivalent (masked entries and pd.NA
    are missing entries, duplicates are summed, strides and dtypes converted on a copy):
    the same embedding, bit for bit, and the user's object unchanged."""
    variant, plain, _ = EQUIVALENT_INPUTS[case]
    b = base_views()["b"]
    X = MultiModal(a=variant(), b=b)
    before = _copies(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Z = ESTIMATORS[name]().fit_transform(X)
        Z_ref = ESTIMATORS[name]().fit_transform(MultiModal(a=plain(), b=b))
    np.testing.assert_array_equal(Z, Z_ref)
    assert _same(_copies(X), before), "the input was modified"
    if case == "csr-unsorted":  # the user's matrix is still unsorted: not reordered in place
        a = X.views[0]
        assert any((np.diff(a.indices[s:e]) < 0).any()
                   for s, e in zip(a.indptr[:-1], a.indptr[1:], strict=True))


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_fit_and_transform_under_no_grad_enable_grad_themselves(name, context):
    X = base_input(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ESTIMATORS[name]().fit(X)
        with getattr(torch, context)():
            est = ESTIMATORS[name]().fit(X)
            Z = est.transform(X)
    np.testing.assert_array_equal(Z, ref.transform(X))


@pytest.mark.parametrize("name", ["CMF", "DFMF", "DCMF", "HyperLearn"])
def test_a_sample_with_nothing_observed_is_embedded_alone_as_in_a_batch(name):
    """One sample whose view 'a' is all missing: transform embeds it the same whether it
    comes alone or inside a batch (not refused alone, embedded in a batch)."""
    est = fitted(name)
    v = base_views()
    a = v["a"][:3].copy()
    a[0] = np.nan
    batch = est.transform(MultiModal(a=a, b=v["b"][:3]))
    alone = est.transform(MultiModal(a=a[:1], b=v["b"][:1]))
    assert np.isfinite(alone).all()
    np.testing.assert_allclose(alone[0], batch[0], rtol=1e-5, atol=1e-6)


def test_a_sample_with_nothing_observed_is_refused_alike_by_a_complete_data_model():
    est = fitted("MMEDA")
    v = base_views()
    a = v["a"][:3].copy()
    a[0] = np.nan
    for rows in (slice(0, 1), slice(0, 3)):
        with pytest.raises(ValueError, match=r"View 'a' .* has NaN values"):
            est.transform(MultiModal(a=a[rows], b=v["b"][rows]))


@pytest.mark.parametrize("name", ["CMF", "DFMF", "DCMF", "MMEDA"])
def test_dataframe_columns_are_checked_at_transform(name):
    pd = pytest.importorskip("pandas")
    v = base_views()
    df = pd.DataFrame(v["a"], columns=list("pqrst"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = ESTIMATORS[name]().fit(MultiModal(a=df, b=v["b"]))
        single = ESTIMATORS[name]().fit(df)
    np.testing.assert_array_equal(single.feature_names_in_, list("pqrst"))
    assert not hasattr(est, "feature_names_in_")  # two views: names per view, privately
    Z = est.transform(MultiModal(a=df, b=v["b"]))
    np.testing.assert_array_equal(Z, est.transform(MultiModal(a=v["a"], b=v["b"])))
    with pytest.raises(ValueError, match=r"(?s)feature names should match.*same order as they "
                                         r"were in fit.*view 'a' has columns "
                                         r"\['t', 's', 'r', 'q', 'p'\]"):
        est.transform(MultiModal(a=df[list("tsrqp")], b=v["b"]))
    with pytest.raises(ValueError, match=r"unseen at fit time:\n- z\n"):
        est.transform(MultiModal(a=df.rename(columns={"p": "z"}), b=v["b"]))
    with pytest.raises(ValueError, match=r"feature names should match"):
        single.transform(df[list("tsrqp")])


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_an_interrupted_fit_leaves_no_training_state(name, monkeypatch, tmp_path):
    """Ctrl-C in the first sweep: the estimator keeps its parameters only (no private
    copies of the data or factors): it pickles as small as a fresh one, and saves."""
    import pickle

    fresh = ESTIMATORS[name]()
    est = ESTIMATORS[name]()
    _inject(monkeypatch, name, _raise(KeyboardInterrupt()), at=0)
    with pytest.raises(KeyboardInterrupt):
        est.fit(base_input(name, n=200))
    assert set(vars(est)) == set(vars(fresh)), sorted(set(vars(est)) - set(vars(fresh)))
    assert len(pickle.dumps(est)) == len(pickle.dumps(fresh))
    loaded = mmfactor.load(mmfactor.save(est, tmp_path / "interrupted.mmf"))
    assert loaded.get_params() == est.get_params()


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_failed_fit_inside_a_pipeline_raises_its_own_error(name, monkeypatch):
    """scikit-learn's meta-estimators set attributes on a sub-estimator around its fit
    (1.9: ``_parent_callback_ctx``, deleted afterwards): dropping the training state of a
    failed fit must keep them, or the caller's clean-up hides the real error."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    est = ESTIMATORS[name]()
    est._parent_callback_ctx = marker = object()  # what the caller set before fit
    _inject(monkeypatch, name, _raise(RuntimeError("the real error")), at=0)
    with pytest.raises(RuntimeError, match="the real error"):
        est.fit(base_input(name))
    assert est._parent_callback_ctx is marker
    del est._parent_callback_ctx
    assert fitted_attributes(est) == []
    pipe = Pipeline([("emb", ESTIMATORS[name]()), ("clf", LogisticRegression())])
    _inject(monkeypatch, name, _raise(RuntimeError("the real error")), at=0)
    with pytest.raises(RuntimeError, match="the real error"):
        pipe.fit(base_input(name), np.arange(12) % 2)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_concurrent_transforms_from_threads_agree(name):
    """Threads calling transform on one fitted model get the serial result (CMF's
    sigmoid fold-in keeps working state on the model: it failed 21 times in 40)."""
    from concurrent.futures import ThreadPoolExecutor

    kw = {}
    X = base_input(name)
    if name == "CMF":
        kw = {"link": "sigmoid"}
        X = MultiModal(**{k: (v > 0.5).astype(float) for k, v in base_views().items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = ESTIMATORS[name](**kw).fit(X)
        ref = est.transform(X)
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda _: est.transform(X), range(24)))
    for Z in outs:
        np.testing.assert_array_equal(Z, ref)


def test_small_integer_views_are_validated_in_float32():
    """An int8 view is read as float32 (exact), not float64 plus float64 temporaries
    (16x its size): the peak allocation stays near the float32 copy."""
    import tracemalloc

    from mmfactor._multimodal import check_view

    a = np.random.RandomState(0).randint(-100, 100, size=(1000, 2000)).astype(np.int8)
    tracemalloc.start()
    v = check_view("a", a)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert v.data.dtype == np.float32 and np.array_equal(v.data, a)
    assert peak < 4.5 * a.nbytes, peak / a.nbytes


# ---- issue 18: a damaged cache (links to devices, bad records, stale archives) ----------

import os  # noqa: E402
import zipfile  # noqa: E402

from mmfactor.datasets import _base as dsbase  # noqa: E402


def _origin(tmp_path, content=b"the published bytes\n", name="data.txt"):
    """A file served from a file:// URL, and its RemoteFile with its SHA-256."""
    import hashlib

    src = tmp_path / "origin"
    src.mkdir(exist_ok=True)
    (src / name).write_bytes(content)
    return dsbase.RemoteFile(f"set/{name}", (src / name).as_uri(),
                             hashlib.sha256(content).hexdigest())


@pytest.mark.parametrize("published", [True, False])
def test_a_cached_file_linked_to_dev_zero_is_refused(tmp_path, published):
    remote = _origin(tmp_path)
    if not published:
        remote = dataclasses.replace(remote, sha256=None)
    home = tmp_path / "cache"
    (home / "set").mkdir(parents=True)
    os.symlink("/dev/zero", home / "set" / "data.txt")
    with pytest.raises(ValueError, match=r"data.txt is not a regular file \(it is or links to "
                                         r"a device"):
        dsbase.fetch_file(remote, home, progress=False)


def test_a_record_linked_to_dev_zero_is_refused(tmp_path):
    remote = dataclasses.replace(_origin(tmp_path), sha256=None)
    home = tmp_path / "cache"
    path = dsbase.fetch_file(remote, home, progress=False)
    record = path.with_name(path.name + ".sha256")
    record.unlink()
    os.symlink("/dev/zero", record)
    with pytest.raises(ValueError, match=r"The SHA-256 record .*data.txt.sha256 is not a "
                                         r"regular file"):
        dsbase.fetch_file(remote, home, progress=False)


@pytest.mark.parametrize("record, ok", [("", False), ("   \n", False), ("xyz  data.txt\n", False),
                                        ("UPPER", True)])
def test_sha256_records_empty_malformed_or_upper_case(tmp_path, record, ok):
    """An empty or malformed record is refused with a clear error (it was an IndexError);
    an upper-case one is the same digest (it was refused as a mismatch)."""
    remote = dataclasses.replace(_origin(tmp_path), sha256=None)
    home = tmp_path / "cache"
    path = dsbase.fetch_file(remote, home, progress=False)
    rec = path.with_name(path.name + ".sha256")
    if record == "UPPER":
        record = rec.read_text().upper().replace("DATA.TXT", "data.txt")
    rec.write_text(record)
    if ok:
        assert dsbase.fetch_file(remote, home, progress=False) == path
    else:
        with pytest.raises(ValueError, match=r"record .* is empty or malformed \(expected 64 "
                                             r"hexadecimal digits"):
            dsbase.fetch_file(remote, home, progress=False)


def test_a_stale_cached_archive_is_downloaded_again(tmp_path):
    """An archive left in the cache by an older release (its member differs) used to fail
    forever, blaming the URL; it is now deleted and downloaded once more."""
    import hashlib

    src = tmp_path / "origin"
    src.mkdir()
    member = b"current member\n"
    with zipfile.ZipFile(src / "set.zip", "w") as zf:
        zf.writestr("set/m.txt", member)
    remote = dsbase.RemoteFile("set/m.txt", (src / "set.zip").as_uri(),
                               hashlib.sha256(member).hexdigest(), archive=True,
                               member="set/m.txt")
    home = tmp_path / "cache"
    home.mkdir()
    with zipfile.ZipFile(home / "set.zip", "w") as zf:  # the stale archive
        zf.writestr("set/m.txt", b"an older release\n")
    path = dsbase.fetch_file(remote, home, progress=False)
    assert path.read_bytes() == member
    (home / "set.zip").write_bytes(b"not a zip at all")  # damaged, and the member gone
    path.unlink()
    assert dsbase.fetch_file(remote, home, progress=False).read_bytes() == member
    # the origin itself is wrong: blamed only after a fresh download
    with zipfile.ZipFile(src / "set.zip", "w") as zf:
        zf.writestr("set/m.txt", b"tampered at the origin\n")
    path.unlink()
    (home / "set.zip").unlink()
    with pytest.raises(ValueError, match=r"Checksum mismatch for set/m.txt of file:"):
        dsbase.fetch_file(remote, home, progress=False)


@pytest.mark.parametrize("damage", ["edited", "dev-zero"])
def test_goodreads_rebuilds_an_edited_candidates_file(tmp_path, damage):
    """The candidates file (derived from the verified books file) has its SHA-256 recorded;
    edited, or replaced by a link to /dev/zero, it is rebuilt, not read as data."""
    home = _goodreads_source(tmp_path, ["1", "2", "3"])
    first = mds.fetch_goodreads_books(home, n_samples=3, progress=False)
    (cache,) = (home / "goodreads").glob("candidates-*.json")
    assert cache.with_name(cache.name + ".sha256").exists()
    if damage == "edited":
        cands = json.loads(cache.read_text())
        cands[0]["title"] = "INJECTED"
        cache.write_text(json.dumps(cands))
    else:
        cache.unlink()
        os.symlink("/dev/zero", cache)
    again = mds.fetch_goodreads_books(home, n_samples=3, progress=False)
    assert "INJECTED" not in again.title and again.title == first.title
    np.testing.assert_array_equal(first.images, again.images)
    assert json.loads(cache.read_text())[0]["title"] != "INJECTED" and not cache.is_symlink()


def test_dfmf_svd_init_never_densifies_a_sparse_view():
    """init='svd' on a 50,000 x 50,000 sparse relation (20 GB dense) runs a truncated SVD
    of the sparse blocks (it tried to allocate them dense); on a small view the sparse
    and dense inputs give the same fit."""
    import tracemalloc

    rng = np.random.RandomState(0)
    n = 50_000
    R = sp.csr_matrix((rng.rand(2000), (rng.randint(0, n, 2000), rng.randint(0, n, 2000))),
                      shape=(n, n))
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = ESTIMATORS["DFMF"](init="svd").fit(R)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 2**20, peak
    assert all(np.isfinite(f).all() for f in est.factors_.values())
    X = base_views()["a"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = ESTIMATORS["DFMF"](init="svd").fit_transform(X)
        sparse = ESTIMATORS["DFMF"](init="svd").fit_transform(sp.csr_matrix(X))
    np.testing.assert_allclose(sparse, dense, rtol=1e-8, atol=1e-10)
