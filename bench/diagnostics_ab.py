"""A/B of the gradient-flow diagnostics callback: epochs with it and without it, alternating.

    OMP_NUM_THREADS=1 .venv/bin/python bench/diagnostics_ab.py --rounds 3 --epochs 2
    OMP_NUM_THREADS=1 .venv/bin/python bench/diagnostics_ab.py --micro     # one measurement against one step

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

from src.instruments.diagnostics import GradientFlowDiagnostics  # noqa: E402
from src.train import main  # noqa: E402


def run(on: bool, epochs: int, config: str) -> tuple[list[float], float, int]:
    cli = main(["fit", "--config", config, "--trainer.max_epochs", str(epochs), "--diagnostics", str(on).lower(),
                "--experiment", "bench_diagnostics", "--trainer.enable_progress_bar", "false"])  # fmt: skip
    cb = next((c for c in cli.trainer.callbacks if isinstance(c, GradientFlowDiagnostics)), None)
    return cli.model.epoch_times["epoch_s"], (cb.seconds if cb else 0.0), (cb.measurements if cb else 0)


def micro(rounds: int = 7) -> None:
    """In-process: one diagnostics measurement (probe of 256 images, scalars and histograms written)
    against one training step (batch 64, as fit runs it: the workspace, backward, then the GD step),
    alternating; the minima give the cost per epoch of a 15-epoch run (20 measurements, 782 steps/epoch)."""
    import tempfile
    import time

    import torch
    from torch.utils.tensorboard import SummaryWriter

    from src.instruments.diagnostics import EPOCH1_FRACTIONS, probe_diagnostics
    from src.hand.fused import Workspace
    from src.system.module import MLPClassifier

    torch.manual_seed(0)
    model = MLPClassifier()
    opt = model.configure_optimizers()
    model.net.workspace = Workspace()
    gen = torch.Generator().manual_seed(0)
    x, labels = torch.randn(64 * 50, 784, generator=gen), torch.randint(10, (64 * 50,), generator=gen)
    onehot = torch.nn.functional.one_hot(labels, 10).float()
    probe = (x[:256], onehot[:256])
    writer = SummaryWriter(tempfile.mkdtemp())
    step_ms, probe_ms, scalars_ms = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(50):
            s = slice(64 * i, 64 * (i + 1))
            model.compute_loss(x[s], onehot[s], labels[s])[0].backward()
            opt.step()
            opt.zero_grad()
        step_ms.append((time.perf_counter() - t0) / 50 * 1e3)
        t0 = time.perf_counter()
        values = probe_diagnostics(model, *probe, lr=0.3)
        for tag, v in values.items():
            if isinstance(v, torch.Tensor):
                writer.add_histogram(tag, v.flatten(), 0)
            else:
                writer.add_scalar(tag, v, 0)
        probe_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        for tag, v in probe_diagnostics(model, *probe, lr=0.3).items():
            if not isinstance(v, torch.Tensor):
                writer.add_scalar(tag, v, 0)
        scalars_ms.append((time.perf_counter() - t0) * 1e3)
    step, full, scalars = min(step_ms), min(probe_ms), min(scalars_ms)
    epoch1 = (len(EPOCH1_FRACTIONS) * scalars + full) / (782 * step)  # scalar-only points inside epoch 1, then its end
    later = full / (782 * step)
    print(f"one training step {step:.2f} ms; one measurement {full:.1f} ms with histograms, {scalars:.1f} ms without "
          f"(minima of {rounds} rounds); epoch 1: {epoch1:.2%} of its steps' time, later epochs {later:.2%}")


def main_() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--config", default="configs/baseline.yaml")
    p.add_argument("--micro", action="store_true", help="in-process: one measurement against one training step")
    args = p.parse_args()
    if args.micro:
        return micro()
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
