"""Issue 24: every documented command and option does what it says.

Lightning's ``--optimizer`` / ``--lr_scheduler`` are refused (they replaced the hand-written
optimizers silently), the fast_dev_run refusal suggests flags that do what it says, and
docs/usage.md lists every option ``fit --help`` offers under ``--model.*``, ``--data.*`` and the
project's own top-level flags.  Tiny synthetic data (tests/fakedata.py) through the real CLI entry.
"""

import re
from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningArgumentParser

from src.train import CLI, main
from tests.cli_helpers import run_cli, run_folders

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = ["--data.data_dir", "data", "--data.val_size", "88", "--data.eval_batch_size", "10", *QUIET,
        "--model.hidden_layers", "[16]", "--diagnostics", "false"]  # fmt: skip

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
    status, err = run_cli(["fit", *TINY, *bad], capsys)
    assert status == 2 and len(err) == 1 and err[0].startswith(f"error: {expected}"), err
    assert "--model." in err[0]
    assert run_folders(fake_data) == []


@pytest.mark.parametrize(
    "text,expected",
    [
        ("optimizer:\n  class_path: torch.optim.SGD\n  init_args: {lr: 0.1}\n",
         f"error: --config torch.yaml: the key 'optimizer' is not supported: it would replace the hand-written "
         f"optimizer and schedule with torch.optim's; {INSTEAD}"),
        ("model: {lr: 0.1}\noptimizer: null\nlr_scheduler: null\n",  # a run's config.yaml from before issue 24
         f"error: --config torch.yaml: the key 'optimizer' is no longer taken; delete that line; {INSTEAD}"),
    ],
    ids=["a torch optimizer", "a saved config.yaml's nulls"],
)  # fmt: skip
def test_torch_optimizer_in_a_config_file_is_refused(text, expected, fake_data, capsys):
    Path("torch.yaml").write_text(text)
    status, err = run_cli(["fit", *TINY, "--config", "torch.yaml"], capsys)
    assert status == 2 and err == [expected], err
    assert run_folders(fake_data) == []


def _fit_help(capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_fit_help_offers_no_torch_optimizer(capsys):
    text = _fit_help(capsys)
    assert "--model.optimizer" in text
    assert not re.search(r"--(optimizer|lr_scheduler)\b", text)


def test_fast_dev_run_refusal_suggests_what_does_what_it_says(fake_data, capsys):
    status, err = run_cli(["fit", *TINY, "--trainer.fast_dev_run", "true"], capsys)
    assert status == 2 and len(err) == 1, err
    suggested = err[0].split("for a quick check use ", 1)[1].split()
    counts = dict(zip(suggested[::2], suggested[1::2]))
    assert counts.keys() == {"--trainer.max_epochs", "--trainer.limit_train_batches", "--trainer.limit_val_batches"}
    # the suggestion, run as given: one epoch of as many batches as it names (88 validation images: 9 batches of 10)
    trainer = main(["fit", *TINY, *suggested]).trainer
    assert trainer.current_epoch == int(counts["--trainer.max_epochs"]) == 1
    assert trainer.num_training_batches == int(counts["--trainer.limit_train_batches"]) == 2
    assert trainer.num_val_batches == [int(counts["--trainer.limit_val_batches"])] == [2]
    assert trainer.global_step == 2


def _project_flags() -> list[str]:
    """The top-level flags the project adds (``CLI.add_arguments_to_parser``), not Lightning's own."""
    parser = LightningArgumentParser()
    CLI.add_arguments_to_parser(None, parser)  # it adds arguments only; the instance is not used
    return [opt for action in parser._actions for opt in action.option_strings if opt.startswith("--") and opt != "--help"]


def test_usage_md_lists_every_option_of_fit_help(capsys):
    text = _fit_help(capsys)
    offered = set(re.findall(r"^\s+(--(?:model|data)\.\w+)", text, re.M))
    project = _project_flags()
    assert {"--model.betas", "--data.seed", "--model.ema_decay"} <= offered and "--diagnostics" in project
    for flag in project:
        assert re.search(rf"^\s+{re.escape(flag)}\b", text, re.M), flag  # fit --help offers it
    usage = (ROOT / "docs" / "usage.md").read_text()
    table = "\n".join(line for line in usage.splitlines() if line.startswith("| `--"))  # the options table's rows
    # a row names a flag whole, or a group's shared prefix: `--data.augment_degrees` / `_translate` / `_scale`
    named = set(re.findall(r"`(--[\w.]+)`", table))
    for row in table.splitlines():
        heads = re.findall(r"`(--[\w.]+)`", row.split("|")[1])
        for tail in re.findall(r"`(_\w+)`", row.split("|")[1]):
            named |= {h.rsplit("_", 1)[0] + tail for h in heads}
    missing = sorted((offered | set(project)) - named)
    assert missing == [], f"docs/usage.md's options table lacks {missing}"
