"""
CMF completion on MovieLens-100K, with and without side relations
=================================================================

Collective matrix factorization (:class:`mmfactor.CMF`) completes the MovieLens-100K
rating matrix (943 users x 1,682 movies) of Monti et al.'s split: 80,000 training
ratings, 20,000 test ratings (GroupLens' ``u1.test``). The unstored entries of the
sparse rating matrix are *missing*, so the loss runs over the observed ratings only.

*Collective* means that other matrices that share an entity type can share its factor:
the users' occupations (users x occupations) and the movies' genres (movies x genres)
are factorized together with the ratings, so that a user with few ratings borrows from
her occupation and a rarely rated movie from its genres. The figure compares the test
RMSE with and without them, across ranks.
"""

# %%
# The data
# --------
# ``fetch_movielens_100k`` downloads the files once into the cache
# (``$MMFACTOR_DATA``, default ``~/mmfactor_data``) and reads them from there after.
import time

import matplotlib.pyplot as plt
import numpy as np

from mmfactor import CMF, MultiModal
from mmfactor.datasets import fetch_movielens_100k

data = fetch_movielens_100k()
test = data.test.tocoo()
test_coords = np.column_stack([test.row, test.col])
print(f"{data.train.nnz} training and {test.nnz} test ratings of a "
      f"{data.ratings.shape[0]} x {data.ratings.shape[1]} matrix")


def test_rmse(model):
    """RMSE of the predicted test ratings (clipped to the 1..5 scale)."""
    pred = np.clip(model.predict_entries(test_coords, relation="ratings"), 1, 5)
    return float(np.sqrt(np.mean((pred - test.data) ** 2)))


# %%
# Ratings alone
# -------------
# A biased model (global mean, user and movie biases, rank-``k`` factors) fitted by
# alternating least squares; ``alpha`` was chosen on a validation split of the
# training ratings (see ``benchmarks/bench_cmf.py``).
alone = MultiModal(ratings=data.train)
t0 = time.perf_counter()
cmf = CMF(n_components=10, alpha=15.0, alpha_bias=3.0, max_iter=10, tol=0,
          random_state=0).fit(alone)
print(f"ratings only: test RMSE {test_rmse(cmf):.4f} ({time.perf_counter() - t0:.1f} s)")

# %%
# With side relations
# -------------------
# The occupations are a view (their rows are the users, the samples); the genres relate
# two other entity types' members, movies and genres, so they ride along in ``shared``.
# The ``relations`` schema names the entity types of each matrix, so that the users'
# factor is shared by the ratings and the occupations, the movies' by the ratings and
# the genres.
side = MultiModal(ratings=data.train, occupation=data.user_occupation,
                  shared={"genres": data.movie_genres})
relations = [("user", "movie"), ("user", "occupation"), ("movie", "genre")]
cmf_side = CMF(n_components=10, relations=relations, alpha=12.0, alpha_bias=3.0,
               max_iter=10, tol=0, random_state=0).fit(side)
print(f"with side relations: test RMSE {test_rmse(cmf_side):.4f}")
print("relations:", cmf_side.relations_)
print({entity: factor.shape for entity, factor in cmf_side.factors_.items()})

# %%
# Across ranks
# ------------
# The rank-10 models are those above; the others are fitted the same way.
ranks = [3, 10, 20]
rmse = {"ratings only": [], "with side relations": []}
for k in ranks:
    for label, X, kw, fitted in [
        ("ratings only", alone, {"alpha": 15.0}, cmf),
        ("with side relations", side, {"alpha": 12.0, "relations": relations}, cmf_side),
    ]:
        model = fitted if k == 10 else CMF(n_components=k, alpha_bias=3.0, max_iter=10,
                                           tol=0, random_state=0, **kw).fit(X)
        rmse[label].append(test_rmse(model))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
for label, values in rmse.items():
    ax1.plot(ranks, values, "o-", label=label)
ax1.axhline(0.929, color="gray", ls="--", lw=1)
ax1.text(ranks[-1], 0.929, "sRGCNN (Monti et al. 2017)", ha="right", va="bottom",
         fontsize="small", color="gray")
ax1.set_xlabel("n_components")
ax1.set_ylabel("test RMSE (u1.test)")
ax1.set_title("MovieLens-100K completion")
ax1.legend()
ax2.plot(np.arange(1, cmf_side.n_iter_ + 1), cmf_side.loss_terms_["ratings"], "o-",
         label="ratings (with side relations)")
ax2.plot(np.arange(1, cmf.n_iter_ + 1), cmf.loss_terms_["ratings"], "o-",
         label="ratings (alone)")
ax2.set_yscale("log")
ax2.set_xlabel("ALS sweep")
ax2.set_ylabel("training squared error")
ax2.set_title("ALS convergence (rank 10)")
ax2.legend()
fig.tight_layout()
plt.show()

# %%
# The factors of the movies and of the genres share one space: the genres nearest to a
# movie's factor say what the model learned about it.
genre_factors = cmf_side.factors_["genre"]
movie_factors = cmf_side.factors_["movie"]
for m in [0, 49, 94]:
    scores = genre_factors @ movie_factors[m]
    top = [data.genres[g] for g in np.argsort(scores)[::-1][:3]]
    print(f"{data.movie_titles[m]!r}: nearest genres {top}")
