import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mmfactor import CMF, MultiModal  # noqa: E402
from mmfactor.plotting import (  # noqa: E402
    plot_embedding,
    plot_loss_curves,
    plot_reconstructions,
)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fitted_cmf():
    rng = np.random.RandomState(0)
    X = MultiModal(a=rng.rand(30, 6), b=rng.rand(30, 4))
    return CMF(n_components=3, max_iter=5, tol=0, random_state=0).fit(X)


def test_loss_curves_from_estimator(fitted_cmf):
    ax = plot_loss_curves(fitted_cmf)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"total (loss_curve_)", *fitted_cmf.loss_terms_}
    np.testing.assert_allclose(lines["total (loss_curve_)"].get_ydata(), fitted_cmf.loss_curve_)
    np.testing.assert_allclose(lines["a"].get_ydata(), fitted_cmf.loss_terms_["a"])
    np.testing.assert_array_equal(lines["a"].get_xdata(), np.arange(1, fitted_cmf.n_iter_ + 1))
    assert ax.get_yscale() == "log"


def test_loss_curves_term_selection_and_linear_axis(fitted_cmf):
    ax = plot_loss_curves(fitted_cmf, terms=["b"], total=False, logy=False)
    assert [line.get_label() for line in ax.get_lines()] == ["b"]
    assert ax.get_yscale() == "linear"
    # a non-positive value forbids a log axis
    ax = plot_loss_curves({"x": [1.0, 0.0, -1.0]})
    assert ax.get_yscale() == "linear"


def test_loss_curves_draw_on_given_axes(fitted_cmf):
    fig, (a1, a2) = plt.subplots(1, 2)
    assert plot_loss_curves(fitted_cmf, ax=a2) is a2
    assert not a1.get_lines() and a2.get_lines()


def test_loss_curves_errors(fitted_cmf):
    with pytest.raises(ValueError, match="no loss_curve_: fit it first"):
        plot_loss_curves(CMF())
    with pytest.raises(ValueError, match=r"Unknown loss terms \['nope'\]"):
        plot_loss_curves(fitted_cmf, terms=["nope"])
    with pytest.raises(ValueError, match="Nothing to plot"):
        plot_loss_curves({}, total=False)


def test_embedding_colours_by_label_and_maps_to_2d():
    rng = np.random.RandomState(0)
    Z = rng.randn(40, 6)
    labels = np.array(["a", "b", "c", "d"] * 10)
    ax = plot_embedding(Z, labels, title="t")
    assert len(ax.collections) == 4
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c", "d"]
    assert ax.get_title() == "t"
    # the points are the PCA projection: their total variance is that of the top 2 PCs
    pts = np.vstack([c.get_offsets() for c in ax.collections])
    top2 = np.sort(np.linalg.eigvalsh(np.cov(Z.T)))[-2:].sum()
    np.testing.assert_allclose(pts.var(0, ddof=1).sum(), top2, rtol=1e-6)


def test_embedding_two_columns_drawn_as_is_and_unlabelled():
    Z = np.arange(10.0).reshape(5, 2)
    ax = plot_embedding(Z)
    assert len(ax.collections) == 1
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), Z)
    assert ax.get_legend() is None


@pytest.mark.slow
def test_embedding_tsne():
    Z = np.random.RandomState(0).randn(30, 5)
    ax = plot_embedding(Z, np.repeat([0, 1, 2], 10), method="tsne")
    assert ax.get_xlabel() == "t-SNE 1"


def test_embedding_errors():
    with pytest.raises(ValueError, match="2-D array"):
        plot_embedding(np.zeros(5))
    with pytest.raises(ValueError, match=r"labels has shape \(3,\); expected \(5,\)"):
        plot_embedding(np.zeros((5, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="NaN or infinite"):
        plot_embedding(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="method must be 'pca' or 'tsne'"):
        plot_embedding(np.zeros((5, 3)), method="umap")


def test_reconstructions_grid_and_pixels():
    x = np.random.RandomState(0).rand(6, 1, 16, 15)
    rec = 0.5 * x
    fig = plot_reconstructions(x, rec, n_images=4)
    assert len(fig.axes) == 8
    top = fig.axes[0].get_images()[0].get_array()
    bottom = fig.axes[4].get_images()[0].get_array()
    np.testing.assert_allclose(top, x[0, 0])
    np.testing.assert_allclose(bottom, rec[0, 0])
    assert fig.axes[0].get_ylabel() == "original"
    assert fig.axes[4].get_ylabel() == "reconstruction"


def test_reconstructions_flat_rows_torch_rgb_and_several_rows():
    flat = np.random.RandomState(0).rand(3, 240)
    fig = plot_reconstructions(flat, [flat, torch.as_tensor(flat)], image_shape=(16, 15),
                               n_images=10)
    assert len(fig.axes) == 9  # 3 rows x the 3 images available
    rgb = np.random.RandomState(1).rand(2, 3, 4, 5)
    fig = plot_reconstructions(rgb, rgb)
    assert fig.axes[0].get_images()[0].get_array().shape == (4, 5, 3)


def test_reconstructions_errors():
    x = np.zeros((3, 1, 4, 4))
    with pytest.raises(ValueError, match="n_images must be a positive integer"):
        plot_reconstructions(x, x, n_images=0)
    with pytest.raises(ValueError, match=r"has images of shape \(5, 5\)"):
        plot_reconstructions(x, np.zeros((3, 1, 5, 5)))
    with pytest.raises(ValueError, match="cannot be reshaped"):
        plot_reconstructions(np.zeros((3, 10)), np.zeros((3, 10)), image_shape=(4, 4))
    with pytest.raises(ValueError, match="expected images"):
        plot_reconstructions(np.zeros((3, 10)), np.zeros((3, 10)))
    with pytest.raises(ValueError, match="has 2 channels"):
        plot_reconstructions(np.zeros((3, 2, 4, 4)), np.zeros((3, 2, 4, 4)))


COMPARISON = [
    {"model": "PCA (reference)", "macro_f1": 0.7961, "accuracy": 0.805, "fit_s": 0.04},
    {"model": "CMF", "macro_f1": 0.8187, "accuracy": 0.8275, "fit_s": 0.13},
    {"model": "MMEDA-II", "macro_f1": 0.71, "accuracy": 0.73, "fit_s": 35.2},
]


def _overlaps(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_comparison_figure_is_report_ready():
    from mmfactor.plotting import plot_comparison

    fig = plot_comparison(COMPARISON)
    ax, ax_t = fig.axes
    bars = [p for p in ax.patches if p.get_height() > 0]
    # one macro-F1 bar per model, top to bottom in the order given, on a 0-1 score axis
    by_y = sorted(bars, key=lambda p: -p.get_y())
    np.testing.assert_allclose([b.get_width() for b in by_y],
                               [r["macro_f1"] for r in COMPARISON])
    assert ax.get_xlim()[0] == 0 and max(ax.get_xticks()) == 1
    # the values are written on the figure, with the difference to the reference
    texts = [t.get_text() for t in ax.texts]
    assert "F1 0.796 | acc 0.805" in texts
    assert "F1 0.819 (+0.023) | acc 0.828" in texts
    assert "F1 0.710 (-0.086) | acc 0.730" in texts
    # the reference is marked: hatched bars and a line at its score
    assert [bool(b.get_hatch()) for b in by_y] == [True, False, False]
    assert any(np.allclose(line.get_xdata(), 0.7961) for line in ax.get_lines())
    # a fit-time panel, log scale, with the seconds written
    assert ax_t.get_xscale() == "log"
    assert [t.get_text() for t in ax_t.texts] == ["0.04 s", "0.13 s", "35.20 s"]
    t_bars = sorted((p for p in ax_t.patches), key=lambda p: -p.get_y())
    np.testing.assert_allclose([b.get_width() for b in t_bars], [0.04, 0.13, 35.2])
    # the legend lies outside both panels, over no bar and no value
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(r)
    for a in (ax, ax_t):
        assert not _overlaps(box, a.get_window_extent(r))
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["macro-F1 (bar)", "accuracy (marker)", "PCA (reference)",
                      "reference macro-F1 0.796"]
    # every value label stays inside its axes
    for a in (ax, ax_t):
        inner = a.get_window_extent(r)
        for t in a.texts:
            assert t.get_window_extent(r).x1 <= inner.x1 + 1, t.get_text()


def test_comparison_errors():
    from mmfactor.plotting import plot_comparison

    with pytest.raises(ValueError, match="rows is empty"):
        plot_comparison([])
    with pytest.raises(ValueError, match=r"the first lacks \['fit_s'\]"):
        plot_comparison([{"model": "a", "macro_f1": 0.5, "accuracy": 0.5}])
