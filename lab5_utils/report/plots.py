"""Figures for the lab report: training curves, data overview, evaluation, and atomic saving.

Every `plot_*` function returns a `matplotlib.figure.Figure` and never calls `plt.show()`.
Accuracy columns hold fractions (0..1) and are drawn in percent. No backend is forced here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lab5_utils.files import atomic_path, project_root
from lab5_utils.i18n import N_, _, ngettext, num
from lab5_utils.tables import DASH, FEW_CLASSES

BASELINE_COLOR = "0.55"
WRONG_COLOR = "red"
CHOSEN_COLOR = "tab:orange"


def _is_accuracy(column: str) -> bool:
    return "acc" in column or "top" in column


_LABELS = {"accuracy": N_("accuracy"), "val_accuracy": N_("validation accuracy"),
           "loss": N_("loss"), "val_loss": N_("validation loss"), "top5": N_("top-5 accuracy"),
           "val_top5": N_("validation top-5 accuracy")}


def _label(column: str, unit: bool = True) -> str:
    """'val_accuracy' -> 'validation accuracy (%)'."""
    text = _(_LABELS[column]) if column in _LABELS else (
        column.replace("val_", "validation ").replace("top5", "top-5 accuracy").replace("_", " "))
    return _("{label} (%)").format(label=text) if unit and _is_accuracy(column) else text


def _series(df: pd.DataFrame | None, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(epochs, values) of one column without NaN, in percent for accuracies; None if absent."""
    if df is None or df.empty or column not in df.columns:
        return None
    d = df[["epoch", column]].dropna().sort_values("epoch")
    if d.empty:
        return None
    scale = 100.0 if _is_accuracy(column) else 1.0
    return d["epoch"].to_numpy(), d[column].to_numpy(dtype=float) * scale


def _mark_start(ax: Axes, baseline: pd.DataFrame | None, run: pd.DataFrame | None) -> None:
    """Dashed vertical line at the last baseline epoch, where the run under study starts."""
    if baseline is None or baseline.empty or "epoch" not in baseline.columns:
        return
    start = baseline["epoch"].max()
    if run is not None and not run.empty:
        start = min(start, run["epoch"].min() - 1)
    ax.axvline(start, color="0.3", linestyle="--", linewidth=1)


def _style_epoch_axes(ax: Axes, ylabel: str, title: str) -> None:
    ax.set_xlabel(_("epoch"))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_history(
    history: pd.DataFrame, title: str = "", baseline: pd.DataFrame | None = None,
    baseline_label: str | None = None,
) -> Figure:
    """Accuracy and loss (train and validation) vs epoch; `baseline` (named `baseline_label`,
    default "transfer") drawn first in grey."""
    baseline_label = baseline_label or _("transfer")
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, metric, heading in ((ax_acc, "accuracy", _("Accuracy")), (ax_loss, "loss", _("Loss"))):
        for prefix, name, style in (("", _("train"), "--"), ("val_", _("validation"), "-")):
            base = _series(baseline, prefix + metric)
            if base is not None:
                ax.plot(*base, style, color=BASELINE_COLOR, marker="o", markersize=3,
                        label=f"{baseline_label}: {name}")
            run = _series(history, prefix + metric)
            if run is not None:
                ax.plot(*run, style, marker="o", markersize=4, label=name)
        _mark_start(ax, baseline, history)
        _style_epoch_axes(ax, _label(metric), heading)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title or _("Training history"))
    return fig


def plot_comparison(
    runs: dict[str, pd.DataFrame], metric: str = "val_accuracy",
    baseline: pd.DataFrame | None = None, title: str = "",
) -> Figure:
    """One line of `metric` per run (label = dict key), after the baseline line 'transfer'."""
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    base = _series(baseline, metric)
    if base is not None:
        ax.plot(*base, color=BASELINE_COLOR, marker="o", markersize=4, linewidth=2,
                label=_("transfer"))
        _mark_start(ax, baseline, None)
    for name, df in runs.items():
        run = _series(df, metric)
        if run is not None:
            ax.plot(*run, marker="o", markersize=4, label=name)
    default_title = _("{metric} by run").format(metric=_label(metric, unit=False).capitalize())
    _style_epoch_axes(ax, _label(metric), title or default_title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def plot_sweep_results(data: pd.DataFrame, title: str = "") -> Figure:
    """Test accuracy (dot) and validation accuracy (open diamond) of every run with their 95 %
    intervals (`analysis.glance_data`); the run validation chose is drawn and named in colour."""
    n = len(data)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * max(n, 1)), layout="constrained")
    y = np.arange(n)[::-1]
    for offset, split, marker, face, name in ((-0.12, "test", "o", None, _("test")),
                                              (0.12, "val", "D", "white", _("validation"))):
        for yi, (_r, row) in zip(y, data.iterrows()):
            color = CHOSEN_COLOR if row["chosen"] else BASELINE_COLOR if split == "val" else "0.2"
            err = [[row[f"{split} accuracy"] - row[f"{split} low"]],
                   [row[f"{split} high"] - row[f"{split} accuracy"]]]
            ax.errorbar(row[f"{split} accuracy"], yi + offset, xerr=err, fmt=marker, color=color,
                        markerfacecolor=face or color, capsize=3, label=name if yi == y[0] else None)
    labels = [_("{run}  (chosen)").format(run=_(r["label"])) if r["chosen"] else _(r["label"])
              for _r, r in data.iterrows()]
    ax.set_yticks(y, labels)
    for tick, (_r, row) in zip(ax.get_yticklabels(), data.iterrows()):
        if row["chosen"]:
            tick.set_color(CHOSEN_COLOR)
            tick.set_fontweight("bold")
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(_("accuracy (%), 95 % interval"))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or _("Test accuracy of every run, validation accuracy beside it"))
    return fig


def plot_lr_finder(df: pd.DataFrame, suggestion: float | None) -> Figure:
    """Loss vs learning rate (log x), smoothed if available, with the suggested LR marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    column = "smoothed_loss" if "smoothed_loss" in df.columns else "loss"
    d = df[["lr", column]].replace([np.inf, -np.inf], np.nan).dropna()
    if column == "smoothed_loss" and "loss" in df.columns:
        ax.plot(df["lr"], df["loss"], color="0.75", linewidth=1, label=_("loss"))
    ax.plot(d["lr"], d[column], color="C0", linewidth=2,
            label=_("smoothed loss") if column == "smoothed_loss" else _("loss"))
    if len(d) > 1:  # the loss explodes at the end; keep the interesting part in view
        y = d[column]
        top = min(y.max(), y.iloc[: max(1, len(y) // 10)].max() * 1.25)
        pad = 0.05 * (top - y.min()) or 0.1
        ax.set_ylim(y.min() - pad, top + pad)
    if suggestion is not None and np.isfinite(suggestion) and suggestion > 0:
        ax.axvline(suggestion, color="C3", linestyle="--", label=_("suggestion"))
        ax.text(suggestion, 0.97, " " + _("suggested lr = {lr}").format(lr=num(suggestion, ".1e")),
                color="C3", va="top",
                transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.set_xlabel(_("learning rate (log scale)"))
    ax.set_ylabel(_("loss"))
    ax.set_title(_("Learning-rate finder"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def plot_class_balance(counts: pd.Series, title: str = "") -> Figure:
    """Horizontal bars of images per class, largest on top, with the mean as a line."""
    counts = counts.sort_values(ascending=False)
    n = len(counts)
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.16 * n + 1)), layout="constrained")
    ax.barh([str(c) for c in counts.index], counts.to_numpy(), color="C0")
    ax.axvline(counts.mean(), color="C3", linestyle="--",
               label=_("mean = {mean}").format(mean=num(counts.mean(), ".0f")))
    ax.set_ylim(n - 0.5, -0.5)  # largest on top, no empty margin
    ax.tick_params(axis="y", labelsize=6 if n > 40 else 9)
    ax.set_xlabel(_("images"))
    ax.set_ylabel(_("class"))
    ax.set_title(title or ngettext("Images per class ({n} class)", "Images per class ({n} classes)",
                                   n).format(n=n))
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_image_sizes(sizes: pd.DataFrame) -> Figure:
    """Width vs height scatter plus histograms of width and height (pixels)."""
    fig, (ax_sc, ax_w, ax_h) = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    ax_sc.scatter(sizes["width"], sizes["height"], s=8, alpha=0.3)
    ax_sc.set(xlabel=_("width (px)"), ylabel=_("height (px)"), title=_("Width vs height"))
    for ax, column, axis, heading in ((ax_w, "width", _("width (px)"), _("Widths")),
                                      (ax_h, "height", _("height (px)"), _("Heights"))):
        ax.hist(sizes[column], bins=30, color="C0" if column == "width" else "C1")
        ax.set(xlabel=axis, ylabel=_("images"), title=heading)
    fig.suptitle(_("Image sizes (n = {n})").format(n=len(sizes)))
    return fig


def _percent(fraction: float) -> str:
    """A probability in whole percent, as in `87%`."""
    return num(fraction, ".0%")


def _to_display(image: np.ndarray) -> np.ndarray:
    """uint8 as is; other values assumed 0..255 and scaled to floats in 0..1."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype == np.uint8:
        return image
    return np.clip(image.astype(float), 0, 255) / 255.0


def _grid(n: int, ncols: int, cell: float = 2.8) -> tuple[Figure, list[Axes]]:
    """A figure with exactly `n` tick-free image axes laid out in rows of `ncols`."""
    if n < 1:
        raise ValueError("no images to plot")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + 0.4),
                             layout="constrained", squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    for ax in flat[:n]:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, flat[:n]


def plot_image_grid(images: Sequence[np.ndarray] | np.ndarray, titles: Sequence[str] | None = None,
                    ncols: int = 4) -> Figure:
    """Grid of images (uint8 or float 0..255) with titles and no ticks."""
    fig, axes = _grid(len(images), ncols)
    for i, ax in enumerate(axes):
        ax.imshow(_to_display(images[i]), cmap="gray")
        ax.set_title(titles[i] if titles is not None and i < len(titles) else "", fontsize=9)
    return fig


def plot_augmentation_preview(original: np.ndarray, augmented: Sequence[np.ndarray]) -> Figure:
    """The original image then its augmented variants, titled 'original', 'augmented 1', ..."""
    images = [original, *augmented]
    titles = [_("original")] + [_("augmented {i}").format(i=i) for i in range(1, len(augmented) + 1)]
    fig = plot_image_grid(images, titles, ncols=len(images) if len(images) <= 6 else 4)
    fig.suptitle(_("Data augmentation preview"))
    return fig


def plot_per_class(best: pd.DataFrame, worst: pd.DataFrame) -> Figure:
    """Two horizontal bar charts: best and worst classes by accuracy (percent)."""
    best = best.dropna(subset=["accuracy"]).sort_values("accuracy", ascending=False)
    worst = worst.dropna(subset=["accuracy"]).sort_values("accuracy")
    rows = max(len(best), len(worst), 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, max(3.0, 0.35 * rows + 1.2)), layout="constrained")
    for ax, df, color, name in ((axes[0], best, "C2", _("Best {n} classes")),
                                (axes[1], worst, "C3", _("Worst {n} classes"))):
        bars = ax.barh(df["class"].astype(str), df["accuracy"] * 100, color=color)
        ax.bar_label(bars, fmt="%.0f%%", fontsize=8, padding=2)
        ax.invert_yaxis()
        ax.set_xlim(0, 105)
        ax.set(xlabel=_("accuracy (%)"), title=name.format(n=len(df)))
    return fig


def plot_class_accuracy(per_class: pd.DataFrame, n: int = 10) -> Figure:
    """Test accuracy per class: one chart of every class, best first, when there are at most
    `tables.FEW_CLASSES`; else the `n` best and the `n` worst side by side."""
    valid = per_class.dropna(subset=["accuracy"])
    if len(valid) > FEW_CLASSES:
        ranked = valid.sort_values(["accuracy", "class"], ascending=[False, True])
        return plot_per_class(ranked.head(n), ranked.tail(n))
    ranked = valid.sort_values(["accuracy", "class"], ascending=[False, True])
    fig, ax = plt.subplots(figsize=(6, max(3.0, 0.35 * len(ranked) + 1.2)), layout="constrained")
    bars = ax.barh(ranked["class"].astype(str), ranked["accuracy"] * 100, color="C0")
    ax.bar_label(bars, fmt="%.0f%%", fontsize=8, padding=2)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set(xlabel=_("accuracy (%)"),
           title=_("Test accuracy of all {n} classes").format(n=len(ranked)))
    return fig


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], title: str = "") -> Figure:
    """Row-normalised confusion-matrix heatmap; cell values written only when C <= 20."""
    confusion = np.asarray(confusion, dtype=float)
    c = len(class_names)
    if confusion.shape != (c, c):
        raise ValueError(f"confusion shape {confusion.shape} does not match {c} class names")
    side = min(max(6.0, 0.16 * c + 3), 18.0)
    fig, ax = plt.subplots(figsize=(side + 1, side), layout="constrained")
    image = ax.imshow(confusion, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label=_("fraction of the true class"))
    if c <= 20:
        for (i, j), value in np.ndenumerate(confusion):
            ax.text(j, i, num(value), ha="center", va="center", fontsize=8,
                    color="white" if value > 0.5 else "black")
    fontsize = 10 if c <= 20 else 8 if c <= 40 else 6
    ticks = np.arange(0, c, max(1, math.ceil(c / 110)))
    ax.set_xticks(ticks, [class_names[i] for i in ticks], rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, [class_names[i] for i in ticks], fontsize=fontsize)
    ax.set(xlabel=_("predicted class"), ylabel=_("true class"))
    ax.set_title(title or _("Confusion matrix ({n} classes, rows normalised)").format(n=c))
    return fig


def plot_predictions(
    images: Sequence[np.ndarray] | np.ndarray, y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray, class_names: Sequence[str], n: int = 12, ncols: int = 4,
) -> Figure:
    """First `n` images titled 'true: X / pred: Y (87%)'; wrong ones get a red title and frame."""
    probs = np.asarray(probs)
    n = min(n, len(images))
    fig, axes = _grid(n, ncols, cell=3.0)
    wrong = 0
    for i, ax in enumerate(axes):
        pred = int(np.argmax(probs[i]))
        true = int(y_true[i])
        ax.imshow(_to_display(images[i]), cmap="gray")
        is_wrong = pred != true
        wrong += is_wrong
        ax.set_title(_("true: {true}\npred: {pred} ({probability})").format(
                         true=class_names[true], pred=class_names[pred],
                         probability=_percent(probs[i, pred])),
                     fontsize=9, color=WRONG_COLOR if is_wrong else "black")
        for spine in ax.spines.values():
            spine.set_visible(is_wrong)
            spine.set(color=WRONG_COLOR, linewidth=3)
    fig.suptitle(_("Predictions ({wrong} of {n} wrong, in red)").format(wrong=wrong, n=n))
    return fig


def plot_top_losses(images: Sequence[np.ndarray] | np.ndarray, top: pd.DataFrame,
                    class_names: Sequence[str], ncols: int = 3, title: str = "") -> Figure:
    """The most confidently wrong images (`scoring.top_losses` rows, in order), each titled with
    its true class, the predicted class and the probabilities of both."""
    fig, axes = _grid(len(top), ncols, cell=3.2)
    for ax, image, (_r, row) in zip(axes, images, top.iterrows()):
        ax.imshow(_to_display(image), cmap="gray")
        ax.set_title(_("true: {true} ({true_probability})\npred: {pred} ({probability})").format(
            true=class_names[int(row["true"])], true_probability=_percent(row["true_probability"]),
            pred=class_names[int(row["predicted"])], probability=_percent(row["probability"])),
                     fontsize=9, color=WRONG_COLOR)
    fig.suptitle(title or _("The {n} most confidently wrong test images").format(n=len(top)))
    return fig


def save_figure(fig: Figure, name: str, folder: str | Path = "figures") -> list[Path]:
    """Write `folder/name.svg` and `folder/name.png` atomically; return both paths."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or os.sep in name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("svg", "png"):
        path = folder / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    return paths


# --- display in notebooks -----------------------------------------------------------------------
def show_figure(fig: Figure, name: str, folder: str | Path | None = None) -> None:
    """Save `fig` as `<folder>/<name>.svg` and `.png` (default folder: `figures/` at the
    repository root), show the PNG with a caption naming the file, and close the figure."""
    from IPython.display import Image, Markdown, display


    paths = save_figure(fig, name, folder or project_root() / "figures")
    plt.close(fig)
    display(Image(filename=str(paths[1])))
    display(Markdown(_("*Figure: {name}* (saved as `{name}.svg` and `{name}.png`)").format(name=name)))


def show_table(table: pd.DataFrame, table_id: str | None = None, index: bool = False) -> None:
    """Display a table as HTML (with a stable id when given, for links and tests)."""
    from IPython.display import HTML, display

    nullable = [c for c in table.columns if isinstance(table[c].dtype, pd.api.extensions.ExtensionDtype)]
    table = table.astype({c: object for c in nullable})  # pd.NA would show as "<NA>"
    table[nullable] = table[nullable].where(table[nullable].notna(), None)
    display(HTML(table.to_html(table_id=table_id, index=index, na_rep=DASH, border=0)))
