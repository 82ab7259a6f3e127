"""A run interrupted and resumed with --ckpt_path is reported whole: every epoch's loss, every process's time.

Four tiny real runs, each resuming the one before: two stopped by a real SIGTERM after two epochs
(no results.json), then two that finish.  The report of the last must show epochs 1 … 6 and the
wall time of the four processes together.
"""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from src.instruments.results import RESUMED_NOTE, read_run
from src.report import main as report_main
from src.train import main as train_main
from tests.fakedata import write_fake_mnist

TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.limit_train_batches", "3", "--model.hidden_layers", "[16]", "--diagnostics", "false",
        "--experiment", "chain"]  # fmt: skip
STOP = "--trainer.callbacks+=tests.test_report_resumed.SigtermAfterTwoEpochs"
LOGS = Path("lightning_logs") / "chain"


class SigtermAfterTwoEpochs(Callback):
    """Send this process a SIGTERM at the end of the second epoch it trains (Lightning then stops the run)."""

    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs += 1
        if self.epochs == 2:
            # Lightning's handler must be in place, or the signal would end the test process itself
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
            os.kill(os.getpid(), signal.SIGTERM)


def _last(version: int) -> str:
    return str(LOGS / f"version_{version}" / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """version_0 and version_1 stopped by SIGTERM, version_2 and version_3 finished; each resumes the one before.

    Returns the folder and the seconds each of the four ``main`` calls took, measured here.
    """
    root = tmp_path_factory.mktemp("chain")
    write_fake_mnist(root / "data", n_train=600, n_test=200)
    old, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(root)
    torch.set_num_threads(1)
    calls = [
        ["--trainer.max_epochs", "6", STOP],
        ["--trainer.max_epochs", "6", STOP, "--ckpt_path", _last(0)],
        ["--trainer.max_epochs", "5", "--ckpt_path", _last(1)],
        ["--trainer.max_epochs", "6", "--ckpt_path", _last(2)],
    ]
    elapsed = []
    try:
        for i, args in enumerate(calls):
            start = time.perf_counter()
            if STOP in args:
                with pytest.raises(SystemExit):  # stopped by SIGTERM: exit status 143, checkpoints kept
                    train_main(["fit", *TINY, *args])
            else:
                train_main(["fit", *TINY, *args])
            elapsed.append(time.perf_counter() - start)
    finally:
        os.chdir(old)
        torch.set_num_threads(threads)
    return root, elapsed


@pytest.fixture
def here(chain, tmp_path, monkeypatch):
    """A fresh copy of the four runs for each test, as the current folder."""
    shutil.copytree(chain[0], tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _events(folder: Path):
    """``{epoch from 1: train loss}`` and ``[time/epoch_s]`` of one folder, straight from its TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    epoch = {e.step: int(e.value) + 1 for e in acc.Scalars("epoch")}
    return {epoch[e.step]: e.value for e in acc.Scalars("train/loss_epoch")}, [e.value for e in acc.Scalars("time/epoch_s")]


def _finished(version: int) -> int:
    """Training epochs of the checkpoint that the next run resumed from."""
    return torch.load(_last(version), weights_only=True)["epoch"] + 1


def test_resumed_run_is_reported_whole(here, chain):
    done = [_finished(v) for v in range(3)]
    assert 1 <= done[0] < done[1] < done[2] == 5  # each run had epochs of its own to train
    losses, epoch_seconds = zip(*(_events(LOGS / f"version_{v}") for v in range(4)))
    assert sorted(losses[3]) == [6]  # the last folder alone holds its own epoch only

    run = read_run(LOGS / "version_3")
    assert run.epochs == [1, 2, 3, 4, 5, 6]
    # each epoch's loss from the process whose checkpoint carried it on
    part = [next(v for v in range(4) if v == 3 or e <= done[v]) for e in run.epochs]
    assert run.train_loss == [pytest.approx(losses[v][e]) for e, v in zip(run.epochs, part)]
    assert run.earlier == [LOGS / f"version_{v}" for v in range(3)] and run.missing is None
    assert run.resumed_after == done

    # wall time: the two finished processes' own figures exactly, the two stopped ones' from their
    # events: at least their epochs' time, at most the time their calls took here
    finished = sum(json.loads((LOGS / f"version_{v}" / "results.json").read_text())["wall_time_s"] for v in (2, 3))
    stopped = run.wall_time_s - finished
    assert sum(epoch_seconds[0]) + sum(epoch_seconds[1]) <= stopped <= chain[1][0] + chain[1][1]
    assert len(run.seconds) == 4

    report = report_main(["--runs", str(LOGS / "version_3"), "--out", "out"])
    md = report.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| chain |"))
    assert row.rstrip(" |").endswith(f"| {run.wall_time_s:.0f} (4 processes)")
    assert RESUMED_NOTE in md
    assert f"resuming `{LOGS / 'version_2'}` ← `{LOGS / 'version_1'}` ← `{LOGS / 'version_0'}`" in md
    with Image.open(here / "out" / "chain_loss.png") as im:
        assert im.format == "PNG"


def test_a_broken_chain_is_named(here):
    done = [_finished(v) for v in range(3)]
    shutil.rmtree(LOGS / "version_0")  # moved away: its epochs cannot be shown
    Path(_last(1)).write_bytes(b"not a checkpoint")  # unreadable: version_1 counts up to version_2's first epoch
    run = read_run(LOGS / "version_3")
    assert run.missing == LOGS / "version_0"
    assert run.earlier == [LOGS / "version_1", LOGS / "version_2"]
    assert run.epochs == list(range(done[0] + 1, 7))
    md = report_main(["--runs", str(LOGS / "version_3"), "--out", "out"]).read_text()
    assert f"(resumed from `{LOGS / 'version_0'}`: no run folder of it here, so the epochs before are left out)" in md
    assert "(3 processes)" in md


def test_a_run_started_afresh_has_no_chain(here):
    shutil.copytree(LOGS / "version_3", Path("lightning_logs") / "alone" / "version_0")
    results = Path("lightning_logs") / "alone" / "version_0" / "results.json"
    content = json.loads(results.read_text())
    assert content["config"]["ckpt_path"] == _last(2)
    content["config"]["ckpt_path"] = None  # as if it had been trained from the start
    results.write_text(json.dumps(content))
    run = read_run(results.parent)
    assert run.earlier == [] and run.epochs == [6] and run.seconds == [run.results["wall_time_s"]]
    md = report_main(["--runs", str(results.parent), "--out", "out"]).read_text()
    assert "processes)" not in md and RESUMED_NOTE not in md


def test_the_chain_is_found_from_another_folder(here, monkeypatch):
    # --ckpt_path was relative to where training ran: a report run elsewhere finds it from the run's lightning_logs/
    folder = (here / LOGS / "version_3").resolve()
    (here / "elsewhere").mkdir()
    monkeypatch.chdir(here / "elsewhere")
    run = read_run(folder)
    assert run.epochs == [1, 2, 3, 4, 5, 6] and run.missing is None
    assert [p.resolve() for p in run.earlier] == [(here / LOGS / f"version_{v}").resolve() for v in range(3)]


def test_a_checkpoint_kept_outside_the_run_folders_breaks_the_chain(here):
    shutil.copy(_last(2), "kept.ckpt")
    results = LOGS / "version_3" / "results.json"
    content = json.loads(results.read_text())
    content["config"]["ckpt_path"] = "kept.ckpt"  # as if resumed with --ckpt_path kept.ckpt
    results.write_text(json.dumps(content))
    run = read_run(results.parent)
    assert run.earlier == [] and run.missing == Path("kept.ckpt") and run.epochs == [6]
