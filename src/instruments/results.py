"""The report's pieces: finished runs read from their folders, and ``REPORT.md`` written from them.

* :class:`Run`, :func:`read_run` — one finished run: its ``results.json`` (written by
  ``python -m src.train fit``) and its per-epoch losses from its TensorBoard events
  (``train/loss_epoch``, ``val/loss``).  A run resumed with ``--ckpt_path`` continues an earlier
  run folder (:func:`resumed_chain` follows the chain back): its losses start at the first
  folder's first epoch and its wall time is the sum over the processes;
* :func:`latest_runs`, :func:`latest_runs_per_seed` — the runs a report shows unless told which;
* :func:`write_report` — ``REPORT.md``: the table (:func:`seed_table` first, for experiments run
  with several seeds), the sections of :mod:`~src.instruments.why`, and per experiment its loss
  and confusion figures (:mod:`~src.instruments.figures`) and classification reports.

The command around them (its arguments, training the configs for ``--run``, where the report
goes) is :mod:`src.report`.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import yaml

from .figures import confusion_figure, loss_figure, save_png
from .why import write_why
from ..errors import ConfigError
from ..system.checkpoints import AtomicCheckpointIO, completed_epochs
from ..system.metrics import format_report
from ..system.runs import LOG_ROOT, write_text_atomic

__all__ = [
    "COURSE", "ORDER", "Run", "read_run", "resumed_chain", "latest_runs", "latest_runs_per_seed",
    "experiment_runs_per_seed", "experiment_order", "run_labels", "seed_notes", "seed_table", "write_report",
]  # fmt: skip

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

Curves = tuple[list[int], list[float], list[Optional[float]]]  #: (epochs from 1, train loss, validation loss)


@dataclass
class Run:
    """One finished run: its folder, ``results.json`` and per-epoch losses (epoch numbers from 1).

    For a run resumed with ``--ckpt_path``, ``earlier`` holds the run folders it continues
    (earliest first), the losses cover theirs too, and ``seconds`` holds one wall time per process
    (this folder's last; ``None`` where no record says).
    """

    path: Path
    results: dict
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[Optional[float]] = field(default_factory=list)
    earlier: list[Path] = field(default_factory=list)
    #: the last epoch of each earlier folder's part of the curve (where the next process took over)
    resumed_after: list[int] = field(default_factory=list)
    seconds: list[Optional[float]] = field(default_factory=list)
    #: where the chain breaks, if it does: the run folder of a ``--ckpt_path`` that is not here
    #: (moved or deleted), or a checkpoint kept outside any run folder
    missing: Optional[Path] = None

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

    @property
    def wall_time_s(self) -> Optional[float]:
        """Seconds over every process of the run (``None`` if one of them has no record)."""
        return None if not self.seconds or None in self.seconds else sum(self.seconds)


# ------------------------------------------------------------------ one folder
def _scalars(accumulator, tag: str) -> dict[int, float]:
    """``step → value`` of one scalar tag (the last value wins if a step repeats)."""
    if tag not in accumulator.Tags().get("scalars", []):
        return {}
    return {e.step: e.value for e in accumulator.Scalars(tag)}


def _events(run_dir: Path):
    """The folder's TensorBoard events, every scalar point kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return acc


def _curves(acc) -> Curves:
    """``(epochs, train loss, validation loss)`` per training epoch, from one folder's events.

    Validation values are taken at the steps where a training epoch ended, so the post-fit
    evaluation (which logs ``val/loss`` once more) is left out.  Epoch numbers are the trainer's,
    so a resumed run's start after its checkpoint's.
    """
    train, val, epoch = (_scalars(acc, t) for t in ("train/loss_epoch", "val/loss", "epoch"))
    steps = sorted(train)
    epochs = [int(epoch[s]) + 1 if s in epoch else i + 1 for i, s in enumerate(steps)]
    return epochs, [train[s] for s in steps], [val.get(s) for s in steps]


def _event_seconds(acc) -> Optional[float]:
    """From the first TensorBoard event to the last scalar: the time of a process that left no results."""
    try:
        first = acc.FirstEventTimestamp()
    except ValueError:  # no events at all
        return None
    last = [e.wall_time for tag in acc.Tags().get("scalars", []) for e in acc.Scalars(tag)]
    return max(last) - first if last else None


def _results(run_dir: Path) -> Optional[dict]:
    """The folder's ``results.json``, or ``None`` where it has none (a run interrupted before the end)."""
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None


def _finished_results(run_dir: Path) -> dict:
    """``results.json`` of a run asked for by name; ``ValueError`` naming it if it has none or it is not readable."""
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
    return results


# ------------------------------------------------------------------ resumed runs
def _ckpt_path(run_dir: Path, results: Optional[dict]) -> Optional[str]:
    """The ``--ckpt_path`` a run started from: in ``results.json``'s config, else (a run that never
    finished) in the ``config.yaml`` Lightning wrote at its start."""
    if results is not None:
        given = results.get("config", {}).get("ckpt_path")
        if not given or Path(given).parts[-4:-2] != run_dir.parts[-2:]:
            return given
        # a resume that only wrote the report of this run (its training had ended): where the run started
        # is in the config.yaml of its start, which that resume leaves as it was
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config.get("ckpt_path") if isinstance(config, dict) else None


def _run_folder(ckpt: Path) -> Optional[Path]:
    """The run folder of a checkpoint (``<run>/checkpoints/last.ckpt`` → ``<run>``) where it is one and is here."""
    folder = ckpt.parent.parent
    return folder if ckpt.parent.name == "checkpoints" and folder.is_dir() else None


def _resumed_from(run_dir: Path, results: Optional[dict]) -> Optional[tuple[Path, Optional[Path]]]:
    """``(checkpoint, its run folder or None)`` that ``run_dir`` resumed from; ``None`` for a run started afresh.

    A relative ``--ckpt_path`` is relative to where training ran: the current folder, or else the
    folder that holds the run's ``lightning_logs/`` (``<there>/lightning_logs/<experiment>/version_N``).
    """
    given = _ckpt_path(run_dir, results)
    if not given:
        return None
    ckpt, parents = Path(given), run_dir.resolve().parents
    if _run_folder(ckpt) is None and not ckpt.is_absolute() and len(parents) > 2 and _run_folder(parents[2] / ckpt):
        ckpt = parents[2] / ckpt
    return ckpt, _run_folder(ckpt)


def _finished_epochs(ckpt: Path) -> Optional[int]:
    """Training epochs the checkpoint had finished; ``None`` if it is gone or unreadable."""
    try:
        return completed_epochs(AtomicCheckpointIO().load_checkpoint(ckpt))
    except ConfigError:
        return None


def resumed_chain(run_dir: str | Path, results: Optional[dict] = None) -> tuple[list[tuple[Path, Optional[int]]], Optional[Path]]:
    """The run folders a run resumed with ``--ckpt_path`` continues, earliest first, and where the chain breaks.

    Each folder comes with the training epochs of the checkpoint the next run resumed from
    (``None`` if it is no longer readable); the second value is where the chain breaks (see
    :attr:`Run.missing`), else ``None``.  A run started afresh gives ``([], None)``.
    """
    run_dir = Path(run_dir)
    chain: list[tuple[Path, Optional[int]]] = []
    seen = {run_dir.resolve()}
    here, res = run_dir, _results(run_dir) if results is None else results
    while (found := _resumed_from(here, res)) is not None:
        ckpt, folder = found
        if folder is None:  # the run folder named is not here, or the checkpoint was kept outside one
            return chain[::-1], ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt
        if folder.resolve() in seen:  # a loop: only a hand-edited config can make one
            break
        seen.add(folder.resolve())
        chain.append((folder, _finished_epochs(ckpt)))
        here, res = folder, _results(folder)
    return chain[::-1], None


def _join(parts: Sequence[tuple[Curves, Optional[int]]]) -> tuple[Curves, list[int]]:
    """One curve from the parts of a chain (earliest first), and the last epoch of each part before the last.

    Each part comes with the epochs its resumed checkpoint had finished: its epochs count up to
    there (where the checkpoint cannot be read: up to the next part's first epoch), since the next
    process trained the epochs after it again.
    """
    points, ends = [], []
    for i, ((epochs, train, val), finished) in enumerate(parts):
        later = parts[i + 1][0][0] if i + 1 < len(parts) else []
        limit = finished if finished is not None else later[0] - 1 if later else None
        kept = [p for p in zip(epochs, train, val) if limit is None or p[0] <= limit]
        points += kept
        if later and kept:
            ends.append(kept[-1][0])
    epochs, train, val = (list(column) for column in zip(*points)) if points else ([], [], [])
    return (epochs, train, val), ends


def _process_seconds(results: Optional[dict], acc) -> Optional[float]:
    """One process's wall time: its ``results.json``'s, else (interrupted) the span of its TensorBoard events."""
    return results["wall_time_s"] if results and "wall_time_s" in results else _event_seconds(acc)


def read_run(run_dir: str | Path) -> Run:
    """Load a finished run folder, with the earlier folders of a resumed run (:func:`resumed_chain`).

    ``ValueError`` naming the folder if it has no (readable) ``results.json``.
    """
    run_dir = Path(run_dir)
    results = _finished_results(run_dir)
    chain, missing = resumed_chain(run_dir, results)
    parts, seconds = [], []
    for folder, res, finished in [*((f, _results(f), n) for f, n in chain), (run_dir, results, None)]:
        acc = _events(folder)
        parts.append((_curves(acc), finished))
        seconds.append(_process_seconds(res, acc))
    (epochs, train, val), ends = _join(parts)
    return Run(run_dir, results, epochs, train, val, [f for f, _ in chain], ends, seconds, missing)


def _version(path: Path) -> int:
    try:
        return int(path.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def experiment_order(name: str) -> tuple[int, str]:
    """Sort key: the course report's experiments in its order, then ours, then any other by name."""
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def latest_runs(log_root: str | Path = LOG_ROOT) -> list[Path]:
    """The latest finished run (``version_N`` with the largest N holding results.json) of each experiment."""
    log_root = Path(log_root)
    runs = []
    for exp in sorted((p for p in log_root.iterdir() if p.is_dir()), key=lambda p: experiment_order(p.name)):
        finished = [v for v in exp.glob("version_*") if (v / "results.json").is_file()]
        if finished:
            runs.append(max(finished, key=_version))
    return runs


def latest_runs_per_seed(log_root: str | Path = LOG_ROOT, seeds: int = 1, only: Optional[str] = None) -> list[Path]:
    """Per experiment (or ``only`` that one), the latest finished run of each seed ``0 … seeds − 1`` (report order)."""
    log_root = Path(log_root)
    runs = []
    experiments = [p for p in log_root.iterdir() if p.is_dir() and (only is None or p.name == only)]
    for exp in sorted(experiments, key=lambda p: experiment_order(p.name)):
        by_seed: dict[int, Path] = {}
        for v in sorted(exp.glob("version_*"), key=_version):
            try:
                seed = _results(v)["config"].get("seed_everything")
            except (TypeError, KeyError, AttributeError):
                continue  # unfinished or unreadable: read_run names it if asked for explicitly
            if seed in range(seeds):
                by_seed[seed] = v  # later versions replace earlier ones
        runs += [by_seed[s] for s in sorted(by_seed)]
    return runs


def experiment_runs_per_seed(log_root: str | Path, experiment: str, seeds: int) -> list[Path]:
    """The latest finished run of each seed ``0 … seeds − 1`` of one experiment (seeds without one are left out)."""
    folder = Path(log_root) / experiment
    return latest_runs_per_seed(folder.parent, seeds, only=experiment) if folder.is_dir() else []


#: the settings in which runs of one experiment may differ and still be seeds of one experiment
PER_RUN_KEYS = {
    "seed_everything", "data.seed", "ckpt_path", "experiment", "config", "data.data_dir", "trainer.default_root_dir",
    # what is shown and logged, not what is trained (eval_batch_size changes no result)
    "diagnostics", "data.eval_batch_size", "trainer.callbacks", "trainer.logger", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.log_every_n_steps",
}  # fmt: skip


def _flat(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def seed_notes(runs: list[Run], asked: Optional[dict[str, int]] = None) -> list[str]:
    """Sentences that say where the runs of an experiment are not the seeds asked for, or not one experiment.

    ``asked``: experiment → number of seeds it was asked for (``0 … N − 1``).  Said: a seed asked
    for with no finished run, a seed that appears more than once (those runs are then shown
    one by one, without mean ± std), and settings other than the seed in which the runs differ.
    """
    notes, groups = [], _groups(runs)
    for name, n in (asked or {}).items():
        found = sorted({run.seed for run in groups.get(name, [])} & set(range(n)))
        if len(found) < n:
            lacking = [s for s in range(n) if s not in found]
            notes.append(
                f"{name}: asked for seeds 0–{n - 1}, but {', '.join(map(str, lacking))} "
                f"{'has' if len(lacking) == 1 else 'have'} no finished run"
                + (f"; reported: seeds {', '.join(map(str, found))}" if found else "; not reported")
            )
    for name, group in groups.items():
        seeds = [run.seed for run in group]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        if len(group) > 1 and repeated:
            notes.append(
                f"{name}: {len(group)} runs, seeds {', '.join(map(str, seeds))}: "
                + ", ".join(f"seed {s} {seeds.count(s)} times" for s in repeated)
                + f"; these are not {len(group)} seeds, so each run is shown alone, without mean ± std"
            )
        configs = [_flat(run.results.get("config", {})) for run in group]
        differ = sorted(k for k in set().union(*configs) if k not in PER_RUN_KEYS
                        and len({repr(c.get(k)) for c in configs}) > 1)  # fmt: skip
        if differ:
            shown = "; ".join(f"{k}: {', '.join(repr(c.get(k)) for c in configs)}" for k in differ[:4])
            notes.append(f"{name}: its runs differ in more than the seed ({shown}{'; …' if len(differ) > 4 else ''})")
    return notes


# ------------------------------------------------------------------ the report
def _num(value: Optional[float], course: Optional[float] = None, digits: int = 4) -> str:
    text = "—" if value is None else f"{value:.{digits}f}"
    return text if course is None else f"{text} ({course:g})"


def _wall_time(run: Run) -> str:
    """Seconds, and how many processes they add up where the run was resumed."""
    seconds = run.wall_time_s
    if seconds is None:
        return "—"
    return f"{seconds:.0f}" + (f" ({len(run.seconds)} processes)" if len(run.seconds) > 1 else "")


def _optimizer(model: dict) -> str:
    return str(model.get("optimizer", "—")) + (" cosine" if model.get("lr_schedule") == "cosine" else "")


def _row(label: str, run: Run) -> list[str]:
    r, m, course = run.results, run.model, COURSE.get(run.experiment, {})
    final_val = next((v for v in reversed(run.val_loss) if v is not None), None)
    return [
        label,
        str(m.get("implementation", "—")),
        str(m.get("activation", "—")),
        str(m.get("loss", "—")),
        _optimizer(m),
        f"{m['lr']:g}" if "lr" in m else "—",
        f"{m['alpha']:g}" if m.get("regularization", "none") != "none" else "—",
        str(r.get("epochs", len(run.epochs))),
        _num(run.train_loss[-1] if run.train_loss else None, course.get("train_loss")),
        _num(final_val, course.get("val_loss")),
        _num(r["train"]["accuracy"], course.get("train_acc")),
        _num(r["val"]["accuracy"]),
        _num(r["test"]["accuracy"], course.get("test_acc")),
        _num(r["test"]["report"]["macro avg"]["f1"]),
        _wall_time(run),
    ]


HEADER = [
    "experiment", "implementation", "activation", "loss", "optimizer", "lr", "alpha", "epochs",
    "final train loss", "final val loss", "train acc", "val acc", "test acc", "test macro F1", "wall time (s)",
]  # fmt: skip


def run_labels(runs: list[Run]) -> list[str]:
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


def _augment(data: dict) -> str:
    if data.get("augment") and data.get("augment_elastic_alpha"):
        return "affine + elastic"
    return "affine" if data.get("augment") else "—"


def _seed_row(name: str, group: list[Run]) -> list[str]:
    """One experiment over its seeds: its settings (from the first run), the mean ± std of its figures."""
    m, r0 = group[0].model, group[0].results
    data = r0.get("config", {}).get("data", {})
    seconds = [math.nan if run.wall_time_s is None else run.wall_time_s for run in group]
    return [
        name,
        str(m.get("activation", "—")),
        _optimizer(m),
        f"{m['lr']:g}" if "lr" in m else "—",
        str(data.get("batch_size", "—")),
        f"{m.get('dropout', 0):g}" if m.get("dropout") else "—",
        _augment(data),
        str(r0.get("epochs", "—")),
        ", ".join(str(run.seed) for run in group),
        *(_mean_std([run.results[split]["accuracy"] for run in group]) for split in ("train", "val", "test")),
        _mean_std([run.results["test"]["report"]["macro avg"]["f1"] for run in group]),
        f"{statistics.mean(seconds):.0f}",
    ]


def seed_table(runs: list[Run]) -> list[str]:
    """Markdown rows: per experiment, the mean ± sample std of its runs' accuracies (one run: its value)."""
    rows = ["| " + " | ".join(SEED_HEADER) + " |", "|" + "---|" * len(SEED_HEADER)]
    return rows + ["| " + " | ".join(_seed_row(name, group)) + " |" for name, group in _groups(runs).items()]


INTRO = [
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
]
#: said under the table when a run was resumed with --ckpt_path
RESUMED_NOTE = (
    "A run resumed with `--ckpt_path` continues the run folder of its checkpoint: its loss figure covers "
    "every epoch from that first folder's first, and its wall time is the sum over its processes "
    "(an interrupted process's from its TensorBoard events, first to last)."
)


def _seeded(runs: list[Run]) -> set[str]:
    """The experiments run with several seeds (one run per seed), shown as mean ± std."""
    return {n for n, g in _groups(runs).items() if len(g) > 1 and len({r.seed for r in g}) == len(g)}


def _tables(runs: list[Run], labels: list[str]) -> list[str]:
    """The table of every run, after the mean ± std table where some experiment has several seeds."""
    table = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    table += ["| " + " | ".join(_row(label, run)) + " |" for label, run in zip(labels, runs)]
    if _seeded(runs):
        table = [
            "Mean ± sample standard deviation over the seeds listed (wall time: mean):",
            "",
            *seed_table(runs),
            "",
            "Each run:",
            "",
            *table,
        ]
    return table + ([""] + [RESUMED_NOTE] if any(run.earlier for run in runs) else [])


def _source(run: Run, with_seed: bool) -> str:
    """``Run: `folder``` with the folders a resumed run continues (and its seed, where seeds are compared)."""
    text = f"Run: `{run.path}`"
    if run.earlier:
        text += ", resuming " + " ← ".join(f"`{p}`" for p in reversed(run.earlier))
    if run.missing is not None:
        text += f" (resumed from `{run.missing}`: no run folder of it here, so the epochs before are left out)"
    return text + (f" (seed {run.seed})" if with_seed else "")


def _section(label: str, run: Run, out_dir: Path, with_seed: bool) -> list[str]:
    """One run's section: its loss and confusion figures (PNGs saved) and its classification reports."""
    r, loss = run.results, run.model.get("loss", "cross_entropy")
    md = [f"## {label}", "", _source(run, with_seed), ""]
    if r.get("evaluated_weights"):  # runs made before weight averaging existed evaluated the trained weights
        md += [f"Evaluated with {r['evaluated_weights']}.", ""]
    if run.train_loss:
        fig = loss_figure(label, run.epochs, run.train_loss, run.val_loss, loss, run.resumed_after)
        save_png(fig, out_dir / f"{label}_loss.png")
        md += [f"![{label}: loss per epoch]({label}_loss.png)", ""]
    fig = confusion_figure(label, r["test"]["report"]["confusion"], r["test"]["accuracy"])
    save_png(fig, out_dir / f"{label}_confusion.png")
    md += [f"![{label}: test confusion matrix]({label}_confusion.png)", ""]
    for split in ("train", "test"):
        md += [f"{split.capitalize()} classification report:", "", "```", format_report(r[split]["report"]).rstrip(), "```", ""]
    return md


def write_report(runs: list[Run], out_dir: str | Path, notes: Sequence[str] = ()) -> Path:
    """Write ``REPORT.md`` and its PNGs into ``out_dir``; return the report's path.

    ``notes`` (:func:`seed_notes`) go above the table.
    """
    if not runs:
        raise ValueError("no runs to report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, seeded, groups = run_labels(runs), _seeded(runs), _groups(runs)
    md = [*INTRO, *(f"**Note:** {note}." for note in notes), *([""] if notes else []), *_tables(runs, labels), ""]
    # issue 12: every run's validation accuracy on one figure; why the activations differ
    # (an experiment run with several seeds: one line, their mean ± std; its lowest seed's run in the "why")
    figure_runs: dict[str, list[Path]] = {}
    activations: dict[str, str] = {}
    for label, run in zip(labels, runs):
        key = run.experiment if run.experiment in seeded else label
        figure_runs.setdefault(key, []).append(run.path)
        activations.setdefault(key, str(run.model.get("activation", "")))
    md += write_why(figure_runs, out_dir, save_png, activations)
    # the figures of each run, but of a seeded experiment's first run only (under the experiment's name)
    for label, run in zip(labels, runs):
        if run.experiment not in seeded:
            md += _section(label, run, out_dir, with_seed=bool(seeded))
        elif run is groups[run.experiment][0]:
            md += _section(run.experiment, run, out_dir, with_seed=True)
    before = _figures_of(out_dir / "REPORT.md")
    path = write_text_atomic(out_dir / "REPORT.md", "\n".join(md))
    for stale in sorted(before - _figures_of(path)):  # the figures of the report this one replaced, no longer shown
        (out_dir / stale).unlink(missing_ok=True)
    return path


def _figures_of(report: Path) -> set[str]:
    """The PNGs a REPORT.md shows (``![…](name.png)``, files beside it); none if there is no report."""
    try:
        text = report.read_text()
    except OSError:
        return set()
    return set(re.findall(r"!\[[^\]]*\]\(([\w.-]+\.png)\)", text))
