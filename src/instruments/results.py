"""The course report, regenerated from your runs: comparison table, loss curves, confusion matrices.

    python -m src.report                 # the latest finished run of each experiment in lightning_logs/
    python -m src.report --run           # first train every config in configs/ (15 epochs each), then report
    python -m src.report --runs lightning_logs/relu/version_3 lightning_logs/tanh/version_0
    python -m src.report --run --configs configs/relu.yaml -- --trainer.max_epochs 2   # args after -- go to fit
    python -m src.report --run --seeds 3  # every config with --seed_everything 0, 1, 2: mean ± std table
    python -m src.report --seeds 3        # the latest finished run of each experiment for each of seeds 0, 1, 2

The full regeneration (``--run`` with every config and no extra training arguments) writes the
tracked ``reports/REPORT.md``; anything else writes ``lightning_logs/report/REPORT.md`` unless
``--out`` says otherwise, so a report of throwaway runs never overwrites the tracked one.
Beside ``REPORT.md``, per experiment, ``<experiment>_loss.png`` (train and
validation loss per epoch) and ``<experiment>_confusion.png`` (test confusion matrix).  A run is
finished when its folder holds ``results.json`` (written by ``python -m src.train fit``); the
per-epoch losses come from its TensorBoard events (``train/loss_epoch``, ``val/loss``).
When an experiment has runs of several seeds, the report opens with their mean ± standard
deviation (sample std, n − 1) and shows the figures of its lowest seed's run.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .figures import confusion_figure, loss_figure, save_png
from ..system.runs import LOG_ROOT, write_text_atomic
from ..system.metrics import format_report

__all__ = [
    "COURSE",
    "Run",
    "read_run",
    "latest_runs",
    "write_report",
    "seed_table",
    "latest_runs_per_seed",
]

OUT_DIR = Path("reports")  #: where --run writes: the tracked report of the configs' own runs
SCRATCH_DIR = LOG_ROOT / "report"  #: where a report of other runs goes unless --out says otherwise
CONFIG_DIR = Path("configs")

#: The course report's figures, by experiment name (its relu_l2 figure is a train accuracy).
COURSE = {
    "baseline": {"test_acc": 0.86, "train_loss": 0.4487, "val_loss": 0.4499},
    "tanh": {"test_acc": 0.93, "train_loss": 0.2275, "val_loss": 0.2076},
    "relu": {"test_acc": 0.94, "train_loss": 0.2233, "val_loss": 0.2131},
    "package": {"test_acc": 0.94},
    "relu_l2": {"train_acc": 0.78},
    # issue 12: the course report's own settings (configs/course_*.yaml) beside its figures
    "course_sigmoid": {"test_acc": 0.86, "train_loss": 0.4487, "val_loss": 0.4499},
    "course_tanh": {"test_acc": 0.93, "train_loss": 0.2275, "val_loss": 0.2076},
    "course_relu": {"test_acc": 0.94, "train_loss": 0.2233, "val_loss": 0.2131},
}
ORDER = ["baseline", "tanh", "relu", "package", "relu_l2", "best",  # the course report's order, then ours
         "course_sigmoid", "course_tanh", "course_relu"]  # fmt: skip


@dataclass
class Run:
    """One finished run: its folder, ``results.json`` and per-epoch losses (epoch numbers from 1)."""

    path: Path
    results: dict
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[Optional[float]] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return self.path.parent.name

    @property
    def model(self) -> dict:
        return self.results.get("config", {}).get("model", {})

    @property
    def seed(self) -> Optional[int]:
        """The run's ``--seed_everything`` (``None`` if its results do not say)."""
        return self.results.get("config", {}).get("seed_everything")


def _scalars(accumulator, tag: str) -> dict[int, float]:
    """``step → value`` of one scalar tag (the last value wins if a step repeats)."""
    if tag not in accumulator.Tags().get("scalars", []):
        return {}
    return {e.step: e.value for e in accumulator.Scalars(tag)}


def read_curves(run_dir: Path) -> tuple[list[int], list[float], list[Optional[float]]]:
    """``(epochs, train loss, validation loss)`` per training epoch, from the run's TensorBoard events.

    Validation values are taken at the steps where a training epoch ended, so the
    post-fit evaluation (which logs ``val/loss`` once more) is left out.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    train, val, epoch = (_scalars(acc, t) for t in ("train/loss_epoch", "val/loss", "epoch"))
    steps = sorted(train)
    epochs = [int(epoch[s]) + 1 if s in epoch else i + 1 for i, s in enumerate(steps)]
    return epochs, [train[s] for s in steps], [val.get(s) for s in steps]


def read_run(run_dir: str | Path) -> Run:
    """Load a run folder; ``ValueError`` naming it if it has no (readable) ``results.json``."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a finished run: it has no results.json")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    missing = [k for k in ("train", "val", "test") if k not in results]
    if missing or "report" not in results.get("test", {}):
        raise ValueError(f"{path} lacks {missing or ['test.report']}: not written by src.train fit?")
    return Run(run_dir, results, *read_curves(run_dir))


def _version(path: Path) -> int:
    try:
        return int(path.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def _order(name: str) -> tuple[int, str]:
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def latest_runs(log_root: str | Path = LOG_ROOT) -> list[Path]:
    """The latest finished run (``version_N`` with the largest N holding results.json) of each experiment."""
    log_root = Path(log_root)
    runs = []
    for exp in sorted((p for p in log_root.iterdir() if p.is_dir()), key=lambda p: _order(p.name)):
        finished = [v for v in exp.glob("version_*") if (v / "results.json").is_file()]
        if finished:
            runs.append(max(finished, key=_version))
    return runs


def latest_runs_per_seed(log_root: str | Path = LOG_ROOT, seeds: int = 1) -> list[Path]:
    """Per experiment, the latest finished run of each seed ``0 … seeds − 1`` (experiments in report order)."""
    log_root = Path(log_root)
    runs = []
    for exp in sorted((p for p in log_root.iterdir() if p.is_dir()), key=lambda p: _order(p.name)):
        by_seed: dict[int, Path] = {}
        for v in sorted(exp.glob("version_*"), key=_version):
            try:
                seed = json.loads((v / "results.json").read_text())["config"].get("seed_everything")
            except (OSError, ValueError, KeyError, AttributeError):
                continue  # unfinished or unreadable: read_run names it if asked for explicitly
            if seed in range(seeds):
                by_seed[seed] = v  # later versions replace earlier ones
        runs += [by_seed[s] for s in sorted(by_seed)]
    return runs


# ------------------------------------------------------------------- report
def _num(value: Optional[float], course: Optional[float] = None, digits: int = 4) -> str:
    text = "—" if value is None else f"{value:.{digits}f}"
    return text if course is None else f"{text} ({course:g})"


def _row(label: str, run: Run) -> list[str]:
    r, m, course = run.results, run.model, COURSE.get(run.experiment, {})
    final_val = next((v for v in reversed(run.val_loss) if v is not None), None)
    return [
        label,
        str(m.get("implementation", "—")),
        str(m.get("activation", "—")),
        str(m.get("loss", "—")),
        str(m.get("optimizer", "—")) + (" cosine" if m.get("lr_schedule") == "cosine" else ""),
        f"{m['lr']:g}" if "lr" in m else "—",
        f"{m['alpha']:g}" if m.get("regularization", "none") != "none" else "—",
        str(r.get("epochs", len(run.epochs))),
        _num(run.train_loss[-1] if run.train_loss else None, course.get("train_loss")),
        _num(final_val, course.get("val_loss")),
        _num(r["train"]["accuracy"], course.get("train_acc")),
        _num(r["val"]["accuracy"]),
        _num(r["test"]["accuracy"], course.get("test_acc")),
        _num(r["test"]["report"]["macro avg"]["f1"]),
        f"{r['wall_time_s']:.0f}" if "wall_time_s" in r else "—",
    ]


HEADER = [
    "experiment", "implementation", "activation", "loss", "optimizer", "lr", "alpha", "epochs",
    "final train loss", "final val loss", "train acc", "val acc", "test acc", "test macro F1", "wall time (s)",
]  # fmt: skip


def _labels(runs: list[Run]) -> list[str]:
    """Experiment names, with the version where one experiment appears more than once."""
    names = [r.experiment for r in runs]
    return [n if names.count(n) == 1 else f"{n}_{r.path.name}" for n, r in zip(names, runs)]


SEED_HEADER = [
    "experiment", "activation", "optimizer", "lr", "batch", "dropout", "augment", "epochs", "seeds",
    "train acc", "val acc", "test acc", "test macro F1", "wall time (s)",
]  # fmt: skip


def _mean_std(values: Sequence[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _groups(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.experiment, []).append(run)
    return groups


def seed_table(runs: list[Run]) -> list[str]:
    """Markdown rows: per experiment, the mean ± sample std of its runs' accuracies (one run: its value)."""
    rows = ["| " + " | ".join(SEED_HEADER) + " |", "|" + "---|" * len(SEED_HEADER)]
    for name, group in _groups(runs).items():
        m, r0 = group[0].model, group[0].results
        data = r0.get("config", {}).get("data", {})
        aug = data.get("augment", False)
        if aug and data.get("augment_elastic_alpha"):
            aug = "affine + elastic"
        elif aug:
            aug = "affine"
        cell = [
            name,
            str(m.get("activation", "—")),
            str(m.get("optimizer", "—")) + (" cosine" if m.get("lr_schedule") == "cosine" else ""),
            f"{m['lr']:g}" if "lr" in m else "—",
            str(data.get("batch_size", "—")),
            f"{m.get('dropout', 0):g}" if m.get("dropout") else "—",
            aug or "—",
            str(r0.get("epochs", "—")),
            ", ".join(str(run.seed) for run in group),
            *(_mean_std([run.results[split]["accuracy"] for run in group]) for split in ("train", "val", "test")),
            _mean_std([run.results["test"]["report"]["macro avg"]["f1"] for run in group]),
            f"{statistics.mean(run.results.get('wall_time_s', float('nan')) for run in group):.0f}",
        ]
        rows.append("| " + " | ".join(cell) + " |")
    return rows


def write_report(runs: list[Run], out_dir: str | Path = OUT_DIR) -> Path:
    """Write ``REPORT.md`` and its PNGs into ``out_dir``; return the report's path."""
    if not runs:
        raise ValueError("no runs to report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = _labels(runs)
    table = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    table += ["| " + " | ".join(_row(label, run)) + " |" for label, run in zip(labels, runs)]
    # experiments run with several seeds: their mean ± std first; then every run; the figures of
    # each such experiment's first run only (runs of one experiment with the same seed stay apart)
    groups = _groups(runs)
    seeded = {n for n, g in groups.items() if len(g) > 1 and len({r.seed for r in g}) == len(g)}
    several = bool(seeded)
    if several:
        table = [
            "Mean ± sample standard deviation over the seeds listed (wall time: mean):",
            "",
            *seed_table(runs),
            "",
            "Each run:",
            "",
            *table,
        ]
    sections = [
        (run.experiment if run.experiment in seeded else label, run)
        for label, run in zip(labels, runs)
        if run.experiment not in seeded or run is groups[run.experiment][0]
    ]
    md = [
        "# Results",
        "",
        "Regenerate with `python -m src.report --run` (trains every config in `configs/`, then writes "
        "`reports/REPORT.md`); `python -m src.report` reports the latest finished run of each experiment "
        "into `lightning_logs/report/`.",
        "",
        "Losses are the last epoch's (train: mean over the epoch's batches; validation: at the epoch's "
        "end); accuracies and F1 are the best checkpoint's (chosen by validation accuracy) on the whole "
        "split. The course report's figure is in parentheses where it has one (its `relu_l2` figure is a "
        "train accuracy); the course report took 44 minutes per run on 8 cores.",
        "",
        *table,
        "",
    ]
    # issue 12: every run's validation accuracy on one figure; why the activations differ
    from .why import write_why

    md += write_why({label: run.path for label, run in zip(labels, runs)}, out_dir, save_png)
    for label, run in sections:
        r, loss = run.results, run.model.get("loss", "cross_entropy")
        md += [f"## {label}", "", f"Run: `{run.path}`" + (f" (seed {run.seed})" if several else ""), ""]
        if run.train_loss:
            save_png(loss_figure(label, run.epochs, run.train_loss, run.val_loss, loss), out_dir / f"{label}_loss.png")
            md += [f"![{label}: loss per epoch]({label}_loss.png)", ""]
        test = r["test"]["report"]
        fig = confusion_figure(label, test["confusion"], r["test"]["accuracy"])
        save_png(fig, out_dir / f"{label}_confusion.png")
        md += [f"![{label}: test confusion matrix]({label}_confusion.png)", ""]
        for split in ("train", "test"):
            md += [f"{split.capitalize()} classification report:", "", "```", format_report(r[split]["report"]).rstrip(), "```", ""]
    path = out_dir / "REPORT.md"
    write_text_atomic(path, "\n".join(md))
    return path


# ---------------------------------------------------------------------- CLI
def train_configs(configs: list[Path], extra: list[str], seeds: int = 1) -> list[Path]:
    """Run ``python -m src.train fit --config <c> <extra>`` for each config in this process; the run folders.

    With ``seeds`` > 1, each config runs once per ``--seed_everything`` 0 … seeds − 1.
    """
    from ..train import main as train_main

    jobs = [(c, []) for c in configs] if seeds == 1 else [(c, ["--seed_everything", str(s)]) for c in configs for s in range(seeds)]
    runs = []
    for i, (config, seed_args) in enumerate(jobs, 1):
        args = [*seed_args, *extra]
        print(f"\n=== [{i}/{len(jobs)}] {config.stem}: python -m src.train fit --config {config} {' '.join(args)}",
              flush=True)  # fmt: skip
        cli = train_main(["fit", "--config", str(config), *args])
        runs.append(Path(cli.trainer.log_dir))
    return runs
