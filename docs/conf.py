"""Sphinx configuration of the mmfactor documentation.

Build (warnings are errors, no network; the gallery examples run during the build)::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

or ``make -C docs html``. Set ``MMFACTOR_DOCS_NO_GALLERY=1`` to skip running the
examples (a quick build of the text only).
"""

import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

# The fetch_* loaders read the cached copies of the data sets; as in tests/conftest.py,
# point them at ../shared/data when it exists and nothing else was asked for. The build
# never downloads anything when the data is cached.
SHARED_DATA = ROOT.parent / "shared" / "data"
if "MMFACTOR_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["MMFACTOR_DATA"] = str(SHARED_DATA)

os.environ.setdefault("MPLBACKEND", "Agg")
# the examples' progress bars would clutter the captured output
os.environ.setdefault("TQDM_DISABLE", "1")

from sphinx_gallery.sorting import ExplicitOrder  # noqa: E402

import mmfactor  # noqa: E402

project = "mmfactor"
author = "The mmfactor developers"
copyright = "2026, The mmfactor developers"
version = release = mmfactor.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints",
                    "auto_examples/**.py", "auto_examples/**.ipynb", "_inventories"]
root_doc = "index"
default_role = "literal"

# API reference: one page per public name, generated from the numpydoc docstrings
autosummary_generate = True
autosummary_imported_members = False
# the estimator pages (_templates/estimator.rst) list every public method, those
# inherited from scikit-learn (get_params, set_params, set_output, ...) included, with a
# methods summary table, as scikit-learn's pages do; other classes list their own
autodoc_default_options = {"members": True}  # a bool here would override the templates
autodoc_typehints = "none"
autodoc_member_order = "groupwise"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()  # validated by tests/test_docstrings.py instead
# parameter types link to their projects (through the inventories below)
numpydoc_xref_param_type = True
numpydoc_xref_aliases = {
    "MultiModal": "mmfactor.MultiModal",
    "SparseTensor": "mmfactor.SparseTensor",
    "ndarray": "numpy.ndarray",
    "array-like": ":term:`array-like`",
    "array_like": ":term:`array-like`",
    "RandomState": "numpy.random.RandomState",
    "Generator": "numpy.random.Generator",
    "spmatrix": "scipy.sparse.spmatrix",
    "csr_matrix": "scipy.sparse.csr_matrix",
    "float32": "numpy.float32",
    "pathlib.Path": ":class:`pathlib.Path`",
    "path-like": ":term:`path-like <path-like object>`",
    # a name aliased to itself stays plain text under xref_ignore="all": give a role
    "torch.Tensor": ":class:`torch.Tensor`",
    "Tensor": "torch.Tensor",
    "torch.device": ":class:`torch.device`",
    "estimator": "sklearn.base.BaseEstimator",
    "Pipeline": "sklearn.pipeline.Pipeline",
}
numpydoc_xref_ignore = "all"  # words without an alias stay plain text
# (numpydoc splits types at spaces: an alias is one word, or a hyphenated one)

# intersphinx, offline: the build never touches the network, so each project's
# inventory is a committed file (docs/_inventories, written by make_inventories.py
# there) holding the names these docs link to, with their addresses on the project's
# site. The published objects.inv files could not be fetched on the build machine.
_INV = HERE / "_inventories"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", str(_INV / "python.inv")),
    "sklearn": ("https://scikit-learn.org/stable/", str(_INV / "sklearn.inv")),
    "numpy": ("https://numpy.org/doc/stable/", str(_INV / "numpy.inv")),
    "scipy": ("https://docs.scipy.org/doc/scipy/", str(_INV / "scipy.inv")),
    "torch": ("https://docs.pytorch.org/docs/stable/", str(_INV / "torch.inv")),
}
intersphinx_timeout = 1
html_theme = "pydata_sphinx_theme"
html_title = f"mmfactor {release}"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path = []
html_sidebars = {"index": [], "faq": [], "changelog": [], "data": []}
html_show_sourcelink = False

# the gallery: every examples/plot_*.py that exists runs during the build
_no_gallery = os.environ.get("MMFACTOR_DOCS_NO_GALLERY", "") not in ("", "0")
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "plot_gallery": "False" if _no_gallery else "True",
    # grouped by model: one subfolder of examples/ each, in this order
    "subsection_order": ExplicitOrder([f"../examples/{d}" for d in (
        "all_models", "cmf", "dfmf", "dcmf", "mmeda", "hyperlearn")]),
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "min_reported_time": 1,
    "show_memory": False,
    "capture_repr": ("_repr_html_", "__repr__"),
    "doc_module": ("mmfactor",),
    "reference_url": {"mmfactor": None},
    "backreferences_dir": "gen_modules",
    "exclude_implicit_doc": set(),
}

# a third-party deprecation inside an example is not an error of these docs
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")
