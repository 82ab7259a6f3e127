"""Gradient-flow diagnostics: why one activation trains worse than another, per layer, in TensorBoard.

    python -m src.train fit --config configs/course_sigmoid.yaml   # on by default
    tensorboard --logdir lightning_logs                             # the diagnostics/ tags

:class:`GradientFlowDiagnostics` measures, on a fixed probe batch (the first ``probe_size`` images
of the validation split), before training starts, a few times in epoch 1 and at the end of every
training epoch, for each layer ``l = 1 … L`` (``h_l`` its output: the activation of a hidden layer,
the logits of the last):

=====================================  ======================================================
tag                                    value
=====================================  ======================================================
``diagnostics/grad_h/layer{l}``        ‖∂L/∂h_l‖, the gradient arriving at layer l's output
``diagnostics/grad_W/layer{l}``        ‖∂L/∂W_l‖
``diagnostics/update_ratio/layer{l}``  lr·‖∂L/∂W_l‖ / ‖W_l‖, the GD step's size relative to the
                                       weights (about 1e-3 is healthy; for Adam the real step is
                                       normalized per weight, so read it as the gradient's scale)
``diagnostics/saturated/layer{l}``     sigmoid, tanh: the fraction of the probe's activations
                                       whose derivative is below 5 % of its maximum (sigmoid
                                       σ(1−σ) < 0.0125, i.e. |z| > 4.36; tanh 1−t² < 0.05,
                                       i.e. |t| > 0.975)
``diagnostics/dead/layer{l}``          ReLU: the fraction of units never positive on the probe
``diagnostics/activations/layer{l}``   histogram of h_l over the probe (Histograms tab; before
                                       training and after each epoch, not inside epoch 1)
``diagnostics/probe_loss``             the training loss on the probe batch
=====================================  ======================================================

L is the training loss (data loss plus weight penalty) on the probe batch, a mean over its
images, so the norms are those of one batch-mean gradient of ``probe_size`` images.

With ``--model.norm batch|layer`` each ``h_l`` is the activation of the normalized pre-activation,
``g(γ_l ẑ_l + β_l)``, so ``grad_h`` and the saturation measure the net as it trains; batch norm
uses the probe batch's own statistics in training mode (as a training step would) without updating
the running ones (``docs/batchnorm.md``, "What normalization does to the gradient flow").

It never changes training: the gradients come from :func:`torch.autograd.grad` on a separate
per-op graph (:func:`~src.hand.functional.linear` and the activation Functions, the ``fused=False``
path of :class:`~src.hand.nets.FeedForwardNet`, whatever path the training net takes), so no
parameter's ``.grad`` is touched; it draws no random numbers and keeps no state in checkpoints.
Its own time is kept in :attr:`GradientFlowDiagnostics.seconds` (BENCHMARKS.md: under 2 % of an
epoch).
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from ..hand import functional as HF

__all__ = ["GradientFlowDiagnostics", "probe_diagnostics", "SATURATION", "EPOCH1_FRACTIONS"]

#: a sigmoid/tanh unit counts as saturated where its derivative is below this share of its maximum
SATURATION = 0.05
#: where in epoch 1 to measure, as fractions of its steps (besides before and after it)
EPOCH1_FRACTIONS = (1 / 16, 1 / 2)


def _forward_layers(net: nn.Module, x: Tensor) -> tuple[list[Tensor], list[Tensor], str]:
    """``(outputs h_1 … h_L, weights W_1 … W_L, hidden activation)``, per op, in a fresh graph, without dropout.

    With a normalization the outputs are ``h_l = g(N_l(z_l))``, the gradients flow through ``N_l``;
    batch norm normalizes with the probe's own statistics in training mode and leaves the running
    ones untouched (``update_running_stats=False``): the probe never moves what evaluation uses.
    """
    outputs, weights = net.layer_outputs(x, update_running_stats=False)
    return outputs, weights, net.activation


def _probe_loss(module: pl.LightningModule, logits: Tensor, onehot: Tensor, weights: list[Tensor]) -> Tensor:
    """The module's training loss on the probe, from logits already computed (the module's own choice of loss)."""
    return module.loss_from_logits(logits, onehot, onehot.argmax(-1), weights)


def _saturated(activation: str, h: Tensor) -> Optional[Tensor]:
    if activation == "sigmoid":  # σ' = σ(1−σ), at most 1/4
        return (h * (1 - h) < SATURATION * 0.25).float().mean()
    if activation == "tanh":  # tanh' = 1 − t², at most 1
        return (1 - h * h < SATURATION).float().mean()
    return None


def probe_diagnostics(module: pl.LightningModule, x: Tensor, onehot: Tensor, lr: float) -> dict[str, object]:
    """The diagnostics of one measurement: ``tag → float`` (scalars) or ``tag → Tensor`` (histograms)."""
    net = module.net
    with torch.enable_grad():
        outs, weights, activation = _forward_layers(net, x)
        loss = _probe_loss(module, outs[-1], onehot, weights)
        grads = torch.autograd.grad(loss, [*outs, *weights])  # never touches any .grad
    L = len(weights)
    out: dict[str, object] = {"diagnostics/probe_loss": loss.item()}
    with torch.no_grad():
        for l in range(1, L + 1):
            g_h, g_w, w, h = grads[l - 1], grads[L + l - 1], weights[l - 1], outs[l - 1].detach()
            out[f"diagnostics/grad_h/layer{l}"] = g_h.norm().item()
            out[f"diagnostics/grad_W/layer{l}"] = g_w.norm().item()
            out[f"diagnostics/update_ratio/layer{l}"] = lr * g_w.norm().item() / max(w.norm().item(), 1e-30)
            if l < L:  # hidden layers
                sat = _saturated(activation, h)
                if sat is not None:
                    out[f"diagnostics/saturated/layer{l}"] = sat.item()
                if activation == "relu":
                    out[f"diagnostics/dead/layer{l}"] = (h > 0).any(0).logical_not().float().mean().item()
            out[f"diagnostics/activations/layer{l}"] = h
    return out


class GradientFlowDiagnostics(Callback):
    """Per-layer gradient flow on a fixed validation probe batch, logged under ``diagnostics/`` (module docstring).

    Args:
        probe_size: images in the probe batch (the first of the validation split).
        epoch1_fractions: where in epoch 1 to measure besides its start and end, as fractions
            of its steps.
        histograms: also log activation histograms (TensorBoard only).
    """

    def __init__(
        self, probe_size: int = 256, epoch1_fractions: Sequence[float] = EPOCH1_FRACTIONS, histograms: bool = True
    ) -> None:
        self.probe_size, self.epoch1_fractions, self.histograms = probe_size, tuple(epoch1_fractions), histograms
        self._probe: Optional[tuple[Tensor, Tensor]] = None
        self._epoch1_steps: set[int] = set()
        #: seconds this callback has spent, this process (BENCHMARKS.md compares it with the epochs)
        self.seconds = 0.0
        #: measurements made, this process
        self.measurements = 0

    # -------------------------------------------------------------- hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = time.perf_counter()
        self._probe = self._find_probe(trainer, pl_module) if self._active(trainer, pl_module) else None
        n = trainer.num_training_batches
        n = n if isinstance(n, int) else 0  # inf for an iterable without a length
        self._epoch1_steps = {max(1, math.ceil(f * n)) for f in self.epoch1_fractions if 0 < f < 1} if n > 1 else set()
        self.seconds += time.perf_counter() - start
        if trainer.current_epoch == 0:  # not on a resume: the curves would get a second point here
            self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 0 and batch_idx + 1 in self._epoch1_steps:
            self._measure(trainer, pl_module, histograms=False)  # scalars only: half the cost inside epoch 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measure(trainer, pl_module)  # before the module's own hook steps the lr schedule

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _active(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        net = getattr(pl_module, "net", None)
        return (
            trainer.logger is not None
            and trainer.is_global_zero
            and hasattr(pl_module, "loss_fn")
            and getattr(net, "activation", None) in HF.HIDDEN_ACTIVATIONS
        )

    def _find_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Optional[tuple[Tensor, Tensor]]:
        splits = getattr(trainer.datamodule, "splits", None) if trainer.datamodule is not None else None
        if splits and "val" in splits:
            x, labels = splits["val"]
            x, labels = x[: self.probe_size], labels[: self.probe_size]
        else:  # no data module with splits: the first validation batch (unshuffled here, no random draw)
            loaders = trainer.val_dataloaders
            if loaders is None:
                return None
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            first = next(iter(loader), None)
            if first is None:
                return None
            x, labels = first[0][: self.probe_size], first[-1][: self.probe_size]
        if getattr(pl_module.net, "norm", "none") == "batch" and len(x) < 2:  # one row's variance is 0
            return None
        # in the module's dtype: under --trainer.precision 64-true its weights are float64, the split float32
        x = x.to(device=pl_module.device, dtype=pl_module.dtype)
        onehot = torch.nn.functional.one_hot(labels, pl_module.hparams.get("outputs", 10)).to(x)
        return x, onehot

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, histograms: bool = True) -> None:
        if self._probe is None:
            return
        start = time.perf_counter()
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        values = probe_diagnostics(pl_module, *self._probe, lr)
        step = trainer.global_step
        scalars = {k: v for k, v in values.items() if not isinstance(v, Tensor)}
        trainer.logger.log_metrics(scalars, step=step)
        writer = getattr(trainer.logger, "experiment", None)
        if histograms and self.histograms and hasattr(writer, "add_histogram"):
            for tag, h in values.items():
                if isinstance(h, Tensor):
                    writer.add_histogram(tag, h.flatten().cpu(), step)
        self.measurements += 1
        self.seconds += time.perf_counter() - start
