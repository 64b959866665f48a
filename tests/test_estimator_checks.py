"""scikit-learn's common estimator checks, on single-view array input, for every estimator.

A check an estimator cannot pass is listed in ``EXPECTED_FAILED`` with its reason, never
skipped wholesale.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from mmfactor import CMF, DCMF, DFMF, MMEDA, HyperLearn

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
