"""Exact resume: a run with dropout and augmentation, and one with the levers (moving average, label
smoothing, max-norm), interrupted and resumed, ends bit for bit where the uninterrupted run does.

More resumes: a killed run and the random states (tests/test_reliability.py), a ``--trainer.max_time``
stop mid-epoch (tests/test_trainer_flags.py), a chain of resumed runs reported whole (tests/test_report_resumed.py).
"""

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from src.train import main
from tests.fakedata import write_fake_mnist

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
RUN = ["fit", "--data.data_dir", "data", "--data.val_size", "200", "--data.eval_batch_size", "200", *QUIET,
       "--model.hidden_layers", "[32, 16]", "--model.activation", "relu", "--model.optimizer", "adam",
       "--model.lr", "0.003", "--model.lr_schedule", "cosine", "--trainer.max_epochs", "4",
       "--model.dropout", "0.3", "--data.augment", "true", "--data.augment_elastic_alpha", "20"]  # fmt: skip


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "data", n_train=800, n_test=200, gz=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["python"])  # else LightningCLI warns (on stderr) that args= overrides pytest's argv
    return tmp_path


class Interrupt(Exception):
    pass


class StopAtEpoch2(Callback):
    """Stop the run as a crash would, once epoch 1's checkpoint is written."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            raise Interrupt


def _ckpt(root, name):
    return torch.load(root / "lightning_logs" / name / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)


def _results(root, name):
    r = json.loads((root / "lightning_logs" / name / "version_0" / "results.json").read_text())
    return {k: r[k] for k in ("train", "val", "test", "epochs")}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-for-bit comparisons need the same summation order in every run
    yield
    torch.set_num_threads(threads)


def test_interrupted_run_with_dropout_and_augmentation_resumes_bit_for_bit(fake_data, one_thread):
    main([*RUN, "--experiment", "whole"])
    with pytest.raises(Interrupt):
        main([*RUN, "--experiment", "cut", "--trainer.callbacks+=tests.test_resume.StopAtEpoch2"])
    cut = fake_data / "lightning_logs" / "cut" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(cut, weights_only=True)
    assert saved["epoch"] == 1 and saved["dropout_masks"]["state"] is not None
    main([*RUN, "--experiment", "resumed", "--ckpt_path", str(cut)])
    whole, resumed = _ckpt(fake_data, "whole"), _ckpt(fake_data, "resumed")
    assert whole["state_dict"].keys() == resumed["state_dict"].keys()
    for k, v in whole["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    assert torch.equal(whole["dropout_masks"]["state"], resumed["dropout_masks"]["state"])
    assert _results(fake_data, "whole") == _results(fake_data, "resumed")

    # negative control: without the masks' state the resumed run draws other masks and ends elsewhere
    del saved["dropout_masks"]
    torch.save(saved, fake_data / "no_masks.ckpt")
    main([*RUN, "--experiment", "no_masks", "--ckpt_path", str(fake_data / "no_masks.ckpt")])
    other = _ckpt(fake_data, "no_masks")["state_dict"]
    assert not torch.equal(other["net.W1"], whole["state_dict"]["net.W1"])

    # and the augmentation is really on: the same run without it ends elsewhere too
    main([*RUN, "--data.augment", "false", "--experiment", "plain"])
    assert not torch.equal(_ckpt(fake_data, "plain")["state_dict"]["net.W1"], whole["state_dict"]["net.W1"])


LEVERS = ["--model.ema_decay", "0.9", "--model.label_smoothing", "0.1", "--model.max_norm", "2.0"]


@pytest.mark.parametrize("implementation", ["custom", "sequential"])
def test_interrupted_run_with_the_levers_resumes_bit_for_bit(implementation, fake_data, one_thread):
    # the levers all on: the average (AveragedModel in the state_dict), the smoothed loss, the max-norm
    run = [*RUN, *LEVERS, "--model.implementation", implementation]
    main([*run, "--experiment", "whole"])
    with pytest.raises(Interrupt):
        main([*run, "--experiment", "cut", "--trainer.callbacks+=tests.test_resume.StopAtEpoch2"])
    cut = fake_data / "lightning_logs" / "cut" / "version_0" / "checkpoints" / "last.ckpt"
    main([*run, "--experiment", "resumed", "--ckpt_path", str(cut)])
    whole, resumed = _ckpt(fake_data, "whole")["state_dict"], _ckpt(fake_data, "resumed")["state_dict"]
    assert whole.keys() == resumed.keys() and "averaged.n_averaged" in whole
    for k, v in whole.items():
        assert torch.equal(v, resumed[k]), k
    assert _results(fake_data, "whole") == _results(fake_data, "resumed")
    averaged = [k for k in whole if k.startswith("averaged.module.")]
    assert averaged and any(not torch.equal(whole[k], whole[k.replace("averaged.module.", "net.")]) for k in averaged)
    r = json.loads((fake_data / "lightning_logs" / "whole" / "version_0" / "results.json").read_text())
    assert r["evaluated_weights"] == "the exponential moving average of the weights (decay 0.9)"
