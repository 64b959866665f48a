"""Optional dependencies: imported when a feature needs them, with the extra to install.

The core (the estimators, ``MultiModal``, the shipped and most fetched data sets) needs
none of them:

=============  ==========  ===========================================================
extra          package     needed by
=============  ==========  ===========================================================
``plot``       matplotlib  :mod:`mmfactor.plotting`, ``results.png`` of the main job
``text``       gensim      :class:`mmfactor.text.Word2VecMean`
``movielens``  h5py        :func:`mmfactor.datasets.fetch_movielens_100k`
=============  ==========  ===========================================================
"""

from __future__ import annotations

import importlib

__all__ = ["EXTRAS", "import_optional"]

#: top-level package -> (pip name, the extra of mmfactor that installs it)
EXTRAS = {"matplotlib": ("matplotlib", "plot"), "gensim": ("gensim", "text"),
          "h5py": ("h5py", "movielens")}


def import_optional(module, needed_by):
    """Import ``module`` (e.g. ``"gensim.models"``), or say which extra installs it.

    Parameters
    ----------
    module : str
        The module to import; its top-level package must be a key of ``EXTRAS``.
    needed_by : str
        What needs it, for the message (e.g. ``"Word2VecMean"``).

    Returns
    -------
    module : module
        The imported module.

    Raises
    ------
    ImportError
        The package is not installed; the message names the extra to install.
    """
    package, extra = EXTRAS[module.split(".")[0]]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but something it imports is broken
        raise ImportError(
            f"{needed_by} needs {package}, which is not installed. Install it with "
            f"pip install 'mmfactor[{extra}]' (or pip install {package})."
        ) from exc
