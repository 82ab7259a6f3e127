"""python -m src.report --run --seeds N: every config once per seed, and the mean ± std table."""

import json
import re
import shutil
import statistics

import pytest
import torch

from src.instruments.results import latest_runs_per_seed
from src.report import main as report_main

from tests.fakedata import write_fake_mnist

TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100",
        "--trainer.enable_progress_bar", "false", "--trainer.limit_train_batches", "3", "--trainer.max_epochs", "1"]  # fmt: skip


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "data", n_train=600, n_test=200)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.yaml").write_text("model:\n  activation: relu\n  hidden_layers: [16]\n  dropout: 0.2\n  lr: 0.01\n")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(before)


def test_run_with_seeds_reports_mean_and_std(tiny, capsys):
    report = report_main(["--run", "--seeds", "3", "--configs", "small.yaml", "--", *TINY])
    runs = sorted((tiny / "lightning_logs" / "small").glob("version_*"))
    results = [json.loads((r / "results.json").read_text()) for r in runs]
    assert [r["config"]["seed_everything"] for r in results] == [0, 1, 2]
    acc = [r["test"]["accuracy"] for r in results]
    assert len({r["test"]["loss"] for r in results}) == 3  # the seeds really differ
    text = report.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| small | relu"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == "0.2" and cells[8] == "0, 1, 2"
    assert cells[11] == f"{statistics.mean(acc):.4f} ± {statistics.stdev(acc):.4f}"
    assert text.count("## small") == 1 and "(seed 0)" in text  # figures of one run per experiment

    # without --run: the latest finished run of each seed, found again from the folders
    assert latest_runs_per_seed(tiny / "lightning_logs", 3) == runs
    assert latest_runs_per_seed(tiny / "lightning_logs", 2) == runs[:2]
    assert report_main(["--seeds", "3"]).read_text() == text


def test_seeds_must_be_positive(tiny, capsys):
    with pytest.raises(SystemExit):
        report_main(["--run", "--seeds", "0"])
    assert "--seeds=0 is not allowed" in capsys.readouterr().err


def test_a_report_says_when_its_runs_are_not_the_seeds_asked_for(tiny, capsys):
    """Regression: the README's version folders mixed seed 0 three times with seeds 1–2, silently."""
    report_main(["--run", "--seeds", "2", "--configs", "small.yaml", "--", *TINY])
    logs = tiny / "lightning_logs" / "small"
    shutil.copytree(logs / "version_0", logs / "version_2")  # seed 0 again, as a later run
    capsys.readouterr()
    text = report_main(["--runs", *(str(logs / f"version_{i}") for i in (0, 1, 2)), "--out", "mixed"]).read_text()
    note = "small: 3 runs, seeds 0, 1, 0: seed 0 2 times; these are not 3 seeds, so each run is shown alone, without mean ± std"
    assert f"note: {note}" in capsys.readouterr().out and f"**Note:** {note}." in text
    assert "Mean ± sample standard deviation" not in text  # no mean ± std over a seed counted twice

    # asked for by what they are: the latest finished run of each seed of the experiment
    text = report_main(["--experiments", "small:3", "--out", "picked"]).read_text()
    note = "small: asked for seeds 0–2, but 2 has no finished run; reported: seeds 0, 1"
    assert f"note: {note}" in capsys.readouterr().out and f"**Note:** {note}." in text
    row = next(line for line in text.splitlines() if line.startswith("| small | relu"))
    assert [c.strip() for c in row.strip("|").split("|")][8] == "0, 1"
    assert "small/version_2" in text and "small/version_0" not in text  # seed 0's latest run

    # the same folder reported again: the figures of the report it replaces that it no longer shows are gone
    assert (tiny / "mixed" / "small_version_2_loss.png").is_file()
    text = report_main(["--experiments", "small:2", "--out", "mixed"]).read_text()
    shown = set(re.findall(r"\]\(([\w.-]+\.png)\)", text))
    assert {p.name for p in (tiny / "mixed").glob("*.png")} == shown and "small_loss.png" in shown

    # runs of one experiment that differ in more than the seed are said to
    results = json.loads((logs / "version_1" / "results.json").read_text())
    results["config"]["model"]["lr"] = 0.5
    (logs / "version_1" / "results.json").write_text(json.dumps(results))
    text = report_main(["--experiments", "small:2", "--out", "differ"]).read_text()
    assert "**Note:** small: its runs differ in more than the seed (model.lr: 0.01, 0.5)." in text
