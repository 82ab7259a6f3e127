"""How many functions of ``src/`` one steady-state training step runs through, and in which files.

    OMP_NUM_THREADS=1 .venv/bin/python bench/step_trace.py                      # the default fit (sigmoid, GD)
    OMP_NUM_THREADS=1 .venv/bin/python bench/step_trace.py --config configs/best.yaml

``python -m src.train fit``'s own Trainer (``src.train.main(..., run=False)``: its callbacks, the
gradient-flow diagnostics, progress bar, TensorBoard logger, checkpoint plugin) trains on real
MNIST for two short epochs; in the second, after ``--warmup`` steps, cProfile records two windows
of ``--steps`` steps each (two of them log at the default ``log_every_n_steps``):

* **the step**: every call of ``MLPClassifier.training_step``, which under manual optimization
  holds the whole step: forward, loss, backward, the clip hook, the optimizer's update, logging;
* **the loop around it**: from the start of one step to the start of the next, i.e. the step plus
  the batch's fetch and transfer and every per-step hook of the callbacks and the module.

The first epoch, its validation and checkpoint lie outside both: they are not a step.  Counts no
time, only which functions ran (a busy machine changes the time, not the set).

Prints the distinct functions of ``src/`` that ran, by file, then Lightning's and torch's counts beside
them.  The extra arguments go to the CLI as they are (``--config configs/relu.yaml``, ``--model.*``).
"""

from __future__ import annotations

import argparse
import cProfile
import contextlib
import functools
import os
import pstats
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import lightning.pytorch as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's src, whatever package is installed


class _Windows(pl.Callback):
    """Epoch 2: cProfile of the training_step calls of batches ``[start, start + n)``, then of the
    whole loop from the start of batch ``start + n`` to the start of batch ``start + 2n``."""

    def __init__(self, start: int, n: int) -> None:
        self.start, self.n = start, n
        self.step, self.loop = cProfile.Profile(), cProfile.Profile()
        self._batch = -1

    def setup(self, trainer, pl_module, stage) -> None:
        inner = pl_module.training_step

        @functools.wraps(inner)
        def training_step(*args, **kwargs):
            if not self.start <= self._batch < self.start + self.n:
                return inner(*args, **kwargs)
            self.step.enable()
            try:
                return inner(*args, **kwargs)
            finally:
                self.step.disable()

        pl_module.training_step = training_step  # the instance's, which Lightning calls

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch = batch_idx if trainer.current_epoch == 1 else -1
        if self._batch == self.start + self.n:
            self.loop.enable()
        elif self._batch == self.start + 2 * self.n:
            self.loop.disable()


def trace(cli_args: list[str], warmup: int, steps: int) -> dict[str, pstats.Stats]:
    from src.train import main

    windows = _Windows(warmup, steps)
    cli_args = [str(Path(a).resolve()) if Path(a).is_file() else a for a in cli_args]  # --config files: from here
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            cli = main([*cli_args, "--data.data_dir", str(ROOT / "data"), "--trainer.max_epochs", "2",
                        "--trainer.limit_train_batches", str(warmup + 2 * steps + 1), "--trainer.limit_val_batches", "2",
                        "--trainer.num_sanity_val_steps", "0"], run=False)  # fmt: skip
            cli.trainer.callbacks.insert(0, windows)  # first: its start hook runs before every other callback's
            with contextlib.redirect_stdout(sys.stderr):  # the progress bar and the reports: not the counts
                cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        finally:
            os.chdir(cwd)
    return {"the step (training_step)": pstats.Stats(windows.step),
            "the loop around it (step to step)": pstats.Stats(windows.loop)}


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
    p.add_argument("--steps", type=int, default=100, help="steps in each window (two of them log at the default rate)")
    args, cli_args = p.parse_known_args()
    sys.argv = sys.argv[:1]  # the CLI parses its own arguments
    print(f"{' '.join(cli_args) or 'the default fit'}: {args.steps} steady-state steps per window (epoch 2)")
    for what, stats in trace(cli_args, args.warmup, args.steps).items():
        report(what, stats)


def report(what: str, stats: pstats.Stats) -> None:
    found: dict[str, dict[str, list[str]]] = {"src": defaultdict(list), "lightning": defaultdict(list), "torch": defaultdict(list)}
    for (filename, line, name), (_, calls, *_rest) in sorted(stats.stats.items()):
        where = _where(filename)
        if where is not None:
            rel = Path(filename).relative_to(ROOT).as_posix() if where == "src" else filename
            found[where][rel].append(f"{name} (line {line}, {calls} calls)")
    src = found["src"]
    print(f"\n{what}: src/ {sum(len(v) for v in src.values())} functions in {len(src)} files; "
          + "; ".join(f"{p} {sum(len(v) for v in found[p].values())} in {len(found[p])}" for p in ("lightning", "torch")))
    for rel, names in sorted(src.items()):
        print(f"  {rel} ({len(names)})")
        for name in names:
            print(f"    {name}")


if __name__ == "__main__":
    main()
