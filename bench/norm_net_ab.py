"""A/B of one training step of the net with and without a normalization: what ``--model.norm`` costs.

    OMP_NUM_THREADS=1 .venv/bin/python bench/norm_net_ab.py                         # sigmoid + GD, batch 64
    OMP_NUM_THREADS=1 .venv/bin/python bench/norm_net_ab.py --case best --batch 128  # ReLU + Adam + dropout

With ``--model.norm batch|layer`` the one-node fast path (:class:`src.hand.fused.FeedForward`)
stands aside and the per-op chain of Functions runs (:class:`src.hand.nets.FeedForwardNet`).  This
times one step (``zero_grad``, forward, loss, ``backward``, ``step``, our loss and optimizer as the
module builds them) of the 784-500-250-100-10 net on random MNIST-shaped batches, four ways:

* ``fused, none``: the one-node fast path, what ``--model.norm none`` trains with;
* ``chain, none``: the per-op chain without a normalization (``fused=False``);
* ``chain, batch`` / ``chain, layer``: the per-op chain with :func:`src.hand.norm.batch_norm` /
  :func:`src.hand.norm.layer_norm` after each hidden affine map.

So ``chain, batch`` / ``chain, none`` is the normalization's own cost, and ``chain, none`` /
``fused, none`` what standing aside from the fast path costs.  Each round times every form once,
in alternating order, as the median of ``--steps`` steps (after a warm-up); the table gives the
median over the rounds in ms per step, and each form's ratio to ``chain, none``.  The workspace and
the step inside backward of the Trainer's path are not used here (a bare loop): the figures
compare the nets, not the Trainer.  On a busy machine they are rough.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from src.system.module import MLPClassifier

CASES = {
    "baseline": dict(activation="sigmoid", optimizer="gd", lr=0.3),
    "best": dict(activation="relu", optimizer="adam", lr=2e-3, dropout=0.2),
}
FORMS = {  # name → (norm, fused)
    "fused, none": ("none", True),
    "chain, none": ("none", False),
    "chain, batch": ("batch", False),
    "chain, layer": ("layer", False),
}


def make_step(case: str, norm: str, fused: bool, x: torch.Tensor, onehot: torch.Tensor, labels: torch.Tensor):
    torch.manual_seed(0)
    module = MLPClassifier(**CASES[case], norm=norm)
    module.net.fused = fused
    opt = module.configure_optimizers()

    def step() -> None:
        opt.zero_grad()
        module.compute_loss(x, onehot, labels)[0].backward()
        opt.step()

    return step


def median_ms(step, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=list(CASES), default="baseline")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="timed steps per form per round (the median is kept)")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds (the median over them is reported)")
    args = p.parse_args()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 784, generator=gen)
    labels = torch.randint(10, (args.batch,), generator=gen)
    onehot = torch.nn.functional.one_hot(labels, 10).float()
    steps = {name: make_step(args.case, norm, fused, x, onehot, labels) for name, (norm, fused) in FORMS.items()}
    for fn in steps.values():  # warm-up
        median_ms(fn, 10)
    results: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))  # alternate: drifts hit every form
        for name in order:
            results[name].append(median_ms(steps[name], args.steps))
    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), case {args.case}, batch {args.batch}, "
          f"median of {args.steps} steps, median over {args.rounds} alternating rounds")  # fmt: skip
    print(f"{'form':>14}  {'ms/step':>8}  {'/ chain, none':>13}")
    for name, v in med.items():
        print(f"{name:>14}  {v:8.2f}  {v / med['chain, none']:13.2f}")


if __name__ == "__main__":
    main()
