"""In-process A/B of one training step: the CLI's Lightning path, our bare loop, plain PyTorch, the floor.

    .venv/bin/python bench/step_ab.py --rounds 7                    # sigmoid + GD (the baseline)
    .venv/bin/python bench/step_ab.py --rounds 7 --case best        # ReLU + Adam

The same real MNIST batches (batch 64, 300 steps after 20 warm-up steps) for every variant, the
variants alternating round by round; prints the minimum and the median milliseconds per step:

* ``src.train fit path``: the Trainer exactly as ``python -m src.train fit`` builds it (its
  callbacks, progress bar, TensorBoard logger, checkpoint plugin), validation and the gradient-flow
  diagnostics off (they measure at two points of epoch 1, which a 300-step window would overweight;
  BENCHMARKS.md gives their cost over a real epoch);
* ``bare loop, ours``: the same module's step without Lightning (the one-node ``FeedForward`` with
  its workspace, the hand-written loss, GD/Adam stepping inside backward);
* ``bare loop, per-op``: the straightforward path (chained per-op Functions, ``zero_grad`` /
  ``backward`` / ``step``), the reference the fast path is tested against;
* ``plain PyTorch``: ``nn.Sequential``, ``F.cross_entropy``, ``torch.optim`` in a bare loop, as
  ``../shared/bench/peer_plain_torch.py`` trains;
* ``matrix products only``: the step's forward and backward products, nothing else.
"""

from __future__ import annotations

import argparse
import sys
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from src.data.mnist import TensorBatches
from src.system.module import MLPClassifier

ROOT = Path(__file__).resolve().parents[1]
WARMUP, STEPS = 20, 300
CASES = {"baseline": dict(activation="sigmoid", optimizer="gd", lr=0.3),
         "best": dict(activation="relu", optimizer="adam", lr=1e-3)}  # fmt: skip


class _StepTimer(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == WARMUP:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == WARMUP + STEPS - 1:
            self.ms = (time.perf_counter() - self.t0) / STEPS * 1e3


def cli_path(case: str) -> float:
    from src.train import main

    config = ["--config", str(ROOT / "configs" / "best.yaml")] if case == "best" else []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            cli = main([*config, "--data.data_dir", str(ROOT / "data"), "--trainer.max_epochs", "1",
                        "--trainer.limit_train_batches", str(WARMUP + STEPS), "--trainer.limit_val_batches", "0",
                        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "true",
                        "--diagnostics", "false"], run=False)  # fmt: skip
            timer = _StepTimer()
            cli.trainer.callbacks.insert(0, timer)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        finally:
            os.chdir(cwd)
    return timer.ms


def bare_ours(batches, setting: dict, fused: bool = True) -> float:
    from src.hand.fused import Workspace

    torch.manual_seed(0)
    model = MLPClassifier(**setting)
    model.net.fused = fused
    opt = model.configure_optimizers()
    if fused:  # what MLPClassifier.on_train_start sets up in one process
        model.net.workspace = Workspace()
        opt.step_in_backward()
    for i, (x, onehot, labels) in enumerate(batches):
        if i == WARMUP:
            t0 = time.perf_counter()
        loss = model.compute_loss(x, onehot, labels)[0]
        if not fused:
            opt.zero_grad()
        loss.backward()
        if not fused:
            opt.step()
    return (time.perf_counter() - t0) / STEPS * 1e3


def plain_torch(batches, setting: dict) -> float:
    torch.manual_seed(0)
    act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}[setting["activation"]]
    net = nn.Sequential(nn.Linear(784, 500), act(), nn.Linear(500, 250), act(), nn.Linear(250, 100), act(),
                        nn.Linear(100, 10))  # fmt: skip
    opt = (torch.optim.SGD if setting["optimizer"] == "gd" else torch.optim.Adam)(net.parameters(), lr=setting["lr"])
    for i, (x, _, labels) in enumerate(batches):
        if i == WARMUP:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), labels).backward()
        opt.step()
    return (time.perf_counter() - t0) / STEPS * 1e3


def matmul_floor(batches) -> float:
    sizes = [(784, 500), (500, 250), (250, 100), (100, 10)]
    ws = [torch.randn(o, i) * 0.05 for i, o in sizes]
    for i, (x, _, _) in enumerate(batches):
        if i == WARMUP:
            t0 = time.perf_counter()
        h, hs = x, []
        for w in ws:
            hs.append(h)
            h = h.mm(w.t())
        g = torch.ones_like(h)
        for w, h_in in zip(reversed(ws), reversed(hs)):
            g.t().mm(h_in)
            g = g.mm(w)
    return (time.perf_counter() - t0) / STEPS * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--case", choices=list(CASES), default="baseline")
    args = p.parse_args()
    sys.argv = sys.argv[:1]  # the CLI path parses its own arguments
    torch.set_flush_denormal(True)
    from src.data.mnist import MNISTDataModule

    dm = MNISTDataModule(data_dir=str(ROOT / "data"))
    dm.prepare_data()
    dm.setup("fit")
    x, y = dm.splits["train"]
    batches = list(TensorBatches(x[: 64 * (WARMUP + STEPS)], y[: 64 * (WARMUP + STEPS)], 64))
    setting = CASES[args.case]
    variants = {
        "src.train fit path": lambda: cli_path(args.case),
        "bare loop, ours": lambda: bare_ours(batches, setting),
        "bare loop, per-op": lambda: bare_ours(batches, setting, fused=False),
        "plain PyTorch": lambda: plain_torch(batches, setting),
        "matrix products only": lambda: matmul_floor(batches),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    print(f"{args.case}: ms per step, {args.rounds} alternating rounds of {STEPS} steps, {torch.get_num_threads()} threads")
    print("| path | min / median ms per step |\n|---|---|")
    for name, t in times.items():
        print(f"| {name} | {min(t):.2f} / {statistics.median(t):.2f} |")


if __name__ == "__main__":
    main()
