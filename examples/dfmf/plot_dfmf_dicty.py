"""
=====================================================================
Gene function prediction by data fusion (DFMF on Dictyostelium genes)
=====================================================================

The fusion example of Zitnik & Zupan's DFMF paper: 1,219 genes of the amoeba
*Dictyostelium discoideum*, three data sources about them, and the question "which Gene
Ontology terms does a gene we know nothing about carry?".

* genes x GO terms (116 slim terms, binary annotations);
* genes x expression conditions (282 conditions, log expression);
* gene-gene protein interactions, used as must-link constraints: interacting genes
  should have similar latent profiles.

:class:`~mmfactor.DFMF` approximates every relation as ``G_gene S G_other^T`` with one
non-negative factor per entity type. We hide the annotations of a fifth of the genes
(NaN entries: the completion variant, DFMC), fuse the three sources, and predict the
hidden annotations from ``G_gene S_ann G_go^T`` with
:meth:`~mmfactor.DFMF.predict_entries`. We then do the same without the interaction
constraints, and for genes that were not in the fit at all
(:meth:`~mmfactor.DFMF.transform` folds their expression profiles in).
"""

# %%
# The data and the held-out genes
# -------------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from mmfactor import DFMF, MultiModal
from mmfactor.datasets import fetch_dicty

dicty = fetch_dicty()
ann, expr, ppi = dicty.annotations, np.log1p(dicty.expression), dicty.ppi
rng = np.random.RandomState(0)
test = np.sort(rng.choice(len(ann), len(ann) // 5, replace=False))
train = np.setdiff1d(np.arange(len(ann)), test)
masked = ann.copy()
masked[test] = np.nan  # the held-out genes' annotations are missing entries
print(f"{ann.shape[0]} genes, {ann.shape[1]} GO terms, {ppi.nnz} interactions; "
      f"{len(test)} genes held out")

# %%
# Fusing the three sources
# ------------------------
# ``constraints={"gene": "ppi"}`` makes the view ``ppi`` a constraint matrix on the gene
# factor instead of a relation. Its entries are negative (must-link); by default DFMF
# balances them with their Laplacian diagonal, so the term is
# ``1/2 sum w_ab ||g_a - g_b||^2`` and the objective stays bounded.
ranks = {"gene": 50, "go": 15, "cond": 5}
schema = {"ann": ("gene", "go"), "expr": ("gene", "cond")}


def held_out_scores(model):
    rows, cols = np.meshgrid(test, np.arange(ann.shape[1]), indexing="ij")
    coords = np.c_[rows.ravel(), cols.ravel()]
    return model.predict_entries(coords, relation="ann").reshape(len(test), -1)


def mean_auc(y, scores):
    terms = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return np.array([roc_auc_score(y[:, j], scores[:, j]) for j in terms]), terms


fused = DFMF(ranks, relations=schema, constraints={"gene": "ppi"}, max_iter=60, tol=0,
             dtype="float32", random_state=0).fit(MultiModal(ann=masked, expr=expr, ppi=ppi * 100))
no_ppi = DFMF(ranks, relations=schema, max_iter=60, tol=0, dtype="float32",
              random_state=0).fit(MultiModal(ann=masked, expr=expr))

auc_fused, terms = mean_auc(ann[test], held_out_scores(fused))
auc_no_ppi, _ = mean_auc(ann[test], held_out_scores(no_ppi))
print(f"mean AUC over {len(terms)} GO terms: with interactions {auc_fused.mean():.3f}, "
      f"without {auc_no_ppi.mean():.3f}")

# %%
# Genes that were not in the fit
# ------------------------------
# Fit on the training genes only (with the interactions among them), then fold the
# held-out genes in: their factor is solved with everything else frozen, from their
# expression and the interactions among them. Their annotations are unknown: an empty
# sparse matrix is a view whose every entry is missing.
import scipy.sparse as sp  # noqa: E402

inductive = DFMF(ranks, relations=schema, constraints={"gene": "ppi"}, max_iter=60, tol=0,
                 dtype="float32", random_state=0)
inductive.fit(MultiModal(ann=ann[train], expr=expr[train], ppi=ppi[train][:, train] * 100))
Z = inductive.transform(MultiModal(ann=sp.csr_matrix((len(test), ann.shape[1])),
                                   expr=expr[test], ppi=ppi[test][:, test] * 100))
scores_new = Z @ inductive.backbones_["ann"] @ inductive.factors_["go"].T
auc_new, _ = mean_auc(ann[test], scores_new)
print(f"genes folded in after the fit: mean AUC {auc_new.mean():.3f}")

# %%
# What the fusion learned
# -----------------------
# Left: the objective after every sweep (it never increases). Middle: the AUC of every
# GO term on the held-out genes, with and without the interaction constraints. Right:
# ROC curves of the three most annotated terms.
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
axes[0].plot(fused.loss_curve_)
axes[0].set(xlabel="sweep", ylabel="objective J", title="DFMF objective", yscale="log")
axes[1].scatter(auc_no_ppi, auc_fused, s=12)
axes[1].plot([0.2, 1], [0.2, 1], color="grey", lw=1)
axes[1].set(xlabel="AUC without interactions", ylabel="AUC with interactions",
            title=f"{len(terms)} GO terms, held-out genes")
scores = held_out_scores(fused)
for j in np.argsort(ann[test].sum(0))[::-1][:3]:
    fpr, tpr, _ = roc_curve(ann[test][:, j], scores[:, j])
    axes[2].plot(fpr, tpr, label=f"{dicty.go_terms[j]} (AUC "
                 f"{roc_auc_score(ann[test][:, j], scores[:, j]):.2f})")
axes[2].plot([0, 1], [0, 1], color="grey", lw=1)
axes[2].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()
