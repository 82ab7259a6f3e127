"""The LightningModule: one system owning the network, loss, optimizer, metrics and logging.

The network itself is a plain ``nn.Module`` (:mod:`src.hand.nets`); this module
picks the custom net or its ``nn.Sequential`` twin, and for each the matching
loss and optimizer:

==============  ======================================  ==============================
implementation  loss                                    optimizer
==============  ======================================  ==============================
custom          :mod:`src.hand.losses` (hand-derived)        :mod:`src.hand.optim` GD / Adam
sequential      ``torch.nn.functional`` + autograd      ``torch.optim`` SGD / Adam
==============  ======================================  ==============================

The weight penalty is part of the loss in both, so neither optimizer adds
weight decay on top.

Gradient clipping and accumulation (``--trainer.gradient_clip_val`` / ``gradient_clip_algorithm`` /
``accumulate_grad_batches``): the Trainer refuses them under manual optimization, so the CLI hands
them to :meth:`MLPClassifier.configure_gradient_steps` and the training step does what Lightning's
automatic optimization does with them (the clip by ``LightningModule.clip_gradients``).
"""

from __future__ import annotations

import inspect
import os
import time
from typing import Literal, NoReturn

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveInt
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ..data.idx import NUM_CLASSES
from ..hand import losses as HL
from .checkpoints import check_state_shapes
from .config import check_gradient_steps
from ..hand.checks import check_choice
from ..ranges import FiniteNonNegativeFloat, FinitePositiveFloat, UnitIntervalCO
from ..errors import ConfigError, DivergenceError
from ..hand.functional import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from ..hand.fused import Workspace
from .metrics import build_report, report_metrics
from ..hand.nets import NORMS, FeedForwardNet, SequentialNet
from ..hand.optim import OPTIMIZERS, max_norm_
from .callbacks import epoch_finished

__all__ = ["MLPClassifier"]

LOSS_CLASSES = {"cross_entropy": HL.CrossEntropyLoss, "mse": HL.SquaredErrorLoss}
EVAL_SPLITS = ("train", "val", "test")
#: added to the run's seed for the dropout masks' generator, so it is not the global generator's stream
DROPOUT_SEED_OFFSET = 0x0D80_0D80
def _check_choices(
    implementation: str, loss: str, optimizer: str, lr_schedule: str, output_activation: str, label_smoothing: float = 0.0
) -> None:
    """The names (for Python callers; the CLI's Literal types check them first) and the rules between two."""
    check_choice("implementation", implementation, ("custom", "sequential"))
    check_choice("loss", loss, tuple(LOSS_CLASSES))
    check_choice("optimizer", optimizer, tuple(OPTIMIZERS))
    check_choice("lr_schedule", lr_schedule, ("constant", "cosine"))
    if loss == "cross_entropy" and output_activation == "identity":
        raise ValueError(
            "loss='cross_entropy' needs probabilities, but output_activation='identity' gives raw "
            "scores whose log is undefined when negative; use output_activation 'softmax' or "
            "'sigmoid', or loss 'mse'"
        )
    if label_smoothing and not (loss == "cross_entropy" and output_activation == "softmax"):
        raise ValueError(
            f"label_smoothing={label_smoothing} needs loss='cross_entropy' with output_activation='softmax' "
            f"(the fused softmax cross-entropy, as F.cross_entropy), not loss={loss!r} with {output_activation!r}"
        )


def _build_net(
    implementation: str, net_args: tuple, dropout: float, input_dropout: float, norm: str = "none"
) -> torch.nn.Module:
    """Our net (:class:`FeedForwardNet`) or its ``nn.Sequential`` twin; ``net_args`` as their first six arguments."""
    if implementation == "sequential":
        return SequentialNet(*net_args, dropout=dropout, input_dropout=input_dropout, norm=norm)
    # the masks' stream: seeded from the run's seed (set by --seed_everything before this)
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    return FeedForwardNet(
        *net_args, dropout=dropout, dropout_seed=seed + DROPOUT_SEED_OFFSET, input_dropout=input_dropout, norm=norm
    )


def warmed_up_decay(decay: float, n: int) -> float:
    """The decay of the moving average's update after ``n`` averaged models: ``d_n = min(d, (1 + n)/(10 + n))``.

    The usual warm-up (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``): with a fixed
    d = 0.999 the first step's weights would keep 0.999^t of the average after t more steps (68 %
    after one epoch of 391 steps); with the warm-up the average forgets its start as fast as
    ``(1 + n)/(10 + n)`` allows (0.18 at n = 1, 0.9 at n = 80, 0.99 at n = 890), then decays at d.
    """
    return min(decay, (1 + n) / (10 + n))


def ema_warmup_multi_avg_fn(decay: float):
    """``AveragedModel``'s ``multi_avg_fn``: ``θ̄ ← d_n θ̄ + (1 − d_n) θ`` with :func:`warmed_up_decay`'s ``d_n``.

    torch's ``get_ema_multi_avg_fn(d)`` is the same update with ``d_n = d`` (``torch._foreach_lerp_``,
    ``θ̄ + (1 − d)(θ − θ̄)``); ``n`` is the average's count (buffer ``n_averaged``), 1 at the first
    call here (``AveragedModel`` copies the first model).
    """

    @torch.no_grad()
    def ema_update(averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        d = warmed_up_decay(decay, int(n_averaged))
        torch._foreach_lerp_(averaged, current, 1 - d)

    return ema_update


def _average(net: torch.nn.Module, ema_decay: float) -> AveragedModel | None:
    """The exponential moving average of ``net``'s parameters, ``θ̄ ← d_n θ̄ + (1 − d_n) θ`` after each step (``None`` for d = 0).

    ``d_n = min(d, (1 + n)/(10 + n))`` after n steps (:func:`warmed_up_decay`), so a short run's
    average is not held at its first steps' weights.  torch's ``AveragedModel`` keeps the copy and
    its count (buffer ``n_averaged``): both are in the module's ``state_dict``, so every checkpoint
    carries them and a resumed run averages on exactly, warm-up included.
    A net with buffers (batch norm's running statistics) has them averaged the same way
    (``use_buffers``): the averaged copy's own never move otherwise, and evaluation would normalize
    with the initial zeros and ones.
    """
    if not ema_decay:
        return None
    if not 0.0 < ema_decay < 1.0:
        raise ValueError(f"ema_decay={ema_decay!r} is not allowed; it must be in [0, 1) (0: no averaging)")
    buffers = next(net.buffers(), None) is not None
    return AveragedModel(net, multi_avg_fn=ema_warmup_multi_avg_fn(ema_decay), use_buffers=buffers)


class MLPClassifier(pl.LightningModule):
    """A 784-…-10 perceptron for MNIST with hand-derived gradients (or its torch twin).

    The ranges are the signature's types (:mod:`src.system.config`), which the CLI enforces while
    parsing; the optimizers and losses check their own values when built from Python.

    Args:
        implementation: ``custom`` (our Functions, losses and optimizers) or
            ``sequential`` (the ``nn.Sequential`` twin with torch losses and ``torch.optim``).
        hidden_layers: sizes of the hidden layers.
        activation: hidden activation.
        output_activation: output activation (``softmax`` with ``cross_entropy`` is
            computed fused from the logits, which is exact and overflow-free).
        loss: ``cross_entropy`` (−Σ t log p, batch mean) or ``mse`` (mean over elements).
        regularization: weight penalty ``none``, ``l1`` (α Σ|W|) or ``l2`` ((α/2) Σ W²).
        alpha: penalty strength α ≥ 0.
        initialization: ``random``, ``gaussian`` or ``glorot``.
        optimizer: ``gd`` or ``adam``.
        lr: learning rate.
        betas: Adam's moment decay rates.
        eps: Adam's ε.
        lr_schedule: ``constant``, or ``cosine`` (torch's ``CosineAnnealingLR``, stepped per
            epoch, from ``lr`` down to 0 at ``--trainer.max_epochs``).
        inputs: input features (784 for 28×28 images).
        outputs: classes.
        dropout: inverted dropout's drop probability ``p`` on every hidden layer in training
            (0 ≤ p < 1; 0 = off), :mod:`src.hand.dropout` (the twin: ``nn.Dropout``).  The custom
            net's masks come from their own generator, seeded from the run's seed and saved in
            every checkpoint, so a resumed run draws the same masks.
        input_dropout: the same on the input pixels (0 ≤ p < 1; 0 = off).
        label_smoothing: ε of the fused softmax cross-entropy's smoothed target ``(1 − ε) t + ε/K``
            (:class:`~src.hand.losses.SoftmaxCrossEntropy`; the twin: ``F.cross_entropy``'s own).
        ema_decay: ``d`` of an exponential moving average of the parameters, updated after every
            optimizer step with the usual warm-up ``d_n = min(d, (1 + n)/(10 + n))`` after n steps;
            validation, test, predict and the checkpoint choice then use the averaged weights
            (0 = off: the trained weights).
        max_norm: c of the max-norm constraint (Srivastava et al. 2014): after every update each
            unit's incoming weights are projected onto ``‖w‖₂ ≤ c`` (:func:`~src.hand.optim.max_norm_`;
            0 = off), inside our optimizers' update and after the twin's ``torch.optim`` step.
        norm: a normalization between each hidden affine map and its activation: ``none``,
            ``batch`` (:func:`~src.hand.norm.batch_norm`: the batch's statistics in training, the
            running ones in evaluation) or ``layer`` (:func:`~src.hand.norm.layer_norm`); learnable
            ``γ``, ``β`` per hidden layer, not penalized by L1/L2 (the twin: ``nn.BatchNorm1d`` /
            ``nn.LayerNorm``).  With a norm the per-op chain runs instead of the one-node fast path
            (:class:`~src.hand.nets.FeedForwardNet`).  ``docs/batchnorm.md``.
    """

    def __init__(
        self,
        implementation: Literal["custom", "sequential"] = "custom",
        hidden_layers: list[PositiveInt] = [500, 250, 100],  # noqa: B006 (jsonargparse needs a literal default)
        activation: Literal[HIDDEN_ACTIVATIONS] = "sigmoid",
        output_activation: Literal[OUTPUT_ACTIVATIONS] = "softmax",
        loss: Literal["cross_entropy", "mse"] = "cross_entropy",
        regularization: Literal["none", "l1", "l2"] = "none",
        alpha: FiniteNonNegativeFloat = 0.0,
        initialization: Literal["random", "gaussian", "glorot"] = "glorot",
        optimizer: Literal["gd", "adam"] = "gd",
        lr: FinitePositiveFloat = 0.3,
        betas: tuple[UnitIntervalCO, UnitIntervalCO] = (0.9, 0.999),
        eps: FinitePositiveFloat = 1e-8,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        inputs: PositiveInt = 784,
        outputs: PositiveInt = NUM_CLASSES,
        dropout: UnitIntervalCO = 0.0,
        input_dropout: UnitIntervalCO = 0.0,
        label_smoothing: UnitIntervalCO = 0.0,
        ema_decay: UnitIntervalCO = 0.0,
        max_norm: FiniteNonNegativeFloat = 0.0,
        norm: Literal[NORMS] = "none",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _check_choices(implementation, loss, optimizer, lr_schedule, output_activation, label_smoothing)
        # Validates regularization and alpha with the course report's loss classes' own checks.
        smoothing = {"label_smoothing": label_smoothing} if label_smoothing else {}
        self.loss_fn = LOSS_CLASSES[loss](alpha=alpha, regularization=regularization, **smoothing)
        net_args = (inputs, hidden_layers, outputs, activation, output_activation, initialization)
        self.net = _build_net(implementation, net_args, dropout, input_dropout, norm)
        self.averaged = _average(self.net, ema_decay)  # None without averaging
        #: c of the max-norm constraint where the module projects (the twin's torch.optim); ours projects itself
        self._twin_max_norm = max_norm if implementation == "sequential" else 0.0
        # softmax + cross-entropy is computed fused from the logits in both implementations
        self.fused = loss == "cross_entropy" and output_activation == "softmax"
        # Lightning's automatic optimization wraps every step in a closure and a dozen hook
        # calls, which cost about as much as this small net's whole step on 2 CPU cores
        # (BENCHMARKS.md); the step is written out in `training_step` instead.
        self.automatic_optimization = False

        self.example_input_array = torch.zeros(1, inputs)  # the model summary's FLOPs: one image's forward (else 0)
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes=outputs, average="micro")
        # the after-fit report: one loss and one set of report metrics per split
        # (keyed "train_split" …: a ModuleDict key "train" would clash with Module.train)
        self.eval_loss = torch.nn.ModuleDict({f"{s}_split": MeanMetric() for s in EVAL_SPLITS})
        self.eval_metrics = torch.nn.ModuleDict({f"{s}_split": report_metrics(outputs) for s in EVAL_SPLITS})
        #: the split of each test dataloader: the CLI sets EVAL_SPLITS for the after-fit report
        self.eval_splits: tuple[str, ...] = ("test",)
        #: filled by each ``test`` run: split → {"loss", "accuracy", "report"}
        self.eval_results: dict[str, dict] = {}
        self._epoch_start = self._last_batch_end = 0.0
        #: seconds of each epoch run by this process: the training pass, and with its validation
        self.epoch_times: dict[str, list[float]] = {"train_epoch_s": [], "epoch_s": []}

    # set by configure_gradient_steps (the CLI's --trainer.* flags of the same names): off by default
    gradient_clip_val: float | None = None  # clip at this value (None: no clipping)
    gradient_clip_algorithm: str | None = None  # "norm" (None: norm) or "value"
    accumulate_grad_batches: int = 1  # batches per optimizer step

    def configure_gradient_steps(
        self, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None,
        accumulate_grad_batches: int = 1,
    ) -> None:
        """Clip the gradients before each optimizer step, and step once every ``accumulate_grad_batches`` batches.

        The meanings of the Trainer's arguments of the same names, which it refuses under manual
        optimization: clip at ``gradient_clip_val`` (None or 0: no clipping) by the gradients' global
        2-norm (``norm``, the default) or per element (``value``), through
        ``LightningModule.clip_gradients`` (after the precision plugin has unscaled the gradients);
        with accumulation each loss is divided by ``k = accumulate_grad_batches`` and the optimizer
        steps after every k-th batch and after the epoch's last batch (a shorter last window keeps
        the 1/k), as Lightning's automatic optimization does.
        """  # fmt: skip
        check_gradient_steps(gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches)
        self.gradient_clip_val = gradient_clip_val or None
        self.gradient_clip_algorithm = gradient_clip_algorithm.lower() if gradient_clip_algorithm else None
        self.accumulate_grad_batches = accumulate_grad_batches

    # ----------------------------------------------------------------- math
    @property
    def eval_net(self) -> torch.nn.Module:
        """The net that validation, test and predict evaluate: the averaged one with ``ema_decay``, else the trained one."""
        return self.net if self.averaged is None else self.averaged.module

    @property
    def evaluated_weights(self) -> str:
        """Which weights :attr:`eval_net` holds, in words (results.json and predict say it)."""
        if self.averaged is None:
            return "the trained weights"
        return f"the exponential moving average of the weights (decay {self.hparams.ema_decay})"

    def forward(self, x: Tensor) -> Tensor:
        """Class probabilities (the output activation applied), the course report's ``evaluate``."""
        return self.eval_net(x)

    def compute_loss(self, x: Tensor, onehot: Tensor, labels: Tensor, net: torch.nn.Module | None = None) -> tuple[Tensor, Tensor]:
        """``(loss, logits)`` of ``net`` (the trained net unless given) for one batch; the loss includes the weight penalty."""
        net = self.net if net is None else net
        logits = net.logits(x)
        return self.loss_from_logits(logits, onehot, labels, net.weights()), logits

    def loss_from_logits(self, logits: Tensor, onehot: Tensor, labels: Tensor, weights: list[Tensor]) -> Tensor:
        """The training loss (data loss plus the penalty on ``weights``) from logits ``(batch, classes)``.

        The one choice of loss: the steps and the gradient-flow diagnostics' probe both call it.
        """
        if self.hparams.implementation == "custom":
            if self.fused:
                return self.loss_fn.from_logits(logits, onehot, weights)
            return self.loss_fn(self.net.output_fn(logits), onehot, weights)
        # the twin: torch's losses, differentiated by autograd
        if self.fused:
            data = F.cross_entropy(logits, labels, label_smoothing=self.loss_fn.label_smoothing)  # the ε our loss holds
        else:
            out = self.net.output_fn(logits)
            if self.hparams.loss == "mse":
                data = F.mse_loss(out, onehot)
            else:
                data = F.nll_loss(out.clamp_min(torch.finfo(out.dtype).tiny).log(), labels)
        alpha = self.loss_fn.alpha
        if self.loss_fn.regularization == "l1" and alpha:
            data = data + alpha * sum(w.abs().sum() for w in weights)
        elif self.loss_fn.regularization == "l2" and alpha:
            data = data + 0.5 * alpha * sum(w.pow(2).sum() for w in weights)
        return data

    # ------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        # Tiny gradients and Adam moments late in training turn subnormal, which is many
        # times slower on CPUs; flushing them to zero changes no result that matters. (This
        # reaches only threads started later: `src.train.main` sets it before any start.)
        torch.set_flush_denormal(True)

    def on_train_start(self) -> None:
        # The hand-derived node writes its tensors into buffers reused from step to step where one
        # fp32 process trains (no precision plugin casting inside it; BENCHMARKS.md: what they save).
        trainer = self.trainer
        plain = isinstance(trainer.strategy, SingleDeviceStrategy) and type(trainer.precision_plugin) is Precision
        if plain and isinstance(self.net, FeedForwardNet):
            self.net.workspace = Workspace()

    def on_train_end(self) -> None:
        self._drop_workspace()

    def on_exception(self, exception: BaseException) -> None:
        self._drop_workspace()

    def _drop_workspace(self) -> None:
        """Back to fresh tensors (evaluation, tests and a later ``fit`` start clean)."""
        if isinstance(self.net, FeedForwardNet):
            self.net.workspace = None

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._loss_sum = torch.zeros((), device=self.device)  # Σ batch loss · batch size, this epoch
        self._loss_count = 0

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        """The course report's loop in Lightning's manual optimization: forward, loss, backward, step.

        With ``k = accumulate_grad_batches`` each loss is divided by k and the optimizer steps after
        every k-th batch and the epoch's last, as Lightning's manual-optimization docs accumulate;
        the clip is :meth:`on_before_optimizer_step`'s.
        """
        x, onehot, labels = batch
        opt = self.optimizers()
        logits = self.net.logits(x)  # forward
        loss = self.loss_from_logits(logits, onehot, labels, self.net.weights())  # loss
        detached = loss.detach()
        if not torch.isfinite(detached):  # before backward: no NaN ever reaches the weights
            self._diverged(f"the training loss is {detached.item()}")
        k = self.accumulate_grad_batches
        self.manual_backward(loss / k if k > 1 else loss)  # backward (DDP all-reduces, AMP scales)
        stepped = (batch_idx + 1) % k == 0 or batch_idx + 1 >= self.trainer.num_training_batches
        if stepped:
            opt.step()  # the update (the precision plugin unscales, on_before_optimizer_step clips)
            opt.zero_grad()
            if self._twin_max_norm:  # torch.optim has no max-norm: the same projection after its step
                with torch.no_grad():
                    for w in self.net.weights():
                        max_norm_(w, self._twin_max_norm)
            if self.averaged is not None:  # θ̄ ← d_n θ̄ + (1 − d_n) θ, after every optimizer step
                self.averaged.update_parameters(self.net)
        self._loss_sum.add_(detached * len(x))
        self._loss_count += len(x)
        # `self.log` costs about a millisecond per call here (Lightning moves its result
        # state on every call), as much as the step's own arithmetic; the logger only writes
        # every `log_every_n_steps` anyway, so log the step loss at that rate (BENCHMARKS.md).
        every = self.trainer.log_every_n_steps
        if stepped and self.global_step % max(every, 1) == 0:  # global_step counts the steps taken so far
            self.log("train/loss", detached, prog_bar=True, logger=False)
            if self.logger is not None:
                self.logger.log_metrics({"train/loss": detached.item()}, step=self.global_step)
        return detached

    # Lightning reads the signature on every step (to decide whether to pass batch_idx); cached
    # (inspect rebuilds it each time otherwise): public names only
    training_step.__signature__ = inspect.signature(training_step)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning's optimizer step calls this after the precision plugin has unscaled the
        # gradients and right before the update: the clip's place (Lightning's public clipping).
        if self.gradient_clip_val is not None:
            self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)

    def _diverged(self, what: str) -> NoReturn:
        lr = self.optimizers(use_pl_optimizer=False).param_groups[0]["lr"]
        raise DivergenceError(
            f"training diverged: {what} at step {self.trainer.global_step} (epoch {self.trainer.current_epoch}) "
            f"with learning rate {lr:g}; stopped without saving a checkpoint (the previous ones are "
            f"untouched); try a smaller --model.lr, e.g. {lr / 10:g}"
        )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        # The epoch mean goes through torchmetrics once, which syncs it across DDP processes
        # (equal on all ranks); sync_dist=True only tells Lightning so (its mean of equal values).
        if not epoch_finished(self.trainer):  # a stop mid-epoch (--trainer.max_time): not counted, not logged
            return
        self.train_loss.update(self._loss_sum / max(self._loss_count, 1), self._loss_count)
        self.log("train/loss_epoch", self.train_loss.compute(), sync_dist=True)
        self.train_loss.reset()
        now = time.perf_counter()
        self.epoch_times["train_epoch_s"].append(self._last_batch_end - self._epoch_start)
        self.epoch_times["epoch_s"].append(now - self._epoch_start)
        self.log("time/epoch_s", now - self._epoch_start, sync_dist=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # manual optimization steps its schedulers itself
            scheduler.step()

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        x, onehot, labels = batch
        loss, logits = self.compute_loss(x, onehot, labels, self.eval_net)
        self.val_loss.update(loss, len(x))
        self.val_acc.update(logits.argmax(-1), labels)

    def on_validation_epoch_end(self) -> None:
        # A finite loss whose update still overflowed: caught here, before the epoch's checkpoint
        # (ModelCheckpoint saves in on_validation_end, which comes after this hook).
        trainer = self.trainer
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            bad = next((name for name, p in self.named_parameters() if not torch.isfinite(p).all()), None)
            if bad is not None:
                self._diverged(f"parameter {bad} holds NaN or infinite values")
        # the validation Lightning runs when a stop cut the epoch short: its epoch is not counted
        stopped = trainer.state.fn == "fit" and trainer.should_stop and not epoch_finished(trainer)
        if not stopped:
            self.log("val/loss", self.val_loss.compute(), prog_bar=True, sync_dist=True)
            self.log("val/acc", self.val_acc.compute(), prog_bar=True, sync_dist=True)
        self.val_loss.reset()
        self.val_acc.reset()

    # ------------------------------------------------------------ evaluation
    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, onehot, labels = batch
        split = self.eval_splits[dataloader_idx]
        loss, logits = self.compute_loss(x, onehot, labels, self.eval_net)
        self.eval_loss[f"{split}_split"].update(loss, len(x))
        self.eval_metrics[f"{split}_split"].update(logits.argmax(-1), labels)

    def on_test_epoch_end(self) -> None:
        for split in self.eval_splits:
            loss_metric, metrics = self.eval_loss[f"{split}_split"], self.eval_metrics[f"{split}_split"]
            loss, values = loss_metric.compute(), metrics.compute()
            # the test split logs as test/*; the best checkpoint's train and val figures go under
            # final/* so they do not land on the training curves (train/loss, val/loss)
            prefix = "test/" if split == "test" else f"final/{split}_"
            self.log(f"{prefix}loss", loss, sync_dist=True)
            self.log(f"{prefix}acc", values["accuracy"], sync_dist=True)
            self.eval_results[split] = {
                "loss": loss.item(),
                "accuracy": values["accuracy"].item(),
                "report": build_report(values),
            }
            loss_metric.reset()
            metrics.reset()

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.eval_net(x)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Before Lightning copies the tensors: one clear line naming both shapes if the
        # checkpoint comes from another architecture (instead of load_state_dict's wall of text).
        if "state_dict" not in checkpoint:  # a file torch.save wrote, not Lightning: say so, not "another architecture"
            raise ConfigError("checkpoint holds no 'state_dict': it is not a Lightning checkpoint of this project")
        check_state_shapes(self.state_dict(), checkpoint["state_dict"])
        if "dropout_masks" in checkpoint and isinstance(self.net, FeedForwardNet):
            self.net.masks.load_state_dict(checkpoint["dropout_masks"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the dropout masks' random stream, so a resumed run draws the masks the uninterrupted one would
        if isinstance(self.net, FeedForwardNet) and (self.net.dropout or self.net.input_dropout):
            checkpoint["dropout_masks"] = self.net.masks.state_dict()

    # ------------------------------------------------------------ optimizer
    def _max_epochs(self) -> int:
        """``--trainer.max_epochs``, the cosine schedule's length; 1 outside a Trainer (tests build optimizers bare)."""
        try:
            return self.trainer.max_epochs or 1
        except RuntimeError:  # LightningModule.trainer raises when no Trainer is attached
            return 1

    def configure_optimizers(self):
        hp = self.hparams
        params = self.net.parameters()
        adam = dict(lr=hp.lr, betas=hp.betas, eps=hp.eps)
        if hp.implementation == "custom":
            hand = {"max_norm": hp.get("max_norm") or None}  # the projection inside our update
            opt = OPTIMIZERS["gd"](params, lr=hp.lr, **hand) if hp.optimizer == "gd" else OPTIMIZERS["adam"](params, **adam, **hand)
        else:  # no weight_decay: the penalty is already in the loss
            opt = torch.optim.SGD(params, lr=hp.lr) if hp.optimizer == "gd" else torch.optim.Adam(params, **adam)
        if hp.lr_schedule == "constant":
            return opt
        epochs = self._max_epochs()
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)}

