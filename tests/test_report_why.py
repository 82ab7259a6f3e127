"""REPORT.md's comparison figure and "why the activations differ" section, from two tiny real runs."""

import pytest
import torch
from PIL import Image

from src.report import main as report_main
from src.instruments.why import read_diagnostics
from src.train import main as train_main
from tests.fakedata import write_fake_mnist

TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100",
        "--trainer.enable_progress_bar", "false", "--model.hidden_layers", "[16, 12]", "--trainer.max_epochs", "2",
        "--model.lr", "0.01"]  # fmt: skip


@pytest.fixture
def runs(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "data", n_train=600, n_test=200)
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for act in ("sigmoid", "relu"):
        train_main(["fit", *TINY, "--experiment", f"course_{act}", "--model.activation", act])
    yield tmp_path
    torch.set_num_threads(before)


def test_report_has_accuracy_figure_and_why_section(runs, capsys):
    report_main(["--out", "reports"])  # only a full --run writes the tracked reports/ by default
    md = (runs / "reports" / "REPORT.md").read_text()
    assert "![validation accuracy per epoch, every experiment](val_accuracy.png)" in md
    assert "## Why the activations differ" in md and "(why_activations.png)" in md
    for name in ("val_accuracy", "why_activations"):
        with Image.open(runs / "reports" / f"{name}.png") as im:
            assert im.format == "PNG"
    why = md.split("## Why the activations differ")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in why.splitlines() if line.startswith("| course_")}
    assert set(rows) == {"course_sigmoid", "course_relu"}
    sig = read_diagnostics(runs / "lightning_logs" / "course_sigmoid" / "version_0")
    assert f"| {sig.val_acc[0]:.4f} | {sig.val_acc[-1]:.4f} |" in rows["course_sigmoid"]
    assert "saturated" in rows["course_sigmoid"] and "dead" in rows["course_relu"]
    assert "**Vanishing gradient.**" in why  # the sentences that read the figure
    # the course report's figure beside its settings' run in the main table
    assert "(0.86)" in md.split("| course_sigmoid")[1].splitlines()[0]
