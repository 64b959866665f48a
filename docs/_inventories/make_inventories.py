"""Write the intersphinx inventories that the docs build reads offline.

The build machine has no network, so ``intersphinx_mapping`` in ``conf.py`` points at
the files written here instead of the projects' published ``objects.inv``: minimal
inventories holding only the names these docs link to, each with the page and anchor
it has on the project's site. They are written by :meth:`sphinx.util.inventory.
InventoryFile.dump`, the function Sphinx itself uses, and read back by
:meth:`~sphinx.util.inventory.InventoryFile.loads` as a check. To link a new name, add
it below and run ``python docs/_inventories/make_inventories.py``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sphinx.util.inventory import InventoryFile

HERE = Path(__file__).resolve().parent

# project -> (title, version, base URL, [(name, domain:role, page#anchor[, title])]);
# "$" in the anchor stands for the name
INVENTORIES = {
    "sklearn": ("scikit-learn", "1.6", "https://scikit-learn.org/stable/", [
        *[(f"sklearn.{n}", "py:class", f"modules/generated/sklearn.{n}.html#$") for n in [
            "pipeline.Pipeline", "model_selection.GridSearchCV", "base.BaseEstimator",
            "base.TransformerMixin", "preprocessing.StandardScaler",
            "preprocessing.MinMaxScaler", "ensemble.RandomForestClassifier",
            "linear_model.LinearRegression", "decomposition.PCA", "decomposition.NMF",
            "neighbors.NearestNeighbors", "exceptions.ConvergenceWarning",
            "exceptions.NotFittedError"]],
        *[(f"sklearn.{n}", "py:function", f"modules/generated/sklearn.{n}.html#$") for n in [
            "model_selection.cross_val_score", "utils.validation.check_is_fitted",
            "utils.estimator_checks.parametrize_with_checks", "base.clone", "set_config",
            "config_context"]],
        *[(f"sklearn.base.TransformerMixin.{m}", "py:method",
           "modules/generated/sklearn.base.TransformerMixin.html#$")
          for m in ["fit_transform", "set_output"]],
        *[(f"sklearn.base.BaseEstimator.{m}", "py:method",
           "modules/generated/sklearn.base.BaseEstimator.html#$")
          for m in ["get_params", "set_params"]],
        ("sklearn.utils.metadata_routing.MetadataRequest", "py:class",
         "modules/generated/sklearn.utils.metadata_routing.MetadataRequest.html#$"),
        # labels that the docstrings of inherited methods (set_output,
        # get_metadata_routing) refer to, with the titles they have on the site
        ("metadata_routing", "std:label", "metadata_routing.html#metadata-routing",
         "Metadata Routing"),
        ("df_output_transform", "std:label",
         "developers/develop.html#developer-api-set-output", "set_output API"),
        ("sphx_glr_auto_examples_miscellaneous_plot_set_output.py", "std:label",
         "auto_examples/miscellaneous/plot_set_output.html"
         "#sphx-glr-auto-examples-miscellaneous-plot-set-output-py",
         "Introducing the set_output API"),
        ("array-like", "std:term", "glossary.html#term-array-like"),
        ("n_jobs", "std:term", "glossary.html#term-n_jobs"),
        ("random_state", "std:term", "glossary.html#term-random_state"),
        ("get_feature_names_out", "std:term", "glossary.html#term-get_feature_names_out"),
        ("set_output", "std:term", "developers/develop.html#developer-api-set-output"),
    ]),
    # numpydoc links the Python and NumPy words of parameter types (bool, str, list,
    # sequence, array_like, ...) to these targets (numpydoc.xref.DEFAULT_LINKS)
    "python": ("Python", "3.13", "https://docs.python.org/3/", [
        ("bltin-boolean-values", "std:label", "library/stdtypes.html#bltin-boolean-values",
         "Boolean Values"),
        *[(n, "py:data", "library/constants.html#$") for n in ["None", "True", "False"]],
        *[(n, "py:class", "library/stdtypes.html#$") for n in ["list", "tuple", "str",
                                                               "dict"]],
        *[(n, "py:class", "library/functions.html#$") for n in ["float", "int"]],
        ("callable", "py:function", "library/functions.html#$"),
        *[(n, "std:term", f"glossary.html#term-{n}") for n in ["iterable", "sequence",
                                                               "generator"]],
        ("contextlib.contextmanager", "py:function", "library/contextlib.html#$"),
        ("collections.namedtuple", "py:function", "library/collections.html#$"),
        ("pathlib.Path", "py:class", "library/pathlib.html#$"),
        ("path-like object", "std:term", "glossary.html#term-path-like-object"),
    ]),
    "numpy": ("NumPy", "2.2", "https://numpy.org/doc/stable/", [
        ("numpy", "py:module", "reference/index.html#module-numpy"),
        ("array_like", "std:term", "glossary.html#term-array_like"),
        ("arrays.scalars", "std:label", "reference/arrays.scalars.html#arrays-scalars",
         "Scalars"),
        ("numpy.inf", "py:data", "reference/constants.html#$"),
        ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html#$"),
        ("numpy.dtype", "py:class", "reference/generated/numpy.dtype.html#$"),
        ("numpy.float32", "py:attribute", "reference/arrays.scalars.html#$"),
        ("numpy.float64", "py:attribute", "reference/arrays.scalars.html#$"),
        ("numpy.nan", "py:data", "reference/constants.html#$"),
        ("numpy.random.RandomState", "py:class", "reference/random/legacy.html#$"),
        ("numpy.random.Generator", "py:class", "reference/random/generator.html#$"),
    ]),
    "scipy": ("SciPy", "1.15", "https://docs.scipy.org/doc/scipy/", [
        ("scipy.sparse", "py:module", "reference/sparse.html#module-scipy.sparse"),
        *[(f"scipy.sparse.{n}", "py:class", f"reference/generated/scipy.sparse.{n}.html#$")
          for n in ["csr_matrix", "coo_matrix", "csr_array", "coo_array", "spmatrix",
                    "sparray"]],
        ("scipy.sparse.issparse", "py:function",
         "reference/generated/scipy.sparse.issparse.html#$"),
    ]),
    "torch": ("PyTorch", "2.13", "https://docs.pytorch.org/docs/stable/", [
        ("torch.Tensor", "py:class", "tensors.html#$"),
        ("torch.device", "py:class", "tensor_attributes.html#$"),
        ("torch.dtype", "py:class", "tensor_attributes.html#$"),
        ("torch.Generator", "py:class", "generated/torch.Generator.html#$"),
        ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html#$"),
        ("torch.distributed", "py:module", "distributed.html#module-torch.distributed"),
        *[(f"torch.{n}", "py:function", f"generated/torch.{n}.html#$") for n in [
            "set_num_threads", "get_num_threads", "save", "load", "cuda.is_available"]],
    ]),
}


class _Domain:
    def __init__(self, name, objects):
        self.name, self._objects = name, objects

    def get_objects(self):
        return self._objects


def write(key, project, version, entries):
    """Write ``<key>.inv`` with ``entries`` through Sphinx's own inventory writer."""
    by_domain = {}
    for name, role, uri, *title in entries:
        domain, objtype = role.split(":")
        page, _, anchor = uri.partition("#")
        anchor = anchor.replace("$", name)
        disp = title[0] if title else name
        by_domain.setdefault(domain, []).append((name, disp, objtype, page, anchor, 1))
    domains = [_Domain(d, objs) for d, objs in sorted(by_domain.items())]
    env = SimpleNamespace(config=SimpleNamespace(project=project, version=version),
                          domains=SimpleNamespace(sorted=lambda: domains))
    builder = SimpleNamespace(get_target_uri=lambda docname: docname)
    path = HERE / f"{key}.inv"
    InventoryFile.dump(path, env, builder)
    inv = InventoryFile.loads(path.read_bytes(), uri="")  # the check: Sphinx reads it
    assert sum(len(v) for v in inv.data.values()) == len(entries), path
    return path


if __name__ == "__main__":
    for key, (project, version, _, entries) in INVENTORIES.items():
        print(write(key, project, version, entries))
