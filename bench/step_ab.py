"""In-process A/B of one training step: the CLI's Lightning path, our bare loop, plain PyTorch, the floor.

    .venv/bin/python bench/step_ab.py --rounds 7                    # sigmoid + GD (the baseline)
    .venv/bin/python bench/step_ab.py --rounds 7 --case best        # ReLU + Adam
    .venv/bin/python bench/step_ab.py --ab state_key --rounds 16 --steps 400   # a hook, on / off

The same real MNIST batches (batch 64, 300 steps after 20 warm-up steps) for every variant, the
variants alternating round by round; prints the minimum and the median milliseconds per step:

* ``src.train fit path``: the Trainer exactly as ``python -m src.train fit`` builds it (its
  callbacks, progress bar, TensorBoard logger, checkpoint plugin), validation and the gradient-flow
  diagnostics off (they measure at two points of epoch 1, which a 300-step window would overweight;
  BENCHMARKS.md gives their cost over a real epoch);
* ``bare loop, ours``: the same module's step without Lightning (the one-node ``FeedForward`` with
  its workspace, the hand-written loss, GD/Adam's ``step`` after ``backward``);
* ``bare loop, per-op``: the straightforward path (chained per-op Functions, ``zero_grad`` /
  ``backward`` / ``step``), the reference the fast path is tested against;
* ``plain PyTorch``: ``nn.Sequential``, ``F.cross_entropy``, ``torch.optim`` in a bare loop, as
  ``../shared/bench/peer_plain_torch.py`` trains;
* ``matrix products only``: the step's forward and backward products, nothing else.

With ``--ab NAME`` only the fit path runs, ``--rounds`` fits of ``--steps`` steps, each fit
switching one of the hooks on Lightning's private names (:mod:`src.system.lightning_private`), kept
or measured and dropped, on and off every ``--block`` steps (ABBA); a block is timed in CPU time of
the training thread.  It prints each fit's median block with and without, their ratio, the
median and quartiles of the ratios, and in how many fits the hook won:

* ``fx_name``: ``MLPClassifier.__setattr__`` storing Lightning's ``_current_fx_name`` directly
  against ``nn.Module.__setattr__``'s checks;
* ``state_key``: ``ResumableModelCheckpoint.state_key`` cached against formatted on every read;
* ``signature``: ``training_step.__signature__`` cached against rebuilt on every read;
* ``dropped``: the first three together (each inside the noise alone; ``fx_name`` is removed from src/); any names
  joined by commas (``state_key,signature``) switch together;
* ``all``: the three together against none of them;
* ``none``: the same code twice (A/A), the spread of the machine's noise.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import sys
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's src, whatever package is installed

from src.data.mnist import TensorBatches
from src.system.callbacks import ResumableModelCheckpoint
from src.system.module import MLPClassifier

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


def cli_path(case: str, timer: pl.Callback | None = None) -> float:
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
            timer = timer or _StepTimer()
            cli.trainer.callbacks.insert(0, timer)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            assert cli.trainer.global_step == WARMUP + STEPS, cli.trainer.global_step  # every step counted
        finally:
            os.chdir(cwd)
    return getattr(timer, "ms", None)


# ------------------------------------------------ the hooks on Lightning's private names, on or off
# Each context sets the attribute both ways explicitly, so the A/B does not depend on which of
# the two the code in src/ holds today.


@contextlib.contextmanager
def _class_attr(cls, name: str, value):
    missing = object()
    old = cls.__dict__.get(name, missing)
    setattr(cls, name, value)
    try:
        yield
    finally:
        if old is missing:
            delattr(cls, name)
        else:
            setattr(cls, name, old)


def _fx_name_setattr(self, name, value):  # the override: a string stored without nn.Module's checks
    if name == "_current_fx_name":
        self.__dict__[name] = value
    else:
        nn.Module.__setattr__(self, name, value)


def _state_key(cached: bool):
    def key(self):
        if cached and "_bench_state_key" in self.__dict__:
            return self.__dict__["_bench_state_key"]
        value = ModelCheckpoint.state_key.fget(self).replace(type(self).__qualname__, "ModelCheckpoint", 1)
        if cached:
            self.__dict__["_bench_state_key"] = value
        return value

    return property(key)


@contextlib.contextmanager
def _signature(cached: bool):
    fn = MLPClassifier.training_step
    old = fn.__dict__.pop("__signature__", None)
    if cached:
        fn.__signature__ = inspect.signature(fn)
    try:
        yield
    finally:
        fn.__dict__.pop("__signature__", None)
        if old is not None:
            fn.__signature__ = old


DROPPED = ("fx_name", "state_key", "signature")  # each inside the noise alone; fx_name is gone from src/, the two caches stay


HOOKS = ("fx_name", "state_key", "signature")


def hook(name: str, on: bool) -> contextlib.AbstractContextManager:
    """The context in which the fit path runs with hook ``name`` on or off (``a,b``: several together)."""
    if name == "fx_name":
        return _class_attr(MLPClassifier, "__setattr__", _fx_name_setattr if on else nn.Module.__setattr__)
    if name == "state_key":
        return _class_attr(ResumableModelCheckpoint, "state_key", _state_key(on))
    if name == "signature":
        return _signature(on)
    stack = contextlib.ExitStack()
    if name == "none":  # A/A
        return stack
    names = {"dropped": DROPPED, "all": HOOKS}.get(name) or name.split(",")
    for each in names:
        stack.enter_context(hook(each, on))
    return stack


class _Interleaved(pl.Callback):
    """Within one fit: blocks of ``block`` steps, the hook on or off in the order on, off, off, on, …

    Swapping inside one run (the blocks ABBA, so a steady drift cancels) pairs neighbouring
    blocks, which share the machine's load far better than two runs seconds apart.  A block is
    timed in CPU seconds of the training thread (``time.thread_time``; one thread computes
    everything at ``OMP_NUM_THREADS=1``): on a machine whose other jobs take the core away for
    milliseconds at a time, wall-clock blocks come out either about 3 or about 8 ms per step.
    """

    PATTERN = (True, False, False, True)

    def __init__(self, name: str, block: int) -> None:
        self.name, self.block = name, block
        self.ms: dict[bool, list[float]] = {True: [], False: []}
        self._ctx, self._on, self._t0 = None, None, None

    def _close_block(self) -> None:
        if self._ctx is not None:
            self.ms[self._on].append((time.thread_time() - self._t0) / self.block * 1e3)
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx < WARMUP or (batch_idx - WARMUP) % self.block:
            return
        self._close_block()
        if batch_idx - WARMUP >= STEPS:
            return
        self._on = self.PATTERN[(batch_idx - WARMUP) // self.block % len(self.PATTERN)]
        self._ctx = hook(self.name, self._on)
        self._ctx.__enter__()
        self._t0 = time.thread_time()

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_block()


def ab(name: str, case: str, rounds: int, block: int) -> None:
    """``rounds`` fits, each interleaving blocks with and without the hook; one ratio per fit."""
    with_, without = [], []
    for _ in range(rounds):
        timer = _Interleaved(name, block)
        cli_path(case, timer)
        with_.append(statistics.median(timer.ms[True]))
        without.append(statistics.median(timer.ms[False]))
    ratios = [b / a for a, b in zip(with_, without)]
    print(f"{case}, --ab {name}: ms per step of the fit path, {rounds} fits of {STEPS} steps, blocks of {block} "
          f"steps with and without interleaved (median block per fit), {torch.get_num_threads()} thread(s)")  # fmt: skip
    print("| fit | with | without | without / with |\n|---|---|---|---|")
    for r, (a, b) in enumerate(zip(with_, without)):
        print(f"| {r + 1} | {a:.3f} | {b:.3f} | {b / a:.4f} |")
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"median with {statistics.median(with_):.3f} ms, without {statistics.median(without):.3f} ms; "
          f"ratio without/with: median {statistics.median(ratios):.4f}, quartiles {q[0]:.4f} / {q[2]:.4f}, "
          f"range {min(ratios):.4f} to {max(ratios):.4f}; the hook faster in {sum(x > 1 for x in ratios)} "
          f"of {rounds} fits")  # fmt: skip


def bare_ours(batches, setting: dict, fused: bool = True) -> float:
    from src.hand.fused import Workspace

    torch.manual_seed(0)
    model = MLPClassifier(**setting)
    model.net.fused = fused
    opt = model.configure_optimizers()
    if fused:  # what MLPClassifier.on_train_start sets up in one process
        model.net.workspace = Workspace()
    for i, (x, onehot, labels) in enumerate(batches):
        if i == WARMUP:
            t0 = time.perf_counter()
        loss = model.compute_loss(x, onehot, labels)[0]
        opt.zero_grad()
        loss.backward()
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


def _ab_name(name: str) -> str:
    if name in ("dropped", "all", "none") or all(n in HOOKS for n in name.split(",")):
        return name
    raise argparse.ArgumentTypeError(f"{name!r}: give one of {', '.join(HOOKS)}, several joined by commas, "
                                     "dropped, all or none")  # fmt: skip


def main() -> None:
    global STEPS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--case", choices=list(CASES), default="baseline")
    p.add_argument("--ab", type=_ab_name,
                   help="only the fit path, with and without this hook (module docstring)")
    p.add_argument("--steps", type=int, default=STEPS, help="timed steps per run (after the warm-up)")
    p.add_argument("--block", type=int, default=10, help="--ab: steps per block")
    args = p.parse_args()
    STEPS = args.steps
    sys.argv = sys.argv[:1]  # the CLI path parses its own arguments
    torch.set_flush_denormal(True)
    if args.ab:
        ab(args.ab, args.case, args.rounds, args.block)
        return
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
