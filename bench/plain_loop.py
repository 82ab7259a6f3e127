"""The peer: the same net written the plain PyTorch way, for bench/run.py to time against.

nn.Sequential + a torch loss + torch.optim, tensors preloaded, a bare loop with an evaluation
pass per epoch and a final test evaluation.  Same data, split, standardization, batch order
rule and initial weights as ``python -m src.train fit``; no Lightning, no hand-derived math.

    python bench/plain_loop.py --activation sigmoid --optimizer gd --lr 0.3 --epochs 15

Prints one JSON line: per-epoch seconds (training pass, and with validation), accuracies.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn
from torchvision import datasets

ACTS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def load(data_dir: str, val_size: int, seed: int):
    train = datasets.MNIST(data_dir, train=True)
    test = datasets.MNIST(data_dir, train=False)
    perm = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    x = train.data.float().div_(255)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    norm = lambda t: t.sub(mean).div_(std).reshape(len(t), -1)  # noqa: E731
    return (
        (norm(x[train_idx]), train.targets[train_idx]),
        (norm(x[val_idx]), train.targets[val_idx]),
        (norm(test.data.float().div_(255)), test.targets),
    )


def glorot_net(activation: str, sizes=(784, 500, 250, 100, 10), seed: int = 0) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(fan_in, fan_out)
        bound = math.sqrt(6 / (fan_in + fan_out))
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.zero_()
        layers += [lin] if i == len(sizes) - 2 else [lin, ACTS[activation]()]
    return nn.Sequential(*layers)


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> tuple[float, float]:
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        logits = net(x[i : i + batch])
        loss += nn.functional.cross_entropy(logits, y[i : i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return loss / len(y), correct / len(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--activation", default="sigmoid", choices=sorted(ACTS))
    p.add_argument("--optimizer", default="gd", choices=["gd", "adam"])
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--data_dir", default="data")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.set_flush_denormal(True)
    (x, y), (xv, yv), (xt, yt) = load(args.data_dir, 10_000, args.seed)
    net = glorot_net(args.activation, seed=args.seed)
    opt = (torch.optim.SGD if args.optimizer == "gd" else torch.optim.Adam)(net.parameters(), lr=args.lr)
    train_s, epoch_s = [], []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(y), generator=gen)
        xs, ys = x[perm], y[perm]
        for i in range(0, len(y), args.batch_size):
            loss = nn.functional.cross_entropy(net(xs[i : i + args.batch_size]), ys[i : i + args.batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
        t1 = time.perf_counter()
        val_loss, val_acc = evaluate(net, xv, yv)
        train_s.append(t1 - t0)
        epoch_s.append(time.perf_counter() - t0)
    test_loss, test_acc = evaluate(net, xt, yt)
    print(json.dumps({"train_epoch_s": train_s, "epoch_s": epoch_s, "val_acc": val_acc, "test_acc": test_acc}))


if __name__ == "__main__":
    main()
