"""Every config in configs/ through the real CLI entry on tiny synthetic data; the real-data check."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from src.train import main
from tests.conftest import needs_real_mnist
from tests.fakedata import write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TINY = ["--data.val_size", "100", "--data.eval_batch_size", "100", "--trainer.enable_progress_bar", "false"]


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "data", n_train=600, n_test=200)
    monkeypatch.chdir(tmp_path)  # lightning_logs/ goes to the temporary folder
    return tmp_path


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and "class_path" not in v:
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_trains_through_cli(config, fake_data):
    main(["fit", "--config", str(config), "--data.data_dir", "data", "--trainer.max_epochs", "2", *TINY])
    runs = list((fake_data / "lightning_logs" / config.stem).glob("version_*"))
    assert len(runs) == 1
    run = runs[0]
    results = json.loads((run / "results.json").read_text())
    assert set(results) >= {"train", "val", "test", "wall_time_s", "config"}
    assert results["train"]["report"]["macro avg"]["support"] == 500
    assert results["test"]["report"]["macro avg"]["support"] == 200
    assert set(results["val"]) >= {"loss", "accuracy"}
    assert 0 <= results["test"]["accuracy"] <= 1 and results["wall_time_s"] > 0
    # the run used what the YAML says
    used = dict(_flatten(results["config"]))
    for key, value in _flatten(yaml.safe_load(config.read_text()) or {}):
        if key != "trainer.max_epochs":  # the test's own --trainer.max_epochs 2 comes last and wins
            assert used[key] == value, key
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "train_report.txt").read_text().splitlines()[0].split() == ["precision", "recall", "f1-score", "support"]
    assert list(run.glob("events.out.tfevents.*"))


def test_defaults_are_the_course_reports_baseline():
    cfg = main([], run=False).config  # run=False: no subcommand, just the parsed defaults
    m = cfg["model"]
    assert (m.implementation, m.hidden_layers, m.activation, m.output_activation, m.loss) == (
        "custom", [500, 250, 100], "sigmoid", "softmax", "cross_entropy"
    )  # fmt: skip
    assert (m.optimizer, m.initialization, m.regularization) == ("gd", "glorot", "none")
    assert cfg["data"].batch_size == 64 and cfg["trainer"].max_epochs == 15


@pytest.mark.slow
def test_learns_the_synthetic_task_and_resumes(fake_data):
    args = ["fit", "--data.data_dir", "data", "--model.activation", "relu", "--model.optimizer", "adam",
            "--model.lr", "0.003", "--experiment", "r", *TINY]  # fmt: skip
    main([*args, "--trainer.max_epochs", "3"])
    run = fake_data / "lightning_logs" / "r" / "version_0"
    assert json.loads((run / "results.json").read_text())["test"]["accuracy"] > 0.9
    main([*args, "--trainer.max_epochs", "4", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    resumed = json.loads((fake_data / "lightning_logs" / "r" / "version_1" / "results.json").read_text())
    assert resumed["epochs"] == 4


@pytest.mark.slow
@needs_real_mnist
def test_real_mnist_relu_adam_one_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--data.data_dir", str(ROOT / "data"), "--model.activation", "relu", "--model.optimizer", "adam",
          "--model.lr", "0.001", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
          "--experiment", "real"])  # fmt: skip
    results = json.loads(next((tmp_path / "lightning_logs" / "real").glob("version_*/results.json")).read_text())
    assert results["test"]["accuracy"] >= 0.95
    assert results["test"]["report"]["macro avg"]["support"] == 10000
    assert results["train"]["report"]["macro avg"]["support"] == 50000


@pytest.mark.slow
def test_after_fit_report_uses_the_best_checkpoint_not_the_last(fake_data):
    """A learning rate this large makes validation accuracy peak early; every split of the
    after-fit report must come from that best checkpoint, not from the last weights."""
    cli = main(["fit", "--data.data_dir", "data", "--model.lr", "8.0", "--trainer.max_epochs", "6",
                "--experiment", "peak", *TINY])  # fmt: skip
    results = json.loads(next((fake_data / "lightning_logs" / "peak").glob("version_*/results.json")).read_text())
    best = torch.load(results["best_checkpoint"], weights_only=False)
    assert Path(results["best_checkpoint"]).name != "best-epoch05.ckpt"  # the best is not the last epoch
    score = next(v for k, v in best["callbacks"].items() if "Checkpoint" in k)["best_model_score"]
    assert results["val"]["accuracy"] == pytest.approx(float(score), abs=1e-7)
    for name, value in cli.model.state_dict().items():
        if name in best["state_dict"]:
            assert torch.equal(value, best["state_dict"][name]), name
