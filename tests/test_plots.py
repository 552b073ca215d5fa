"""Behaviour of the report figures: what is drawn, how it is labelled, and how it is saved."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lab5_utils.report import plots  # noqa: E402

RED = to_rgba("red")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def history(epochs, acc0=0.4):
    e = np.asarray(list(epochs))
    k = np.arange(len(e))
    return pd.DataFrame({
        "epoch": e, "loss": 2.0 - 0.2 * k, "accuracy": acc0 + 0.05 * k,
        "val_loss": 2.1 - 0.2 * k, "val_accuracy": acc0 - 0.02 + 0.05 * k,
        "lr": 1e-3,
    })


def labelled_lines(ax):
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_history_two_panels_in_percent_with_labels():
    fig = plots.plot_history(history(range(1, 4)), title="Transfer")
    assert isinstance(fig, Figure)
    ax_acc, ax_loss = fig.axes
    assert fig.get_suptitle() == "Transfer"
    assert "accuracy" in ax_acc.get_ylabel() and "%" in ax_acc.get_ylabel()
    assert ax_loss.get_ylabel() == "loss" and ax_acc.get_xlabel() == "epoch"
    assert legend_texts(ax_acc) == ["train", "validation"]
    ys = np.concatenate([ln.get_ydata() for ln in labelled_lines(ax_acc)])
    assert 1 < ys.max() <= 100
    assert np.allclose(labelled_lines(ax_loss)[0].get_ydata(), [2.0, 1.8, 1.6])


def test_history_baseline_drawn_first_in_grey_before_the_run():
    base, run = history(range(1, 4)), history(range(4, 6), acc0=0.6)
    fig = plots.plot_history(run, baseline=base)
    ax_acc = fig.axes[0]
    lines = labelled_lines(ax_acc)
    assert [ln.get_label() for ln in lines] == [
        "transfer: train", "train", "transfer: validation", "validation"]
    grey = [ln for ln in lines if ln.get_label().startswith("transfer")]
    own = [ln for ln in lines if not ln.get_label().startswith("transfer")]
    assert all(ln.get_color() == plots.BASELINE_COLOR for ln in grey)
    assert all(ln.get_color() != plots.BASELINE_COLOR for ln in own)
    assert max(max(ln.get_xdata()) for ln in grey) < min(min(ln.get_xdata()) for ln in own)
    # a dashed vertical marker at the epoch where the run starts (end of the transfer run)
    vlines = [ln for ln in ax_acc.get_lines() if ln.get_label().startswith("_")]
    assert len(vlines) == 1 and vlines[0].get_linestyle() == "--"
    assert vlines[0].get_xdata()[0] == 3


def test_history_tolerates_missing_columns():
    df = history(range(1, 3))[["epoch", "loss"]]
    fig = plots.plot_history(df)
    assert len(labelled_lines(fig.axes[0])) == 0
    assert len(labelled_lines(fig.axes[1])) == 1


def test_comparison_one_entry_per_run_plus_transfer_and_skips_empty():
    runs = {"lr=1e-05": history(range(4, 7), 0.6), "lr=1e-04": history(range(4, 7), 0.55),
            "lr=1e-03": pd.DataFrame()}
    fig = plots.plot_comparison(runs, baseline=history(range(1, 4)))
    (ax,) = fig.axes
    assert legend_texts(ax) == ["transfer", "lr=1e-05", "lr=1e-04"]
    assert ax.get_title() and "%" in ax.get_ylabel()
    transfer, *others = labelled_lines(ax)
    assert max(transfer.get_xdata()) < min(min(ln.get_xdata()) for ln in others)
    ys = np.concatenate([ln.get_ydata() for ln in labelled_lines(ax)])
    assert 1 < ys.max() <= 100


def test_comparison_loss_is_not_scaled():
    fig = plots.plot_comparison({"a": history(range(1, 3))}, metric="val_loss", title="Loss")
    ax = fig.axes[0]
    assert ax.get_title() == "Loss" and "%" not in ax.get_ylabel()
    assert np.allclose(labelled_lines(ax)[0].get_ydata(), [2.1, 1.9])
    assert legend_texts(ax) == ["a"]


def test_lr_finder_log_axis_smoothed_and_suggestion():
    lr = np.logspace(-7, 0, 50)
    loss = np.concatenate([np.linspace(4.6, 2.0, 40), np.linspace(3, 50, 10)])
    df = pd.DataFrame({"lr": lr, "loss": loss, "smoothed_loss": loss * 0.99})
    fig = plots.plot_lr_finder(df, suggestion=1e-3)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "loss" and ax.get_title()
    assert "smoothed loss" in legend_texts(ax) and "suggestion" in legend_texts(ax)
    marker = [ln for ln in ax.get_lines() if ln.get_label() == "suggestion"][0]
    assert marker.get_xdata()[0] == pytest.approx(1e-3)
    assert any("1.0e-03" in t.get_text() for t in ax.texts)
    assert ax.get_ylim()[1] < 50  # the exploding tail does not squash the curve


def test_lr_finder_without_smoothed_or_suggestion():
    df = pd.DataFrame({"lr": [1e-5, 1e-4, 1e-3], "loss": [3.0, 2.5, 2.8]})
    fig = plots.plot_lr_finder(df, None)
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["loss"] and not ax.texts


def test_class_balance_sorted_with_mean_at_101_classes():
    rng = np.random.default_rng(0)
    counts = pd.Series(rng.integers(600, 750, 101), index=[f"class_{i}" for i in range(101)])
    fig = plots.plot_class_balance(counts)
    ax = fig.axes[0]
    heights = [p.get_width() for p in ax.patches]
    assert len(heights) == 101 and heights == sorted(heights, reverse=True)
    assert ax.get_title() and ax.get_xlabel() == "images"
    assert legend_texts(ax) == [f"mean = {counts.mean():.0f}"]
    assert ax.get_yticklabels()[0].get_fontsize() <= 6
    assert fig.get_size_inches()[1] > 10  # tall enough for 101 labels


def test_image_sizes_scatter_and_two_histograms():
    sizes = pd.DataFrame({"height": [512, 384, 512, 289], "width": [512, 512, 340, 512]})
    fig = plots.plot_image_sizes(sizes)
    sc, hw, hh = fig.axes
    assert len(sc.collections) == 1 and len(sc.collections[0].get_offsets()) == 4
    assert sum(p.get_height() for p in hw.patches) == 4
    assert "width" in hw.get_xlabel() and "height" in hh.get_xlabel()
    assert "n = 4" in fig.get_suptitle()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_image_grid_shows_both_dtypes_identically(dtype):
    img = np.full((2, 8, 8, 3), 200, dtype=dtype)
    img[1] = 0
    fig = plots.plot_image_grid(img, ["a", "b"], ncols=4)
    assert len(fig.axes) == 2  # unused grid cells are removed
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in fig.axes)
    shown = fig.axes[0].images[0].to_rgba(fig.axes[0].images[0].get_array())
    assert shown[0, 0, 0] == pytest.approx(200 / 255, abs=0.01)


def test_image_grid_layout():
    fig = plots.plot_image_grid(np.zeros((7, 4, 4, 3), np.uint8), [str(i) for i in range(7)],
                                ncols=3)
    assert len(fig.axes) == 7
    assert sorted({ax.get_subplotspec().rowspan.start for ax in fig.axes}) == [0, 1, 2]


def test_augmentation_preview_titles():
    img = np.zeros((8, 8, 3), np.uint8)
    fig = plots.plot_augmentation_preview(img, [img, img, img])
    assert [ax.get_title() for ax in fig.axes] == [
        "original", "augmented 1", "augmented 2", "augmented 3"]
    assert all(len(ax.images) == 1 for ax in fig.axes)


def test_per_class_best_and_worst_in_percent():
    best = pd.DataFrame({"class": ["pho", "edamame", "waffles"],
                         "accuracy": [0.95, 0.99, 0.9], "support": [250] * 3})
    worst = pd.DataFrame({"class": ["steak", "pork_chop", "empty"],
                          "accuracy": [0.3, 0.2, np.nan], "support": [250, 250, 0]})
    fig = plots.plot_per_class(best, worst)
    ax_best, ax_worst = fig.axes
    assert "Best" in ax_best.get_title() and "Worst" in ax_worst.get_title()
    assert ax_best.get_xlabel() == "accuracy (%)"
    assert [p.get_width() for p in ax_best.patches] == pytest.approx([99, 95, 90])
    assert [p.get_width() for p in ax_worst.patches] == pytest.approx([20, 30])  # NaN dropped
    assert [t.get_text() for t in ax_worst.get_yticklabels()] == ["pork_chop", "steak"]


def test_confusion_101_classes_no_cell_text_and_colorbar():
    c = 101
    cm = np.random.default_rng(1).random((c, c))
    cm /= cm.sum(axis=1, keepdims=True)
    names = [f"class_{i}" for i in range(c)]
    fig = plots.plot_confusion(cm, names, title="Test confusion")
    ax, cbar = fig.axes
    assert ax.get_title() == "Test confusion"
    assert not ax.texts and len(ax.images) == 1 and cbar.get_ylabel()
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert ax.get_xticklabels()[0].get_fontsize() <= 6
    assert ax.images[0].get_clim() == (0, 1)


def test_confusion_small_has_cell_text_and_rejects_bad_shape():
    fig = plots.plot_confusion(np.eye(3), ["a", "b", "c"])
    assert len(fig.axes[0].texts) == 9 and len(fig.axes) == 2
    with pytest.raises(ValueError):
        plots.plot_confusion(np.eye(3), ["a", "b"])


def test_predictions_wrong_ones_in_red():
    names = ["apple_pie", "pizza", "sushi"]
    probs = np.array([[0.87, 0.1, 0.03], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8]])
    y_true = [0, 1, 2, 0]
    images = np.random.default_rng(2).uniform(0, 255, (4, 8, 8, 3))
    fig = plots.plot_predictions(images, y_true, probs, names, n=3, ncols=2)
    assert len(fig.axes) == 3  # the first n only
    titles = [ax.title for ax in fig.axes]
    assert titles[0].get_text() == "true: apple_pie\npred: apple_pie (87%)"
    assert titles[2].get_text() == "true: sushi\npred: apple_pie (50%)"
    assert [to_rgba(t.get_color()) == RED for t in titles] == [False, False, True]
    framed = [any(s.get_visible() and to_rgba(s.get_edgecolor()) == RED
                  for s in ax.spines.values()) for ax in fig.axes]
    assert framed == [False, False, True]
    assert "1 of 3 wrong" in fig.get_suptitle()


def test_save_figure_writes_svg_and_png_atomically(tmp_path):
    fig = plots.plot_history(history(range(1, 3)))
    folder = tmp_path / "out" / "figs"
    paths = plots.save_figure(fig, "history", folder=folder)
    assert paths == [folder / "history.svg", folder / "history.png"]
    assert paths[1].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    svg = paths[0].read_text()
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert all(p.stat().st_size > 1000 for p in paths)
    assert sorted(p.name for p in folder.iterdir()) == ["history.png", "history.svg"]
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in paths)  # readable, not mkstemp's 0600


def test_save_figure_overwrites_and_leaves_no_temp_on_failure(tmp_path, monkeypatch):
    fig = plots.plot_history(history(range(1, 3)))
    plots.save_figure(fig, "h", folder=tmp_path)
    before = (tmp_path / "h.png").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(fig, "savefig", boom)
    with pytest.raises(RuntimeError):
        plots.save_figure(fig, "h", folder=tmp_path)
    assert (tmp_path / "h.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.png", "h.svg"]


@pytest.mark.parametrize("name", ["a/b", "..", "", "a\\b"])
def test_save_figure_rejects_paths(tmp_path, name):
    fig = plots.plot_history(history(range(1, 3)))
    with pytest.raises(ValueError):
        plots.save_figure(fig, name, folder=tmp_path)
    assert not list(tmp_path.iterdir())
