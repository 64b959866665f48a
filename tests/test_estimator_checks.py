"""scikit-learn's common estimator checks, on single-view array input.

A check an estimator cannot pass is listed in ``EXPECTED_FAILED`` with its reason, never
skipped wholesale.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from mmfactor import CMF

EXPECTED_FAILED = {
    "CMF": {},
}


def _expected(est):
    return EXPECTED_FAILED.get(type(est).__name__, {})


@parametrize_with_checks(
    [CMF(n_components=2, max_iter=5, tol=0, random_state=0)],
    expected_failed_checks=_expected,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
