"""The report's comparison figure and its "why the activations differ" section (issue 12).

:func:`write_why` is called by :func:`src.instruments.results.write_report`; it adds to ``REPORT.md``

* ``val_accuracy.png``: every run's validation accuracy per epoch on the same axes;
* ``why_activations.png``: the gradient-flow diagnostics of :mod:`src.instruments.diagnostics` side by side for
  sigmoid, tanh and ReLU (per-layer ‖∂L/∂h_l‖ through epoch 1, the saturated or dead fraction
  per epoch, the update:data ratio per epoch), with a table of the key numbers and sentences
  that read them.

The three runs compared are the course report's settings (``course_sigmoid``, ``course_tanh``,
``course_relu``: one learning rate for all three, so only the activation differs) where they
exist, else ``baseline``, ``tanh`` and ``relu``, else the first experiment with diagnostics of each
hidden activation (by the run's ``--model.activation``); of an experiment run with several seeds,
its lowest seed's run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from .figures import epoch_ticks

__all__ = ["Diagnostics", "read_diagnostics", "accuracy_figure", "why_figure", "write_why", "choose_why", "WHY_SETS"]

ACTIVATIONS = ("sigmoid", "tanh", "relu")
#: the experiment names compared in the "why" section, first set found wins
WHY_SETS = (("course_sigmoid", "course_tanh", "course_relu"), ("baseline", "tanh", "relu"))
COLORS = {1: "tab:blue", 2: "tab:orange", 3: "tab:green", 4: "tab:red", 5: "tab:purple", 6: "tab:brown"}


class Diagnostics:
    """One run's scalars from its TensorBoard events: ``tag → [(step, value)]``, plus its epoch length."""

    def __init__(self, run_dir: Path) -> None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        self.path = Path(run_dir)
        self.scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags().get("scalars", [])}
        ends = [s for s, _ in self.scalars.get("train/loss_epoch", [])]
        #: validation accuracy at the end of each training epoch (the post-fit evaluation is left out)
        val = dict(self.scalars.get("val/acc", []))
        self.val_acc = [val[s] for s in ends if s in val]
        diag_steps = [s for s, _ in self.scalars.get("diagnostics/probe_loss", [])]
        epochs = len(ends)
        self.steps_per_epoch = max(diag_steps) / epochs if diag_steps and epochs else 1.0

    def layers(self, name: str) -> list[int]:
        prefix = f"diagnostics/{name}/layer"
        return sorted(int(t[len(prefix):]) for t in self.scalars if t.startswith(prefix))

    def series(self, name: str, layer: int) -> list[tuple[int, float]]:
        return self.scalars.get(f"diagnostics/{name}/layer{layer}", [])

    def at(self, name: str, layer: int, step: int) -> Optional[float]:
        return dict(self.series(name, layer)).get(step)

    @property
    def has_diagnostics(self) -> bool:
        return "diagnostics/probe_loss" in self.scalars


def read_diagnostics(run_dir: Path) -> Diagnostics:
    return Diagnostics(run_dir)


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _mean_band(curves: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Per epoch (as far as every curve goes): the mean, and mean ± the sample std (0 for one curve)."""
    n = min(len(c) for c in curves)
    mean, lo, hi = [], [], []
    for i in range(n):
        values = [c[i] for c in curves]
        m = sum(values) / len(values)
        sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        mean.append(m), lo.append(m - sd), hi.append(m + sd)
    return mean, lo, hi


def accuracy_figure(labels: Sequence[str], diags: Sequence[Diagnostics] | Sequence[Sequence[Diagnostics]]) -> Figure:
    """Validation accuracy per epoch, one line per experiment, on one logit-scaled axis (0.9, 0.99 equally spaced).

    ``diags``: one run per label, or the runs of each label's seeds: then the line is their mean
    and a band shows ± one sample standard deviation.  A line equal to an earlier one at every
    epoch (``package``, the twin, equals ``baseline``) is drawn dotted on top of it, and its
    legend entry says so.
    """
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    # each course run in the colour of our tuned config for the same activation
    pairs = {"baseline": 0, "course_sigmoid": 0, "tanh": 1, "course_tanh": 1, "relu": 2, "course_relu": 2}
    others = iter(range(3, 100))
    drawn: dict[tuple, str] = {}  # a curve's values → the label drawn with them
    seeded = False
    for label, group in zip(labels, diags):
        group = [group] if isinstance(group, Diagnostics) else list(group)
        group = [d for d in group if d.val_acc]
        if not group:
            continue
        clip = lambda a: min(max(a, 1e-4), 1 - 1e-4)  # noqa: E731 (the logit scale has no 0 or 1)
        mean, lo, hi = _mean_band([[clip(a) for a in d.val_acc] for d in group])
        epochs = range(1, len(mean) + 1)
        color = f"C{pairs[label] if label in pairs else next(others) % 10}"
        style = "--" if label.startswith("course_") else "-"
        text = label + (f" ({len(group)} seeds)" if len(group) > 1 else "")
        seeded = seeded or len(group) > 1
        same = drawn.get(tuple(mean))
        if same is not None:  # drawn on top of an equal line, which stays visible around it
            style, text = ":", f"{text} (= {same}, drawn on it)"
        ax.plot(epochs, mean, style, color=color, marker="o", markersize=3, label=text, zorder=3 if same else 2)
        if len(group) > 1:
            ax.fill_between(epochs, [clip(v) for v in lo], [clip(v) for v in hi], color=color, alpha=0.15, linewidth=0)
        drawn.setdefault(tuple(mean), label)
    covered = {tuple(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() == ":"}
    for line in ax.get_lines():  # a line with an equal one on top: wide and pale, so both show
        if line.get_linestyle() != ":" and tuple(line.get_ydata()) in covered:
            line.set_linewidth(5.0)
            line.set_alpha(0.45)
    ax.set_yscale("logit")
    ax.yaxis.set_major_locator(FixedLocator([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (logit scale)")
    ax.set_title("Validation accuracy per epoch (dashed: the course report's settings)"
                 + ("\nseveral seeds: their mean, and a band of ± one sample std" if seeded else ""))  # fmt: skip
    ax.xaxis.set_major_locator(epoch_ticks())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    return fig


def _activation(name: str) -> str:
    """The hidden activation an experiment's name says (``baseline``: sigmoid), for callers that pass none."""
    return next((a for a in ACTIVATIONS if a in name), name) if name != "baseline" else "sigmoid"


def why_figure(names: Sequence[str], diags: Sequence[Diagnostics], activations: Sequence[str] = ()) -> Figure:
    """Rows: ‖∂L/∂h_l‖ through epoch 1; saturated / dead fraction per epoch; update:data ratio per epoch."""
    fig = _figure(4.2 * len(diags), 10.0)
    axes = fig.subplots(3, len(diags), squeeze=False, sharey="row")
    activations = list(activations) or [_activation(name) for name in names]
    for col, (name, d, act) in enumerate(zip(names, diags, activations)):
        n = d.steps_per_epoch
        ax = axes[0][col]
        for layer in d.layers("grad_h"):
            pts = [(s, v) for s, v in d.series("grad_h", layer) if s <= n]
            ax.plot(*zip(*pts), "o-", markersize=3, color=COLORS.get(layer), label=f"layer {layer}")
        ax.set_yscale("log")
        ax.set_title(f"{name} ({act})\n‖∂L/∂h_l‖ through epoch 1" if act not in name else f"{name}\n‖∂L/∂h_l‖ through epoch 1")
        ax.set_xlabel("step")
        unit = "dead" if act == "relu" else "saturated"
        ax = axes[1][col]
        for layer in d.layers(unit):
            pts = [(s / n, v) for s, v in d.series(unit, layer) if s == 0 or s >= n * 0.999]
            ax.plot(*zip(*pts), "o-", markersize=3, color=COLORS.get(layer), label=f"layer {layer}")
        ax.set_title(f"{unit} fraction" + (" (never > 0 on the probe)" if unit == "dead" else " (g′ < 5 % of max)"))
        ax.set_xlabel("epoch")
        ax = axes[2][col]
        for layer in d.layers("update_ratio"):
            pts = [(s / n, v) for s, v in d.series("update_ratio", layer) if s == 0 or s >= n * 0.999]
            ax.plot(*zip(*pts), "o-", markersize=3, color=COLORS.get(layer), label=f"layer {layer}")
        ax.axhline(1e-3, color="gray", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_title("update:data  lr·‖∂L/∂W_l‖ / ‖W_l‖")
        ax.set_xlabel("epoch")
        for row in axes:
            row[col].grid(alpha=0.3, which="both")
    for row in axes:
        row[0].legend(fontsize=8)
    return fig


def _fmt(v: Optional[float], spec: str = ".3g") -> str:
    return "—" if v is None else format(v, spec)


def _key_numbers(act: str, d: Diagnostics) -> dict:
    n = d.steps_per_epoch
    layers = d.layers("grad_h")
    first, last = (layers[0], layers[-1]) if layers else (None, None)
    g0_first = d.at("grad_h", first, 0) if first else None
    g0_last = d.at("grad_h", last, 0) if last else None
    end1 = round(n)
    ratio1 = d.at("update_ratio", first, end1) if first else None
    unit = "dead" if act == "relu" else "saturated"
    fracs = [d.series(unit, layer)[-1][1] for layer in d.layers(unit) if d.series(unit, layer)]
    return {
        "grad_in_over_out": (g0_first / g0_last) if g0_first and g0_last else None,
        "ratio_layer1_epoch1": ratio1,
        "ratio_out_epoch1": d.at("update_ratio", last, end1) if last else None,
        "unit": unit,
        "unit_max_end": max(fracs) if fracs else None,
        "acc_epoch1": d.val_acc[0] if d.val_acc else None,
        "acc_end": d.val_acc[-1] if d.val_acc else None,
    }


def choose_why(activations: dict[str, str], has_diagnostics: dict[str, bool]) -> tuple[str, ...]:
    """The experiments compared in "why the activations differ": a set of :data:`WHY_SETS`, else one per activation.

    ``activations``: experiment → its hidden activation (report order); only experiments with
    diagnostics count.  The fallback takes, for sigmoid, tanh and ReLU in turn, the first
    experiment of that activation: never the same activation twice.
    """
    ok = [name for name in activations if has_diagnostics.get(name)]
    chosen = next((s for s in WHY_SETS if all(n in ok for n in s)), None)
    if chosen is not None:
        return chosen
    first = {a: next((n for n in ok if activations[n] == a), None) for a in ACTIVATIONS}
    return tuple(n for n in first.values() if n is not None)


def write_why(
    runs_by_name: dict[str, Path | Sequence[Path]], out_dir: Path, save_png, activations: Optional[dict[str, str]] = None
) -> list[str]:
    """The markdown lines of the comparison figure and the "why" section; PNGs saved with ``save_png``.

    ``runs_by_name``: label → its run folder, or its seeds' run folders (lowest seed first: the
    accuracy figure shows their mean ± std, the "why" section the first).  ``activations``: label →
    the hidden activation of its runs (default: what the label's name says).
    """
    labels = list(runs_by_name)
    folders = {k: [v] if isinstance(v, (str, Path)) else list(v) for k, v in runs_by_name.items()}
    diags = {label: [read_diagnostics(path) for path in paths] for label, paths in folders.items()}
    acts = {label: (activations or {}).get(label) or _activation(label) for label in labels}
    md = ["## Validation accuracy, every experiment", ""]
    save_png(accuracy_figure(labels, [diags[k] for k in labels]), out_dir / "val_accuracy.png")
    seeded = [k for k in labels if len(diags[k]) > 1]
    md += ["![validation accuracy per epoch, every experiment" + (", mean ± std over seeds" if seeded else "")
           + "](val_accuracy.png)", ""]  # fmt: skip
    if seeded:
        md += [f"{', '.join(seeded)}: the mean over {'its' if len(seeded) == 1 else 'their'} seeds, with a band of ± one "
               "sample standard deviation.", ""]  # fmt: skip
    chosen = choose_why(acts, {k: diags[k][0].has_diagnostics for k in labels})
    md += ["## Why the activations differ", ""]
    if not chosen:
        return md + ["No run with gradient-flow diagnostics (`diagnostics/` in TensorBoard) to compare.", ""]
    compared = [acts[n] for n in chosen]
    save_png(why_figure(chosen, [diags[n][0] for n in chosen], compared), out_dir / "why_activations.png")
    nums = {n: _key_numbers(acts[n], diags[n][0]) for n in chosen}
    same_lr = chosen[0].startswith("course_")
    md += [
        f"Runs: {', '.join(f'`{folders[n][0]}`' for n in chosen)}"
        + (" (the course report's settings: one learning rate, 0.01, for all three, so only the activation differs)." if same_lr else "."),
        "Measured by `src.instruments.diagnostics.GradientFlowDiagnostics` on a fixed probe batch (the first 256 validation "
        "images) before training, a few times in epoch 1 and after every epoch; layer 1 is the "
        "first hidden layer, the last layer the output (its h is the logits).",
        "",
        f"![gradient flow: {', '.join('ReLU' if a == 'relu' else a for a in compared)}](why_activations.png)",
        "",
        "| run | ‖∂L/∂h₁‖ / ‖∂L/∂h_out‖ at the start | update:data ratio after epoch 1, layer 1 / output | "
        "saturated or dead fraction at the end (worst layer) | val acc after epoch 1 | val acc at the end |",
        "|---|---|---|---|---|---|",
    ]
    for n in chosen:
        k = nums[n]
        md.append(
            f"| {n} | {_fmt(k['grad_in_over_out'])} | {_fmt(k['ratio_layer1_epoch1'])} / {_fmt(k['ratio_out_epoch1'])} | "
            f"{_fmt(k['unit_max_end'], '.2%')} {k['unit']} | {_fmt(k['acc_epoch1'], '.4f')} | {_fmt(k['acc_end'], '.4f')} |"
        )
    for sentence in _reading(chosen, nums, acts):
        md += ["", sentence]
    md += [""]
    return md


def _reading(chosen: Sequence[str], nums: dict, acts: dict[str, str]) -> list[str]:
    """A few sentences that read the figure, from its numbers."""
    by_act = {acts[n]: n for n in chosen}
    out = []
    s, t, r = (nums.get(by_act.get(a)) for a in ACTIVATIONS)
    if s and s["grad_in_over_out"] is not None:
        others = ", ".join(f"{a} {_fmt(nums[by_act[a]]['grad_in_over_out'], '.2f')}" for a in ("tanh", "relu") if a in by_act)
        out.append(
            f"**Vanishing gradient.** Before the first step, the gradient arriving at sigmoid's first hidden layer is "
            f"{_fmt(s['grad_in_over_out'], '.2f')} of the one at its output ({others}): every sigmoid layer "
            "multiplies the backward signal by σ′ ≤ ¼, while tanh′ and ReLU′ reach 1."
        )
    if s and s["ratio_layer1_epoch1"] is not None:
        others = ", ".join(f"{a} {_fmt(nums[by_act[a]]['ratio_layer1_epoch1'])}" for a in ("tanh", "relu") if a in by_act)
        out.append(
            f"**Steps too small.** After epoch 1 an update moves sigmoid's first-layer weights by "
            f"{_fmt(s['ratio_layer1_epoch1'])} of their size ({others}; about 1e-3 is the usual healthy figure), so with the "
            "same learning rate the sigmoid net learns far more slowly"
            + (f": validation accuracy {_fmt(s['acc_epoch1'], '.3f')} after epoch 1 against "
               f"{', '.join(_fmt(nums[by_act[a]]['acc_epoch1'], '.3f') + ' (' + a + ')' for a in ('tanh', 'relu') if a in by_act)}."
               if s["acc_epoch1"] is not None else ".")  # fmt: skip
        )
    if s and s["unit_max_end"] is not None:
        out.append(
            f"**Not saturation.** Sigmoid's saturated fraction stays small ({_fmt(s['unit_max_end'], '.2%')} in the worst layer at the "
            "end), so its slowness is the ¼ per layer and its small steps, not units stuck at 0 or 1"
            + (f"; tanh saturates more ({_fmt(t['unit_max_end'], '.2%')}) and still trains fast, because its unsaturated units pass "
               "the gradient at full strength." if t and t["unit_max_end"] is not None else ".")  # fmt: skip
        )
    if r and r["unit_max_end"] is not None:
        out.append(
            f"**ReLU.** {_fmt(r['unit_max_end'], '.2%')} of the units of its worst layer are dead on the probe at the end: "
            "a few units lost, no collapse; the rest pass the gradient unchanged (ReLU′ = 1), which is why ReLU "
            "trains at least as fast as tanh here."
        )
    return out
