"""In-process A/B of one training step: the per-op chain, the one-node net, the autograd twin, and Lightning.

    .venv/bin/python bench/step_ab.py --rounds 7

Same random batches for every variant, the variants alternating round by round; prints the
minimum and the median milliseconds per step of each (sigmoid + GD, batch 64, 300 steps).
``lightning`` is ``Trainer.fit`` on the one-node net over the same batches (no logger, no
checkpoints, no progress bar, no validation): its excess over ``one-node`` is Lightning's
per-step cost.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning.pytorch as pl
import torch

from src.data import TensorBatches
from src.module import MLPClassifier

STEPS = 300


def raw_loop(x, y, impl: str, fused: bool = True) -> float:
    torch.manual_seed(0)
    model = MLPClassifier(implementation=impl)
    if impl == "custom":
        model.net.fused = fused
    opt = model.configure_optimizers()
    batches = list(TensorBatches(x, y, 64))
    t0 = time.perf_counter()
    for xb, onehot, labels in batches:
        opt.zero_grad()
        model.compute_loss(xb, onehot, labels)[0].backward()
        opt.step()
    return (time.perf_counter() - t0) / len(batches) * 1e3


class _Timer(pl.Callback):
    def on_train_epoch_start(self, *args) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, *args) -> None:
        self.seconds = time.perf_counter() - self.t0


def lightning_loop(x, y) -> float:
    class DM(pl.LightningDataModule):
        def train_dataloader(self):
            return TensorBatches(x, y, 64, trainer=self.trainer)

    torch.manual_seed(0)
    timer = _Timer()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[timer])  # fmt: skip
    trainer.fit(MLPClassifier(), datamodule=DM())
    return timer.seconds / STEPS * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64 * STEPS, 784, generator=gen), torch.randint(10, (64 * STEPS,), generator=gen)
    variants = {
        "per-op chain": lambda: raw_loop(x, y, "custom", fused=False),
        "one-node": lambda: raw_loop(x, y, "custom"),
        "nn.Sequential + autograd": lambda: raw_loop(x, y, "sequential"),
        "lightning (one-node)": lambda: lightning_loop(x, y),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    for name, t in times.items():
        print(f"{name:26} min {min(t):.3f}  median {statistics.median(t):.3f} ms/step")


if __name__ == "__main__":
    main()
