"""The report's comparison figure and its "why the activations differ" section (issue 12).

:func:`write_why` is called by :func:`src.instruments.results.write_report`; it adds to ``REPORT.md``

* ``val_accuracy.png``: every run's validation accuracy per epoch on the same axes;
* ``why_activations.png``: the gradient-flow diagnostics of :mod:`src.instruments.diagnostics` side by side for
  sigmoid, tanh and ReLU (per-layer ‖∂L/∂h_l‖ through epoch 1, the saturated or dead fraction
  per epoch, the update:data ratio per epoch), with a table of the key numbers and sentences
  that read them.

The three runs compared are the course report's settings (``course_sigmoid``, ``course_tanh``,
``course_relu``: one learning rate for all three, so only the activation differs) where they
exist, else ``baseline``, ``tanh`` and ``relu``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

__all__ = ["Diagnostics", "read_diagnostics", "accuracy_figure", "why_figure", "write_why", "WHY_SETS"]

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


def accuracy_figure(labels: Sequence[str], diags: Sequence[Diagnostics]) -> Figure:
    """Every run's validation accuracy per epoch, on one logit-scaled axis (0.9, 0.99 equally spaced)."""
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    # each course run in the colour of our tuned config for the same activation
    pairs = {"baseline": 0, "course_sigmoid": 0, "tanh": 1, "course_tanh": 1, "relu": 2, "course_relu": 2}
    others = iter(range(3, 100))
    for label, d in zip(labels, diags):
        if d.val_acc:
            color = f"C{pairs[label] if label in pairs else next(others) % 10}"
            style = "--" if label.startswith("course_") else ":" if label == "package" else "-"
            acc = [min(max(a, 1e-4), 1 - 1e-4) for a in d.val_acc]  # the logit scale has no 0 or 1
            ax.plot(range(1, len(acc) + 1), acc, style, color=color, marker="o", markersize=3,
                    label=label + (" (on baseline)" if label == "package" else ""))  # fmt: skip
    ax.set_yscale("logit")
    ax.yaxis.set_major_locator(FixedLocator([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (logit scale)")
    ax.set_title("Validation accuracy per epoch (dashed: the course report's settings)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    return fig


def why_figure(names: Sequence[str], diags: Sequence[Diagnostics]) -> Figure:
    """Rows: ‖∂L/∂h_l‖ through epoch 1; saturated / dead fraction per epoch; update:data ratio per epoch."""
    fig = _figure(4.2 * len(diags), 10.0)
    axes = fig.subplots(3, len(diags), squeeze=False, sharey="row")
    for col, (name, d) in enumerate(zip(names, diags)):
        n = d.steps_per_epoch
        act = next((a for a in ACTIVATIONS if a in name), name) if name != "baseline" else "sigmoid"
        ax = axes[0][col]
        for layer in d.layers("grad_h"):
            pts = [(s, v) for s, v in d.series("grad_h", layer) if s <= n]
            ax.plot(*zip(*pts), "o-", markersize=3, color=COLORS.get(layer), label=f"layer {layer}")
        ax.set_yscale("log")
        ax.set_title(f"{name}\n‖∂L/∂h_l‖ through epoch 1")
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


def _key_numbers(name: str, d: Diagnostics) -> dict:
    n = d.steps_per_epoch
    layers = d.layers("grad_h")
    first, last = (layers[0], layers[-1]) if layers else (None, None)
    g0_first = d.at("grad_h", first, 0) if first else None
    g0_last = d.at("grad_h", last, 0) if last else None
    end1 = round(n)
    ratio1 = d.at("update_ratio", first, end1) if first else None
    unit = "dead" if "relu" in name else "saturated"
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


def write_why(runs_by_name: dict[str, Path], out_dir: Path, save_png) -> list[str]:
    """The markdown lines of the comparison figure and the "why" section; PNGs saved with ``save_png``."""
    labels = list(runs_by_name)
    diags = {label: read_diagnostics(path) for label, path in runs_by_name.items()}
    md = ["## Validation accuracy, every experiment", ""]
    save_png(accuracy_figure(labels, [diags[k] for k in labels]), out_dir / "val_accuracy.png")
    md += ["![validation accuracy per epoch, every experiment](val_accuracy.png)", ""]
    chosen = next((s for s in WHY_SETS if all(n in diags and diags[n].has_diagnostics for n in s)), None)
    if chosen is None:
        chosen = tuple(n for n in labels if diags[n].has_diagnostics and any(a in n for a in ACTIVATIONS))[:3]
    md += ["## Why the activations differ", ""]
    if not chosen:
        return md + ["No run with gradient-flow diagnostics (`diagnostics/` in TensorBoard) to compare.", ""]
    save_png(why_figure(chosen, [diags[n] for n in chosen]), out_dir / "why_activations.png")
    nums = {n: _key_numbers(n, diags[n]) for n in chosen}
    same_lr = chosen[0].startswith("course_")
    md += [
        f"Runs: {', '.join(f'`{runs_by_name[n]}`' for n in chosen)}"
        + (" (the course report's settings: one learning rate, 0.01, for all three, so only the activation differs)." if same_lr else "."),
        "Measured by `src.instruments.diagnostics.GradientFlowDiagnostics` on a fixed probe batch (the first 256 validation "
        "images) before training, a few times in epoch 1 and after every epoch; layer 1 is the "
        "first hidden layer, the last layer the output (its h is the logits).",
        "",
        "![gradient flow: sigmoid, tanh, ReLU](why_activations.png)",
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
    for sentence in _reading(chosen, nums):
        md += ["", sentence]
    md += [""]
    return md


def _reading(chosen: Sequence[str], nums: dict) -> list[str]:
    """A few sentences that read the figure, from its numbers."""
    by_act = {a: n for n in chosen for a in ACTIVATIONS if a in n or (a == "sigmoid" and n == "baseline")}
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
