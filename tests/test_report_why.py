"""REPORT.md's comparison figure and "why the activations differ" section, from two tiny real runs."""

import json
import shutil

import pytest
import torch
from PIL import Image

from src.instruments import results as results_module
from src.instruments.figures import loss_figure
from src.instruments.why import Diagnostics, accuracy_figure

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


def test_seeded_experiments_are_one_band_each_and_the_why_compares_the_activations(runs, monkeypatch):
    """Regression: --seeds 3 drew one legend entry per run, and the "why" compared three seeds of one activation."""
    logs = runs / "lightning_logs"
    for name, source in (("sig", "course_sigmoid"), ("rel", "course_relu")):  # names that say no activation
        for seed in range(3):
            shutil.copytree(logs / source / "version_0", logs / name / f"version_{seed}")
            path = logs / name / f"version_{seed}" / "results.json"
            results = json.loads(path.read_text())
            results["config"]["seed_everything"] = seed
            path.write_text(json.dumps(results))
        shutil.rmtree(logs / source)
    figures = {}
    monkeypatch.setattr(results_module, "save_png", lambda fig, path: figures.__setitem__(path.name, fig))
    md = report_main(["--experiments", "sig:3", "rel:3", "--out", "rep"]).read_text()
    legend = [t.get_text() for t in figures["val_accuracy.png"].axes[0].get_legend().get_texts()]
    assert legend == ["sig (3 seeds)", "rel (3 seeds)"]  # one line (the mean) and band (± std) each
    assert "mean, and a band of ± one sample std" in figures["val_accuracy.png"].axes[0].get_title()
    assert "![gradient flow: sigmoid, ReLU](why_activations.png)" in md
    assert "Runs: `lightning_logs/sig/version_0`, `lightning_logs/rel/version_0`." in md  # each one's lowest seed
    why = md.split("## Why the activations differ")[1].split("\n## ")[0]
    assert "saturated" in next(line for line in why.splitlines() if line.startswith("| sig "))
    assert "dead" in next(line for line in why.splitlines() if line.startswith("| rel "))


def _diag(val_acc):
    d = object.__new__(Diagnostics)  # only what the accuracy figure reads
    d.val_acc = val_acc
    return d


def test_a_line_equal_to_another_is_drawn_on_it_and_said():
    """Regression: package (the twin, equal to baseline) hid baseline's line."""
    fig = accuracy_figure(["baseline", "package", "relu"], [_diag([0.9, 0.95]), _diag([0.9, 0.95]), _diag([0.92, 0.96])])
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["baseline", "package (= baseline, drawn on it)", "relu"]
    base, package, relu = ax.get_lines()
    assert package.get_linestyle() == ":" and base.get_linewidth() > 2 * package.get_linewidth()
    assert relu.get_linewidth() == package.get_linewidth()  # lines equal to no other are drawn as usual


@pytest.mark.parametrize("epochs", [1, 2, 15])
def test_epoch_axes_have_whole_epochs(epochs):
    """Regression: a 1-epoch run's loss figure had x-ticks 0.945 … 1.050."""
    for fig in (loss_figure("x", list(range(1, epochs + 1)), [0.5] * epochs, [0.4] * epochs, "cross_entropy"),
                accuracy_figure(["x"], [_diag([0.9] * epochs)])):  # fmt: skip
        ax = fig.axes[0]
        fig.canvas.draw()
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(t == int(t) for t in ticks), ticks
