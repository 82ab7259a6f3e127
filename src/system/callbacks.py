"""Lightning callbacks that keep runs safe: stop on divergence, resume exactly.

* :class:`RNGStateCallback` — saves and restores the torch / NumPy / Python random states;
* :class:`ResumableModelCheckpoint` — a resumed run (which writes into a new ``version_N``) keeps
  comparing with the interrupted run's best checkpoint, so it picks the same best checkpoint as an
  uninterrupted run.

Checkpoints are written and read by :class:`src.system.checkpoints.AtomicCheckpointIO`.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from . import lightning_private

__all__ = ["RNGStateCallback", "ResumableModelCheckpoint"]


class RNGStateCallback(Callback):
    """Carry the torch, CUDA, NumPy and Python random states in checkpoints (as plain tensors and tuples).

    Plain types, so checkpoints stay loadable with ``weights_only=True``.  Training here draws no
    random numbers after the data order (which is seeded by ``(seed, epoch)``), but any future use
    of the global generators (dropout, augmentation) then resumes exactly too.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},  # fmt: skip
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
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
    """

    @property
    def state_key(self) -> str:
        # the same key as a plain ModelCheckpoint, so checkpoints written before this class resume too
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._and_last(super().on_train_epoch_end, trainer, pl_module, on_train_epoch_end=True)

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._and_last(super().on_validation_end, trainer, pl_module, on_train_epoch_end=False)

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
