"""DDP on the CPU (gloo, 2 processes) through the real command line, against one process.

Lightning's ``ddp`` strategy re-runs the command line for every extra process, so the
DDP run is a subprocess ``python -m src.train fit ...`` (calling ``main([...])`` under
pytest would re-run pytest).  One combined test keeps the slow process start-up to once:

* 2 processes × batch 32 end with the parameters of 1 process × batch 64 over the same
  samples (GD, two epochs: 8 steps each, the last batch 26 + 26 = 52), so the gradients
  were all-reduced (averaged) before our hand-written optimizer stepped, and each process
  took its own half of every batch;
* the run folder holds exactly one ``results.json`` (written by rank 0) whose reports
  cover every sample of each split once — validation and test shards of unequal
  length included (101 and 203 samples) — and equal the single process's metrics.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from src.train import main
from tests.fakedata import write_fake_mnist

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, VAL, N_TEST = 601, 101, 203  # 500 training samples: even, so DDP drops none
ARGS = [
    "fit", "--data.data_dir", "data", "--data.val_size", str(VAL), "--data.eval_batch_size", "25",
    "--model.hidden_layers", "[64,32]", "--model.optimizer", "gd", "--model.lr", "0.3",
    "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
]  # fmt: skip


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "data", n_train=N_TRAIN, n_test=N_TEST)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(root: Path, name: str) -> tuple[Path, dict, dict]:
    runs = list((root / "lightning_logs" / name).glob("version_*"))
    assert len(runs) == 1, runs  # rank 1 made no run folder of its own
    run = runs[0]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return run, json.loads((run / "results.json").read_text()), ckpt


def test_ddp_two_processes_equal_one_process_with_the_whole_batch(fake_data):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LOCAL_RANK", None)  # Lightning launches the second process itself
    ddp = [*ARGS, "--data.batch_size", "32", "--trainer.strategy", "ddp", "--trainer.devices", "2",
           "--trainer.accelerator", "cpu", "--experiment", "ddp"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *ddp], cwd=fake_data, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr  # really distributed (gloo)

    main([*ARGS, "--data.batch_size", "64", "--experiment", "single"])

    ddp_run, ddp_res, ddp_ckpt = _run(fake_data, "ddp")
    _, one_res, one_ckpt = _run(fake_data, "single")

    # the same number of optimizer steps, and the same parameters after them
    assert ddp_ckpt["global_step"] == one_ckpt["global_step"] == 2 * 8
    ddp_sd, one_sd = ddp_ckpt["state_dict"], one_ckpt["state_dict"]
    params = [k for k in one_sd if k.startswith("net.")]
    assert params and set(params) <= set(ddp_sd)
    for k in params:
        torch.testing.assert_close(ddp_sd[k], one_sd[k], rtol=1e-4, atol=1e-5, msg=k)

    # exactly one results.json and one set of reports and checkpoints, by rank 0
    assert len(list(fake_data.rglob("results.json"))) == 2  # ddp's and single's
    assert sorted(p.name for p in ddp_run.glob("*_report.txt")) == ["test_report.txt", "train_report.txt"]
    ckpts = sorted(p.name for p in (ddp_run / "checkpoints").iterdir())
    assert len(ckpts) == 2 and ckpts[0].startswith("best-") and ckpts[1] == "last.ckpt", ckpts
    # each split's report covers every sample once: no per-process halves, no duplicates
    for split, size in (("train", N_TRAIN - VAL), ("test", N_TEST)):
        report = ddp_res[split]["report"]
        assert report["macro avg"]["support"] == size
        assert sum(c["support"] for c in report["classes"].values()) == size
        assert report["confusion"] == one_res[split]["report"]["confusion"]
    for split in ("train", "val", "test"):
        assert ddp_res[split]["accuracy"] == pytest.approx(one_res[split]["accuracy"], abs=1e-6)
        # the loss is the sample-weighted mean over both shards (101 = 51 + 50 for val)
        assert ddp_res[split]["loss"] == pytest.approx(one_res[split]["loss"], rel=1e-4)
    assert ddp_res["test"]["accuracy"] > 0.5  # it learned something


class StopRank(Callback):
    """Send ``signal`` to the process of ``rank`` three batches into the second epoch."""

    def __init__(self, rank: int = 1, signal: str = "SIGKILL"):
        self.rank, self.signum = rank, getattr(globals()["signal"], signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.current_epoch == 1 and batch_idx == 2:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("rank,name,status", [(1, "SIGKILL", 1), (0, "SIGTERM", 128 + 15)], ids=["kill -9 rank 1", "SIGTERM rank 0"])
def test_a_stopped_ddp_process_is_one_line_per_process_with_the_resume(rank, name, status, fake_data):
    """Regression: kill -9 of a worker gave every survivor a ~95-line gloo traceback and no resume command; a
    SIGTERM to rank 0 made ranks 1 and 2 say "no checkpoint to resume from" beside rank 0's resume command."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LOCAL_RANK", None)
    ddp = [*ARGS, "--trainer.max_epochs", "3", "--data.batch_size", "16", "--trainer.strategy", "ddp",
           "--trainer.devices", "3", "--trainer.accelerator", "cpu", "--experiment", "stop",
           "--trainer.callbacks+=tests.test_ddp.StopRank", f"--trainer.callbacks.init_args.rank={rank}",
           f"--trainer.callbacks.init_args.signal={name}"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *ddp], cwd=fake_data, env=env, capture_output=True, text=True, timeout=240
    )
    last = Path("lightning_logs") / "stop" / "version_0" / "checkpoints" / "last.ckpt"
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == status, proc.stderr[-5000:]
    assert "Traceback" not in proc.stderr and "[rank0]:" not in proc.stderr, proc.stderr[-5000:]
    survivors = 3 - (name == "SIGKILL")
    assert 1 <= len(errors) <= survivors and all(line.startswith("error: ") for line in errors), errors  # one a process
    resume = f"resume with --ckpt_path {last}"
    first = {1: "error: stopped: another process of this DDP run ended (", 0: "error: stopped by SIGTERM after 1 finished"}
    assert any(line.startswith(first[rank]) and resume in line for line in errors), errors  # rank 0's
    assert all(resume in line for line in errors), errors  # none says there is no checkpoint
    assert torch.load(fake_data / last, weights_only=True)["epoch"] == 0
