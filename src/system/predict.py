"""Predictions on your own digit images: ``predictions.csv`` and a short table.

    python -m src.train predict --config configs/relu.yaml \\
        --ckpt_path lightning_logs/relu/version_0/checkpoints/best-epoch14.ckpt --data.predict_dir my_digits/

The images are read and converted to MNIST's format by :mod:`src.data.images` (through
``MNISTDataModule.setup("predict")``) and standardized with the training split's mean and
std, which the checkpoint carries; :class:`PredictionWriter` (a Lightning callback, always on)
writes them with :func:`write_predictions`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from .runs import write_text_atomic

__all__ = ["PredictionWriter", "write_predictions", "format_predictions"]


class PredictionWriter(Callback):
    """After ``predict``: ``predictions.csv`` in the run folder, and a short table on stdout.

    A plain callback that keeps each batch's outputs: Lightning's ``BasePredictionWriter`` also
    wants the dataset indices of each batch, which only a ``DataLoader``'s sampler gives (it warned
    "Couldn't infer the batch indices" on every predict); the images' order is the data module's.
    """

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._outputs: list[Tensor] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._outputs.append(outputs.detach())

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        run_dir = Path(trainer.log_dir)  # a collective call under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        names = trainer.datamodule.predict_names
        outputs = torch.cat(self._outputs)
        path = write_predictions(run_dir / "predictions.csv", names, outputs)
        print(f"\n{format_predictions(names, outputs)}predictions for {len(outputs)} images in {path}, "
              f"from {getattr(pl_module, 'evaluated_weights', 'the trained weights')}")


def write_predictions(path: str | Path, names: list[str], outputs: Tensor) -> Path:
    """Write ``file, predicted, probability, p0 … p9`` (one row per image) atomically; return the path.

    ``outputs`` ``(N, classes)`` are the network's outputs, class probabilities with the
    (default) softmax output; ``probability`` is the predicted class's.
    """
    if len(names) != len(outputs):
        raise ValueError(f"{len(names)} file names but {len(outputs)} predictions")
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "predicted", "probability", *(f"p{k}" for k in range(outputs.shape[1]))])
    best, predicted = outputs.max(1)
    for name, k, p, row in zip(names, predicted.tolist(), best.tolist(), outputs.tolist()):
        writer.writerow([name, k, f"{p:.6f}", *(f"{v:.6f}" for v in row)])
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, buf.getvalue())


def format_predictions(names: list[str], outputs: Tensor, limit: int = 20) -> str:
    """A short text table (file, predicted digit, its probability), at most ``limit`` rows."""
    best, predicted = outputs.max(1)
    width = max([len("file"), *(len(n) for n in names[:limit])])
    lines = [f"{'file':<{width}}  predicted  probability"]
    lines += [
        f"{n:<{width}}  {k:>9}  {p:>11.4f}" for n, k, p in zip(names[:limit], predicted.tolist(), best.tolist())
    ]
    if len(names) > limit:
        lines.append(f"… and {len(names) - limit} more")
    return "\n".join(lines) + "\n"
