"""Reliability: damaged data files named in one line; divergence stops cleanly; kill -9 + resume is exact;
checkpoints written atomically, loaded without running code, and a file that is no checkpoint named.

Everything runs on tiny synthetic MNIST-format data (tests/fakedata.py) through the real CLI entry.
"""

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from src.system.callbacks import ResumableModelCheckpoint, RNGStateCallback
from src.system.checkpoints import AtomicCheckpointIO
from src.errors import ConfigError, DataError
from src.data.idx import check_idx_file
from src.data.mnist import load_split
from src.system.module import MLPClassifier
from src.train import main
from tests.cli_helpers import run_cli
from tests.fakedata import idx_bytes, write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100", *QUIET]


# ------------------------------------------------------------------ 1. data problems (bad values: tests/test_cli_errors.py)
def _raw(tmp_path, **kw):
    return write_fake_mnist(tmp_path / "data", n_train=60, n_test=20, gz=False, **kw)


def _expect_data_error(tmp_path, *words, train=True):
    """``load_split`` raises a DataError whose message holds ``words`` in this order."""
    with pytest.raises(DataError, match="(?s)" + ".*".join(map(re.escape, words))):
        load_split(tmp_path / "data", "MNIST", train=train)


def test_truncated_idx_file(tmp_path):
    raw = _raw(tmp_path)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])  # a half-finished copy
    _expect_data_error(tmp_path, str(path), "truncated", "60 images")
    path.write_bytes(path.read_bytes()[:6])  # not even a whole header
    _expect_data_error(tmp_path, str(path), "truncated")


def test_wrong_magic_number(tmp_path):
    raw = _raw(tmp_path)
    path = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[2] = 0x0D  # float instead of unsigned byte
    path.write_bytes(bytes(data))
    _expect_data_error(tmp_path, str(path), "magic number", train=False)
    # an images file where the labels file should be
    path.write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes())
    _expect_data_error(tmp_path, str(path), "should hold labels", train=False)


def test_wrong_image_size(tmp_path):
    raw = _raw(tmp_path)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((60, 20, 20), np.uint8)))  # consistent length, wrong size
    _expect_data_error(tmp_path, str(path), "20x20", "28x28")


def test_label_outside_0_to_9(tmp_path):
    raw = _raw(tmp_path)
    path = raw / "train-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[8 + 7] = 12
    path.write_bytes(bytes(data))
    _expect_data_error(tmp_path, str(path), "label 12 at index 7", "outside 0-9")


def test_images_and_labels_disagree_in_count(tmp_path):
    raw = _raw(tmp_path)
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(59, np.uint8)))
    _expect_data_error(tmp_path, "60 images", "59 labels")


def test_damaged_gz_is_named(tmp_path):
    raw = write_fake_mnist(tmp_path / "data", n_train=60, n_test=20, gz=True)
    packed = raw / "train-images-idx3-ubyte.gz"
    packed.write_bytes(packed.read_bytes()[:200])
    _expect_data_error(tmp_path, str(packed), "cannot be unpacked")
    assert not (raw / "train-images-idx3-ubyte").exists()  # no half-unpacked file left


def test_checksum_of_official_mnist_sized_file(tmp_path):
    # A well-formed labels file of the official size (60 000 labels) but other contents: only
    # the SHA-256 can tell; files of other sizes (the synthetic ones) are not checksummed.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    path = raw / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.random.default_rng(0).integers(0, 10, 60000).astype(np.uint8)))
    assert path.stat().st_size == 60008
    with pytest.raises(DataError, match="SHA-256 .* differs from the official MNIST file"):
        check_idx_file(path, "labels", "MNIST")
    assert check_idx_file(path, "labels", "FashionMNIST") == 60000  # no known checksum there


def test_real_mnist_passes_its_checksums():
    raw = ROOT / "data" / "MNIST" / "raw"
    names = ["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]
    if not all((raw / n).exists() for n in names):
        pytest.skip("real MNIST not unpacked in data/MNIST/raw")
    assert [check_idx_file(raw / n, "labels" if "labels" in n else "images") for n in names] == [60000, 10000, 10000]


def test_missing_files_offline(fake_data, monkeypatch, capsys):
    from torchvision import datasets

    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # offline, without waiting
    (fake_data / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    status, err = run_cli(["fit", *TINY], capsys)
    assert status == 1 and len(err) == 1, err
    line = err[0]
    for part in (str(Path("data") / "MNIST" / "raw"), "missing: t10k-labels-idx1-ubyte", "downloads them by itself"):
        assert part in line, line
    assert not (fake_data / "lightning_logs").exists()


def test_data_error_through_the_cli(fake_data, capsys):
    path = fake_data / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    status, err = run_cli(["fit", *TINY], capsys)
    assert status == 1 and len(err) == 1 and "train-images-idx3-ubyte: truncated" in err[0], err
    assert not (fake_data / "lightning_logs").exists()


# ------------------------------------------------------------------ 2. divergence
class BlowUpLearningRate(Callback):
    """From epoch ``epoch`` on, multiply the learning rate by ``factor`` (a run that diverges late)."""

    def __init__(self, epoch: int = 1, factor: float = 1e6):
        self.epoch, self.factor = epoch, factor

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] *= self.factor


def test_divergence_stops_with_message_and_keeps_checkpoints(fake_data, capsys):
    args = ["fit", *TINY, "--experiment", "div", "--trainer.max_epochs", "3",
            "--model.hidden_layers", "[16]", "--model.activation", "identity", "--model.loss", "mse",
            "--model.output_activation", "identity", "--model.lr", "0.01",
            "--trainer.callbacks+=tests.test_reliability.BlowUpLearningRate"]  # fmt: skip
    status, err = run_cli(args, capsys)
    assert status == 1
    line = err[-1]
    assert line.startswith("error: training diverged"), err
    for part in ("(epoch 1)", "learning rate 10000", "smaller --model.lr"):
        assert part in line, line
    step = int(re.search(r"at step (\d+) ", line).group(1))
    assert 8 <= step < 16, line  # in epoch 1: 500 training images / 64 = 8 steps per epoch
    ckpts = fake_data / "lightning_logs" / "div" / "version_0" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]
    for name in ("best-epoch00.ckpt", "last.ckpt"):
        ckpt = torch.load(ckpts / name, weights_only=True)
        assert ckpt["epoch"] == 0 and ckpt["global_step"] == 8  # the good epoch's checkpoint
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())
    assert not (fake_data / "lightning_logs" / "div" / "version_0" / "results.json").exists()


class PoisonWeights(Callback):
    """Put an inf into W1 after the last training batch of epoch 1 (a finite loss, broken weights)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                pl_module.net.W1[0, 0] = float("inf")


def test_broken_weights_are_never_checkpointed(fake_data, capsys):
    args = ["fit", *TINY, "--experiment", "inf", "--trainer.max_epochs", "3", "--model.hidden_layers", "[16]",
            "--trainer.callbacks+=tests.test_reliability.PoisonWeights"]  # fmt: skip
    status, err = run_cli(args, capsys)
    assert status == 1 and "parameter net.W1 holds NaN or infinite values at step 16 (epoch 1)" in err[-1], err
    ckpts = fake_data / "lightning_logs" / "inf" / "version_0" / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 0  # not epoch 1's broken weights


# ------------------------------------------------------------------ 3 + 4. crash safety, exact resume, determinism
class SlowEpochs(Callback):
    """Sleep after each training epoch, so a test can kill the run between two checkpoints."""

    def on_train_epoch_end(self, trainer, pl_module):
        time.sleep(0.4)


RUN = ["--data.data_dir", "data", "--data.val_size", "200", "--data.eval_batch_size", "200", *QUIET,
       "--model.hidden_layers", "[16]", "--model.activation", "relu", "--model.optimizer", "adam",
       "--model.lr", "0.0002", "--model.lr_schedule", "cosine", "--trainer.max_epochs", "5"]  # fmt: skip
# (slow enough that the best validation accuracy moves: the best checkpoint is a later epoch's)
METRICS = ("train", "val", "test", "epochs")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same config trained twice without interruption, and once killed with SIGKILL and resumed."""
    root = tmp_path_factory.mktemp("resume")
    write_fake_mnist(root / "data", n_train=1000, n_test=200, gz=False)
    old_cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(root)
    torch.set_num_threads(1)  # the killed subprocess runs with OMP_NUM_THREADS=1 too
    try:
        for name in ("a", "b"):
            main(["fit", *RUN, "--experiment", name])
        # killed: a subprocess, slowed down between epochs, killed once its first checkpoint exists
        last = root / "lightning_logs" / "killed" / "version_0" / "checkpoints" / "last.ckpt"
        proc = subprocess.Popen(
            [sys.executable, "-m", "src.train", "fit", *RUN, "--experiment", "killed",
             "--trainer.callbacks+=tests.test_reliability.SlowEpochs"],
            cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_epoch = torch.load(last, weights_only=True)["epoch"]
        main(["fit", *RUN, "--experiment", "resumed", "--ckpt_path", str(last)])
    finally:
        os.chdir(old_cwd)
        torch.set_num_threads(threads)
    return root / "lightning_logs", killed_epoch


def _load(logs, name, file="last.ckpt"):
    return torch.load(logs / name / "version_0" / "checkpoints" / file, weights_only=True)


def _results(logs, name):
    results = json.loads((logs / name / "version_0" / "results.json").read_text())
    return {k: results[k] for k in METRICS}


def _assert_same_state(x, y):
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


@pytest.mark.slow
def test_determinism_same_seed_same_everything(runs):
    logs, _ = runs
    _assert_same_state(_load(logs, "a")["state_dict"], _load(logs, "b")["state_dict"])
    assert _results(logs, "a") == _results(logs, "b")


@pytest.mark.slow
def test_killed_run_resumes_exactly(runs):
    logs, killed_epoch = runs
    assert killed_epoch < 4  # killed before the end: the resume had work to do
    assert not (logs / "killed" / "version_0" / "results.json").exists()
    # every .ckpt the killed run left is whole (a kill mid-write leaves at most a hidden .tmp)
    for path in (logs / "killed" / "version_0" / "checkpoints").glob("*.ckpt"):
        assert torch.load(path, weights_only=True)["epoch"] <= killed_epoch
    a, resumed = _load(logs, "a"), _load(logs, "resumed")
    assert resumed["epoch"] == a["epoch"] == 4 and resumed["global_step"] == a["global_step"]
    _assert_same_state(a["state_dict"], resumed["state_dict"])
    # Adam's moments and step count, the cosine schedule's position
    for sa, sr in zip(a["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        assert sa["step"] == sr["step"] and torch.equal(sa["exp_avg"], sr["exp_avg"])
        assert torch.equal(sa["exp_avg_sq"], sr["exp_avg_sq"])
    assert a["lr_schedulers"] == resumed["lr_schedulers"]
    assert _results(logs, "a") == _results(logs, "resumed")
    best = json.loads((logs / "a" / "version_0" / "results.json").read_text())["best_checkpoint"]
    assert not best.endswith("best-epoch00.ckpt")  # the comparison covered a best that moved


def test_resumed_run_keeps_the_best_so_far(tmp_path):
    # Lightning's ModelCheckpoint forgets the best score when the resumed run writes elsewhere;
    # then its first epoch would become "best" however bad.  Ours keeps it (and the old paths).
    old = ResumableModelCheckpoint(dirpath=tmp_path / "v0", monitor="val/acc", mode="max", save_last=True)
    old.best_k_models = {str(tmp_path / "v0" / "best-epoch02.ckpt"): torch.tensor(0.9)}
    old.best_model_path = old.kth_best_model_path = str(tmp_path / "v0" / "best-epoch02.ckpt")
    old.best_model_score = old.kth_value = torch.tensor(0.9)
    new = ResumableModelCheckpoint(dirpath=tmp_path / "v1", monitor="val/acc", mode="max", save_last=True)
    assert new.state_key == ModelCheckpoint(monitor="val/acc", mode="max").state_key  # old checkpoints resume too
    new.load_state_dict(old.state_dict())
    assert new.best_model_score == 0.9 and new.best_model_path == old.best_model_path
    assert new.best_k_models == old.best_k_models and new.kth_value == 0.9
    one_process = SimpleNamespace(strategy=SimpleNamespace(reduce_boolean_decision=lambda d, **_: d))
    assert not new.check_monitor_top_k(one_process, torch.tensor(0.8))  # a worse epoch does not become best
    assert new.check_monitor_top_k(one_process, torch.tensor(0.95))


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.arange(3.0)}, path)
    before = path.read_bytes()
    with pytest.raises((AttributeError, pickle.PicklingError), match="pickle"):  # fails halfway through pickling
        io.save_checkpoint({"w": torch.zeros(10_000), "bad": lambda: None}, path)
    assert path.read_bytes() == before  # the old checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
    assert torch.equal(io.load_checkpoint(path)["w"], torch.arange(3.0))


class NoisyWeights(Callback):
    """Nudge W1 with torch's global generator at each epoch's start, as dropout or augmentation would draw."""

    def on_train_epoch_start(self, trainer, pl_module):
        with torch.no_grad():
            pl_module.net.W1.add_(torch.randn(pl_module.net.W1.shape) * 1e-2)


@pytest.mark.slow
def test_random_states_travel_in_the_checkpoint(fake_data, monkeypatch):
    """A run that draws random numbers resumes exactly only because RNGStateCallback restores the states."""
    args = ["fit", *TINY, "--model.hidden_layers", "[16]", "--trainer.callbacks+=tests.test_reliability.NoisyWeights"]
    logs = fake_data / "lightning_logs"
    main([*args, "--trainer.max_epochs", "3", "--experiment", "whole"])
    main([*args, "--trainer.max_epochs", "2", "--experiment", "part"])
    part = str(logs / "part" / "version_0" / "checkpoints" / "last.ckpt")
    main([*args, "--trainer.max_epochs", "3", "--experiment", "resumed", "--ckpt_path", part])
    _assert_same_state(_load(logs, "whole")["state_dict"], _load(logs, "resumed")["state_dict"])
    # negative control: without the saved states the resumed run draws other numbers
    monkeypatch.setattr(RNGStateCallback, "load_state_dict", lambda self, state: None)
    main([*args, "--trainer.max_epochs", "3", "--experiment", "forgetful", "--ckpt_path", part])
    assert not torch.equal(_load(logs, "whole")["state_dict"]["net.W1"], _load(logs, "forgetful")["state_dict"]["net.W1"])


# ------------------------------------------------------------------ 5. checkpoints from elsewhere
@pytest.mark.slow
def test_architecture_mismatch_names_both_shapes(runs):
    logs, _ = runs
    path = logs / "a" / "version_0" / "checkpoints" / "last.ckpt"  # hidden_layers [16]
    with pytest.raises(ConfigError, match=r"net.W1 has shape \(16, 784\) in the checkpoint but \(8, 784\)"):
        MLPClassifier.load_from_checkpoint(path, hidden_layers=[8], weights_only=True)
    with pytest.raises(ConfigError, match=r"net.W2 has shape \(10, 16\) in the checkpoint but \(8, 16\)"):
        MLPClassifier.load_from_checkpoint(path, hidden_layers=[16, 8], weights_only=True)
    with pytest.raises(ConfigError, match="lacks net.W3, net.b3"):  # same shapes so far, one layer more
        MLPClassifier.load_from_checkpoint(path, hidden_layers=[16, 10], weights_only=True)


class _RunsCode:
    def __reduce__(self):
        return (os.makedirs, ("pwned",))


def test_checkpoint_cannot_run_code(fake_data, capsys):
    torch.save({"state_dict": {}, "payload": _RunsCode()}, fake_data / "evil.ckpt")
    status, err = run_cli(["fit", *TINY, "--ckpt_path", "evil.ckpt"], capsys)
    assert status == 2 and len(err) == 1 and "evil.ckpt" in err[0] and "weights_only" in err[0], err
    assert not (fake_data / "pwned").exists()
    assert not (fake_data / "lightning_logs").exists()


# ------------------------------------------------------------------ files that are not what they should be
def _foreign_files(root: Path) -> None:
    torch.save({"a": 1}, root / "dict.ckpt")
    torch.save(torch.zeros(3), root / "tensor.ckpt")
    torch.save({"pytorch-lightning_version": "2.6.0", "epoch": 1}, root / "nostate.ckpt")
    (root / "text.ckpt").write_text("hello\n")
    (root / "binary.ckpt").write_bytes(bytes(range(256)))
    (root / "runs" / "checkpoints").mkdir(parents=True)
    torch.save({"a": 1}, root / "runs" / "checkpoints" / "last.ckpt")


FOREIGN = [
    ("dict.ckpt", "error: checkpoint dict.ckpt is not a Lightning checkpoint: it is a dict with the keys 'a' and lacks "
     "'state_dict', 'pytorch-lightning_version'; give a .ckpt that python -m src.train fit wrote"),
    ("tensor.ckpt", "error: checkpoint tensor.ckpt holds a tensor of shape (3,) that torch.save wrote, not a Lightning checkpoint"),
    ("nostate.ckpt", "error: checkpoint nostate.ckpt is not a Lightning checkpoint: it is a dict with the keys "
     "'pytorch-lightning_version', 'epoch' and lacks 'state_dict'"),
    ("text.ckpt", "error: checkpoint text.ckpt cannot be loaded: it is a text file (it starts with 'hello'), not a PyTorch checkpoint"),
    ("binary.ckpt", "error: checkpoint binary.ckpt cannot be loaded: it is a binary file in another format, not a PyTorch checkpoint"),
    ("runs", f"error: --ckpt_path='runs' is a folder, not a checkpoint file; give a .ckpt file, e.g. --ckpt_path "
     f"{Path('runs/checkpoints/last.ckpt')}"),
]  # fmt: skip


@pytest.mark.parametrize("name,line", FOREIGN, ids=[n for n, _ in FOREIGN])
def test_a_file_that_is_no_lightning_checkpoint_is_named(name, line, fake_data, capsys):
    """Regression: a torch.save'd dict or tensor was a KeyError traceback; a folder "no such file"; a text file "KeyError: 101"."""
    _foreign_files(fake_data)
    status, err = run_cli(["fit", *TINY, "--ckpt_path", name], capsys)
    assert status == 2 and len(err) == 1 and err[0].startswith(line), err
    assert not (fake_data / "lightning_logs").exists()


def test_loading_a_checkpoint_without_weights_from_python_says_so(fake_data):
    torch.save({"pytorch-lightning_version": "2.6.0", "hyper_parameters": {}}, fake_data / "nostate.ckpt")
    with pytest.raises(ConfigError, match="holds no 'state_dict': it is not a Lightning checkpoint"):
        MLPClassifier.load_from_checkpoint(fake_data / "nostate.ckpt", hidden_layers=[8])


