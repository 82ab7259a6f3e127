"""The figures of a finished run, for the report and for TensorBoard: loss per epoch, confusion matrix.

Used by :mod:`src.report` (PNG files) and by ``python -m src.train fit`` (TensorBoard's Images,
Text and HParams tabs, :func:`log_to_tensorboard`).  Matplotlib draws on its Agg canvas: no display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

from ..system.metrics import format_report

__all__ = ["FIGSIZE", "DPI", "epoch_ticks", "loss_figure", "confusion_figure", "save_png", "log_to_tensorboard"]

FIGSIZE, DPI = (6.4, 4.8), 100  #: every PNG is 640 × 480 pixels


def epoch_ticks() -> MaxNLocator:
    """Whole epochs on the x axis, also for a run of one or two epochs (where ``integer=True`` alone gives 0.945 … 1.05)."""
    return MaxNLocator(integer=True, min_n_ticks=1)


def _new_figure() -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display needed
    return fig


def loss_figure(name: str, epochs: Sequence[int], train: Sequence[float], val: Sequence[Optional[float]], loss: str,
                resumed_after: Sequence[int] = ()):  # fmt: skip
    """Train and validation loss per epoch, the final values in the title (like the course report's figures).

    ``resumed_after``: the epochs after which a new process resumed the run (a dotted line each).
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    for i, epoch in enumerate(resumed_after):
        ax.axvline(epoch + 0.5, color="gray", linestyle=":", linewidth=1, label="resumed from a checkpoint" if i == 0 else None)
    ax.plot(epochs, train, "o-", label="train (mean over the epoch's batches)")
    pairs = [(e, v) for e, v in zip(epochs, val) if v is not None]
    if pairs:
        ax.plot(*zip(*pairs), "s-", label="validation (end of epoch)")
    final = f"final train {train[-1]:.4f}" + (f", validation {pairs[-1][1]:.4f}" if pairs else "")
    ax.set_title(f"{name}: {loss.replace('_', '-')} loss per epoch\n{final}")
    ax.set_xlabel("epoch")
    unit = {"cross_entropy": "nats per image", "mse": "mean per output"}.get(loss, "batch mean")
    ax.set_ylabel(f"{loss.replace('_', '-')} loss ({unit}, + weight penalty if any)")
    ax.xaxis.set_major_locator(epoch_ticks())
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def confusion_figure(name: str, confusion: Sequence[Sequence[int]], accuracy: float, split: str = "test"):
    """A heat map of the confusion matrix (rows: true digit), counts written in the cells."""
    fig = _new_figure()
    ax = fig.add_subplot()
    n = len(confusion)
    top = max(max(row) for row in confusion)
    # log colors: the few errors stay visible beside the large diagonal; empty cells stay white
    masked = [[c if c > 0 else float("nan") for c in row] for row in confusion]
    im = ax.imshow(masked, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(top, 2)))
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            if count:
                dark = count > top**0.6
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(f"{name}: {split} confusion matrix (accuracy {accuracy:.4f})")
    bar = fig.colorbar(im, ax=ax, label="images (log scale)")
    bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    return fig


def save_png(fig: Figure, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:  # a failed write (a full disk) leaves no half-written picture
        tmp.unlink(missing_ok=True)


def log_to_tensorboard(logger, results: dict, params: dict, name: str) -> None:
    """Log a finished run's confusion matrix, reports and hyperparameters (HParams metric: test accuracy)."""
    writer, step = logger.experiment, 0
    test = results["test"]
    writer.add_figure("test/confusion_matrix", confusion_figure(name, test["report"]["confusion"], test["accuracy"]), step)
    for split in ("train", "test"):
        # four leading spaces: a preformatted block in TensorBoard's markdown, so the columns line up
        text = "".join(f"    {line}\n" for line in format_report(results[split]["report"]).splitlines())
        writer.add_text(f"{split}/classification_report", text, step)
    logger.log_hyperparams(params, metrics={"hp/test_acc": test["accuracy"]})
    writer.flush()
