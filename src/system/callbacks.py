"""Lightning callbacks that keep runs safe: stop on divergence, resume exactly.

* :class:`RNGStateCallback` — saves and restores the torch / NumPy / Python random states;
* :class:`ResumableModelCheckpoint` — a resumed run (which writes into a new ``version_N``) keeps
  comparing with the interrupted run's best checkpoint, so it picks the same best checkpoint as an
  uninterrupted run; an epoch stopped before its last batch (``--trainer.max_time``) is never saved;
* :func:`epoch_finished` — whether the training epoch ran all its batches.

Checkpoints are written and read by :class:`src.system.checkpoints.AtomicCheckpointIO`.
"""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from . import lightning_private, runs

__all__ = ["RNGStateCallback", "ResumableModelCheckpoint", "epoch_finished"]


def epoch_finished(trainer: "pl.Trainer") -> bool:
    """Whether the current training epoch ran all its batches (False after a stop mid-epoch).

    Lightning ends an epoch early when ``trainer.should_stop`` is set (``--trainer.max_time``'s
    Timer sets it after any batch) and still calls every epoch-end hook, so those hooks ask here.
    """
    progress = trainer.fit_loop.epoch_loop.batch_progress
    return progress.is_last_batch or progress.current.completed >= trainer.num_training_batches


class RNGStateCallback(Callback):
    """Carry the torch, CUDA, NumPy and Python random states in checkpoints (as plain tensors and tuples).

    Plain types, so checkpoints stay loadable with ``weights_only=True``.  Training here draws no
    random numbers after the data order (which is seeded by ``(seed, epoch)``), but any future use
    of the global generators (dropout, augmentation) then resumes exactly too.
    """

    def __init__(self) -> None:
        #: the run's ``--seed_everything``: a checkpoint's when resumed (the command line's then changes nothing)
        self.seed: int | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
        seed = self.seed if self.seed is not None else os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything
        state = {
            "seed_everything": None if seed is None else int(seed),
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},  # fmt: skip
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = state_dict.get("seed_everything")
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state(
            (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class ResumableModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes ``last.ckpt`` every epoch and resumes its best-so-far into a new run folder.

    Lightning's ``ModelCheckpoint`` forgets the best score when the resumed run writes into
    another folder (each run gets a new ``version_N``), so the first epoch after the resume
    would become "best" however bad; then the best checkpoint, and ``results.json`` computed
    from it, would differ from an uninterrupted run.  Here the scores and paths come back
    wherever the run writes; Lightning itself never deletes a checkpoint outside the current
    folder, so the interrupted run's files stay as they are.

    Nothing is saved in an epoch that has not run all its batches: Lightning calls the epoch-end
    hooks after a stop mid-epoch too, and a checkpoint there would count the partial epoch as
    finished (its resume would skip the rest of it).  :attr:`unfinished_epoch` then says where
    training stopped; ``last.ckpt`` stays the last finished epoch's, from which a resume trains the
    stopped epoch again from its start, exactly as an uninterrupted run does.
    """

    #: ``(epoch from 0, batches run, batches in the epoch)`` when the last epoch stopped before its end, else None
    unfinished_epoch: tuple[int, int, int] | None = None

    @functools.cached_property
    def state_key(self) -> str:
        # the same key as a plain ModelCheckpoint, so checkpoints written before this class resume too.
        # Computed once (public names only): Lightning reads it for every callback hook it dispatches,
        # several times per training step, and it depends only on arguments fixed in __init__; with
        # the cached signature of MLPClassifier.training_step about 1.7 % of the baseline's step (BENCHMARKS.md)
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)  # resolves the folder (rank 0's, on every DDP process)
        if self.dirpath is not None:  # where a stopped process looks for the last.ckpt to resume from
            runs.CHECKPOINT_DIR[:] = [Path(self.dirpath)]

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.unfinished_epoch = None
        if not epoch_finished(trainer):
            done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
            self.unfinished_epoch = (trainer.current_epoch, done, trainer.num_training_batches)
            return
        self._and_last(super().on_train_epoch_end, trainer, pl_module, on_train_epoch_end=True)

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.sanity_checking or epoch_finished(trainer):  # not a validation inside or after a partial epoch
            self._and_last(super().on_validation_end, trainer, pl_module, on_train_epoch_end=False)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # Lightning writes last.ckpt here if no epoch wrote one: not the weights of a stopped epoch
        if self.unfinished_epoch is None:
            super().on_train_end(trainer, pl_module)

    def _and_last(self, hook: Callable, trainer: "pl.Trainer", pl_module: "pl.LightningModule", on_train_epoch_end: bool) -> None:
        # Lightning (2.6) rewrites last.ckpt only when it also saved a new best; a run killed later
        # would then resume from that older epoch.  Here last.ckpt follows every epoch's save point
        # (Lightning's private members behind this: src.system.lightning_private).
        due = self.save_last and lightning_private.last_checkpoint_due(self, trainer, on_train_epoch_end)
        hook(trainer, pl_module)
        if due and not lightning_private.last_checkpoint_saved(self, trainer):
            lightning_private.save_last_checkpoint(self, trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_model_score = state_dict["best_model_score"]
        self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        self.best_k_models = state_dict.get("best_k_models", self.best_k_models)
        self.best_model_path = state_dict["best_model_path"]
        if self.dirpath == state_dict.get("dirpath", self.dirpath):
            self.last_model_path = state_dict.get("last_model_path", self.last_model_path)
