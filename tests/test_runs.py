"""Run folders and checkpoints: no silent wrong result, no lost run.

Run folders claimed atomically, SIGTERM, checkpoints against the command line, the split from the
checkpoint, refused commands that leave nothing behind.  Tiny synthetic data (tests/fakedata.py)
through the real CLI entry, in-process or, where a real process matters, in subprocesses.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from src.data.mnist import MNISTDataModule
from src.train import RunLogger, main
from tests.conftest import REAL_DATA, needs_real_mnist
from tests.cli_helpers import run_cli, run_folders
from tests.fakedata import idx_bytes, write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100", *QUIET,
        "--model.hidden_layers", "[16]"]  # fmt: skip
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short relu run with --data.seed 7 (module scope: several tests read its checkpoints)."""
    root = tmp_path_factory.mktemp("trained")
    write_fake_mnist(root / "data", n_train=600, n_test=200, gz=False)
    old, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(root)
    torch.set_num_threads(1)
    try:
        main(["fit", *TINY, "--model.activation", "relu", "--model.lr", "0.05", "--data.seed", "7",
              "--trainer.max_epochs", "2", "--experiment", "relu"])  # fmt: skip
    finally:
        os.chdir(old)
        torch.set_num_threads(threads)
    return root, root / "lightning_logs" / "relu" / "version_0"


# ----------------------------------------------------------- 1. two runs, one experiment
CLAIM = """
import sys, time
from pathlib import Path
from src.system.runs import claim_run_dir
go = Path(sys.argv[1]) / "go"
while not go.exists():  # every process claims at the same moment
    time.sleep(0.001)
print(claim_run_dir(Path(sys.argv[1]) / "race").name)
"""


def test_racing_processes_claim_distinct_version_folders(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path)], env=ENV, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    time.sleep(0.5)
    (tmp_path / "go").touch()
    names = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    assert sorted(names) == [f"version_{i}" for i in range(4)]


def test_the_logger_claims_its_folder_when_it_picks_the_version(tmp_path):
    """Lightning's own logger only lists the folders: two runs that both asked before either wrote took version_0."""
    first, second = (RunLogger(str(tmp_path), name="race") for _ in range(2))
    assert (first.version, second.version) == (0, 1)
    assert sorted(p.name for p in (tmp_path / "race").iterdir()) == ["version_0", "version_1"]


@pytest.mark.slow
def test_two_cli_runs_started_together_keep_their_own_results(fake_data):
    """The lost run's reproduction: relu and tanh, same --experiment, started together."""
    procs = {
        act: subprocess.Popen(
            [sys.executable, "-m", "src.train", "fit", *TINY, "--model.activation", act, "--model.lr", "0.05",
             "--trainer.max_epochs", "1", "--experiment", "race"],
            cwd=fake_data, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for act in ("relu", "tanh")
    }
    for act, proc in procs.items():
        assert proc.wait(300) == 0, proc.stderr.read()
    runs = sorted((fake_data / "lightning_logs" / "race").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1"]
    seen = set()
    for run in runs:
        activation = yaml.safe_load((run / "config.yaml").read_text())["model"]["activation"]
        results = json.loads((run / "results.json").read_text())
        assert results["config"]["model"]["activation"] == activation  # config and results of one run
        assert results["best_checkpoint"].startswith(str(Path("lightning_logs") / "race" / run.name))
        last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["hyper_parameters"]["activation"] == activation
        seen.add(activation)
    assert seen == {"relu", "tanh"}


# ----------------------------------------------------------- 2. evaluating needs weights


# ----------------------------------------------------------- 3. SIGTERM
@pytest.mark.slow
def test_sigterm_exits_nonzero_and_leaves_a_resumable_run(fake_data):
    args = ["fit", *TINY, "--trainer.max_epochs", "40", "--experiment", "term"]
    last = fake_data / "lightning_logs" / "term" / "version_0" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.train", *args, "--trainer.callbacks+=tests.test_reliability.SlowEpochs"],
        cwd=fake_data, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + 15  # a scheduler sees a killed run, not a success
    line = proc.stderr.read().strip().splitlines()[-1]
    epochs = torch.load(last, weights_only=True)["epoch"] + 1
    assert line == (
        f"error: stopped by SIGTERM after {epochs} finished epoch(s); resume with --ckpt_path "
        f"{Path('lightning_logs') / 'term' / 'version_0' / 'checkpoints' / 'last.ckpt'}"
    )
    assert not (last.parent.parent / "results.json").exists()
    main([*args[:-4], "--trainer.max_epochs", str(epochs + 1), "--experiment", "term", "--ckpt_path", str(last)])
    resumed = json.loads((fake_data / "lightning_logs" / "term" / "version_1" / "results.json").read_text())
    assert resumed["epochs"] == epochs + 1


class SignalAtReport(Callback):
    """Send this process the signal ``name`` while the after-fit report evaluates the best checkpoint (training has ended)."""

    def __init__(self, name: str = "SIGTERM"):
        self.signum = getattr(signal, name)

    def on_test_batch_end(self, trainer, pl_module, *args, **kwargs):
        os.kill(os.getpid(), self.signum)


class TermInLastValidation(Callback):
    """SIGTERM during the last epoch's validation: Lightning stops once that epoch's checkpoint is written."""

    def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs):
        if not trainer.sanity_checking and trainer.current_epoch == trainer.max_epochs - 1:
            os.kill(os.getpid(), signal.SIGTERM)


def _finished_with_every_file(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in ("results.json", "train_report.txt", "test_report.txt", "config.yaml", "hparams.yaml"):
        assert (run / name).is_file(), name
    acc = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert "test/confusion_matrix" in acc.Tags()["images"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_after_training_finishes_the_run_first(name, fake_data):
    """Regression: SIGTERM after training killed the process by the raw signal with half a report (SIGINT: exit 130)."""
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "fit", *TINY, "--trainer.max_epochs", "1",
         "--trainer.callbacks+=tests.test_runs.SignalAtReport", f"--trainer.callbacks.init_args.name={name}"],
        cwd=fake_data, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
        # as in a terminal: a process started in the background inherits SIGINT ignored, and Python
        # then installs no Ctrl-C handler in the child (no signal would ever arrive)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    run = Path("lightning_logs") / "default" / "version_0"
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"note: {name}{' (Ctrl-C)' if name == 'SIGINT' else ''} came after training had ended; the run was "
        f"finished first (results in {run / 'results.json'})"
    )
    assert "error" not in proc.stderr
    _finished_with_every_file(fake_data / run)
    assert run_folders(fake_data) == ["default/version_0"]


def test_ctrl_c_after_training_finishes_the_run_first(fake_data, capsys):
    """The same in this process (SIGINT is a KeyboardInterrupt here, so no subprocess is needed)."""
    handler = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        main(["fit", *TINY, "--trainer.max_epochs", "1", "--trainer.callbacks+=tests.test_runs.SignalAtReport",
              "--trainer.callbacks.init_args.name=SIGINT"])  # fmt: skip
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    finally:
        signal.signal(signal.SIGINT, handler)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("note: SIGINT (Ctrl-C) came after training had ended; the run was finished first")
    _finished_with_every_file(fake_data / "lightning_logs" / "default" / "version_0")


@pytest.mark.slow
def test_a_run_stopped_after_its_last_epoch_is_completed_in_its_own_folder(fake_data):
    """Regression: the resume of a run whose training had ended wrote its report into a second run folder."""
    args = ["fit", *TINY, "--trainer.max_epochs", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *args, "--trainer.callbacks+=tests.test_runs.TermInLastValidation"],
        cwd=fake_data, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300,
    )  # fmt: skip
    run = Path("lightning_logs") / "default" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert proc.returncode == 128 + 15
    assert proc.stderr.strip().splitlines()[-1] == f"error: stopped by SIGTERM after 2 finished epoch(s); resume with --ckpt_path {last}"
    assert not (fake_data / run / "results.json").exists()
    config = (fake_data / run / "config.yaml").read_text()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the stopped run trained with ENV's one thread; another count moves the last bits
    try:
        main([*args, "--ckpt_path", str(last)])  # the documented resume
        assert run_folders(fake_data) == ["default/version_0"]  # no second folder
        _finished_with_every_file(fake_data / run)
        assert (fake_data / run / "config.yaml").read_text() == config  # the run's own, as it was trained
        main([*args, "--experiment", "whole"])  # never stopped: the same results to the last bit
    finally:
        torch.set_num_threads(threads)
    completed, whole = (json.loads((fake_data / "lightning_logs" / e / "version_0" / "results.json").read_text())
                        for e in ("default", "whole"))  # fmt: skip
    for split in ("train", "val", "test"):
        assert completed[split] == whole[split]
    assert completed["epochs"] == whole["epochs"] == 2
    from src.instruments.results import read_run

    os.chdir(fake_data)
    assert read_run(run).earlier == []  # its own folder, not a run it continues


# ----------------------------------------------------------- 4. the split comes from the checkpoint
@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_evaluation_uses_the_checkpoints_split_and_standardization(subcommand, trained, monkeypatch):
    root, run = trained
    monkeypatch.chdir(root)
    # no --data.seed: the command line's split would be seed 0's, whose "validation" holds training images
    cli = main([subcommand, *TINY, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    fit_dm = MNISTDataModule(data_dir="data", val_size=100, seed=7)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fit ran: the mean and std are sums whose order follows the thread count
    try:
        fit_dm.setup()
    finally:
        torch.set_num_threads(threads)
    dm = cli.datamodule
    assert dm._split_of == (7, 100)
    assert (dm.mean, dm.std) == (fit_dm.mean, fit_dm.std)
    for split in ("train", "val", "test"):
        assert torch.equal(dm.splits[split][0], fit_dm.splits[split][0]), split
    if subcommand == "validate":
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        saved = next(v for k, v in ckpt["callbacks"].items() if "Checkpoint" in k)["current_score"]
        assert cli.trainer.callback_metrics["val/acc"].item() == pytest.approx(float(saved), abs=1e-7)


# ----------------------------------------------------------- 5. explicit values against the checkpoint
def test_explicit_values_that_differ_from_the_checkpoint_are_refused(trained, monkeypatch, capsys):
    root, run = trained
    monkeypatch.chdir(root)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    before = run_folders(root)
    status, err = run_cli(["fit", *TINY, "--model.lr", "0.01", "--model.optimizer", "adam", "--ckpt_path", ckpt], capsys)
    assert status == 2 and len(err) == 1, err
    assert "--model.lr=0.01 (checkpoint: 0.05)" in err[0] and "--model.optimizer='adam' (checkpoint: 'gd')" in err[0]
    (root / "sigmoid.yaml").write_text("model:\n  activation: sigmoid\n")  # a --config that says otherwise
    status, err = run_cli(["fit", "--config", "sigmoid.yaml", *TINY, "--ckpt_path", ckpt], capsys)
    assert status == 2 and "--model.activation='sigmoid' (checkpoint: 'relu')" in err[0], err
    status, err = run_cli(["validate", *TINY, "--data.seed", "3", "--ckpt_path", ckpt], capsys)
    assert status == 2 and "--data.seed=3 (checkpoint: 7)" in err[0], err
    assert run_folders(root) == before  # nothing started
    # values that agree with the checkpoint's go on
    cli = main(["validate", *TINY, "--model.activation", "relu", "--model.lr", "0.05", "--ckpt_path", ckpt])
    assert cli.model.hparams.activation == "relu"


def test_another_seed_on_resume_is_refused_naming_the_checkpoints(trained, monkeypatch, capsys):
    """Regression: --seed_everything 5 on resume was accepted and ignored (the checkpoint's random states win)."""
    root, run = trained
    monkeypatch.chdir(root)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    before = run_folders(root)
    status, err = run_cli(["fit", *TINY, "--trainer.max_epochs", "3", "--seed_everything", "5", "--ckpt_path", ckpt], capsys)
    assert status == 2 and len(err) == 1, err
    assert err[0] == (
        f"error: --ckpt_path {ckpt} was trained with other values than given: --seed_everything=5 (checkpoint: 0); "
        "leave them out to use the checkpoint's, or train a new run without --ckpt_path"
    )
    (root / "seed.yaml").write_text("seed_everything: 5\n")  # a --config that says it
    status, err = run_cli(["validate", "--config", "seed.yaml", *TINY, "--ckpt_path", ckpt], capsys)
    assert status == 2 and "--seed_everything=5 (checkpoint: 0)" in err[0], err
    assert run_folders(root) == before
    cli = main(["validate", *TINY, "--seed_everything", "0", "--ckpt_path", ckpt])  # the same seed goes on
    assert cli.config["validate"]["seed_everything"] == 0


def test_the_checkpoints_seed_is_the_runs_when_not_given(tmp_path):
    """A resume without --seed_everything records the seed the run was trained with, not the default 0."""
    from src.system.checkpoints import checkpoint_seed

    saved = {"callbacks": {"RNGStateCallback": {"seed_everything": 3}}, "MNISTDataModule": {"seed": 7}}
    assert checkpoint_seed(saved) == 3
    # written before the seed was saved: the split's seed is the run's unless --data.seed was given
    assert checkpoint_seed({"MNISTDataModule": {"seed": 4}, "datamodule_hyper_parameters": {"seed": None}}) == 4
    assert checkpoint_seed({"MNISTDataModule": {"seed": 4}, "datamodule_hyper_parameters": {"seed": 4}}) is None


def test_another_batch_size_on_resume_is_said_once(trained, monkeypatch, capsys):
    """Regression: accepted without a word, and the resumed run then differs from the uninterrupted one."""
    root, run = trained
    monkeypatch.chdir(root)
    cli = main(["fit", *TINY, "--data.batch_size", "32", "--trainer.max_epochs", "3", "--experiment", "bs",
                "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])  # fmt: skip
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: --data.batch_size=32 is not the checkpoint's (64): the resumed run takes steps of 32 from here on, "
        "so it will not equal the uninterrupted run; give --data.batch_size 64 to continue it exactly"
    ]
    assert cli.datamodule.hparams.batch_size == 32
    results = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    assert results["config"]["seed_everything"] == 0  # the checkpoint's


def test_evaluation_without_checkpointing_runs(trained, monkeypatch):
    """--trainer.enable_checkpointing false is refused by fit only: validate and test save nothing anyway."""
    root, run = trained
    monkeypatch.chdir(root)
    cli = main(["test", *TINY, "--trainer.enable_checkpointing", "false", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert cli.trainer.checkpoint_callback is None and "test/acc" in cli.trainer.callback_metrics


def test_resume_below_the_checkpoints_epoch_is_refused(trained, monkeypatch, capsys):
    root, run = trained
    monkeypatch.chdir(root)
    before = run_folders(root)
    args = ["fit", *TINY, "--trainer.max_epochs", "1", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    status, err = run_cli(args, capsys)
    assert status == 2 and len(err) == 1, err
    assert "--trainer.max_epochs=1 is not allowed with this checkpoint: it has already trained 2 epochs" in err[0]
    assert run_folders(root) == before


# ----------------------------------------------------------- 6 + 7. the data files
def _official(name: str) -> bytes:
    """One official MNIST file's bytes, from data/MNIST/raw/ (unpacked, or its .gz)."""
    raw = REAL_DATA / "MNIST" / "raw"
    return (raw / name).read_bytes() if (raw / name).exists() else gzip.decompress((raw / f"{name}.gz").read_bytes())


@needs_real_mnist
def test_official_test_files_under_the_train_names_are_refused(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for train, test in (("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"),
                        ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")):  # fmt: skip
        data = _official(test)
        (raw / train).write_bytes(data)  # swapped: the test files under the train names …
        (raw / test).write_bytes(idx_bytes(torch.zeros(60, 28, 28, dtype=torch.uint8).numpy())
                                 if "images" in test else idx_bytes(torch.zeros(60, dtype=torch.uint8).numpy()))
    monkeypatch.chdir(tmp_path)
    status, err = run_cli(["fit", *TINY, "--data.val_size", "1000"], capsys)
    assert status == 1, err
    assert err[-1] == (
        f"error: {Path('data') / 'MNIST' / 'raw' / 'train-images-idx3-ubyte'}: this is the official MNIST file "
        "t10k-images-idx3-ubyte (by its SHA-256) under the name train-images-idx3-ubyte; the files are swapped "
        "or misnamed: put each file under its own name"
    )
    assert not (tmp_path / "lightning_logs").exists()


def test_train_images_with_test_labels_is_a_data_error(fake_data, capsys):
    raw = fake_data / "data" / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes())  # 200 labels
    status, err = run_cli(["fit", *TINY, "--data.val_size", "300"], capsys)  # 300 < 600 images, > 200 labels
    assert status == 1 and len(err) == 1, err
    assert "train-images-idx3-ubyte holds 600 images but" in err[0] and "holds 200 labels" in err[0], err
    assert "val_size" not in err[0]
    assert not (fake_data / "lightning_logs").exists()


# ----------------------------------------------------------- tracebacks that became one line


def test_a_file_where_the_experiment_folder_goes_is_named(fake_data, capsys):
    """Regression: "(File exists); make it writable" for a lightning_logs/default that is a file."""
    (fake_data / "lightning_logs").mkdir()
    (fake_data / "lightning_logs" / "default").write_text("not a folder\n")
    status, err = run_cli(["fit", *TINY, "--trainer.max_epochs", "1"], capsys)
    folder = Path("lightning_logs") / "default"
    assert status == 1 and err == [f"error: cannot create the run folder in {folder}/: {folder} is a file, not a "
                                   "folder; move it away, or name the run otherwise with --experiment"], err  # fmt: skip


@pytest.mark.parametrize("blocker", ["read-only", "a file"])
def test_unwritable_lightning_logs_is_one_line(blocker, fake_data, monkeypatch, capsys):
    if blocker == "a file":
        (fake_data / "lightning_logs").write_text("not a folder\n")
    else:  # as root, chmod does not stop a write: make mkdir fail as on a read-only folder
        real = Path.mkdir

        def read_only(self, *args, **kwargs):
            if "lightning_logs" in str(self):
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", read_only)
    status, err = run_cli(["fit", *TINY, "--trainer.max_epochs", "1"], capsys)
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot create the run folder in {Path('lightning_logs') / 'default'}/"), err


# ----------------------------------------------------------- files in the right place
def test_no_logger_still_writes_into_a_run_folder(fake_data):
    main(["fit", *TINY, "--trainer.max_epochs", "1", "--trainer.logger", "false", "--experiment", "quiet"])
    run = fake_data / "lightning_logs" / "quiet" / "version_0"
    assert (run / "results.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in fake_data.iterdir()) == ["data", "lightning_logs"]  # nothing in the working folder


@pytest.mark.parametrize(
    "args,expected",
    [
        (["predict"], "predict needs --data.predict_dir"),
        (["test", "--ckpt_path", "missing.ckpt"], "--ckpt_path='missing.ckpt': no such checkpoint file"),
    ],
)
def test_refused_commands_leave_no_run_folder(args, expected, trained, monkeypatch, capsys):
    root, run = trained
    monkeypatch.chdir(root)
    before = run_folders(root)
    if args == ["predict"]:
        args = [*args, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    status, err = run_cli([*args, *TINY], capsys)
    assert status == 2 and len(err) == 1 and expected in err[0], err
    assert run_folders(root) == before


def test_a_failed_start_removes_its_run_folder(fake_data, capsys):
    """A data problem found after the run folder exists: the empty folder goes too."""
    (fake_data / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03")
    status, err = run_cli(["fit", *TINY, "--trainer.max_epochs", "1", "--trainer.logger", "false"], capsys)
    assert status == 1 and "t10k-images-idx3-ubyte: truncated IDX header" in err[-1], err
    assert run_folders(fake_data) == []
