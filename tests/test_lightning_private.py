"""src.system.lightning_private: inside the tested Lightning range the private paths; outside it the
public path or one warning, never another step count or other weights.

"Outside the range" is made by monkeypatching ``lightning.__version__``, which the module reads on
every use.
"""

import re
import warnings
from pathlib import Path

import lightning
import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from src.system import lightning_private as LP
from src.system.callbacks import ResumableModelCheckpoint
from src.system.module import MLPClassifier
from tests.test_fast_path import ARCH, _DM

ROOT = Path(__file__).resolve().parents[1]
SCHEDULER_WARNING = "lr_scheduler.step()` before `optimizer.step()"


@pytest.fixture
def outside(monkeypatch):
    """A Lightning outside the tested range (each test sees its own first warning)."""
    monkeypatch.setattr(lightning, "__version__", "2.7.0")
    monkeypatch.setattr(LP, "_warned", set())


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(100, ARCH["inputs"], generator=gen), torch.randint(10, (100,), generator=gen)


def _fit(setting, epochs=2, callbacks=(), **trainer_kw):
    torch.manual_seed(1)
    model = MLPClassifier(**ARCH, **setting)
    kw = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0)  # fmt: skip
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", callbacks=list(callbacks), **{**kw, **trainer_kw})
    trainer.fit(model, datamodule=_DM(*_data()))
    return trainer, model


@pytest.mark.parametrize(
    "version,inside",
    [("2.6.6", True), ("2.6.9", True), ("2.6.7.post1", True), ("2.6.5", False), ("2.7.0rc1", False),
     ("2.7.0", False), ("3.0.0", False)],  # fmt: skip
)
def test_tested_range(monkeypatch, version, inside):
    monkeypatch.setattr(lightning, "__version__", version)
    assert LP.in_tested_range() is inside


def test_the_pinned_lightning_is_inside_the_range():
    assert LP.in_tested_range(), f"lightning {lightning.__version__}: re-test src/system/lightning_private.py"


def _count_public_steps(monkeypatch) -> list:
    calls = []
    public = LightningOptimizer.step

    def counting(self, *args, **kwargs):
        calls.append(1)
        return public(self, *args, **kwargs)

    monkeypatch.setattr(LightningOptimizer, "step", counting)
    return calls


SETTINGS = [
    dict(activation="sigmoid", optimizer="gd", lr=0.3),
    dict(activation="relu", optimizer="adam", lr=0.01, lr_schedule="cosine"),
    dict(implementation="sequential", activation="tanh", optimizer="gd", lr=0.1),  # torch.optim
]


@pytest.mark.parametrize("setting", SETTINGS, ids=["gd", "adam-cosine", "twin-sgd"])
def test_every_step_is_lightnings_public_step_inside_and_outside_the_range(monkeypatch, setting):
    calls = _count_public_steps(monkeypatch)
    inside, model_in = _fit(setting)
    assert inside.global_step == 2 * 7 and len(calls) == 2 * 7  # the public LightningOptimizer.step, counted
    monkeypatch.setattr(lightning, "__version__", "2.7.0")
    outside, model_out = _fit(setting)
    assert outside.global_step == 2 * 7 and len(calls) == 2 * 2 * 7
    for a, b in zip(model_in.parameters(), model_out.parameters()):
        assert torch.equal(a, b)  # the same training to the last bit


class _ForgetRawStep(pl.Callback):
    """Clears torch's "the optimizer stepped" flag after each step, as if the raw step had never run."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer.optimizers[0]._opt_called = False


def test_no_scheduler_warning():
    setting = dict(activation="sigmoid", optimizer="gd", lr=0.3, lr_schedule="cosine")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, model = _fit(setting, epochs=3)
    assert model.lr_schedulers().last_epoch == 3  # the schedule stepped every epoch
    assert not [w for w in caught if SCHEDULER_WARNING in str(w.message)]


def test_the_scheduler_warning_is_real_when_the_raw_step_is_not_seen():
    """The negative control of the test above: when torch does not see the raw step, it warns."""
    setting = dict(activation="sigmoid", optimizer="gd", lr=0.3, lr_schedule="cosine")
    with pytest.warns(UserWarning, match=re.escape(SCHEDULER_WARNING)):
        _fit(setting, epochs=2, callbacks=[_ForgetRawStep()])


def test_outside_the_range_last_ckpt_is_lightnings_own(outside, tmp_path):
    with pytest.warns(UserWarning, match="outside the range .* last.ckpt is written only when Lightning writes it"):
        assert LP.last_checkpoint_due(object(), None, True) is False  # no private member touched
    ckpt = ResumableModelCheckpoint(dirpath=tmp_path, save_last=True)  # no monitor: a save every epoch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = _fit(dict(optimizer="gd", lr=0.1), callbacks=[ckpt], enable_checkpointing=True)
    assert not [w for w in caught if "outside the range" in str(w.message)]  # warned once per process
    assert trainer.global_step == 14
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 14


def test_ddp_start_method(outside, monkeypatch):
    assert LP.ddp_start_method(SingleDeviceStrategy("cpu")) == "popen"  # one process: no warning needed
    spawn = DDPStrategy(start_method="spawn")
    with pytest.warns(UserWarning, match="fit cannot tell ddp_spawn"):
        assert LP.ddp_start_method(spawn) == "popen"
    monkeypatch.setattr(lightning, "__version__", "2.6.6")
    assert LP.ddp_start_method(spawn) == "spawn"
    assert LP.ddp_start_method(DDPStrategy()) == "popen"


def test_initial_hparams(outside, monkeypatch):
    model = MLPClassifier(**ARCH)
    with pytest.warns(UserWarning, match="hparams.yaml keeps the values"):
        assert LP.initial_hparams(model) == {}
    monkeypatch.setattr(lightning, "__version__", "2.6.6")
    LP.initial_hparams(model)["lr"] = 0.5
    assert model.hparams_initial["lr"] == 0.5  # the dict Lightning writes to hparams.yaml


# Lightning's and torch's private names that this project has touched; only lightning_private.py
# may name them (as an attribute or a string) under src/.
PRIVATE_NAMES = [
    "_on_before_step", "_on_after_step", "_current_fx_name", "_should_skip_saving_checkpoint",
    "_should_save_on_train_epoch_end", "_last_checkpoint_saved", "_last_global_step_saved",
    "_save_last_checkpoint", "_monitor_candidates", "_get_next_version", "_start_method", "_hparams_initial",
    "_trainer", "_lightning_optimizers", "_opt_called",
]  # fmt: skip


def test_private_names_only_in_lightning_private():
    offenders = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "src/system/lightning_private.py":
            continue
        text = path.read_text()
        for name in PRIVATE_NAMES:
            if re.search(rf"[.'\"]{name}\b", text):
                offenders.append(f"{rel}: {name}")
    assert offenders == []
