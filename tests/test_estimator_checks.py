"""scikit-learn's common estimator checks, on single-view array input, for every estimator.

A check an estimator cannot pass is listed in ``EXPECTED_FAILED`` with its reason, never
skipped wholesale.
"""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from mmfactor import CMF, DCMF, DFMF, MMEDA, HyperLearn, MultiModal

EXPECTED_FAILED = {
    "CMF": {},
    "DFMF": {},
    "DCMF": {},
    "MMEDA": {},
    "HyperLearn": {},
}

ESTIMATORS = [
    CMF(n_components=2, max_iter=5, tol=0, random_state=0),
    DFMF(n_components=2, max_iter=5, tol=0, random_state=0),
    DCMF(n_components=2, hidden_layer_sizes=(4,), max_iter=2, tol=0, random_state=0),
    MMEDA(n_components=2, hidden_layer_sizes=(4,), view_components=3, fusion_layer_sizes=(4,),
          max_iter=2, tol=0, batch_size=8, random_state=0),
    HyperLearn(n_components=2, max_iter=2, tol=0, diffusion_steps=1, cheb_order=2,
               hidden_size=4, random_state=0),
]


def _expected(est):
    return EXPECTED_FAILED.get(type(est).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# checks that parametrize_with_checks does not yield for third-party estimators (scikit-
# learn runs them on its own estimators only): feature names and the set_output API
EXTRA_CHECKS = [
    "check_dataframe_column_names_consistency",
    "check_transformer_get_feature_names_out",
    "check_transformer_get_feature_names_out_pandas",
    "check_set_output_transform",
    "check_set_output_transform_pandas",
    "check_global_output_transform_pandas",
    "check_get_feature_names_out_error",
]


@pytest.mark.parametrize("check", EXTRA_CHECKS)
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_feature_names_and_set_output(estimator, check):
    pytest.importorskip("pandas")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        getattr(estimator_checks, check)(type(estimator).__name__, clone(estimator))


def _n_features_input(name):
    """Two views of 12 samples, and the n_features_in_ each model's docstring promises."""
    rng = np.random.RandomState(0)
    if name == "HyperLearn":  # a 3-mode tensor: n_features_in_ is the size of mode 1
        return rng.rand(12, 5, 3), 5
    if name == "MMEDA":  # an image view counts C * H * W features
        return MultiModal(img=rng.rand(12, 1, 4, 4), tab=rng.rand(12, 3)), 16 + 3
    return MultiModal(a=rng.rand(12, 5), b=rng.rand(12, 4)), 9


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_n_features_in_is_what_the_docstring_says(estimator):
    X, expected = _n_features_input(type(estimator).__name__)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = clone(estimator).fit(X)
    assert est.n_features_in_ == expected
    # and for one 2-D array, scikit-learn's meaning: X.shape[1]
    if type(estimator).__name__ != "HyperLearn":
        one = np.random.RandomState(1).rand(12, 7)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            assert clone(estimator).fit(one).n_features_in_ == 7


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_feature_names_in_from_a_dataframe(estimator):
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    df = pd.DataFrame(rng.rand(12, 4), columns=["w", "x", "y", "z"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = clone(estimator).fit(df)
    np.testing.assert_array_equal(est.feature_names_in_, ["w", "x", "y", "z"])
    assert est.n_features_in_ == 4
    # no names from an array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert not hasattr(clone(estimator).fit(df.to_numpy()), "feature_names_in_")
