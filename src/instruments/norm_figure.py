"""What a normalization does to the gradient flow: two runs' diagnostics side by side (issue 26).

    python -m src.instruments.norm_figure \\
        --runs lightning_logs/baseline_diag/version_0 lightning_logs/baseline_batchnorm/version_0 \\
        --labels "sigmoid baseline" "+ batch norm" --out reports/issue26/gradient_flow.png

Reads each run's ``diagnostics/`` scalars from its TensorBoard events (:class:`~src.instruments.why.Diagnostics`,
tensorboard's ``EventAccumulator``; the runs need ``--diagnostics true``, the default) and draws,
one column per run on shared axes per row:

* ‖∂L/∂h_l‖ per layer at every measurement (before training, twice inside epoch 1, after each epoch);
* ‖∂L/∂W_l‖ per layer, the same points;
* the saturated fraction of each hidden layer's units (sigmoid, tanh: g′ below 5 % of its maximum).

It also prints, per run, the numbers the figure shows at the end of epoch 1 and of the run, and
the spread across layers (the largest ‖∂L/∂h_l‖ over the smallest), as a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure

from .why import COLORS, Diagnostics, _figure

__all__ = ["gradient_flow_figure", "flow_table", "main"]

ROWS = (("grad_h", "‖∂L/∂h_l‖", True), ("grad_W", "‖∂L/∂W_l‖", True), ("saturated", "saturated fraction (g′ < 5 % of max)", False))


def gradient_flow_figure(labels: Sequence[str], diags: Sequence[Diagnostics]) -> Figure:
    """Rows ‖∂L/∂h_l‖, ‖∂L/∂W_l‖, saturated fraction per layer against epochs; one column per run, shared y per row."""
    fig = _figure(5.0 * len(diags), 10.0)
    axes = fig.subplots(len(ROWS), len(diags), squeeze=False, sharey="row", sharex=True)
    for col, (label, d) in enumerate(zip(labels, diags)):
        n = d.steps_per_epoch
        for row, (name, title, log) in enumerate(ROWS):
            ax = axes[row][col]
            for layer in d.layers(name):
                pts = [(s / n, v) for s, v in d.series(name, layer)]
                ax.plot(*zip(*pts), "o-", markersize=3, color=COLORS.get(layer), label=f"layer {layer}")
            if log:
                ax.set_yscale("log")
            ax.set_title(f"{label}\n{title}" if row == 0 else title)
            ax.grid(alpha=0.3, which="both")
        axes[-1][col].set_xlabel("epoch")
    for row in axes:
        row[0].legend(fontsize=8)
    return fig


def _at_epoch(d: Diagnostics, name: str, layer: int, epoch: float) -> float | None:
    """The value measured closest to the end of ``epoch`` (0: before training)."""
    series = d.series(name, layer)
    if not series:
        return None
    step = epoch * d.steps_per_epoch
    return min(series, key=lambda sv: abs(sv[0] - step))[1]


def flow_table(labels: Sequence[str], diags: Sequence[Diagnostics]) -> str:
    """A Markdown table: per run and moment, ‖∂L/∂h_l‖ per layer, their spread, the saturated fractions."""
    lines = ["| run | when | ‖∂L/∂h_l‖, l = 1 … L | largest / smallest | saturated, hidden layers |",
             "|---|---|---|---|---|"]  # fmt: skip
    for label, d in zip(labels, diags):
        epochs = round(max((s for s, _ in d.series("grad_h", 1)), default=0) / d.steps_per_epoch)
        for when, epoch in (("start", 0), ("epoch 1", 1), (f"epoch {epochs}", epochs)):
            grads = [_at_epoch(d, "grad_h", l, epoch) for l in d.layers("grad_h")]
            sat = [_at_epoch(d, "saturated", l, epoch) for l in d.layers("saturated")]
            spread = max(grads) / min(grads) if grads and min(grads) > 0 else float("nan")
            lines.append(f"| {label} | {when} | {', '.join(f'{g:.3g}' for g in grads)} | {spread:.3g} | "
                         f"{', '.join(f'{s:.3f}' for s in sat) or '—'} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m src.instruments.norm_figure", description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders (with diagnostics/ scalars)")
    p.add_argument("--labels", nargs="+", help="one label per run (default: the folders' experiment names)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = p.parse_args(argv)
    labels = args.labels or [r.parent.name for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"--labels: {len(labels)} label(s) for {len(args.runs)} run(s); give one per run")
    absent = [str(r) for r in args.runs if not r.is_dir()]
    if absent:
        p.error(f"--runs: no such run folder: {', '.join(absent)}")
    diags = [Diagnostics(r) for r in args.runs]
    missing = [str(r) for r, d in zip(args.runs, diags) if not d.has_diagnostics]
    if missing:
        p.error(f"no diagnostics/ scalars in {', '.join(missing)}; train with --diagnostics true (the default)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gradient_flow_figure(labels, diags).savefig(args.out)
    print(flow_table(labels, diags))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
