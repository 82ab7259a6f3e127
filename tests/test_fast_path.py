"""The optimized training path gives the same parameters as the straightforward one.

Optimized: Lightning's Trainer with manual optimization and per-step logging thinned out, the
whole net as one hand-derived node (``FeedForward``), ``torch._foreach_*`` updates.
Straightforward: a bare loop over the same samples, the per-op chain of Functions, and
``zero_grad`` / ``backward`` / ``step`` written out.
"""

import lightning.pytorch as pl
import pytest
import torch

from src.data import TensorBatches
from src.module import MLPClassifier

ARCH = dict(inputs=20, hidden_layers=[16, 8], outputs=10)


class _DM(pl.LightningDataModule):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def train_dataloader(self):
        return TensorBatches(self.x, self.y, 16, shuffle=True, seed=7, trainer=self.trainer)


@pytest.mark.parametrize(
    "setting",
    [
        dict(activation="sigmoid", optimizer="gd", lr=0.3),
        dict(activation="relu", optimizer="adam", lr=0.01, regularization="l2", alpha=0.01),
        dict(activation="tanh", optimizer="gd", lr=0.1, loss="mse"),
        dict(activation="relu", optimizer="adam", lr=0.01, dropout=0.3),  # the same masks on both paths
    ],
    ids=["sigmoid-gd", "relu-adam-l2", "tanh-mse", "relu-adam-dropout"],
)
def test_trainer_path_equals_straightforward_loop(setting):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100, ARCH["inputs"], generator=gen)
    y = torch.randint(10, (100,), generator=gen)
    epochs = 3

    torch.manual_seed(1)
    fast = MLPClassifier(**ARCH, **setting)
    torch.manual_seed(1)
    slow = MLPClassifier(**ARCH, **setting)
    slow.net.fused = False  # the per-op chain of Functions instead of the one-node net
    start = [p.detach().clone() for p in fast.parameters()]

    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(fast, datamodule=_DM(x, y))
    assert trainer.global_step == epochs * 7  # ceil(100 / 16) steps per epoch

    opt = slow.configure_optimizers()
    onehot = torch.nn.functional.one_hot(y, 10).float()
    reference_order = TensorBatches(x, y, 16, shuffle=True, seed=7)
    for epoch in range(epochs):
        idx = reference_order.order(epoch)
        for i in range(0, len(idx), 16):
            b = idx[i : i + 16]
            opt.zero_grad()
            slow.compute_loss(x[b], onehot[b], y[b])[0].backward()
            opt.step()

    for a, b, s in zip(fast.parameters(), slow.parameters(), start):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a, s)
