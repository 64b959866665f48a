"""
Predicting a continuous target from an embedding: users' age on MovieLens-100K
==============================================================================

The MMEDA paper evaluates each embedding with a downstream scikit-learn
:class:`~sklearn.linear_model.LinearRegression` (mean squared error of a target that is
not among the model's inputs). Here the samples are the MovieLens-100K users, their
views are their row of the rating matrix (unrated movies are *missing*, not zeros),
whether they rated each movie at all, and their occupation and gender, with the
movies' genres as shared context. The target is the user's age, which no view contains.

The embedding and the regression form one :class:`~sklearn.pipeline.Pipeline`, fitted on
80% of the users. The other 20% are never seen in ``fit``: :class:`~mmfactor.CMF`
folds their rows in (their factor is solved with every other factor frozen) inside
``Pipeline.predict``.
"""

# %%
# The data
# --------
# ``fetch_movielens_100k`` downloads MovieLens-100K once into a cache (set
# ``MMFACTOR_DATA`` to a folder that already holds it to stay offline).
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from mmfactor import CMF, MultiModal
from mmfactor.datasets import fetch_movielens_100k

data = fetch_movielens_100k()
side = np.c_[data.user_occupation, data.user_sex]  # 21 occupations (one-hot) + gender
rated = (data.train > 0).astype(float).toarray()  # who rated what: a complete 0/1 view
X = MultiModal(ratings=data.train, rated=rated, side=side,
               shared={"genre": data.movie_genres})
y = data.user_age.astype(float)
train, test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0)
print({name: v.shape for name, v in zip(X.names, X.views, strict=True)})

# %%
# Embedding + regression in one pipeline
# --------------------------------------
# The schema says which entity types each matrix relates: the ratings and the
# indicator relate users to movies (so both shape the same movie factor), the side
# features relate users to their attributes, the genres relate movies to genres.
# The sparse ratings' unstored entries are unobserved (``missing="unobserved"``, the
# default); the dense indicator is complete.
relations = {"ratings": ("user", "movie"), "rated": ("user", "movie"),
             "side": ("user", "side"), "genre": ("movie", "genre")}
pipe = Pipeline([
    ("emb", CMF(20, relations=relations, weights={"rated": 5.0, "side": 10.0},
                alpha=30.0, max_iter=10, random_state=0)),
    ("reg", LinearRegression()),
])
pipe.fit(X[train], y[train])
pred = pipe.predict(X[test])  # the test users are folded in here
print(f"CMF-20 + LinearRegression: test MSE {mean_squared_error(y[test], pred):.1f}, "
      f"R^2 {r2_score(y[test], pred):.3f}")

# %%
# Against occupation and gender alone
# -----------------------------------
# The side features alone already carry part of the age (students are young,
# retirees are not); the embedding adds what the ratings say about it.
base = LinearRegression().fit(side[train], y[train])
pred_base = base.predict(side[test])
print(f"occupation + gender alone:   test MSE {mean_squared_error(y[test], pred_base):.1f}, "
      f"R^2 {r2_score(y[test], pred_base):.3f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
for ax, p, title in [(axes[0], pred_base, "occupation + gender"),
                     (axes[1], pred, "CMF embedding (folded in)")]:
    ax.scatter(y[test], p, s=8, alpha=0.6)
    lim = [y.min(), y.max()]
    ax.plot(lim, lim, "k--", lw=1)
    ax.set_title(f"{title}\nR$^2$ = {r2_score(y[test], p):.3f}")
    ax.set_xlabel("true age")
axes[0].set_ylabel("predicted age")
fig.tight_layout()
plt.show()
