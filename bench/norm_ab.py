"""A/B of batch norm's two hand-written backward forms: the graph walk against the closed form.

    OMP_NUM_THREADS=1 .venv/bin/python bench/norm_ab.py                       # 64x500 and others, fp32
    OMP_NUM_THREADS=1 .venv/bin/python bench/norm_ab.py --shapes 64x500 --repeats 2000 --rounds 7

CS231n's second assignment times ``batchnorm_backward`` (through the graph) against
``batchnorm_backward_alt`` (simplified on paper).  Here: :func:`src.hand.norm.batch_norm_backward_staged`
against :func:`src.hand.norm.batch_norm_backward` (the one ``BatchNorm`` runs), on the same ``g``,
``x``, ``γ``; and, for scale, the whole step (forward and backward through autograd) of our
``batch_norm`` against ``F.batch_norm``'s.  Each round times every form once, in alternating order,
as the median of ``--repeats`` calls (after a warm-up); the table gives, per form, the median over
the rounds in µs, and the staged/closed ratio.  It first checks the two forms agree (fp64,
≤ 1e-12), so a timing is never of a wrong form.  Run it on a quiet machine: on a busy one the
numbers say nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from src.hand import norm as N

EPS = 1e-5


def median_us(fn: Callable[[], object], repeats: int) -> float:
    """The median of ``repeats`` timed calls of ``fn``, in microseconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def forms(batch: int, features: int, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, features, generator=gen, dtype=dtype) * 3 + 1
    gamma = torch.rand(features, generator=gen, dtype=dtype) + 0.5
    beta = torch.randn(features, generator=gen, dtype=dtype)
    g = torch.randn(batch, features, generator=gen, dtype=dtype)
    xs, gs, bs = (t.clone().requires_grad_(True) for t in (x, gamma, beta))

    def step(norm: Callable) -> Callable[[], object]:
        return lambda: torch.autograd.grad(norm(xs, gs, bs), (xs, gs, bs), g)

    return {
        "staged (graph walk)": lambda: N.batch_norm_backward_staged(g, x, gamma, EPS),
        "closed form": lambda: N.batch_norm_backward(g, x, gamma, EPS),
        "step: ours": step(lambda a, b, c: N.batch_norm(a, b, c)),
        "step: F.batch_norm": step(lambda a, b, c: F.batch_norm(a, None, None, b, c, training=True, eps=EPS)),
    }


def check_equal(batch: int, features: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, features, generator=gen, dtype=torch.float64) * 3 + 1
    gamma = torch.rand(features, generator=gen, dtype=torch.float64) + 0.5
    g = torch.randn(batch, features, generator=gen, dtype=torch.float64)
    for a, b in zip(N.batch_norm_backward_staged(g, x, gamma, EPS), N.batch_norm_backward(g, x, gamma, EPS)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["64x500", "128x500", "64x250", "256x100", "1000x500"],
                   help="batch x features (default: 64x500 and others)")  # fmt: skip
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=500, help="timed calls per form per round (the median is kept)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (the median over them is reported)")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.dtype}, "
          f"median of {args.repeats} calls, median over {args.rounds} alternating rounds (µs)")  # fmt: skip
    header = None
    for shape in args.shapes:
        batch, features = (int(v) for v in shape.split("x"))
        check_equal(batch, features)
        fs = forms(batch, features, dtype)
        for fn in fs.values():  # warm-up
            median_us(fn, max(args.repeats // 10, 3))
        results: dict[str, list[float]] = {name: [] for name in fs}
        for r in range(args.rounds):
            order = list(fs) if r % 2 == 0 else list(reversed(fs))  # alternate: drifts hit both sides
            for name in order:
                results[name].append(median_us(fs[name], args.repeats))
        med = {name: statistics.median(v) for name, v in results.items()}
        if header is None:
            header = f"{'shape':>10}  " + "  ".join(f"{n:>20}" for n in med) + "  staged/closed"
            print(header)
        ratio = med["staged (graph walk)"] / med["closed form"]
        print(f"{shape:>10}  " + "  ".join(f"{v:20.1f}" for v in med.values()) + f"  {ratio:13.2f}")


if __name__ == "__main__":
    main()
