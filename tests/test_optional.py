"""gensim, h5py and matplotlib are optional: the core imports without them, and what needs
one of them says which extra installs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest


def test_core_imports_and_fits_without_the_optional_packages():
    code = textwrap.dedent("""
        import sys
        for name in ("gensim", "h5py", "matplotlib"):
            sys.modules[name] = None  # any import of them now fails
        import numpy as np
        import mmfactor, mmfactor.datasets, mmfactor.text, mmfactor.plotting
        X = mmfactor.datasets.load_mfeat(views=["fou", "kar"], return_X_y=True)[0]
        Z = mmfactor.CMF(3, max_iter=2, random_state=0).fit_transform(X)
        assert Z.shape == (2000, 3)
        assert not {"gensim", "h5py", "matplotlib"} & {
            m.split(".")[0] for m, v in sys.modules.items() if v is not None}
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("package, extra, call", [
    ("gensim", "text", lambda: __import__("mmfactor.text").text.Word2VecMean(
        vector_size=4, min_count=1).fit(["a b", "b c"])),
    ("matplotlib", "plot", lambda: __import__("mmfactor.plotting").plotting.plot_embedding(
        np.zeros((3, 2)))),
    ("h5py", "movielens", lambda: __import__("mmfactor.datasets").datasets
        .fetch_movielens_100k()),
])
def test_a_missing_optional_package_names_its_extra(package, extra, call, monkeypatch):
    for name in list(sys.modules):
        if name == package or name.startswith(package + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ImportError, match=rf"needs {package}, which is not installed.*"
                                          rf"pip install 'mmfactor\[{extra}\]'"):
        call()
