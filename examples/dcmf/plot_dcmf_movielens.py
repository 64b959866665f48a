"""
DCMF on MovieLens-100K: users, movies, genres and occupations
=============================================================

Deep collective matrix factorization (:class:`mmfactor.DCMF`) learns one vector per
user, movie, genre and occupation from three matrices at once: the users' ratings of
movies, the movies' genres and the users' occupations. Each entity type has its own
autoencoder over every matrix it appears in; its bottleneck is the entity's embedding,
and every matrix is also reconstructed as the product of its row and column embeddings.

Here the user embeddings then feed a downstream model that predicts a user's sex, an
attribute DCMF never saw; the figure shows the training loss, term by term.
"""

# %%
# The data: the training ratings of Monti et al.'s split, plus side relations
# ---------------------------------------------------------------------------
# ``fetch_movielens_100k`` downloads MovieLens-100K once into the cache folder (set
# ``MMFACTOR_DATA`` or ``data_home`` to use a local copy). The ratings are a sparse
# 943 x 1682 matrix whose unstored entries are *missing*, not zero.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmfactor import DCMF, MultiModal
from mmfactor.datasets import fetch_movielens_100k

data = fetch_movielens_100k()
X = MultiModal(ratings=data.train, occupation=data.user_occupation,
               shared={"genres": data.movie_genres})
relations = [("user", "movie"), ("user", "occupation"), ("movie", "genre")]
print("ratings:", X.ratings.shape, "occupations:", X.occupation.shape,
      "genres:", X.shared["genres"].shape)

# %%
# Fit DCMF
# --------
# A short fit for the gallery (8 epochs); the benchmark ``benchmarks/bench_dcmf.py``
# trains longer, with early stopping. ``encoder="neural"`` trains the users' network (with
# fewer than 1,000 samples the default is the linear closed form, see DCMF's docs).
dcmf = DCMF(n_components=10, relations=relations, encoder="neural", hidden_layer_sizes=(32,),
            learning_rate_init=3e-3, weights={"ratings": 3.0, "occupation": 0.3,
                                              "genres": 0.3},
            max_iter=8, tol=0, random_state=0)
users = dcmf.fit_transform(X)
print("user embeddings:", users.shape, "movie embeddings:", dcmf.factors_["movie"].shape)

test = data.test.tocoo()
pred = dcmf.predict_entries(np.c_[test.row, test.col], relation="ratings")
rmse = np.sqrt(np.mean((np.clip(pred, 1, 5) - test.data) ** 2))
print(f"test RMSE on the 20,000 held-out ratings: {rmse:.3f}")

# %%
# The user embeddings in a downstream model
# -----------------------------------------
# DCMF never saw the users' sex: can a linear model read it off the embeddings?
# (ROC AUC: 0.5 is chance, whatever the class balance.)
sex = data.user_sex
clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
acc = cross_val_score(clf, users, sex, cv=5, scoring="roc_auc").mean()
base = cross_val_score(DummyClassifier(), users, sex, cv=5, scoring="roc_auc").mean()
print(f"5-fold ROC AUC predicting sex: {acc:.3f} (chance: {base:.3f})")

# %%
# The loss curves
# ---------------
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
epochs = np.arange(1, dcmf.n_iter_ + 1)
ax0.plot(epochs, dcmf.loss_curve_, "k-o", ms=3)
ax0.set(title="DCMF objective", xlabel="epoch", ylabel="loss")
for name, curve in dcmf.loss_terms_.items():
    if name != "penalty":
        ax1.plot(epochs, curve, label=name)
ax1.set(title="terms (mean squared error, standardized)", xlabel="epoch")
ax1.legend(fontsize=7, ncol=2)
fig.suptitle(f"test RMSE {rmse:.3f}; sex from the user embeddings: ROC AUC {acc:.2f} "
             f"(chance {base:.2f})")
fig.tight_layout()
plt.show()
