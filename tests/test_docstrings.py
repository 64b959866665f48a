"""Every public name has a numpydoc-valid docstring whose examples run; so do the docs.

* Public names: ``__all__`` of every public module (``mmfactor``, ``mmfactor.datasets``,
  ``mmfactor.factorization``, ``mmfactor.neural``, ``mmfactor.text``,
  ``mmfactor.plotting``, ``mmfactor.distributed`` once it exists), and the public
  methods and properties that mmfactor itself defines on the public classes (methods
  inherited from scikit-learn or torch are theirs to document).
* Validation: :func:`numpydoc.validate.validate`, minus the checks in ``IGNORED`` (and
  ``EX01`` where ``EXAMPLES_OPTIONAL`` says), each with its reason below.
* Docstring examples run as doctests (ELLIPSIS and NORMALIZE_WHITESPACE).
* The user guide's ``.. code-block:: python`` blocks run in order, one namespace per
  page; blocks that cannot run here (a GPU, several machines) are written as
  ``.. code-block:: python3``, which is highlighted the same and not run.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
from pathlib import Path

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

PUBLIC_MODULES = [
    "mmfactor",
    "mmfactor.datasets",
    "mmfactor.factorization",
    "mmfactor.neural",
    "mmfactor.text",
    "mmfactor.plotting",
    "mmfactor.distributed",
]

#: numpydoc checks that mmfactor does not require, and why.
IGNORED = {
    # a one-line summary is enough for small functions; the classes have long ones
    "ES01": "No extended summary found",
    # See Also sections are welcome, not required
    "SA01": "See Also section not found",
    # scikit-learn's convention names what is returned: "self : object", "X_new : ndarray"
    "RT02": "The first line of the Returns section should contain only the type",
}

#: Where an Examples section (EX01) is optional: methods and properties (the class's
#: example shows them in use), exception classes, the functions that download or delete
#: cached data (their example would need the network, or would empty the user's cache)
#: and those that need a torch.distributed process group (their example needs torchrun;
#: docs/distributed.rst shows them in use).
EXAMPLES_OPTIONAL = {
    "mmfactor.distributed.RankFailedError",
    "mmfactor.distributed.fit",
    "mmfactor.distributed.rank",
    "mmfactor.distributed.run",
    "mmfactor.distributed.world_size",
    "mmfactor.datasets.fetch_dicty",
    "mmfactor.datasets.fetch_goodreads_books",
    "mmfactor.datasets.fetch_movielens_100k",
    "mmfactor.datasets.get_data_home",
    "mmfactor.datasets.clear_data_home",
}

#: Public estimators that have not landed yet: their entries are expected to fail
#: (strictly: the xfail turns into an error as soon as they pass).
PENDING: dict[str, str] = {}


def _modules():
    mods = []
    for name in PUBLIC_MODULES:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a module that exists but fails to import is a bug
                raise
    return mods


def _own(obj):
    module = getattr(obj, "__module__", None) or ""
    return module == "mmfactor" or module.startswith("mmfactor.")


def _public_objects():
    """(public name, object, import path for numpydoc, kind) of everything documented."""
    out, seen = [], set()
    for mod in _modules():
        for name in getattr(mod, "__all__", []):
            if name.startswith("__"):
                continue
            obj = getattr(mod, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or not _own(obj):
                continue
            path = f"{obj.__module__}.{obj.__qualname__}"
            if path in seen:
                continue
            seen.add(path)
            public = f"{mod.__name__}.{name}"
            kind = "class" if inspect.isclass(obj) else "function"
            out.append((public, obj, path, kind))
            if not inspect.isclass(obj):
                continue
            # the class's own members and those it inherits from mmfactor's base classes
            members = {}
            for klass in reversed(obj.__mro__):
                if _own(klass):
                    members.update({a: (v, klass) for a, v in vars(klass).items()})
            for attr, (value, owner) in members.items():
                if attr.startswith("_"):
                    continue
                if isinstance(value, property):
                    member_kind, target = "property", value.fget
                elif isinstance(value, staticmethod | classmethod):
                    member_kind, target = "method", value.__func__
                elif inspect.isfunction(value):
                    member_kind, target = "method", value
                else:
                    continue
                if not _own(target):
                    continue
                owner_path = f"{owner.__module__}.{owner.__qualname__}"
                out.append((f"{public}.{attr}", value, f"{owner_path}.{attr}", member_kind))
    return out


OBJECTS = _public_objects()


def _params(items):
    params = []
    for public, obj, path, kind in items:
        marks = []
        for pending, reason in PENDING.items():
            if public == pending or public.startswith(pending + "."):
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(public, obj, path, kind, id=public, marks=marks))
    return params


def test_public_names_found():
    names = {public for public, *_ in OBJECTS}
    for expected in ["mmfactor.CMF", "mmfactor.MultiModal", "mmfactor.datasets.load_mfeat",
                     "mmfactor.plotting.plot_embedding", "mmfactor.CMF.fit"]:
        assert expected in names


@pytest.mark.parametrize("public, obj, path, kind", _params(OBJECTS))
def test_numpydoc_valid(public, obj, path, kind):
    result = numpydoc_validate.validate(path)
    errors = [(code, msg) for code, msg in result["errors"] if code not in IGNORED]
    if kind in ("method", "property") or public in EXAMPLES_OPTIONAL:
        errors = [(code, msg) for code, msg in errors if code != "EX01"]
    assert not errors, f"{public} ({path}):\n" + "\n".join(f"  {c}: {m}" for c, m in errors)


def _doctests():
    finder = doctest.DocTestFinder(recurse=False)
    tests = []
    for public, obj, _path, _kind in OBJECTS:
        target = obj.fget if isinstance(obj, property) else obj
        target = getattr(target, "__func__", target)
        for t in finder.find(target, public, globs={}):
            if t.examples:
                tests.append((public, t))
    return tests


DOCTESTS = _doctests()


def test_doctests_found():
    assert any(public == "mmfactor.CMF" for public, _ in DOCTESTS)


@pytest.mark.parametrize("public, test", [pytest.param(p, t, id=p) for p, t in DOCTESTS])
def test_docstring_examples_run(public, test):
    import matplotlib

    matplotlib.use("Agg")
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    out = []
    runner.run(test, out=out.append)
    assert runner.failures == 0, f"{public}: docstring example failed\n" + "".join(out)


# --------------------------------------------------------------------------------------
# The user guide's code blocks
# --------------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"^( *)\.\. code-block:: python\s*\n((?:\1 +:[^\n]*\n)*)\n"
                    r"((?:\1 {3,}[^\n]*\n|[ \t]*\n)+)", re.M)


def code_blocks(text):
    """The ``.. code-block:: python`` blocks of an rst text, dedented, in order."""
    import textwrap

    return [textwrap.dedent(m.group(3)).strip("\n") + "\n" for m in _BLOCK.finditer(text)]


def test_code_block_extraction():
    text = ("Intro\n\n.. code-block:: python\n\n   a = 1\n\n   b = a + 1\n\nText\n\n"
            ".. code-block:: python3\n\n   gpu()\n\n"
            "  .. code-block:: python\n     :caption: c\n\n     c = 3\n")
    assert code_blocks(text) == ["a = 1\n\nb = a + 1\n", "c = 3\n"]


PAGES = [DOCS / "index.rst", *sorted((DOCS / "user_guide").glob("*.rst")), DOCS / "faq.rst"]
PAGES = [p for p in PAGES if p.exists()]


def test_docs_pages_found():
    assert {p.stem for p in PAGES} >= {"index", "multimodal", "models", "faq"}


#: Pages whose code blocks fit models on real data for tens of seconds: run with -m slow.
SLOW_PAGES = {"index.rst", "user_guide/training.rst", "user_guide/models.rst"}


def _page_params():
    out = []
    for p in PAGES:
        if not code_blocks(p.read_text()):  # nothing to run (index.rst): not collected
            continue
        rel = p.relative_to(DOCS).as_posix()
        marks = [pytest.mark.slow] if rel in SLOW_PAGES else []
        out.append(pytest.param(p, id=rel, marks=marks))
    return out


@pytest.mark.parametrize("page", _page_params())
def test_docs_code_blocks_run(page, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    blocks = code_blocks(page.read_text())
    assert blocks, f"{page.name} has no python code block"
    monkeypatch.chdir(tmp_path)  # files a block writes land in a temporary folder
    namespace = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name}, code block {i} failed:\n{block}") from exc
