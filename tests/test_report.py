"""The report (python -m src.report) from tiny real runs; the classification report against hand counts."""

import ast
import json
import os
import shutil
from fractions import Fraction as Fr
from pathlib import Path

import pytest
import torch
from PIL import Image

from src.system.metrics import build_report, format_report, report_metrics
from src.instruments.figures import DPI, FIGSIZE
from src.instruments.results import latest_runs, read_run
from src.report import main as report_main
from src.train import main as train_main
from tests.fakedata import write_fake_mnist

TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100",
        "--trainer.enable_progress_bar", "false", "--trainer.limit_train_batches", "3"]  # fmt: skip
PNG_SIZE = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"src.train", "src.verify", "src.report"}


def _imported(node: ast.AST, package: str) -> list[str]:
    """The modules an import statement of a module in ``package`` names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
    module = ".".join(p for p in (base, node.module) if p)
    return [module, *(f"{module}.{a.name}" for a in node.names)]  # `from .. import train` names a module too


def test_the_instruments_never_import_the_commands():
    # src/instruments/ holds the checks and the report's pieces; the commands import them, never the reverse
    # (an import inside a function counts too: ast.walk sees every statement)
    for path in sorted((ROOT / "src" / "instruments").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            assert not COMMANDS & set(_imported(node, "src.instruments")), f"{path.name}:{node.lineno}"
    # the check sees the kind of import it guards against
    assert "src.train" in _imported(ast.parse("from ..train import main").body[0], "src.instruments")
    assert "src.train" in _imported(ast.parse("from .. import train").body[0], "src.instruments")


# ---------------------------------------------------------------- classification report
# 4 classes, 10 images; per class (tp, fp, fn) counted by hand:
#   0: tp 2 (#0 #1), fp 1 (#7), fn 1 (#2)     1: tp 2 (#3 #4), fp 1 (#2), fn 0
#   2: tp 2 (#5 #6), fp 1 (#9), fn 2 (#7 #8)  3: tp 0, fp 1 (#8), fn 1 (#9)
TARGETS = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
PREDS = [0, 0, 1, 1, 1, 2, 2, 0, 3, 2]
HAND = {  # precision tp/(tp+fp), recall tp/(tp+fn), F1 2PR/(P+R), support
    "0": (Fr(2, 3), Fr(2, 3), Fr(2, 3), 3),
    "1": (Fr(2, 3), Fr(1), Fr(4, 5), 2),
    "2": (Fr(2, 3), Fr(1, 2), Fr(4, 7), 4),
    "3": (Fr(0), Fr(0), Fr(0), 1),
}


def test_classification_report_equals_hand_counts():
    metrics = report_metrics(num_classes=4)
    metrics.update(torch.tensor(PREDS), torch.tensor(TARGETS))
    report = build_report(metrics.compute())
    for name, (p, r, f1, support) in HAND.items():
        got = report["classes"][name]
        assert got["support"] == support
        assert got["precision"] == pytest.approx(float(p)) and got["recall"] == pytest.approx(float(r))
        assert got["f1"] == pytest.approx(float(f1))
    assert report["accuracy"] == pytest.approx(0.6)  # 6 of 10 on the diagonal
    for i, key in enumerate(("precision", "recall", "f1")):
        macro = sum(v[i] for v in HAND.values()) / 4
        weighted = sum(v[i] * v[3] for v in HAND.values()) / 10
        assert report["macro avg"][key] == pytest.approx(float(macro))
        assert report["weighted avg"][key] == pytest.approx(float(weighted))
    assert report["macro avg"]["support"] == report["weighted avg"]["support"] == 10
    assert report["confusion"] == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 1], [0, 0, 1, 0]]

    lines = [line.split() for line in format_report(report).splitlines()]
    assert lines[0] == ["precision", "recall", "f1-score", "support"]
    assert ["2", "0.67", "0.50", "0.57", "4"] in lines
    assert ["accuracy", "0.60", "10"] in lines
    assert ["macro", "avg", "0.50", "0.54", "0.51", "10"] in lines  # (2/3+1+1/2)/4 = 13/24; F1 (2/3+4/5+4/7)/4
    assert ["weighted", "avg", "0.60", "0.60", "0.59", "10"] in lines


# ------------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def trained_twice(tmp_path_factory):
    """Two tiny real runs ('baseline', which the course report has figures for, and 'mine'), trained once."""
    root = tmp_path_factory.mktemp("two_runs")
    write_fake_mnist(root / "data", n_train=600, n_test=200)
    old, before = os.getcwd(), torch.get_num_threads()
    os.chdir(root)
    torch.set_num_threads(1)  # tiny nets: one thread is fastest, and the shared CPU stays free
    try:
        train_main(["fit", *TINY, "--trainer.max_epochs", "2", "--experiment", "baseline"])
        train_main(["fit", *TINY, "--trainer.max_epochs", "3", "--experiment", "mine", "--model.activation", "relu",
                    "--model.optimizer", "adam", "--model.lr", "0.003"])  # fmt: skip
    finally:
        os.chdir(old)
        torch.set_num_threads(before)
    return root


@pytest.fixture
def two_runs(trained_twice, tmp_path, monkeypatch):
    """A fresh copy of the two runs for each test (the tests add folders and reports)."""
    shutil.copytree(trained_twice, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_report_from_two_tiny_runs(two_runs, capsys):
    logs = two_runs / "lightning_logs"
    # an unfinished later run (no results.json) is passed over
    (logs / "mine" / "version_1").mkdir()
    report_main([])
    # runs that happen to exist are not the configs' own: the tracked reports/ is left alone
    assert not (two_runs / "reports").exists()
    md = (two_runs / "lightning_logs" / "report" / "REPORT.md").read_text()
    assert "wrote lightning_logs/report/REPORT.md (2 runs: baseline, mine)" in capsys.readouterr().out
    assert md.count("Evaluated with the trained weights.") == 2  # each run's section says which weights

    table = md.split("\n## ")[0]  # the results table (the "why" section's table names the runs too)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()
            if line.startswith("| baseline") or line.startswith("| mine")}  # fmt: skip
    assert set(rows) == {"baseline", "mine"}
    header = [c.strip() for c in md.split("\n| experiment")[1].splitlines()[0].split("|")[1:-1]]
    for name, epochs in (("baseline", 2), ("mine", 3)):
        run = read_run(logs / name / "version_0")
        results = run.results
        row = dict(zip(header, rows[name]))
        assert run.epochs == list(range(1, epochs + 1)) and len(run.train_loss) == len(run.val_loss) == epochs
        assert row["epochs"] == str(epochs) and row["activation"] == results["config"]["model"]["activation"]
        assert row["final train loss"].startswith(f"{run.train_loss[-1]:.4f}")
        assert row["final val loss"].startswith(f"{run.val_loss[-1]:.4f}")
        assert row["test acc"].startswith(f"{results['test']['accuracy']:.4f}")
        assert row["test macro F1"] == f"{results['test']['report']['macro avg']['f1']:.4f}"
        # the per-class tables, in the course report's layout
        for split in ("train", "test"):
            assert format_report(results[split]["report"]).rstrip() in md
        for kind in ("loss", "confusion"):
            assert f"]({name}_{kind}.png)" in md
            with Image.open(two_runs / "lightning_logs" / "report" / f"{name}_{kind}.png") as im:
                assert im.format == "PNG" and im.size == PNG_SIZE
    # the course report's figures beside ours where it has them, not elsewhere
    assert rows["baseline"][header.index("test acc")].endswith("(0.86)")
    assert rows["baseline"][header.index("final train loss")].endswith("(0.4487)")
    assert "(" not in "".join(rows["mine"])
    assert md.count("precision    recall  f1-score   support") == 4


def test_report_picks_latest_runs_and_explicit_runs(two_runs, capsys):
    logs = two_runs / "lightning_logs"
    shutil.copytree(logs / "mine" / "version_0", logs / "mine" / "version_10")
    assert latest_runs(logs) == [logs / "baseline" / "version_0", logs / "mine" / "version_10"]
    runs = [str(logs / "mine" / "version_0"), str(logs / "mine" / "version_10")]
    report_main(["--runs", *runs, "--out", "out"])
    md = (two_runs / "out" / "REPORT.md").read_text()
    assert "## mine_version_0" in md and "## mine_version_10" in md and "## baseline" not in md
    assert (two_runs / "out" / "mine_version_10_confusion.png").is_file()
    # bad input: a clear message naming the folder, and no report written
    with pytest.raises(SystemExit):
        report_main(["--runs", str(logs / "baseline"), "--out", "bad"])
    assert "baseline is not a finished run: it has no results.json" in capsys.readouterr().err
    assert not (two_runs / "bad" / "REPORT.md").exists()


@pytest.mark.slow
def test_run_trains_the_configs_then_reports(tmp_path, monkeypatch, capsys):
    write_fake_mnist(tmp_path / "data", n_train=600, n_test=200)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "relu.yaml").write_text("model:\n  activation: relu\n  lr: 0.05\n")
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report_main(["--run", "--", *TINY, "--trainer.max_epochs", "1"])
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert "=== [1/1] relu: python -m src.train fit --config configs/relu.yaml" in out
    md = (tmp_path / "lightning_logs" / "report" / "REPORT.md").read_text()  # 1 epoch: not the tracked report
    assert not (tmp_path / "reports").exists()
    assert "## relu" in md and "| relu | custom | relu |" in md and "(0.94)" in md  # the course report's ReLU figure


def test_tensorboard_gets_confusion_reports_and_hparams(two_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = two_runs / "lightning_logs" / "mine" / "version_0"
    results = json.loads((run / "results.json").read_text())
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "test/confusion_matrix" in tags["images"]
    image = acc.Images("test/confusion_matrix")[0]
    assert (image.width, image.height) == PNG_SIZE
    report = acc.Tensors("test/classification_report/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "precision    recall  f1-score   support" in report
    assert "train/classification_report/text_summary" in tags["tensors"]
    assert [e.value for e in acc.Scalars("hp/test_acc")] == [pytest.approx(results["test"]["accuracy"])]
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["activation"].string_value == "relu" and start.hparams["lr"].number_value == 0.003
    assert start.hparams["experiment"].string_value == "mine"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["hp/test_acc"]


def _fail(err_no: int, strerror: str):
    def raising(self, *args, **kwargs):
        raise OSError(err_no, strerror, str(self) if isinstance(self, Path) else str(args[0]))

    return raising


@pytest.mark.parametrize("where", ["read-only folder", "full disk: a picture", "full disk: REPORT.md"])
def test_an_unwritable_report_folder_is_one_line(where, two_runs, monkeypatch, capsys):
    """Regression: PermissionError / OSError tracebacks; now the one line fit gives, exit 1, no half-written file."""
    import errno

    from matplotlib.figure import Figure

    out = two_runs / "out"
    if where == "read-only folder":  # as root, chmod does not stop a write: mkdir fails as on a read-only folder
        real = Path.mkdir
        monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: _fail(errno.EACCES, "Permission denied")(self)
                            if self == out else real(self, *a, **k))  # fmt: skip
        expected = f"error: cannot write {out}: Permission denied (errno 13); the report in {out}/ is not complete: make it writable"
    elif where == "full disk: a picture":
        monkeypatch.setattr(Figure, "savefig", _fail(errno.ENOSPC, "No space left on device"))
        expected = "error: cannot write "
    else:
        real_write = Path.write_text
        monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: _fail(errno.ENOSPC, "No space left on device")(self)
                            if self.name.startswith(".REPORT.md") else real_write(self, *a, **k))  # fmt: skip
        expected = f"error: cannot write {out / 'REPORT.md'}: No space left on device (errno 28)"
    with pytest.raises(SystemExit) as exc:
        report_main(["--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 1 and len(err) == 1 and err[0].startswith(expected), err
    if where.startswith("full disk"):
        assert "No space left on device" in err[0] and err[0].endswith("free some space, or give another --out"), err
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written file left
