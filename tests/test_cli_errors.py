"""The command line's refusals: a bad value, flag, config file or command is one line on stderr.

Exit 2 for a bad value (1 for data and disk problems), before any work starts: no traceback, no
usage text, no run folder.  Tiny synthetic data (tests/fakedata.py) through the real CLI entry,
in-process, or in a subprocess where what the shell shows matters.  The refusals of a checkpoint
against the command line are in tests/test_runs.py, those of the data files in tests/test_reliability.py.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.train import main
from tests.cli_helpers import run_cli, run_folders

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100", *QUIET,
        "--model.hidden_layers", "[16]"]  # fmt: skip
# 600 images − 88 for validation = 512 training images: 8 steps of 64 per epoch
TINY_512 = ["--data.data_dir", "data", "--data.val_size", "88", "--data.eval_batch_size", "100", *QUIET,
            "--model.hidden_layers", "[16]"]  # fmt: skip
# … and 9 validation batches of 10
TINY_EVAL_10 = ["--data.data_dir", "data", "--data.val_size", "88", "--data.eval_batch_size", "10", *QUIET,
                "--model.hidden_layers", "[16]", "--diagnostics", "false"]  # fmt: skip


# ------------------------------------------------------------------ bad values


BAD_VALUES = [
    (["--model.activation", "softmaxx"], "'softmaxx' is not allowed; allowed: 'sigmoid'"),
    (["--model.output_activation", "tanh"], "'tanh' is not allowed; allowed: 'softmax'"),
    (["--model.loss", "hinge"], "'hinge' is not allowed; allowed: 'cross_entropy', 'mse'"),
    (["--model.initialization", "zeros"], "'zeros' is not allowed; allowed: 'random'"),
    (["--model.optimizer", "sgd"], "'sgd' is not allowed; allowed: 'gd', 'adam'"),
    (["--model.regularization", "l3"], "'l3' is not allowed; allowed: 'none'"),
    (["--model.implementation", "numpy"], "'numpy' is not allowed; allowed: 'custom'"),
    (["--data.dataset", "CIFAR10"], "'CIFAR10' is not allowed; allowed: 'MNIST'"),
    # ranges: the signatures' types (src.system.config), named by the parser
    (["--model.lr", "0"], "--model.lr: 0 is not allowed; it must be > 0 and finite"),
    (["--model.lr", "-0.1"], "--model.lr: -0.1 is not allowed; it must be > 0 and finite"),
    (["--model.lr", "inf"], "--model.lr: inf is not allowed; it must be > 0 and finite"),
    (["--model.alpha=-1e-3"], "--model.alpha: -1e-3 is not allowed; it must be >= 0 and finite"),  # "=": see README
    (["--model.betas", "[0.9,1]"], "--model.betas: 1 is not allowed; it must be >= 0 and < 1"),
    (["--model.eps", "0"], "--model.eps: 0 is not allowed; it must be > 0 and finite"),
    (["--data.batch_size", "0"], "--data.batch_size: 0 is not allowed; it must be > 0"),
    (["--data.batch_size", "-5"], "--data.batch_size: -5 is not allowed; it must be > 0"),
    (["--model.hidden_layers", "[32,0]"], "--model.hidden_layers: 0 is not allowed; it must be > 0"),
    (["--model.hidden_layers", "[-4]"], "--model.hidden_layers: -4 is not allowed; it must be > 0"),
    (["--data.val_size", "0"], "--data.val_size: 0 is not allowed; it must be > 0"),
    # rules of one class, or between groups
    (["--model.hidden_layers", "[]"], "hidden_layers=[] is not allowed; give at least one hidden layer"),
    (["--model.output_activation", "identity"], "loss='cross_entropy' needs probabilities, but output_activation="),
    (["--data.val_size", "600"], "--data.val_size=600 is not allowed; it must be > 0 and smaller than the 600"),
    (["--data.val_size", "60000"], "--data.val_size=60000 is not allowed"),  # the synthetic set has 600 images
    (["--trainer.max_epochs", "0"], "--trainer.max_epochs=0 is not allowed; train for at least 1 epoch"),
    # these were tracebacks
    (["--model.inputs", "100"], "--model.inputs=100 is not allowed; the data's images have 28x28 = 784 pixels"),
    (["--model.outputs", "5"], "--model.outputs=5 is not allowed; the data has 10 classes"),
    (["--model.hidden_layers", "[1000000000]"], "hidden_layers=[1000000000] is too large: 795,000,000,010 parameters"),
    (["--data.data_dir", "data/MNIST/raw/train-labels-idx1-ubyte"], "--data.data_dir='data/MNIST/raw/train-labels"),
    (["--trainer.fast_dev_run", "true"], "--trainer.fast_dev_run is not supported"),
    (["--trainer.enable_checkpointing", "false"], "--trainer.enable_checkpointing=false is not supported by fit"),
    (["--seed_everything=-1"], "--seed_everything=-1 is not allowed; give an integer in [0, 4294967295]"),
    (["--experiment", "../x"], "--experiment='../x' is not allowed; give a plain folder name"),
    (["--experiment", "a/b"], "--experiment='a/b' is not allowed"),
]


if not torch.cuda.is_available():
    BAD_VALUES.append((["--trainer.accelerator", "gpu"], "--trainer.accelerator=gpu is not allowed here"))


@pytest.mark.parametrize("bad,expected", BAD_VALUES, ids=[" ".join(b) for b, _ in BAD_VALUES])
def test_bad_value_is_one_clear_line(bad, expected, fake_data, capsys):
    args = ["fit", "--data.data_dir", "data", "--data.val_size", "100", *QUIET, *bad]
    status, err = run_cli(args, capsys)
    assert status == 2
    assert len(err) == 1, err  # one line: no usage text, no traceback
    assert err[0].startswith(f"error: ") and expected in err[0], err[0]
    assert not (fake_data / "lightning_logs").exists()  # nothing started, no run folder


BAD = [
    (["--model.dropout", "1"], "--model.dropout: 1 is not allowed; it must be >= 0 and < 1"),
    (["--model.dropout=-0.1"], "--model.dropout: -0.1 is not allowed; it must be >= 0 and < 1"),
    (["--model.input_dropout", "1"], "--model.input_dropout: 1 is not allowed"),
    (["--data.augment_degrees", "200"], "--data.augment_degrees: 200 is not allowed; it must be >= 0 and <= 180"),
    (["--data.augment_translate", "1.5"], "--data.augment_translate: 1.5 is not allowed"),
    (["--data.augment_scale", "[1.2, 0.8]"], "--data.augment_scale=[1.2, 0.8] is not allowed"),
    (["--data.augment_scale", "[0, 1]"], "--data.augment_scale: 0 is not allowed"),
    (["--data.augment_elastic_alpha=-3"], "--data.augment_elastic_alpha: -3 is not allowed"),
    (["--model.ema_decay", "1"], "--model.ema_decay: 1 is not allowed; it must be >= 0 and < 1"),
    (["--model.max_norm=-1"], "--model.max_norm: -1 is not allowed"),
    (["--model.label_smoothing", "0.1", "--model.loss", "mse"],
     "label_smoothing=0.1 needs loss='cross_entropy' with output_activation='softmax'"),
]


@pytest.mark.parametrize("bad,line", BAD, ids=[" ".join(b) for b, _ in BAD])
def test_bad_value_is_one_line(bad, line, fake_data, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--data.data_dir", "data", "--data.val_size", "100", *QUIET, *bad])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {line}"), err
    assert not (fake_data / "lightning_logs").exists()  # refused before anything was written


# ------------------------------------------------------------------ from the shell


SHELL_CASES = [
    (["--model.activation", "swish"], 2,
     "error: --model.activation='swish' is not allowed; allowed: 'sigmoid', 'tanh', 'relu', 'identity'"),
    # a value a class refuses (after LightningCLI has set the seed): no "Seed set to 0" before it
    (["--model.hidden_layers", "[]"], 2,
     "error: hidden_layers=[] is not allowed; give at least one hidden layer, e.g. [500, 250, 100]"),
    # a damaged file is found before Lightning starts, so its line is the only one
    (["--data.data_dir", "damaged"], 1,
     f"error: {Path('damaged/MNIST/raw/train-images-idx3-ubyte')}: truncated: 470415 bytes, but its header announces "
     "600 images (470416 bytes); delete it (and its .gz if that is damaged too) and fetch it again"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("bad,status,line", SHELL_CASES, ids=["bad value", "class rule", "damaged file"])
def test_errors_from_the_shell_are_one_line(bad, status, line, fake_data):
    shutil.copytree(fake_data / "data", fake_data / "damaged")
    images = fake_data / "damaged" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-1])
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "fit", *TINY, *bad],
        cwd=fake_data, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == status
    assert proc.stderr.strip().splitlines() == [line]  # no traceback, no warnings, no Lightning banner
    assert not (fake_data / "lightning_logs").exists()


# ------------------------------------------------------------------ config files


CONFIGS = [
    (b"model:\n  lr: 0.1 # caf\xe9\n", "error: --config c.yaml is not UTF-8 text: byte 0xe9 on line 2 is not UTF-8; "
     "a config is a YAML text file: save it as UTF-8"),
    (bytes(range(128, 256)), "error: --config c.yaml is not UTF-8 text: byte 0x80 on line 1 is not UTF-8"),
    (b"model:\n  lr: 0.1\n\0\0\0", "error: --config c.yaml is a binary file, not a YAML text file"),
    (b"model: [\n  lr: 0.1\n", "error: --config c.yaml is not valid YAML: "),
    (b"just some words\n", "error: --config c.yaml holds str 'just some words', not options"),
]  # fmt: skip


@pytest.mark.parametrize("content,line", CONFIGS, ids=["latin-1", "binary", "NUL bytes", "not YAML", "plain text"])
def test_a_config_that_is_no_yaml_text_is_named(content, line, fake_data, capsys):
    """Regression: a UnicodeDecodeError traceback; a YAML error about "<unicode string>" that did not name the file."""
    (fake_data / "c.yaml").write_bytes(content)
    status, err = run_cli(["fit", "--config", "c.yaml", *TINY], capsys)
    assert status == 2 and len(err) == 1 and err[0].startswith(line), err
    assert not (fake_data / "lightning_logs").exists()


def test_empty_config_file_is_named(fake_data, capsys):
    (fake_data / "empty.yaml").write_text("\n")
    status, err = run_cli(["fit", "--config", "empty.yaml", *TINY], capsys)
    assert status == 2 and err == ["error: --config empty.yaml: the file is empty; give at least one key, "
                                   "e.g. 'model: {lr: 0.1}'"]  # fmt: skip


# ------------------------------------------------------------------ Lightning's flags and torch.optim's


REFUSED = [
    (["--trainer.gradient_clip_val=-1"], "--trainer.gradient_clip_val=-1.0 is not allowed; it must be >= 0 and finite (0: no clipping)"),
    (["--trainer.gradient_clip_algorithm", "l1"], "--trainer.gradient_clip_algorithm='l1' is not allowed; allowed: 'norm', 'value'"),
    (["--trainer.accumulate_grad_batches", "0"], "--trainer.accumulate_grad_batches=0 is not allowed; it must be an integer >= 1"),
    (["--trainer.max_steps", "10"], "--trainer.max_steps is not supported: a run is counted, checkpointed and resumed in "
     "whole epochs; use --trainer.max_epochs (and --trainer.limit_train_batches for shorter epochs)"),
    (["--data.batch_size", "100000"], "--data.batch_size=100000 is larger than the 512 training images (600 of MNIST "
     "minus --data.val_size 88): every epoch would be one step of 512; give at most 512"),
    # regression: an untrained net was reported as a finished run (test accuracy of the initial weights)
    (["--trainer.limit_train_batches", "0"], "--trainer.limit_train_batches=0.0 is not allowed by fit: it would train "
     "nothing and report the initial weights as a finished run; give a number of batches >= 1 or a fraction in (0, 1]"),
    (["--trainer.default_root_dir", "elsewhere"], "--trainer.default_root_dir='elsewhere' is not supported: every run "
     "goes to lightning_logs/<experiment>/version_N/ under the current folder; run from the folder that should hold "
     "lightning_logs/ (cd there), and name the run with --experiment"),
    # regression: a traceback from the loss's dtype check (the custom net's Functions are not autocast's)
    *((["--trainer.precision", p], f"--trainer.precision='{p}' is not supported by --model.implementation custom: its "
       "hand-derived Functions compute in their inputs' dtype, not autocast's; use 32-true, 64-true, bf16-true or "
       "16-true, or --model.implementation sequential (torch's ops under autocast)") for p in ("bf16-mixed", "16-mixed")),
]  # fmt: skip


@pytest.mark.parametrize("bad,expected", REFUSED, ids=[" ".join(b) for b, _ in REFUSED])
def test_refused_flag_is_one_line(bad, expected, fake_data, capsys):
    status, err = run_cli(["fit", *TINY_512, *bad], capsys)
    assert status == 2 and err == [f"error: {expected}"], err
    assert run_folders(fake_data) == []


def test_a_fraction_of_less_than_one_batch_is_one_line(fake_data, capsys):
    """Lightning refuses it only once it knows the data (8 batches): its own sentence, no traceback, no run folder."""
    status, err = run_cli(["fit", *TINY_512, "--trainer.limit_train_batches", "0.01"], capsys)
    assert status == 2 and err[-1].startswith("error: You requested to check 0.01 of the `train_dataloader`"), err
    assert "limit_train_batches" in err[-1] and not any("Traceback" in line for line in err)
    assert run_folders(fake_data) == []


INSTEAD = "use --model.optimizer gd|adam with --model.lr, --model.betas, --model.eps"
TORCH_OPTIMIZER_FLAGS = [
    (["--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.1"],
     f"--optimizer is not supported: it would replace the hand-written optimizer and schedule (src/hand/optim.py, "
     f"--model.*) with torch.optim's; {INSTEAD}"),
    (["--optimizer=torch.optim.Adam"], "--optimizer is not supported"),
    (["--optimizer.lr", "0.1"], "--optimizer is not supported"),
    (["--lr_scheduler", "torch.optim.lr_scheduler.StepLR", "--lr_scheduler.step_size", "1"],
     "--lr_scheduler is not supported: it would replace the hand-written optimizer and schedule (src/hand/optim.py, "
     "--model.*) with torch.optim's; use --model.lr_schedule constant|cosine with --model.optimizer gd|adam"),
]  # fmt: skip


@pytest.mark.parametrize("bad,expected", TORCH_OPTIMIZER_FLAGS, ids=[" ".join(b) for b, _ in TORCH_OPTIMIZER_FLAGS])
def test_torch_optimizer_flags_are_refused_naming_the_model_optimizer(bad, expected, fake_data, capsys):
    status, err = run_cli(["fit", *TINY_EVAL_10, *bad], capsys)
    assert status == 2 and len(err) == 1 and err[0].startswith(f"error: {expected}"), err
    assert "--model." in err[0]
    assert run_folders(fake_data) == []


@pytest.mark.parametrize(
    "text,expected",
    [
        ("optimizer:\n  class_path: torch.optim.SGD\n  init_args: {lr: 0.1}\n",
         f"error: --config torch.yaml: the key 'optimizer' is not supported: it would replace the hand-written "
         f"optimizer and schedule with torch.optim's; {INSTEAD}"),
        ("model: {lr: 0.1}\noptimizer: null\nlr_scheduler: null\n",  # a run's config.yaml from an earlier version
         f"error: --config torch.yaml: the key 'optimizer' is no longer taken; delete that line; {INSTEAD}"),
    ],
    ids=["a torch optimizer", "a saved config.yaml's nulls"],
)  # fmt: skip
def test_torch_optimizer_in_a_config_file_is_refused(text, expected, fake_data, capsys):
    Path("torch.yaml").write_text(text)
    status, err = run_cli(["fit", *TINY_EVAL_10, "--config", "torch.yaml"], capsys)
    assert status == 2 and err == [expected], err
    assert run_folders(fake_data) == []


def test_fast_dev_run_refusal_suggests_what_does_what_it_says(fake_data, capsys):
    status, err = run_cli(["fit", *TINY_EVAL_10, "--trainer.fast_dev_run", "true"], capsys)
    assert status == 2 and len(err) == 1, err
    suggested = err[0].split("for a quick check use ", 1)[1].split()
    counts = dict(zip(suggested[::2], suggested[1::2]))
    assert counts.keys() == {"--trainer.max_epochs", "--trainer.limit_train_batches", "--trainer.limit_val_batches"}
    # the suggestion, run as given: one epoch of as many batches as it names (88 validation images: 9 batches of 10)
    trainer = main(["fit", *TINY_EVAL_10, *suggested]).trainer
    assert trainer.current_epoch == int(counts["--trainer.max_epochs"]) == 1
    assert trainer.num_training_batches == int(counts["--trainer.limit_train_batches"]) == 2
    assert trainer.num_val_batches == [int(counts["--trainer.limit_val_batches"])] == [2]
    assert trainer.global_step == 2


# ------------------------------------------------------------------ commands and folders


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_evaluating_without_a_checkpoint_is_refused(subcommand, fake_data, capsys):
    status, err = run_cli([subcommand, *TINY, "--data.predict_dir", "data"], capsys)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {subcommand} needs trained weights: pass --ckpt_path lightning_logs/"), err
    assert not (fake_data / "lightning_logs").exists()


@pytest.mark.parametrize("existing", ["", "empty"])
def test_a_mistyped_data_dir_creates_nothing(existing, fake_data, monkeypatch, capsys):
    from torchvision import datasets

    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # offline, without waiting
    if existing:
        (fake_data / existing).mkdir()
    data_dir = Path(existing or "dta") / "nested"
    status, err = run_cli(["fit", *TINY_512, "--data.data_dir", str(data_dir)], capsys)
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: MNIST is not in {data_dir / 'MNIST' / 'raw'}/ (--data.data_dir={str(data_dir)!r})"), err
    assert "nothing was created there" in err[0], err
    assert sorted(p.name for p in fake_data.iterdir()) == sorted(["data", *([existing] if existing else [])])
    if existing:
        assert list((fake_data / existing).iterdir()) == []
