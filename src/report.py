"""The course report, regenerated from your runs: comparison table, loss curves, confusion matrices.

    python -m src.report                 # the latest finished run of each experiment in lightning_logs/
    python -m src.report --run           # first train every config in configs/ (15 epochs each), then report
    python -m src.report --runs lightning_logs/relu/version_3 lightning_logs/tanh/version_0
    python -m src.report --run --configs configs/relu.yaml -- --trainer.max_epochs 2   # args after -- go to fit
    python -m src.report --run --seeds 3  # every config with --seed_everything 0, 1, 2: mean ± std table
    python -m src.report --seeds 3        # the latest finished run of each experiment for each of seeds 0, 1, 2
    python -m src.report --experiments best:5 best_augmented:3   # those experiments, seeds 0-4 and 0-2

The full regeneration (``--run`` with every config and no extra training arguments) writes the
tracked ``reports/REPORT.md``; anything else writes ``lightning_logs/report/REPORT.md`` unless
``--out`` says otherwise, so a report of throwaway runs never overwrites the tracked one.
Beside ``REPORT.md``, per experiment, ``<experiment>_loss.png`` (train and
validation loss per epoch) and ``<experiment>_confusion.png`` (test confusion matrix).  A run is
finished when its folder holds ``results.json`` (written by ``python -m src.train fit``); the
per-epoch losses come from its TensorBoard events (``train/loss_epoch``, ``val/loss``).  A run
resumed with ``--ckpt_path`` is reported whole: its loss curve starts at the first epoch of the
run it continues, and its wall time adds up the processes.
When an experiment has runs of several seeds, the report opens with their mean ± standard
deviation (sample std, n − 1) and shows the figures of its lowest seed's run.  It says (on the
screen and in ``REPORT.md``) where the runs are not the seeds asked for: a seed without a finished
run, a seed reported twice (no mean ± std then), runs of one experiment that differ in more than
the seed.

This file is the command: its arguments, training the configs for ``--run``, which runs to report
and where the report goes.  The report's pieces are in ``src/instruments/``: ``results.py`` (a run
read from its folder, a resumed run's earlier folders, the tables, ``REPORT.md``), ``figures.py``
(the loss and confusion figures), ``why.py`` (the validation-accuracy figure and "why the
activations differ").
"""

from __future__ import annotations

import argparse
import sys
from errno import EDQUOT, ENOSPC
from pathlib import Path
from typing import Optional

from .instruments.results import (
    experiment_order, experiment_runs_per_seed, latest_runs, latest_runs_per_seed, read_run, run_labels, seed_notes,
    write_report,
)  # fmt: skip
from .errors import OutputError
from .system.runs import LOG_ROOT

OUT_DIR = Path("reports")  #: where --run writes: the tracked report of the configs' own runs
SCRATCH_DIR = LOG_ROOT / "report"  #: where a report of other runs goes unless --out says otherwise
CONFIG_DIR = Path("configs")


def train_configs(configs: list[Path], extra: list[str], seeds: int = 1) -> list[Path]:
    """Run ``python -m src.train fit --config <c> <extra>`` for each config in this process; the run folders.

    With ``seeds`` > 1, each config runs once per ``--seed_everything`` 0 … seeds − 1.
    """
    from .train import main as train_main  # only --run trains: Lightning's CLI is imported then

    jobs = [(c, []) for c in configs] if seeds == 1 else [(c, ["--seed_everything", str(s)]) for c in configs for s in range(seeds)]
    runs = []
    for i, (config, seed_args) in enumerate(jobs, 1):
        args = [*seed_args, *extra]
        print(f"\n=== [{i}/{len(jobs)}] {config.stem}: python -m src.train fit --config {config} {' '.join(args)}",
              flush=True)  # fmt: skip
        argv, sys.argv = sys.argv, sys.argv[:1]  # this command's own arguments are not the run's: no CLI warning
        try:
            cli = train_main(["fit", "--config", str(config), *args])
        finally:
            sys.argv = argv
        runs.append(Path(cli.trainer.log_dir))
    return runs


def _experiment_seeds(text: str) -> tuple[str, Optional[int]]:
    """``best:5`` → ``("best", 5)``; ``best`` → ``("best", None)`` (``--seeds``'s count)."""
    name, _, seeds = text.partition(":")
    if not name or (seeds and not (seeds.isdigit() and int(seeds) >= 1)):
        raise argparse.ArgumentTypeError(f"{text!r}: give an experiment's name, or NAME:SEEDS with SEEDS >= 1 (e.g. best:5)")
    return name, int(seeds) if seeds else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m src.report",
        description="Write REPORT.md (table, loss curves, confusion matrices, classification reports) "
        "from finished runs; arguments after -- go to `src.train fit` (with --run).",
    )
    parser.add_argument("--run", action="store_true", help="first train every config (see --configs)")
    parser.add_argument("--configs", nargs="+", type=Path, help="configs for --run (default: configs/*.yaml)")
    parser.add_argument("--runs", nargs="+", type=Path, help="run folders to report (default: latest per experiment)")
    parser.add_argument(
        "--experiments", nargs="+", type=_experiment_seeds, metavar="NAME[:SEEDS]",
        help="experiments to report, each with its latest finished run of each seed 0 … SEEDS−1 "
        "(default SEEDS: --seeds), e.g. best:5 best_augmented:3",
    )  # fmt: skip
    parser.add_argument("--logdir", type=Path, default=LOG_ROOT, help="where the runs are (default: lightning_logs)")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output folder (default: {OUT_DIR} for a full --run, else {SCRATCH_DIR})"
    )
    parser.add_argument(
        "--seeds", type=int, default=1,
        help="seeds 0 … N−1: with --run, train each config once per seed; without, report each experiment's "
        "latest run of each of these seeds; the table then shows mean ± std (default: 1)",
    )  # fmt: skip
    return parser


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """The rules between options: one line and exit status 2 (``parser.error``) for each broken one."""
    if extra and not args.run:
        parser.error(f"arguments after -- ({' '.join(extra)}) are for training and need --run")
    if args.configs and not args.run:
        parser.error("--configs needs --run")
    if args.run and args.runs:
        parser.error("--run reports the runs it trains; leave out --runs")
    if args.seeds < 1:
        parser.error(f"--seeds={args.seeds} is not allowed; give the number of seeds, >= 1")
    if args.seeds > 1 and args.runs:
        parser.error("--seeds picks runs by seed; with --runs the runs given are reported (grouped by experiment)")
    if args.experiments and (args.run or args.runs):
        parser.error("--experiments picks finished runs by experiment and seed; leave out --run and --runs")


def _run_dirs(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> list[Path]:
    """The run folders to report: trained now (``--run``), given (``--runs``), or the latest in ``--logdir``."""
    if args.run:
        configs = args.configs or sorted(CONFIG_DIR.glob("*.yaml"), key=lambda p: experiment_order(p.stem))
        for c in configs:
            if not c.is_file():
                parser.error(f"--configs: {c} is not a file")
        if not configs:
            parser.error(f"no configs in {CONFIG_DIR}/")
        return train_configs(configs, extra, args.seeds)
    if args.runs:
        return args.runs
    if not args.logdir.is_dir():
        parser.error(f"--logdir {args.logdir} is not a folder; train first (python -m src.train fit) or use --run")
    if args.experiments:
        run_dirs = [d for name, n in _asked(args).items() for d in experiment_runs_per_seed(args.logdir, name, n)]
        if not run_dirs:
            parser.error(f"no finished runs of {', '.join(_asked(args))} under {args.logdir}/")
        return run_dirs
    run_dirs = latest_runs(args.logdir) if args.seeds == 1 else latest_runs_per_seed(args.logdir, args.seeds)
    if not run_dirs:
        parser.error(f"no finished runs (folders with results.json) under {args.logdir}/; use --run to train")
    return run_dirs


def _asked(args: argparse.Namespace) -> dict[str, int]:
    """The seeds asked for, per experiment (``--experiments``, else ``--seeds`` for every experiment found)."""
    if args.experiments:
        return {name: n or args.seeds for name, n in args.experiments}
    if args.seeds > 1 and not args.run and not args.runs:
        return {p.name: args.seeds for p in args.logdir.iterdir() if p.is_dir() and any(p.glob("version_*/results.json"))}
    return {}


def main(argv: Optional[list[str]] = None) -> Path:
    """The command-line entry point; ``argv`` lets tests call it.  Returns the report's path."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    _check_options(parser, args, extra)
    run_dirs = _run_dirs(parser, args, extra)
    try:
        runs = [read_run(d) for d in run_dirs]
    except ValueError as err:
        parser.error(str(err))
    full = args.run and not args.configs and not extra  # the configs' own 15-epoch runs
    notes = seed_notes(runs, _asked(args))
    for note in notes:
        print(f"note: {note}")
    out = args.out or (OUT_DIR if full else SCRATCH_DIR)
    try:
        path = write_report(runs, out, notes)
    except (OSError, OutputError) as err:  # a read-only folder, a full disk: one line, as fit says it
        cause = err if isinstance(err, OSError) else err.__cause__
        what = str(err) if not isinstance(err, OSError) else (
            f"cannot write {err.filename or out}: {err.strerror or err} (errno {err.errno})"
        )
        errno_ = getattr(cause, "errno", None)
        fix = "free some space" if errno_ in (ENOSPC, EDQUOT) else "make it writable"
        print(f"error: {what}; the report in {out}/ is not complete: {fix}, or give another --out", file=sys.stderr)
        raise SystemExit(1) from err
    print(f"wrote {path} ({len(runs)} runs: {', '.join(run_labels(runs))})")
    return path


if __name__ == "__main__":
    main()
