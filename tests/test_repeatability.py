"""Issue 21, item 4: what can be pinned is pinned. The main job run twice with the same
seed and the same thread count gives the same scores, to the bit, for every model, at
one thread (the job's default) and at two (several threads inside one fit)."""

import json
import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning

import mmfactor.__main__ as job

SMALL = dict(views=["fou", "kar"], n_components=8, seeds=[1], jobs=1, verbose=False)


def _scores(output, threads):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        job.run(list(job.MODELS), output=output, threads=threads, **SMALL)
    runs = json.loads((output / "results.json").read_text())["runs"]
    return [(r["model"], r["seed"], r["macro_f1"], r["accuracy"]) for r in runs]


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_and_threads_give_the_same_scores(tmp_path, threads):
    first = _scores(tmp_path / "first", threads)
    second = _scores(tmp_path / "second", threads)
    assert {m for m, *_ in first} == {"PCA (reference)", *job.MODELS}
    assert {s for m, s, *_ in first if m != "PCA (reference)"} == {1}
    assert first == second
