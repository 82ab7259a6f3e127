"""``fit --help`` and docs/usage.md agree: the help offers no ``--optimizer`` / ``--lr_scheduler`` (refused:
tests/test_cli_errors.py), and docs/usage.md lists every option ``fit --help`` offers under ``--model.*``,
``--data.*`` and the project's own top-level flags.
"""

import re
from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningArgumentParser

from src.train import CLI, main

ROOT = Path(__file__).resolve().parents[1]


def _fit_help(capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_fit_help_offers_no_torch_optimizer(capsys):
    text = _fit_help(capsys)
    assert "--model.optimizer" in text
    assert not re.search(r"--(optimizer|lr_scheduler)\b", text)


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
