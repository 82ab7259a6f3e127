"""How many functions of ``src/`` one steady-state training step runs through, and in which files.

    OMP_NUM_THREADS=1 .venv/bin/python bench/step_trace.py                      # the default fit (sigmoid, GD)
    OMP_NUM_THREADS=1 .venv/bin/python bench/step_trace.py --config configs/best.yaml

``python -m src.train fit``'s own Trainer (``src.train.main(..., run=False)``: its callbacks, the
gradient-flow diagnostics, progress bar, TensorBoard logger, checkpoint plugin) trains on real
MNIST for two short epochs; cProfile records the steps ``--warmup`` to ``--warmup + --steps`` of the
second epoch, from the start of one step to the start of the step after the window (the batch's
fetch, the hooks, the step, the logging every ``log_every_n_steps``).  The first epoch, its
validation and checkpoint lie outside the window: they are not a step.  Counts no time, only which
functions ran (a busy machine changes the time, not the set).

Prints the distinct functions of ``src/`` that ran, by file, then Lightning's and torch's counts beside
them.  The extra arguments go to the CLI as they are (``--config configs/relu.yaml``, ``--model.*``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import lightning.pytorch as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's src, whatever package is installed


class _Window(pl.Callback):
    """cProfile on from the start of batch ``start`` of epoch 2 to the start of batch ``stop``."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop
        self.profile = cProfile.Profile()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch != 1:
            return
        if batch_idx == self.start:
            self.profile.enable()
        elif batch_idx == self.stop:
            self.profile.disable()


def trace(cli_args: list[str], warmup: int, steps: int) -> pstats.Stats:
    from src.train import main

    window = _Window(warmup, warmup + steps)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            cli = main([*cli_args, "--data.data_dir", str(ROOT / "data"), "--trainer.max_epochs", "2",
                        "--trainer.limit_train_batches", str(warmup + steps + 1), "--trainer.limit_val_batches", "2",
                        "--trainer.num_sanity_val_steps", "0"], run=False)  # fmt: skip
            cli.trainer.callbacks.insert(0, window)  # first: its start hook runs before every other callback's
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        finally:
            os.chdir(cwd)
    return pstats.Stats(window.profile)


def _where(filename: str) -> str | None:
    """``src`` for this checkout's src/, ``lightning``, ``torch``, or None for everything else."""
    path = Path(filename)
    if path.is_relative_to(ROOT / "src"):
        return "src"
    parts = path.parts
    for package in ("lightning", "torch"):
        if "site-packages" in parts and package in parts[parts.index("site-packages") + 1 : parts.index("site-packages") + 2]:
            return package
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warmup", type=int, default=20, help="steps of epoch 2 before the window")
    p.add_argument("--steps", type=int, default=100, help="steps in the window (two of them log at the default rate)")
    args, cli_args = p.parse_known_args()
    sys.argv = sys.argv[:1]  # the CLI parses its own arguments
    stats = trace(cli_args, args.warmup, args.steps)
    found: dict[str, dict[str, list[str]]] = {"src": defaultdict(list), "lightning": defaultdict(list), "torch": defaultdict(list)}
    for (filename, line, name), (_, calls, *_rest) in sorted(stats.stats.items()):
        where = _where(filename)
        if where is not None:
            rel = Path(filename).relative_to(ROOT).as_posix() if where == "src" else filename
            found[where][rel].append(f"{name} (line {line}, {calls} calls)")
    src = found["src"]
    n_src = sum(len(v) for v in src.values())
    print(f"{' '.join(cli_args) or 'the default fit'}: {args.steps} steady-state steps (epoch 2, steps "
          f"{args.warmup} to {args.warmup + args.steps - 1})")  # fmt: skip
    print(f"src/: {n_src} functions in {len(src)} files")
    for rel, names in sorted(src.items()):
        print(f"  {rel} ({len(names)})")
        for name in names:
            print(f"    {name}")
    for package in ("lightning", "torch"):
        print(f"{package}: {sum(len(v) for v in found[package].values())} functions in {len(found[package])} files")


if __name__ == "__main__":
    main()
