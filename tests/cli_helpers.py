"""Helpers for the tests that call the real CLI (``src.train.main``)."""

from pathlib import Path

import pytest

from src.train import main


def run_cli(args, capsys):
    """``main(args)`` expected to fail: (exit status, stderr lines)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def run_folders(root: Path) -> list[str]:
    """The ``<experiment>/version_N`` folders under ``root/lightning_logs`` (sorted), [] without one."""
    logs = root / "lightning_logs"
    return sorted(str(p.relative_to(logs)) for p in logs.glob("*/*")) if logs.is_dir() else []
