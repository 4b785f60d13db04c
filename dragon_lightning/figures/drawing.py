"""The tutorial's pictures as matplotlib figures, drawn without pyplot (no GUI backend, no global state).

Every function takes features in the original units (number of toes, body length) and returns an
RGB image array, which TensorBoard takes as it is and :func:`png_writer` and :func:`gif_writer` write
as files through the output gate.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from PIL import Image

from dragon_lightning.models.base import decide

AXIS_LABELS = ("number of toes", "body length")
# Dragon colors are drawn in their own color, fire in red; other class names take the palette in order.
NAMED_COLORS = {"Blue": "#1f77b4", "Red": "#d62728", "Yellow": "#e6b800", "fire": "#d62728", "no fire": "#7f7f7f"}
PALETTE = ("#1f77b4", "#d62728", "#e6b800", "#2ca02c", "#9467bd")
# Curves of a split, never of a class: dark for training, green for validation.
SPLIT_COLORS = {"train": "#333333", "val": "#2ca02c"}
DPI = 90
# TensorBoard shows images shrunk to fit a card; larger text keeps them readable there.
STYLE: Any = {"font.size": 13, "axes.titlesize": 14, "legend.fontsize": 12}


def class_colors(class_names: Sequence[str]) -> list[str]:
    return [NAMED_COLORS.get(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(class_names)]


def agg_canvas(figure: Figure) -> FigureCanvasAgg:
    """The figure's Agg canvas, made once: a figure drawn again keeps its pixel buffer."""
    return figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)


def pixels(canvas: FigureCanvasAgg) -> np.ndarray:
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render(figure: Figure) -> np.ndarray:
    """Draw ``figure`` with Agg and return its pixels as an ``H x W x 3`` uint8 array."""
    canvas = agg_canvas(figure)
    canvas.draw()
    return pixels(canvas)


def _scatter(ax, features: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> None:
    colors = class_colors(class_names)
    for index, name in enumerate(class_names):
        rows = labels == index
        ax.scatter(features[rows, 0], features[rows, 1], s=20, c=colors[index], label=name, linewidths=0)
    ax.set_xlabel(AXIS_LABELS[0])
    ax.set_ylabel(AXIS_LABELS[1])
    ax.set_title(title)


def _legend_outside(ax) -> None:
    """Right of the axes: never over the data, and cheaper than searching for the 'best' spot."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


@rc_context(STYLE)
def dragons_by_class(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> np.ndarray:
    """The dragons in the feature plane, one color per class: the tutorial's first picture."""
    figure = Figure(figsize=(6.5, 4.5), dpi=DPI)
    figure.subplots_adjust(left=0.12, right=0.78, bottom=0.12, top=0.9)
    ax = figure.subplots()
    _scatter(ax, features, labels, class_names, title)
    _legend_outside(ax)
    return render(figure)


@rc_context(STYLE)
def truth_and_predictions(
    features: np.ndarray, labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], caption: str
) -> np.ndarray:
    """Two panels side by side, as in the tutorial: dragons colored by truth and by prediction."""
    figure = Figure(figsize=(10, 4), dpi=DPI)
    figure.subplots_adjust(left=0.07, right=0.87, bottom=0.13, top=0.83, wspace=0.1)
    truth_ax, predicted_ax = figure.subplots(1, 2, sharex=True, sharey=True)
    _scatter(truth_ax, features, labels, class_names, "ground truth")
    _scatter(predicted_ax, features, predicted, class_names, "predictions")
    figure.suptitle(caption)
    wrong = predicted != labels
    predicted_ax.scatter(features[wrong, 0], features[wrong, 1], s=60, facecolors="none", edgecolors="black", label="wrong")
    _legend_outside(predicted_ax)
    return render(figure)


def grid_over(features: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``size x size`` grid spanning the data with a 5% margin; returns the two mesh arrays."""
    low, high = features.min(axis=0), features.max(axis=0)
    margin = (high - low) * 0.05 + 1e-6
    xs = np.linspace(low[0] - margin[0], high[0] + margin[0], size)
    ys = np.linspace(low[1] - margin[1], high[1] + margin[1], size)
    return np.meshgrid(xs, ys)


def predicted_regions(logits: np.ndarray) -> np.ndarray:
    """Class index per grid point, by the models' own rule (:func:`~dragon_lightning.models.base.decide`)
    on decision scores: logits shifted so that the threshold sits at 0."""
    rows = torch.from_numpy(np.ascontiguousarray(logits.reshape(-1, logits.shape[-1])))
    return decide(rows, 0.0).numpy().reshape(logits.shape[:-1])


def _boundaries(logits: np.ndarray, regions: np.ndarray) -> list[np.ndarray]:
    """Fields whose zero line is a decision boundary: the logit itself, or per class pair the gap
    between their logits where those two lead (elsewhere NaN, so no line is drawn)."""
    if logits.shape[-1] == 1:
        return [logits[..., 0]]
    pairs = [(i, j) for i in range(logits.shape[-1]) for j in range(i + 1, logits.shape[-1])]
    return [np.where(np.isin(regions, pair), logits[..., pair[0]] - logits[..., pair[1]], np.nan) for pair in pairs]


class DecisionRegions:
    """The model's predicted class over the feature plane (shaded) with the data on top.

    The figure is built once for a data set, and drawn once without what changes (regions, boundary
    lines, title, points). Each :meth:`draw` restores that background and draws only those, and the
    frame over them: matplotlib's blitting, a few times cheaper than drawing the axes, ticks and
    legend anew for every snapshot.
    """

    @rc_context(STYLE)
    def __init__(self, features: np.ndarray, labels: np.ndarray, class_names: Sequence[str], grid_size: int = 100):
        self.grid_x, self.grid_y = grid_over(features, grid_size)
        self.scored_size = grid_size // 2 + 1
        scored_x, scored_y = grid_over(features, self.scored_size)
        self.points = np.stack([scored_x.ravel(), scored_y.ravel()], axis=1)
        """Where the model is scored: a grid of half the drawn resolution over the same span (a quarter of
        the forward pass), whose logits :meth:`draw` interpolates. Exact for linear models, whose logits
        are linear; for an MLP (piecewise linear) the regions move by less than a drawn cell."""
        self.figure = Figure(figsize=(6.5, 4.5), dpi=DPI)
        self.figure.subplots_adjust(left=0.12, right=0.8, bottom=0.12, top=0.92)
        self.ax = self.figure.subplots()
        extent = (self.grid_x[0, 0], self.grid_x[0, -1], self.grid_y[0, 0], self.grid_y[-1, 0])
        self.regions = self.ax.imshow(
            np.zeros_like(self.grid_x, dtype=int),
            origin="lower",
            extent=extent,
            aspect="auto",
            interpolation="nearest",
            cmap=ListedColormap(class_colors(class_names)),
            alpha=0.25,
            vmin=0,
            vmax=len(class_names) - 1,
        )
        _scatter(self.ax, features, labels, class_names, "")
        self._points = list(self.ax.collections)
        _legend_outside(self.ax)
        self.ax.set_autoscale_on(False)  # boundary lines must not move the frame of the background
        self._lines: list = []
        self._background = None

    @rc_context(STYLE)
    def draw(self, logits: np.ndarray, title: str, boundary_lines: bool = False) -> np.ndarray:
        """``logits`` are the model's outputs on :attr:`points`. Boundary lines are drawn where the
        leading logits tie: for linear models, the exact straight lines."""
        logits = self.on_drawn_grid(logits)
        regions = predicted_regions(logits)
        self.regions.set_data(regions)
        self.ax.set_title(title)
        for lines in self._lines:
            lines.remove()
        self._lines = []
        if boundary_lines:
            for field in _boundaries(logits, regions):
                if not np.isnan(field).all() and np.nanmin(field) < 0 < np.nanmax(field):
                    self._lines.append(
                        self.ax.contour(self.grid_x, self.grid_y, field, levels=[0.0], colors="black", linewidths=1.2)
                    )
        canvas = agg_canvas(self.figure)
        if self._background is None:
            self._capture_background(canvas)
        canvas.restore_region(self._background)
        for artist in (self.regions, *self._points, *self._lines, *self.ax.spines.values(), self.ax.title):
            self.ax.draw_artist(artist)
        return pixels(canvas)

    def on_drawn_grid(self, logits: np.ndarray) -> np.ndarray:
        """Logits on :attr:`points` to logits on the drawn grid (bilinear, corners aligned)."""
        scored = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        scored = scored.reshape(self.scored_size, self.scored_size, -1).permute(2, 0, 1)[None]
        drawn = torch.nn.functional.interpolate(scored, size=self.grid_x.shape, mode="bilinear", align_corners=True)
        return drawn[0].permute(1, 2, 0).numpy()

    def _capture_background(self, canvas: FigureCanvasAgg) -> None:
        """Draw everything but what changes. The title is emptied rather than hidden: the axes place
        their title while drawing, and a hidden one is left where a later draw would not show it."""
        moving = [self.regions, *self._points, *self._lines]
        title = self.ax.title.get_text()
        self.ax.title.set_text("")
        for artist in moving:
            artist.set_visible(False)
        canvas.draw()
        self._background = canvas.copy_from_bbox(self.figure.bbox)
        for artist in moving:
            artist.set_visible(True)
        self.ax.title.set_text(title)


@rc_context(STYLE)
def confusion_matrix(counts: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """``counts[true, predicted]`` as an annotated matrix with class names."""
    n = len(class_names)
    figure = Figure(figsize=(4.2, 3.8), dpi=DPI)
    figure.subplots_adjust(left=0.2, right=0.95, bottom=0.14, top=0.9)
    ax = figure.subplots()
    ax.imshow(counts, cmap="Blues", vmin=0)  # shade from zero, as the text color assumes
    for (row, column), count in np.ndenumerate(counts):
        dark = count > counts.max() / 2
        ax.text(column, row, str(count), ha="center", va="center", color="white" if dark else "black", fontsize=15)
    ax.set_xticks(range(n), class_names)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test set: {counts.trace():,} of {counts.sum():,} right")
    return render(figure)


@rc_context(STYLE)
def learning_curves(history: Sequence[dict], kept_epoch: int | None = None) -> np.ndarray:
    """Loss and accuracy per epoch for training and validation, side by side, from a model's
    ``history`` (entries with ``stage``, ``epoch``, ``step``, ``loss``, ``acc``). Validation that runs
    within an epoch is placed at its fraction of the epoch. ``kept_epoch`` (0-based) is marked, counted
    from 1 as the axis counts: the epoch whose weights the run kept."""
    figure = Figure(figsize=(10, 4), dpi=DPI)
    figure.subplots_adjust(left=0.08, right=0.81, bottom=0.14, top=0.88, wspace=0.25)  # room for the legend
    loss_ax, acc_ax = figure.subplots(1, 2, sharex=True)
    train = [entry for entry in history if entry["stage"] == "train"]
    steps_per_epoch = train[-1]["step"] / (train[-1]["epoch"] + 1) if train and train[-1]["step"] else None
    for stage, label in (("train", "training"), ("val", "validation")):
        entries = [entry for entry in history if entry["stage"] == stage]
        if stage == "train" or steps_per_epoch is None:
            epochs = [entry["epoch"] + 1 for entry in entries]  # a value logged at an epoch's end
        else:
            epochs = [entry["step"] / steps_per_epoch for entry in entries]
        style = {"color": SPLIT_COLORS[stage], "label": label, "marker": "o" if len(entries) < 30 else None, "markersize": 4}
        loss_ax.plot(epochs, [entry["loss"] for entry in entries], **style)
        acc_ax.plot(epochs, [entry["acc"] for entry in entries], **style)
    losses = np.array([entry["loss"] for entry in history], dtype=float)
    loss_title = "loss"
    if losses.size and np.nanmax(losses) > 20 * max(np.nanmedian(losses), 1e-12):
        # Early losses far above the rest (raw features) would flatten the curve against the axis.
        loss_ax.set_yscale("symlog", linthresh=max(float(np.nanmedian(losses)), 1e-6))
        loss_title = "loss (symmetric log scale)"
    for ax, name in ((loss_ax, loss_title), (acc_ax, "accuracy")):
        ax.set_xlabel("epochs trained")
        ax.set_ylabel(name.split(" (")[0])
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if kept_epoch is not None:
            ax.axvline(
                kept_epoch + 1, color="#d62728", linestyle="--", linewidth=1.2, label=f"weights kept:\nepoch {kept_epoch + 1}"
            )
    _legend_outside(acc_ax)
    return render(figure)


@rc_context(STYLE)
def roc_curve(
    false_positive_rate: np.ndarray,
    true_positive_rate: np.ndarray,
    auroc: float,
    operating_point: tuple[float, float],
    threshold: float,
    positive: str,
) -> np.ndarray:
    """The test ROC curve with the model's decision threshold marked at ``operating_point`` (FPR, TPR)."""
    figure = Figure(figsize=(5.2, 4.6), dpi=DPI)
    figure.subplots_adjust(left=0.15, right=0.95, bottom=0.13, top=0.9)
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    ax.plot(false_positive_rate, true_positive_rate, color=NAMED_COLORS.get(positive, PALETTE[1]), linewidth=2)
    ax.plot(*operating_point, "o", color="black", markersize=8)
    ax.annotate(
        f"threshold {threshold:g}\nFPR {operating_point[0]:.3f}, TPR {operating_point[1]:.3f}",
        operating_point,
        xytext=(0.35, 0.25),
        textcoords="axes fraction",
        arrowprops={"arrowstyle": "->", "color": "black"},
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
    )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel(f"true positive rate ({positive})")
    ax.set_title(f"test ROC, AUROC {auroc:.3f}")
    return render(figure)


def palette_png(image: np.ndarray) -> bytes:
    """``image`` as a 64-color PNG, fast: a quarter of the time of an RGB PNG (and of TensorBoard's own
    encoding, which also resamples), a third of the bytes, and the GIF's look."""
    buffer = io.BytesIO()
    Image.fromarray(image).quantize(colors=64, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """``image`` as a PNG file holds it."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_writer(image: np.ndarray) -> Callable[[Path], object]:
    """Writes ``image`` as a PNG file (hand it to the output gate)."""
    return lambda path: path.write_bytes(png_bytes(image))
