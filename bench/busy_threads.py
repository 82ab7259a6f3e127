"""Whole-process wall time of a short ``fit`` under each thread setting, on a quiet and on a busy machine.

    .venv/bin/python bench/busy_threads.py --rounds 3                       # every setting, quiet and busy
    .venv/bin/python bench/busy_threads.py --rounds 3 --settings default one --loads busy

"Busy" is one other core-bound process (``python -c 'while True: pass'``) running for the whole
fit, the situation of a user training beside a browser, an IDE or a test run.  The settings,
each a set of environment variables given to ``python -m src.train fit --trainer.max_epochs 3
--diagnostics false``:

* ``default``: what ``python -m src.train`` chooses by itself;
* ``gomp``: GNU OpenMP's own default, whatever ``src`` sets (``OMP_WAIT_POLICY`` set to the empty
  string: libgomp spins about 300 000 times at every barrier before it sleeps);
* ``passive``: the waiting threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``);
* ``spin10k``: they spin 10 000 times, then sleep (``GOMP_SPINCOUNT=10000``);
* ``one``: one thread (``OMP_NUM_THREADS=1``).

The runs alternate setting by setting within each round (A B C … A B C …), so a drift of the
machine's speed reaches every setting alike.  Prints each setting's wall seconds (median, min,
max) per load and its ratio to the quiet ``default``.  Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": {},
    "gomp": {"OMP_WAIT_POLICY": ""},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "spin1k": {"GOMP_SPINCOUNT": "1000"},
    "one": {"OMP_NUM_THREADS": "1"},
}
FIT = [sys.executable, "-m", "src.train", "fit", "--trainer.max_epochs", "3", "--diagnostics", "false",
       "--experiment", "bench_busy_threads", "--trainer.enable_progress_bar", "false"]  # fmt: skip


def _run(setting: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(SETTINGS[setting])
    start = time.perf_counter()
    subprocess.run(FIT, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--loads", nargs="+", choices=["quiet", "busy"], default=["quiet", "busy"])
    args = parser.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    for load in args.loads:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
        try:
            for r in range(args.rounds):
                for setting in args.settings:
                    t = _run(setting)
                    times.setdefault((setting, load), []).append(t)
                    print(f"round {r + 1} {load:5} {setting:8} {t:6.1f} s", flush=True)
        finally:
            if hog is not None:
                hog.kill()
    base = statistics.median(times.get(("default", "quiet"), [float("nan")]))
    print(f"\n{'setting':8}  {'load':5}  median s  min s  max s  ratio to quiet default")
    for (setting, load), ts in times.items():
        med = statistics.median(ts)
        print(f"{setting:8}  {load:5}  {med:8.1f}  {min(ts):5.1f}  {max(ts):5.1f}  {med / base:.2f}")


if __name__ == "__main__":
    main()
