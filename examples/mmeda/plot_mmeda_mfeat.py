"""
========================================================
Images and vectors together: MMEDA on handwritten digits
========================================================

The MMEDA paper learns one vector per book from its cover (an image) and its
description (a vector) at once. Here the same architecture runs on the embedded UCI
digits: each digit is a 16 x 15 pixel **image** (through a convolutional autoencoder)
and 76 **Fourier coefficients** of its contour (through a dense autoencoder, with a
second one over the transpose for the coefficients themselves). The two codes are
fused into a 50-dimensional representation, learned without labels; a shallow random
forest (depth 2, as in the paper) then reads the digit from it.

We compare with PCA to 50 dimensions on the same (standardised) views, then look at
the training curves, at the representation, and at the digits decoded back from it.
"""

# %%
# The two views and the paper's split
# -----------------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmfactor import MMEDA
from mmfactor.datasets import load_mfeat
from mmfactor.plotting import plot_embedding, plot_loss_curves, plot_reconstructions

X, y = load_mfeat(views=["pix", "fou"], return_X_y=True)
print(X)
train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y,
                               random_state=0)


def macro_f1(Z):
    forest = RandomForestClassifier(max_depth=2, random_state=0).fit(Z[train], y[train])
    return f1_score(y[test], forest.predict(Z[test]), average="macro")


# %%
# MMEDA-II, learned on the training digits only
# ---------------------------------------------
# ``transform`` embeds the test digits with the encoders alone (inductive).
model = MMEDA(n_components=50, variant="II", batch_size=128, max_iter=20, tol=0,
              random_state=0)
model.fit(X[train])
Z = model.transform(X)

flat = np.hstack([X.pix.reshape(len(y), -1), X.fou])
pca = make_pipeline(StandardScaler(), PCA(50, random_state=0)).fit(flat[train])
print(f"macro-F1, RandomForest(max_depth=2): MMEDA-II {macro_f1(Z):.3f}, "
      f"PCA-50 {macro_f1(pca.transform(flat)):.3f}")

# %%
# Every term of the paper's loss (eq. 1), epoch by epoch
# -------------------------------------------------------
# ``pix``: the image decoded from the representation; ``fou``: the Fourier
# autoencoder's own reconstruction; ``fou.T``: the transpose's; ``fou.ZV``: the
# Fourier view rebuilt as ``Z V^T`` from the representation and the coefficients'
# codes.
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
plot_loss_curves(model, ax=axes[0])
axes[0].set_title("MMEDA-II training loss")
plot_embedding(Z[test], y[test], ax=axes[1], title="test digits, 2-D PCA of Z")
fig.tight_layout()

# %%
# Digits decoded back from the representation
# -------------------------------------------
# ``inverse_transform`` decodes each view from ``Z``: the image through the conv
# decoder, the Fourier view as ``Z V^T``.
images, fourier = model.inverse_transform(Z[test])
plot_reconstructions(X.pix[test], images, n_images=10)
plt.show()
