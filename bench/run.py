"""Time the real training path against the plain PyTorch loop and the matrix-multiply floor.

    .venv/bin/python bench/run.py --repeats 3            # both cases, 15 epochs, ~10 minutes on 2 cores
    .venv/bin/python bench/run.py --repeats 1 --epochs 2 # a quick look

For each case (the course report's baseline: sigmoid + GD; and ReLU + Adam), alternating, ``--repeats``
times:

(a) ``python -m src.train fit`` with the custom network (whole process: start-up, epochs with
    validation, the after-fit evaluation on train/val/test, results written);
(b) the same with ``--model.implementation sequential`` (the nn.Sequential twin, autograd);
(c) ``bench/plain_loop.py``: nn.Sequential + torch.optim in a bare loop (the peer);
(d) ``bench/matmul_floor.py``: only the matrix products of the training steps.

It prints medians of seconds per epoch (training pass only: the same work as the floor) and of
whole-process seconds, the ratios a/c, a/b, a/d, and each process's peak RSS, and writes them to
``bench/last_run.json``.  Run it on an otherwise idle machine: on 2 cores a second busy process
makes PyTorch's threads wait on each other and every figure several times worse.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "baseline (sigmoid, GD)": dict(activation="sigmoid", optimizer="gd", lr="0.3"),
    "ReLU + Adam": dict(activation="relu", optimizer="adam", lr="0.001"),
}


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Like :func:`run`, with the child's own peak RSS from wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024, out


def lightning(impl: str, case: dict, epochs: int, workdir: Path, name: str) -> dict:
    cmd = [sys.executable, "-m", "src.train", "fit", "--data.data_dir", str(ROOT / "data"),
           "--model.implementation", impl, "--model.activation", case["activation"],
           "--model.optimizer", case["optimizer"], "--model.lr", case["lr"],
           "--trainer.max_epochs", str(epochs), "--experiment", name]  # fmt: skip
    # run from a scratch directory (src/ linked in) so bench runs stay out of lightning_logs/
    wall, rss, _ = run_measured(cmd, workdir)
    results = json.loads(max((workdir / "lightning_logs" / name).glob("version_*/results.json")).read_text())
    return {"wall_s": wall, "rss_mb": rss, "epoch_s": statistics.median(results["train_epoch_s"]),
            "test_acc": results["test"]["accuracy"]}  # fmt: skip


def plain(case: dict, epochs: int) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "plain_loop.py"), "--activation", case["activation"],
           "--optimizer", case["optimizer"], "--lr", case["lr"], "--epochs", str(epochs),
           "--data_dir", str(ROOT / "data")]  # fmt: skip
    wall, rss, out = run_measured(cmd, ROOT)
    res = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": wall, "rss_mb": rss, "epoch_s": statistics.median(res["train_epoch_s"]), "test_acc": res["test_acc"]}


def floor(epochs: int) -> dict:
    wall, rss, out = run_measured([sys.executable, str(ROOT / "bench" / "matmul_floor.py"), "--epochs", str(epochs)], ROOT)
    res = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": wall, "rss_mb": rss, "epoch_s": statistics.median(res["epoch_s"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--floor_epochs", type=int, default=3)
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = p.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    (workdir / "src").symlink_to(ROOT / "src")
    samples: dict[str, dict[str, list[dict]]] = {c: {k: [] for k in "abcd"} for c in args.cases}
    try:
        for rep in range(args.repeats):
            for name in args.cases:
                case = CASES[name]
                for key, fn in (
                    ("a", lambda: lightning("custom", case, args.epochs, workdir, f"a{rep}")),
                    ("b", lambda: lightning("sequential", case, args.epochs, workdir, f"b{rep}")),
                    ("c", lambda: plain(case, args.epochs)),
                    ("d", lambda: floor(args.floor_epochs)),
                ):
                    samples[name][key].append(fn())
                    s = samples[name][key][-1]
                    print(f"[{rep + 1}/{args.repeats}] {name} ({key}): {s['epoch_s']:.3f} s/epoch, "
                          f"{s['wall_s']:.1f} s whole, {s['rss_mb']:.0f} MB", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    summary = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads", "epochs": args.epochs, "repeats": args.repeats, "cases": {}}  # fmt: skip
    labels = {"a": "custom, src.train fit", "b": "nn.Sequential twin, src.train fit", "c": "plain PyTorch loop", "d": "matmul floor"}
    for name, by in samples.items():
        print(f"\n{name}: {args.epochs} epochs, batch 64, median of {args.repeats}")
        print(f"{'':38} {'s/epoch':>8} {'whole s':>8} {'peak RSS MB':>12} {'test acc':>9}")
        for key, rows in by.items():
            acc = f"{med(rows, 'test_acc'):.4f}" if "test_acc" in rows[0] else ""
            whole = f"{med(rows, 'wall_s'):8.1f}" if key != "d" else f"{'':8}"
            print(f"({key}) {labels[key]:34} {med(rows, 'epoch_s'):8.3f} {whole} {med(rows, 'rss_mb'):12.0f} {acc:>9}")
        ratios = {
            "a/c whole": med(by["a"], "wall_s") / med(by["c"], "wall_s"),
            "a/c per epoch": med(by["a"], "epoch_s") / med(by["c"], "epoch_s"),
            "a/b per epoch": med(by["a"], "epoch_s") / med(by["b"], "epoch_s"),
            "a/b whole": med(by["a"], "wall_s") / med(by["b"], "wall_s"),
            "a/d per epoch": med(by["a"], "epoch_s") / med(by["d"], "epoch_s"),
        }
        print("  ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
        summary["cases"][name] = {"medians": {k: {m: med(rows, m) for m in rows[0]} for k, rows in by.items()},
                                  "ratios": ratios}  # fmt: skip
    (ROOT / "bench" / "last_run.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
