"""A/B of the gradient-flow diagnostics callback: epochs with it and without it, alternating.

    OMP_NUM_THREADS=1 .venv/bin/python bench/diagnostics_ab.py --rounds 3 --epochs 2

Each round runs ``python -m src.train fit --config configs/baseline.yaml`` (real MNIST) in this
process twice, once with ``--diagnostics true`` and once with ``false`` (the order alternates
round by round), and reads the seconds of each epoch (training pass + validation, as
``time/epoch_s``).  It prints the median epoch time of each side, their ratio, and the
callback's own measured time per epoch (``GradientFlowDiagnostics.seconds``), which does not
depend on how busy the machine is between the two runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's src/, wherever it runs from

from src.diagnostics import GradientFlowDiagnostics  # noqa: E402
from src.train import main  # noqa: E402


def run(on: bool, epochs: int, config: str) -> tuple[list[float], float, int]:
    cli = main(["fit", "--config", config, "--trainer.max_epochs", str(epochs), "--diagnostics", str(on).lower(),
                "--experiment", "bench_diagnostics", "--trainer.enable_progress_bar", "false"])  # fmt: skip
    cb = next((c for c in cli.trainer.callbacks if isinstance(c, GradientFlowDiagnostics)), None)
    return cli.model.epoch_times["epoch_s"], (cb.seconds if cb else 0.0), (cb.measurements if cb else 0)


def main_() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--config", default="configs/baseline.yaml")
    args = p.parse_args()
    epochs = {True: [], False: []}
    own, measurements = [], 0
    for r in range(args.rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            times, seconds, m = run(on, args.epochs, args.config)
            epochs[on] += times
            if on:
                own.append(seconds / args.epochs)
                measurements += m
            print(f"round {r + 1} diagnostics={on}: epochs {', '.join(f'{t:.2f}' for t in times)} s"
                  + (f"; callback {seconds:.3f} s in {m} measurements" if on else ""), flush=True)  # fmt: skip
    with_, without = statistics.median(epochs[True]), statistics.median(epochs[False])
    per_epoch = statistics.median(own)
    print(f"\nmedian epoch: with {with_:.2f} s, without {without:.2f} s, ratio {with_ / without:.3f}")
    print(f"callback's own time: {per_epoch:.3f} s per epoch (median over rounds; "
          f"{measurements / args.rounds:.0f} measurements per run of {args.epochs} epochs) = "
          f"{per_epoch / without:.2%} of an epoch without it")


if __name__ == "__main__":
    main_()
