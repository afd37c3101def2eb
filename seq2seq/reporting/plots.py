"""Figures for reports, drawn with matplotlib's headless Agg backend and returned as PNG bytes.

Every figure has a title and labelled axes with units; nothing is shown on screen and no
global pyplot state is kept (each figure is created, saved and closed here).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF", "ter": "TER", "ppl": "perplexity",
                "bpc": "bits per character", "loss": "loss (nats)", "accuracy": "accuracy",
                "macro_f1": "macro-F1"}


def _figure(width: float = 6.4, height: float = 3.8) -> Figure:
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: no display, no GUI toolkit
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def training_curves(train: list[dict[str, Any]], valid: list[dict[str, Any]], metric: str) -> bytes:
    """Loss (train and validation) and the validation ``metric`` against training steps."""
    fig = _figure(9.6, 3.8)
    left, right = fig.subplots(1, 2)
    if train:
        left.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1.2)
    if valid:
        left.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="validation",
                  lw=1.2, ms=3)
    left.set(title="Loss", xlabel="training step", ylabel="cross-entropy (nats per prediction)")
    left.legend()
    left.grid(alpha=0.3)
    points = [(r["step"], r[metric]) for r in valid if metric in r]
    if points:
        right.plot(*zip(*points), "o-", color="tab:green", lw=1.2, ms=3)
    name = METRIC_NAMES.get(metric, metric)
    right.set(title=f"Validation {name}", xlabel="training step", ylabel=name)
    right.grid(alpha=0.3)
    return _png(fig)


def bars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, ylabel: str,
         counts: Sequence[int] | None = None) -> bytes:
    """A bar chart; ``counts`` (examples per bar) are written above the bars."""
    fig = _figure()
    ax = fig.subplots()
    positions = np.arange(len(labels))
    drawn = ax.bar(positions, values, color="tab:blue")
    ax.set_xticks(positions, labels)
    if counts is not None:
        ax.bar_label(drawn, [f"n={c}" for c in counts], fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def heatmap(matrix: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str], title: str,
            xlabel: str, ylabel: str, colorbar: str, annotate: bool = False,
            value_range: tuple[float, float] | None = None) -> bytes:
    """A matrix as colours (attention weights, a confusion matrix); ``annotate`` prints values;
    ``value_range`` fixes the colour scale (e.g. 0-1 for probabilities)."""
    matrix = np.asarray(matrix, dtype=float)
    rows, cols = matrix.shape
    fig = _figure(max(4.0, 0.36 * cols + 2.4), max(3.0, 0.3 * rows + 1.8))
    ax = fig.subplots()
    low, high = value_range if value_range else (None, None)
    image = ax.imshow(matrix, cmap="Blues", aspect="auto", vmin=low, vmax=high)
    ax.set_xticks(range(cols), x_labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(rows), y_labels, fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(image, ax=ax, label=colorbar)
    if annotate:
        high = matrix.max() if matrix.size else 0
        for i in range(rows):
            for j in range(cols):
                value = matrix[i, j]
                ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=8,
                        color="white" if value > high / 2 else "black")
    return _png(fig)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> bytes:
    """Calibration: accuracy against confidence per confidence bin, with the diagonal."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    centers, accuracy, sizes = [], [], []
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            centers.append(confidence[chosen].mean())
            accuracy.append(correct[chosen].mean())
            sizes.append(int(chosen.sum()))
    fig = _figure(5.2, 4.4)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.plot(centers, accuracy, "o-", color="tab:orange", label="model")
    for x, y, n in zip(centers, accuracy, sizes):
        ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(title="Reliability (calibration)", xlabel="confidence (probability of the predicted label)",
           ylabel="accuracy in the bin", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def lines(series: Mapping[str, tuple[ArrayLike, ArrayLike]], title: str, xlabel: str,
          ylabel: str, log_y: bool = False) -> bytes:
    """One line per named series of (x, y)."""
    fig = _figure()
    ax = fig.subplots()
    for name, (x, y) in series.items():
        ax.plot(x, y, lw=1.4, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3, which="both" if log_y else "major")
    return _png(fig)
