"""
Grid search on a Dask cluster
=============================

A grid search over a :class:`~sklearn.pipeline.Pipeline` with an mmfactor estimator is
many independent fits (candidates x folds). joblib's Dask backend sends them to the
workers of a Dask cluster, one machine or many, without changing the search itself:
:class:`~sklearn.model_selection.GridSearchCV` calls joblib, and joblib calls Dask.

Here the cluster is a :class:`distributed.LocalCluster` on this machine's loopback
interface (127.0.0.1), so that the example runs anywhere. On a real cluster, start a
scheduler and workers (``dask scheduler`` on one machine, ``dask worker
tcp://scheduler:8786`` on the others, each with mmfactor installed) and connect to it
instead: set ``DASK_SCHEDULER_ADDRESS=tcp://scheduler:8786`` before running this script.
See :doc:`/distributed` for the whole recipe.
"""

# %%
# The data and the pipeline
# -------------------------
# Two views of the UCI handwritten digits (Fourier coefficients and Karhunen-Loeve
# coefficients), the CMF embedding of both and a small random forest on top.
import os
import time

import joblib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from mmfactor import CMF
from mmfactor.datasets import load_mfeat

X, y = load_mfeat(views=["fou", "kar"], return_X_y=True)
X, y = X[::8], y[::8]  # 250 digits keep the example quick
pipe = Pipeline([
    ("emb", CMF(random_state=0, max_iter=10, tol=0)),
    ("clf", RandomForestClassifier(max_depth=2, n_estimators=30, random_state=0)),
])
grid = {"emb__n_components": [5, 10, 20], "emb__alpha": [0.1, 1.0]}

# %%
# The cluster
# -----------
# A scheduler and two single-threaded workers, all on 127.0.0.1 and talking over TCP,
# unless a scheduler address is given. (Without the ``distributed`` package, the search
# runs on joblib's default local backend, so that the example still runs.)
try:
    from distributed import Client, LocalCluster
except ImportError:  # pragma: no cover - Dask not installed
    Client = LocalCluster = None

cluster = client = None
backend = "loky"
if Client is not None:
    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                               protocol="tcp", host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
    backend = "dask"
    print(client)

# %%
# The search
# ----------
# ``joblib.parallel_backend("dask")`` routes GridSearchCV's fits to the cluster; the
# search object, its ``cv_results_`` and its refitted best pipeline are the usual ones.
start = time.perf_counter()
with joblib.parallel_backend(backend, n_jobs=2):
    search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
print(f"{len(search.cv_results_['params'])} candidates x 3 folds in "
      f"{time.perf_counter() - start:.1f} s on the {backend} backend")
print("best:", search.best_params_, f"accuracy {search.best_score_:.3f}")

if client is not None:
    client.close()
if cluster is not None:
    cluster.close()

# %%
# The scores
# ----------
res = search.cv_results_
fig, ax = plt.subplots(figsize=(6, 3.5))
for alpha in grid["emb__alpha"]:
    keep = np.asarray(res["param_emb__alpha"], dtype=float) == alpha
    ax.errorbar(np.asarray(res["param_emb__n_components"])[keep],
                res["mean_test_score"][keep], yerr=res["std_test_score"][keep],
                marker="o", capsize=3, label=f"alpha={alpha}")
ax.set_xlabel("n_components of the CMF embedding")
ax.set_ylabel("3-fold accuracy (forest, depth 2)")
ax.set_title("GridSearchCV on a Dask cluster")
ax.legend()
fig.tight_layout()
plt.show()
