"""
Grid search over a pipeline: an embedding, then a classifier
============================================================

Every mmfactor estimator is a scikit-learn transformer, so it goes first in a
:class:`~sklearn.pipeline.Pipeline` and its hyper-parameters are searched with
:class:`~sklearn.model_selection.GridSearchCV` like any other step's
(``"emb__n_components"``). In each fold the embedding is fitted on the training rows
only and the validation rows are embedded by ``transform`` (folded in), so the score
is that of rows the model never saw.

The input is a :class:`~mmfactor.MultiModal`: three views of the UCI digits. A plain
list of views would not do here (see the end of the example).
"""

# %%
# Three views of 2,000 digits
# ---------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from mmfactor import CMF, MultiModal
from mmfactor.datasets import load_mfeat

X, y = load_mfeat(views=["fou", "kar", "zer"], return_X_y=True)
# every view on a common scale (per column; this uses no label)
X = MultiModal(**{name: (v - v.mean(0)) / v.std(0)
                  for name, v in zip(X.names, X.views, strict=True)})
print(X)

# %%
# The search
# ----------
pipe = Pipeline([
    ("emb", CMF(random_state=0, max_iter=10, tol=0)),  # 10 ALS sweeps
    ("clf", LogisticRegression(max_iter=2000)),
])
grid = {"emb__n_components": [3, 10, 20], "emb__alpha": [1.0, 100.0]}
search = GridSearchCV(pipe, grid, cv=3, n_jobs=1).fit(X, y)
print("best:", search.best_params_, f"accuracy {search.best_score_:.3f}")

# %%
# The fitted pipeline embeds and classifies new digits in one call:
print("predictions for 5 digits:", search.predict(X[:5]), "truth:", y[:5])

# %%
# Accuracy over the grid
# ----------------------
scores = search.cv_results_["mean_test_score"].reshape(
    len(grid["emb__alpha"]), len(grid["emb__n_components"]))  # keys vary alphabetically
fig, ax = plt.subplots(figsize=(6, 3.2))
im = ax.imshow(scores, cmap="viridis", aspect="auto")
ax.set_xticks(range(len(grid["emb__n_components"])), grid["emb__n_components"])
ax.set_yticks(range(len(grid["emb__alpha"])), grid["emb__alpha"])
ax.set_xlabel("emb__n_components")
ax.set_ylabel("emb__alpha")
for (i, j), s in np.ndenumerate(scores):
    ax.text(j, i, f"{s:.2f}", ha="center", va="center",
            color="white" if s < scores.mean() else "black")
fig.colorbar(im, ax=ax, label="3-fold accuracy")
ax.set_title("CMF embedding -> logistic regression")
fig.tight_layout()
plt.show()

# %%
# Without labels
# --------------
# ``score`` is the negative mean reconstruction error of the held-out rows after
# folding them in, so an unsupervised search has something to maximise too. A larger
# rank always reconstructs better; the penalty is what the search settles.
unsup = GridSearchCV(CMF(n_components=10, random_state=0, max_iter=10, tol=0),
                     {"alpha": [0.1, 100.0]}, cv=3).fit(X)
print("best alpha without labels:", unsup.best_params_)

# %%
# Why a ``MultiModal`` and not a list
# -----------------------------------
# ``fit`` and ``transform`` accept a plain list of views, but scikit-learn's model
# selection sees a list of three views as three *samples*:
try:
    GridSearchCV(pipe, {"emb__n_components": [5]}, cv=3).fit(list(X.views), y)
except ValueError as exc:
    print("ValueError:", exc)
