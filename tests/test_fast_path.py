"""The optimized training path gives the same parameters as the straightforward one, to the last bit.

Optimized (what ``python -m src.train fit`` runs in one process): Lightning's Trainer with manual
optimization (``manual_backward``, then the optimizer's public ``step`` and ``zero_grad``), the whole
net as one hand-derived node (``FeedForward``) writing into a reused ``Workspace``, and GD / Adam's
foreach form.
Straightforward: a bare loop over the same samples, the per-op chain of Functions, and
``zero_grad`` / ``backward`` / ``step`` written out.

Under DDP the same step all-reduces the gradients inside ``manual_backward`` (no workspace there):
a 2-process run is checked against the straightforward loop over the whole batch.
"""

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from src.data.mnist import TensorBatches
from src.hand.fused import Workspace
from src.system.module import MLPClassifier
from tests.fakedata import write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]
ARCH = dict(inputs=20, hidden_layers=[16, 8], outputs=10)


class _DM(pl.LightningDataModule):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def train_dataloader(self):
        return TensorBatches(self.x, self.y, 16, shuffle=True, seed=7, trainer=self.trainer)


class _FastPathProbe(pl.Callback):
    """Records, at every optimizer step, that it runs through Lightning's public step with the workspace on.

    Lightning calls ``on_before_optimizer_step`` from inside ``LightningOptimizer.step`` (its
    precision plugin, right before the update): one call per step taken that way.
    """

    def __init__(self):
        self.seen = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.seen.append(isinstance(pl_module.net.workspace, Workspace))


def _straightforward(setting, x, y, epochs, batch=16, seed=7):
    """The reference: per-op Functions, zero_grad / backward / step, the same sample order."""
    torch.manual_seed(1)
    slow = MLPClassifier(**ARCH, **setting)
    slow.net.fused = False  # the per-op chain of Functions instead of the one-node net
    config = slow.configure_optimizers()
    opt, scheduler = (config, None) if not isinstance(config, dict) else (config["optimizer"], None)
    if isinstance(config, dict):  # no trainer here: the schedule over the run's epochs, as the module's
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    onehot = torch.nn.functional.one_hot(y, 10).float()
    order = TensorBatches(x, y, batch, shuffle=True, seed=seed)
    for epoch in range(epochs):
        idx = order.order(epoch)
        for i in range(0, len(idx), batch):
            b = idx[i : i + batch]
            opt.zero_grad()
            slow.compute_loss(x[b], onehot[b], y[b])[0].backward()
            opt.step()
        if scheduler is not None:
            scheduler.step()
    return slow


@pytest.mark.parametrize(
    "setting",
    [
        dict(activation="sigmoid", optimizer="gd", lr=0.3),
        dict(activation="relu", optimizer="adam", lr=0.01),
        dict(activation="relu", optimizer="adam", lr=0.01, regularization="l2", alpha=0.01),
        dict(activation="tanh", optimizer="gd", lr=0.1, loss="mse"),
        dict(activation="tanh", optimizer="adam", lr=0.01, lr_schedule="cosine"),
        dict(activation="relu", optimizer="adam", lr=0.01, dropout=0.3),  # the same masks on both paths
    ],
    ids=["sigmoid-gd", "relu-adam", "relu-adam-l2", "tanh-gd-mse", "tanh-adam-cosine", "relu-adam-dropout"],
)
def test_trainer_path_equals_straightforward_loop(setting):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100, ARCH["inputs"], generator=gen)
    y = torch.randint(10, (100,), generator=gen)
    epochs = 3

    torch.manual_seed(1)
    fast = MLPClassifier(**ARCH, **setting)
    start = [p.detach().clone() for p in fast.parameters()]
    probe = _FastPathProbe()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[probe],
    )  # fmt: skip
    trainer.fit(fast, datamodule=_DM(x, y))
    assert trainer.global_step == epochs * 7  # ceil(100 / 16) steps per epoch, counted by Lightning
    assert probe.seen == [True] * (epochs * 7)  # every step: Lightning's public step, the workspace on
    # after fit: fresh tensors again (evaluation and a later backward are ordinary)
    assert fast.net.workspace is None

    slow = _straightforward(setting, x, y, epochs)
    for a, b, s in zip(fast.parameters(), slow.parameters(), start):
        assert torch.equal(a, b)  # to the last bit
        assert not torch.equal(a, s)


@pytest.mark.parametrize("strategy", ["ddp", "single"])
def test_workspace_only_where_one_process_trains(strategy):
    """The buffers only in one fp32 process; every step, DDP's too, updates after the whole backward."""
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy="ddp" if strategy == "ddp" else "auto", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    model = MLPClassifier(**ARCH, optimizer="adam", lr=0.01)
    trainer.strategy.connect(model)
    model.trainer = trainer
    model.on_train_start()
    assert (model.net.workspace is not None) is (strategy == "single")
    model.on_train_end()
    assert model.net.workspace is None
    assert all(not p._post_accumulate_grad_hooks for p in model.parameters())  # no update inside backward


@pytest.mark.slow
def test_ddp_two_processes_with_adam_equal_the_straightforward_loop(tmp_path):
    """2 processes × batch 32 (gloo) end where the per-op bare loop over batch 64 ends (Adam)."""
    write_fake_mnist(tmp_path / "data", n_train=229, n_test=50)  # 128 training samples: 2 steps per epoch
    args = ["fit", "--data.data_dir", "data", "--data.val_size", "101", "--data.eval_batch_size", "101",
            "--model.hidden_layers", "[16,8]", "--model.optimizer", "adam", "--model.lr", "0.01",
            "--model.activation", "relu", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--data.batch_size", "32", "--trainer.strategy", "ddp",
            "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--experiment", "ddp"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, "-m", "src.train", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    ckpt = torch.load(next((tmp_path / "lightning_logs" / "ddp").glob("version_*/checkpoints/last.ckpt")),
                      weights_only=False)  # fmt: skip
    assert ckpt["global_step"] == 4

    # the same split and standardization as the data module, then the straightforward loop
    from src.data.mnist import MNISTDataModule

    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), val_size=101, seed=0)
    dm.setup("fit")
    x, y = dm.splits["train"]
    setting = dict(activation="relu", optimizer="adam", lr=0.01)
    arch = dict(ARCH, inputs=784, hidden_layers=[16, 8])
    torch.manual_seed(0)
    slow = MLPClassifier(**arch, **setting)
    slow.net.fused = False
    opt = slow.configure_optimizers()
    onehot = torch.nn.functional.one_hot(y, 10).float()
    order = TensorBatches(x, y, 64, shuffle=True, seed=0)
    for epoch in range(2):
        idx = order.order(epoch)
        for i in range(0, len(idx), 64):
            # DDP's rank r takes positions r, r+2, …: together one batch of 64, in another order
            b = idx[i : i + 64]
            opt.zero_grad()
            slow.compute_loss(x[b], onehot[b], y[b])[0].backward()
            opt.step()
    for name, p in slow.named_parameters():
        # the all-reduce averages two half-batch gradients: equal up to float rounding, not bit for bit
        torch.testing.assert_close(ckpt["state_dict"][name], p.detach(), rtol=1e-4, atol=1e-5, msg=name)
