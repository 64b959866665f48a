"""
HyperLearn on a synthetic hypergraph with planted communities
=============================================================

A 3-partite hypergraph (think images x tags x users) is a sparse 3rd-order tensor: each
hyperedge ``(i, j, k)`` is a stored 1, every other entry a 0. :class:`mmfactor.HyperLearn`
factorizes it as a CP model without ever forming the dense tensor, while one graph per
mode (here, noisy "friendship" graphs between items of the same mode) pulls the factors
of neighbours together through the normalised Laplacian and a Chebyshev graph
convolution. We plant communities, hide most of their signal in noise, and compare how
well the mode-0 factors recover them with and without the intra-modal graphs.
"""

# %%
# The data: 4 communities, weak hyperedge signal, informative graphs
# ------------------------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from mmfactor import HyperLearn
from mmfactor.datasets import make_hypergraph

data = make_hypergraph((150, 100, 60), n_communities=4, n_hyperedges=3000, p_in=0.5,
                       graph_degree=4, graph_p_in=0.9, random_state=0)
print(data.X, "dense entries:", np.prod(data.X.shape))

# %%
# Fit with and without the graphs
# -------------------------------
# ``lam`` weighs the tensor term against the Laplacian smoothness term. For speed the
# factors are trained directly here (``diffusion_steps=0``); ``diffusion_steps > 0`` adds
# the Chebyshev convolution + LSTM diffusion of Monti et al.'s sRGCNN in front of each
# factor. Adam's step is raised from the default 0.01 to 0.05 so that the fits stop (by
# the default ``tol``) within about 40 sweeps; everything else is the default.
common = dict(n_components=4, diffusion_steps=0, learning_rate_init=0.05, random_state=0)
plain = HyperLearn(**common).fit(data.X)
graph = HyperLearn(graphs=data.graphs, lam=0.2, **common).fit(data.X)


def ari(model):
    return adjusted_rand_score(data.labels[0], np.abs(model.factors_[0]).argmax(1))


print(f"ARI of mode-0 communities: without graphs {ari(plain):.2f}, with graphs "
      f"{ari(graph):.2f}")

# %%
# Mode-0 factors (first two principal components) and the training curves
# -----------------------------------------------------------------------
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, model, title in ((axes[0], plain, "no graphs"), (axes[1], graph, "with graphs")):
    emb = PCA(2).fit_transform(model.factors_[0])
    ax.scatter(emb[:, 0], emb[:, 1], c=data.labels[0], cmap="tab10", s=12)
    ax.set_title(f"mode-0 factors, {title} (ARI {ari(model):.2f})")
axes[2].plot(plain.loss_terms_["data"], label="data term, no graphs")
axes[2].plot(graph.loss_terms_["data"], label="data term, with graphs")
axes[2].set_xlabel("sweep")
axes[2].set_ylabel("||X - [[A]]||^2")
axes[2].legend()
fig.tight_layout()
plt.show()
