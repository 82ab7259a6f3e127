"""Lightning's trainer flags and stops off the documented path, each right or one line.

A ``--trainer.max_time`` stop mid-epoch, a full disk, ``--trainer.precision 64-true``, a crash in
fit, gradient clipping and accumulation under manual optimization, a batch larger than the
training split, Ctrl-C, and the seed message before an error (the flags refused outright:
tests/test_cli_errors.py).
Tiny synthetic data (tests/fakedata.py) through the real CLI entry, in-process.
"""

import errno
import json
import logging
import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.data.mnist import MNISTDataModule, TensorBatches
from src.errors import ConfigError
from src.instruments.diagnostics import GradientFlowDiagnostics
from src.system import checkpoints
from src.system.module import MLPClassifier
from src.train import main
from tests.cli_helpers import run_cli, run_folders

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# 600 images − 88 for validation = 512 training images: 8 steps of 64 per epoch, 16 of 32
TINY = ["--data.data_dir", "data", "--data.val_size", "88", "--data.eval_batch_size", "100", *QUIET,
        "--model.hidden_layers", "[16]"]  # fmt: skip
STEPS_PER_EPOCH = 8


def _last(root: Path, experiment: str) -> Path:
    return root / "lightning_logs" / experiment / "version_0" / "checkpoints" / "last.ckpt"


def _results(root: Path, experiment: str) -> dict:
    return json.loads((root / "lightning_logs" / experiment / "version_0" / "results.json").read_text())


def _assert_same_state(x, y):
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


# ------------------------------------------------------------------ 1. --trainer.max_time
CLOCK = [0.0]  # the Timer's clock in the tests: one second per training batch


class Tick(Callback):
    """Advance the Timer's clock by one second per training batch, so max_time runs out at a known batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        CLOCK[0] += 1.0


@pytest.fixture
def batch_clock(monkeypatch):
    import lightning.pytorch.callbacks.timer as timer

    CLOCK[0] = 0.0
    monkeypatch.setattr(timer, "time", SimpleNamespace(monotonic=lambda: CLOCK[0]))


RUN = [*TINY, "--model.activation", "relu", "--model.optimizer", "adam", "--model.lr", "0.003",
       "--model.lr_schedule", "cosine", "--trainer.max_epochs", "3"]  # fmt: skip
TIMED = ["--trainer.callbacks+=tests.test_trainer_flags.Tick", "--trainer.max_time"]


def test_max_time_mid_epoch_counts_only_finished_epochs_and_resumes_exactly(fake_data, batch_clock, capsys):
    main(["fit", *RUN, "--experiment", "whole"])
    # 12 s on the batch clock: the Timer stops the run 4 of 8 batches into the second epoch
    main(["fit", *RUN, *TIMED, "00:00:00:12", "--experiment", "timed"])
    out = capsys.readouterr().out
    last = _last(fake_data, "timed")
    ckpt = torch.load(last, weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, STEPS_PER_EPOCH)  # the finished epoch's, not step 12
    assert sorted(p.name for p in last.parent.iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]
    whole = torch.load(_last(fake_data, "whole").with_name("best-epoch00.ckpt"), weights_only=True)
    _assert_same_state(whole["state_dict"], torch.load(last.with_name("best-epoch00.ckpt"), weights_only=True)["state_dict"])
    results = _results(fake_data, "timed")
    assert results["epochs"] == 1 and len(results["train_epoch_s"]) == 1
    assert results["unfinished_epoch"] == {"epoch": 2, "batches": 4, "of": STEPS_PER_EPOCH}
    assert (
        "--trainer.max_time ran out 4 of 8 batches into epoch 2: that epoch is not counted and no checkpoint holds "
        f"it; results.json is from the 1 finished epoch(s); to train further, resume with --ckpt_path "
        f"{last.relative_to(fake_data)} "
        "(it trains epoch 2 again from its start)"
    ) in out
    events = EventAccumulator(str(last.parent.parent), size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("train/loss_epoch", "val/acc", "time/epoch_s"):  # one point: none for the partial epoch
        assert len(events.Scalars(tag)) == 1, tag
    # resumed without a time limit: the same parameters, steps and results as the run never stopped
    main(["fit", *RUN, "--experiment", "resumed", "--ckpt_path", str(last)])
    a, resumed = (torch.load(_last(fake_data, name), weights_only=True) for name in ("whole", "resumed"))
    assert resumed["global_step"] == a["global_step"] == 3 * STEPS_PER_EPOCH
    _assert_same_state(a["state_dict"], resumed["state_dict"])
    for name in ("train", "val", "test", "epochs"):
        assert _results(fake_data, "resumed")[name] == _results(fake_data, "whole")[name], name


def test_max_time_before_the_first_epoch_ends_is_one_line(fake_data, batch_clock, capsys):
    status, err = run_cli(["fit", *RUN, *TIMED, "00:00:00:03"], capsys)
    assert status == 2 and err == [
        "error: --trainer.max_time ran out 3 of 8 batches into epoch 1, before any epoch finished: there is no "
        "checkpoint to evaluate or resume from; give a longer --trainer.max_time"
    ], err
    assert run_folders(fake_data) == []  # the run folder, without a checkpoint, is removed


# ------------------------------------------------------------------ 2. a full disk
class _FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does (``OSError`` ENOSPC)."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def _assert_full_disk_lost_nothing(root: Path, err: list[str], status: int) -> None:
    ckpts = root / "lightning_logs" / "full" / "version_0" / "checkpoints"
    assert status == 1 and len(err) == 1, err
    shown = Path("lightning_logs") / "full" / "version_0" / "checkpoints"  # as the run names it, from its folder
    assert err[0].startswith(f"error: cannot write the checkpoint {shown}/"), err
    assert "No space left on device" in err[0] and "the checkpoints written before are intact" in err[0], err
    assert err[0].endswith(f"resume with --ckpt_path {shown / 'last.ckpt'} (1 finished epoch(s))"), err
    assert sorted(p.name for p in ckpts.iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]  # no partial .tmp left
    for name in ("best-epoch00.ckpt", "last.ckpt"):
        ckpt = torch.load(ckpts / name, weights_only=True)
        assert (ckpt["epoch"], ckpt["global_step"]) == (0, STEPS_PER_EPOCH)


FULL = ["fit", *TINY, "--trainer.max_epochs", "3", "--trainer.logger", "false", "--experiment", "full"]


def test_full_disk_is_one_line_and_keeps_the_checkpoints(fake_data, monkeypatch, capsys):
    """The disk fills up while epoch 2's first checkpoint is written (the two of epoch 1 fit)."""
    opened = []

    def filling_open(path, mode="r", *args, **kwargs):
        opened.append(path)
        file = open(path, mode, *args, **kwargs)
        return _FullDisk(file, 1000) if len(opened) > 2 else file

    monkeypatch.setattr(checkpoints, "open", filling_open, raising=False)
    status, err = run_cli(FULL, capsys)
    assert len(opened) == 3
    _assert_full_disk_lost_nothing(fake_data, err, status)


def test_full_disk_on_a_real_file_system(fake_data, capsys):
    """The same on a real full file system: lightning_logs/ is a 200 kB tmpfs (two 72 kB checkpoints fit)."""
    logs = fake_data / "lightning_logs"
    logs.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(logs)], capture_output=True, text=True)
    if mount.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount a tmpfs: {mount.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        status, err = run_cli(FULL, capsys)
        _assert_full_disk_lost_nothing(fake_data, err, status)
    finally:
        subprocess.run(["umount", str(logs)], check=True)


class FullDiskElsewhere(Callback):
    """A file of the run folder other than a checkpoint meets the full disk (TensorBoard's events, say)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "lightning_logs/events")


def test_a_full_disk_anywhere_in_the_run_is_one_line(fake_data, capsys):
    status, err = run_cli([*FULL, "--trainer.callbacks+=tests.test_trainer_flags.FullDiskElsewhere"], capsys)
    last = Path("lightning_logs") / "full" / "version_0" / "checkpoints" / "last.ckpt"
    assert status == 1 and err == [
        f"error: cannot write lightning_logs/events: No space left on device; resume with --ckpt_path {last} "
        "(1 finished epoch(s))"
    ], err


# ------------------------------------------------------------------ 3. other precisions, crashes
def test_double_precision_trains_with_the_diagnostics(fake_data):
    cli = main(["fit", *TINY, "--trainer.max_epochs", "1", "--trainer.precision", "64-true"])
    diagnostics = next(c for c in cli.trainer.callbacks if isinstance(c, GradientFlowDiagnostics))
    assert diagnostics.measurements >= 2  # before training and after the epoch
    ckpt = torch.load(_last(fake_data, "default"), weights_only=True)
    assert ckpt["state_dict"]["net.W1"].dtype == torch.float64
    assert 0 <= _results(fake_data, "default")["test"]["accuracy"] <= 1


class Crash(Callback):
    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("a bug")


def test_a_crash_in_fit_removes_its_run_folder(fake_data):
    with pytest.raises(RuntimeError, match="a bug"):  # a bug keeps its traceback
        main(["fit", *TINY, "--trainer.max_epochs", "1", "--trainer.callbacks+=tests.test_trainer_flags.Crash"])
    assert run_folders(fake_data) == []


# ------------------------------------------------------------------ 4. clipping, accumulation
def _bare_loop(cli, batch: int, epochs: int, clip=None, accumulate: int = 1, dtype=torch.float32) -> MLPClassifier:
    """The reference: the run's initial weights and split, zero_grad / backward / [clip] / step written out."""
    torch.manual_seed(0)  # as --seed_everything 0 before the model is built
    ref = MLPClassifier(**{k: v for k, v in cli.model.hparams.items() if not k.startswith("_")}).to(dtype)
    opt = ref.configure_optimizers()
    x, y = cli.datamodule.splits["train"]
    x = x.to(dtype)  # --trainer.precision 64-true: the module and its batches in float64
    onehot = torch.nn.functional.one_hot(y, 10).to(x.dtype)
    order = TensorBatches(x, y, batch, shuffle=True, seed=0)
    for epoch in range(epochs):
        idx = order.order(epoch)
        starts = range(0, len(idx), batch)
        for i, start in enumerate(starts):
            b = idx[start : start + batch]
            if i % accumulate == 0:
                opt.zero_grad()
            loss = ref.compute_loss(x[b], onehot[b], y[b])[0]
            (loss / accumulate if accumulate > 1 else loss).backward()
            if (i + 1) % accumulate == 0 or i + 1 == len(starts):  # the window's end, or the epoch's
                if clip is not None:
                    clip(list(ref.parameters()))
                opt.step()
    return ref


def _trained(root: Path, experiment: str) -> dict:
    return torch.load(_last(root, experiment), weights_only=True)["state_dict"]


def _assert_equal_nets(state: dict, ref: MLPClassifier) -> None:
    for name, p in ref.named_parameters():
        assert torch.equal(state[name], p.detach()), name


CLIPS = {
    "norm": (["--trainer.gradient_clip_val", "0.05"], lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05)),
    "value": (["--trainer.gradient_clip_val", "0.002", "--trainer.gradient_clip_algorithm", "value"],
              lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.002)),  # fmt: skip
}


@pytest.mark.parametrize("implementation", ["custom", "sequential"])
@pytest.mark.parametrize("algorithm", list(CLIPS))
def test_gradient_clipping_equals_the_bare_loop(implementation, algorithm, fake_data):
    flags, clip = CLIPS[algorithm]
    args = ["fit", *TINY, "--model.implementation", implementation, "--trainer.max_epochs", "1"]
    cli = main([*args, *flags, "--experiment", "clipped"])
    clipped = _trained(fake_data, "clipped")
    _assert_equal_nets(clipped, _bare_loop(cli, 64, 1, clip=clip))  # so the step waited for the clip
    # negative control: the clip bound (without it the run ends elsewhere)
    name, unclipped = next(iter(_bare_loop(cli, 64, 1).named_parameters()))
    assert not torch.allclose(clipped[name], unclipped, atol=1e-3), name


@pytest.mark.parametrize(
    "implementation,precision", [("custom", "32-true"), ("sequential", "32-true"), ("custom", "64-true")]
)  # 32: the fast path's plain step; 64: Lightning's optimizer step, which clips in on_before_optimizer_step
def test_gradient_accumulation_equals_the_bare_loop(implementation, precision, fake_data):
    # 16 batches of 32 in windows of 3: five whole windows and a last one of one batch at each epoch's end
    args = ["fit", *TINY, "--model.implementation", implementation, "--model.optimizer", "adam", "--model.lr", "0.01",
            "--trainer.max_epochs", "2", "--data.batch_size", "32", "--trainer.accumulate_grad_batches", "3",
            "--trainer.gradient_clip_val", "0.5", "--trainer.precision", precision, "--experiment", "acc"]  # fmt: skip
    cli = main(args)
    assert cli.trainer.global_step == 2 * 6  # optimizer steps: ceil(16 / 3) per epoch
    dtype = torch.float64 if precision == "64-true" else torch.float32
    ref = _bare_loop(cli, 32, 2, clip=lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.5), accumulate=3, dtype=dtype)
    _assert_equal_nets(_trained(fake_data, "acc"), ref)


def test_clipping_sees_the_unscaled_gradients_of_a_grad_scaler():
    """16-mixed with a GradScaler (built for the CPU here; the CLI gives it on CUDA): the clip comes after unscaling.

    The twin (torch's ops under autocast): equal to the last bit to the documented AMP loop,
    ``scale(loss).backward(); unscale_; clip_grad_norm_; step; update``.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.plugins.precision import MixedPrecision

    arch = dict(inputs=20, hidden_layers=[16], outputs=10, implementation="sequential")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 20, generator=gen), torch.randint(10, (96,), generator=gen)

    class Batches(pl.LightningDataModule):
        def train_dataloader(self):
            return TensorBatches(x, y, 32, shuffle=True, seed=7, trainer=self.trainer)

    torch.manual_seed(1)
    model = MLPClassifier(**arch)
    model.configure_gradient_steps(gradient_clip_val=0.05)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         plugins=[MixedPrecision("16-mixed", "cpu")])  # fmt: skip
    trainer.fit(model, datamodule=Batches())
    torch.manual_seed(1)
    ref = MLPClassifier(**arch)
    opt, scaler = ref.configure_optimizers(), torch.amp.GradScaler("cpu")
    onehot, order = torch.nn.functional.one_hot(y, 10).float(), TensorBatches(x, y, 32, shuffle=True, seed=7)
    for epoch in range(2):
        for b in order.order(epoch).split(32):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = ref.compute_loss(x[b], onehot[b], y[b])[0]
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.05)
            scaler.step(opt)
            scaler.update()
    _assert_equal_nets(model.state_dict(), ref)


def test_accumulating_two_batches_of_32_is_one_batch_of_64(fake_data):
    """GD on the batch-mean loss: the mean of two half-batch gradients is the whole batch's (up to rounding)."""
    gd = ["fit", *TINY, "--trainer.max_epochs", "1"]
    main([*gd, "--data.batch_size", "64", "--experiment", "b64"])
    main([*gd, "--data.batch_size", "32", "--trainer.accumulate_grad_batches", "2", "--experiment", "b32x2"])
    main([*gd, "--data.batch_size", "32", "--experiment", "b32"])
    b64, b32x2, b32 = (_trained(fake_data, name) for name in ("b64", "b32x2", "b32"))
    for name in b64:
        torch.testing.assert_close(b32x2[name], b64[name], rtol=1e-5, atol=1e-6, msg=name)
    assert (b32["net.W1"] - b64["net.W1"]).abs().max() > 100 * (b32x2["net.W1"] - b64["net.W1"]).abs().max()


def test_the_twin_trains_under_mixed_precision(fake_data):
    """What the refusal above offers instead: torch's ops under autocast (bf16 on the CPU) train and report."""
    cli = main(["fit", *TINY, "--model.implementation", "sequential", "--trainer.precision", "bf16-mixed",
                "--trainer.max_epochs", "1"])  # fmt: skip
    results = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    assert cli.trainer.global_step == STEPS_PER_EPOCH and results["test"]["accuracy"] > 0.5
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())  # autocast: the weights stay float32


# ------------------------------------------------------------------ 5. batch size, data folder, Ctrl-C, seed
def test_the_data_module_refuses_a_batch_larger_than_its_split(fake_data):
    """Where the files come only with the download, the data module's setup says it, before training."""
    dm = MNISTDataModule(data_dir="data", val_size=88, batch_size=513)
    with pytest.raises(ConfigError, match=r"--data.batch_size=513 is larger than the 512 training images"):
        dm.setup("fit")
    MNISTDataModule(data_dir="data", val_size=88, batch_size=513).setup("test")  # evaluation takes no training batch


class CtrlC(Callback):
    """Press Ctrl-C (a real SIGINT to this process) two batches into the second epoch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_says_how_to_resume(fake_data, capsys):
    handler = signal.getsignal(signal.SIGINT)
    # Python's own Ctrl-C handler, as in a terminal: a process started in the background by a
    # non-interactive shell (`cmd &`, as CI may be) inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status, err = run_cli(["fit", *TINY, "--trainer.max_epochs", "3", "--experiment", "int",
                               "--trainer.callbacks+=tests.test_trainer_flags.CtrlC"], capsys)  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    last = Path("lightning_logs") / "int" / "version_0" / "checkpoints" / "last.ckpt"
    assert status == 128 + 2
    assert err[-1] == f"error: stopped by SIGINT (Ctrl-C) after 1 finished epoch(s); resume with --ckpt_path {last}"
    assert torch.load(fake_data / last, weights_only=True)["epoch"] == 0
    assert not (fake_data / last).parent.parent.joinpath("results.json").exists()


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_the_seed_message_waits_for_the_checks(fake_data, capsys):
    """A value that a class refuses is the only line: "Seed set to 0" comes only once every class is built."""
    records = _Records()
    seed_log = logging.getLogger("lightning.fabric.utilities.seed")
    seed_log.addHandler(records)
    try:
        status, err = run_cli(["fit", *TINY, "--model.hidden_layers", "[]"], capsys)
        assert status == 2 and err[0].startswith("error: hidden_layers=[] is not allowed"), err
        assert records.messages == []
        main(["--data.val_size", "88"], run=False)  # the checks pass: the message comes
        assert records.messages == ["Seed set to 0"]
    finally:
        seed_log.removeHandler(records)
