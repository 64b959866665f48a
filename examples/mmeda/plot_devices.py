"""
Placing modalities on devices with ``devices=``
===============================================

Every mmfactor model computes in torch and places each *modality* -- a view, an entity
type or a tensor mode -- on a device of its own: ``devices=`` takes one device for all,
a list with one entry per modality, a dict by modality name, or ``"auto"`` (the CUDA
devices present, in turn, else the CPU). It is resolved at fit time into
``devices_``; a CUDA device that is not there is an error, not a silent fallback.

This example shows the resolution on the machine that builds the documentation (a CPU
without CUDA: everything then runs on the CPU), fits :class:`~mmfactor.MMEDA` with its
image view and its Fourier view placed separately, and shows what a model fitted on one
set of devices does when it is loaded elsewhere.
"""

# %%
# What is here
# ------------
import pickle
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from mmfactor import MMEDA
from mmfactor.datasets import load_mfeat
from mmfactor.plotting import plot_embedding, plot_loss_curves

n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
print(f"torch {torch.__version__}: {n_gpus} CUDA device(s)")

# %%
# How ``devices=`` resolves
# -------------------------
# Two views: ``pix`` (the digits as 16 x 15 images) and ``fou`` (76 Fourier
# coefficients). ``fit`` resolves ``devices`` first, before any training; a tiny fit
# (one epoch on 100 digits) is enough to show ``devices_``.
X, y = load_mfeat(views=["pix", "fou"], return_X_y=True)
small = dict(n_components=4, conv_channels=(4,), hidden_layer_sizes=(16,),
             view_components=8, fusion_layer_sizes=(16,), max_iter=1, tol=0,
             random_state=0)
requests = [None, "cpu", "auto", {"pix": "cpu"}]
if n_gpus >= 1:
    requests += ["cuda:0", {"pix": "cuda:0"}]
if n_gpus >= 2:
    requests += [["cuda:0", "cuda:1"]]
for devices in requests:
    model = MMEDA(devices=devices, **small).fit(X[:100])
    print(f"devices={devices!r:26} -> devices_={[str(d) for d in model.devices_]}")

# %%
# Asking for a device that is not there is a ``ValueError`` before training starts,
# naming the modality and the devices present:
if n_gpus < 2:
    try:
        MMEDA(devices=["cuda:0", "cuda:1"], **small).fit(X[:100])
    except ValueError as exc:
        print("ValueError:", exc)

# %%
# A fit with the views placed
# ---------------------------
# On a machine with two GPUs the image autoencoder would go to one and the Fourier
# view's autoencoders to the other (``devices=["cuda:0", "cuda:1"]``); only the views'
# codes and the representation cross devices. Here ``"auto"`` resolves to the CPU, and
# the same code runs unchanged.
devices = ["cuda:0", "cuda:1"] if n_gpus >= 2 else "auto"
model = MMEDA(n_components=10, conv_channels=(8,), hidden_layer_sizes=(64,),
              view_components=16, fusion_layer_sizes=(32,), batch_size=100, max_iter=10,
              tol=0, devices=devices, random_state=0)
train, unseen = np.arange(0, 2000, 3), np.arange(1, 2000, 3)  # every class in both
t0 = time.perf_counter()
Z = model.fit_transform(X[train])  # 667 digits, 10 epochs: a short fit for the gallery
print(f"fitted on {[str(d) for d in model.devices_]} in {time.perf_counter() - t0:.1f} s;"
      f" embedding {Z.shape}, {Z.dtype}, a NumPy array on the CPU: {type(Z).__name__}")

# %%
# A model fitted on GPUs loads anywhere
# -------------------------------------
# Pickling moves every tensor to the CPU; on load, devices that are missing fall back to
# the CPU (``devices_`` says where the model computes now).
clone = pickle.loads(pickle.dumps(model))
print("after loading:", [str(d) for d in clone.devices_])
assert np.allclose(clone.transform(X[unseen[:10]]), model.transform(X[unseen[:10]]), atol=1e-5)

# %%
# The training loss per term, and the unseen digits in the embedding
# ------------------------------------------------------------------
# The loss terms are the image view's and the Fourier view's reconstructions, the
# Fourier columns' (the transpose autoencoder) and the cross term ``Z V^T`` (MMEDA-II);
# the map shows the first two principal axes of the embedding of 667 digits the
# model never saw, coloured by the digit (a label MMEDA never saw either).
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
plot_loss_curves(model, ax=ax1)
ax1.set_title(f"MMEDA on {', '.join(str(d) for d in model.devices_)}")
plot_embedding(model.transform(X[unseen]), y[unseen], ax=ax2,
               title="unseen digits, by label")
fig.tight_layout()
plt.show()
