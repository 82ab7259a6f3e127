"""The matrix-multiply floor: only the products one training epoch of the MLP needs, back to back.

Per batch of 64 and per layer: the forward product, the weight-gradient product, and the
input-gradient product (not for the first layer, whose input needs no gradient).  No
activations, losses, optimizer, framework or data handling: a lower bound for any
implementation of the same training on this machine.

    python bench/matmul_floor.py --epochs 3

Prints one JSON line with the seconds per epoch (782 steps, the last one with 16 rows).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--samples", type=int, default=50_000)
    args = p.parse_args()
    sizes = [784, 500, 250, 100, 10]
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=gen) * 0.05 for i, o in zip(sizes[:-1], sizes[1:])]
    x_all = torch.randn(args.samples, 784, generator=gen)
    times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        for start in range(0, args.samples, args.batch_size):
            h = x_all[start : start + args.batch_size]
            inputs = []
            for w in weights:  # forward: (batch, in) @ (in, out)
                inputs.append(h)
                h = h @ w.t()
            g = h  # stands in for the output gradient, same shape
            for layer in range(len(weights) - 1, -1, -1):
                torch.mm(g.t(), inputs[layer])  # weight gradient (out, in)
                if layer:
                    g = g @ weights[layer]  # input gradient (batch, in)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"epoch_s": times}))


if __name__ == "__main__":
    main()
