"""The proof, for the user: every hand-derived gradient checked against numbers and against PyTorch.

    python -m src.verify                       # one row per piece; exit 0 only if every row passes
    python -m src.verify --mutants             # plant classic backward bugs; show which check catches each
    python -m src.verify --function pkg.module:MyFunction --shapes 64x784 500x784 500 \\
        [--reference pkg.module:callable]      # the same checks for your own torch.autograd.Function
    python -m src.verify --exercise sigmoid    # check exercises/sigmoid.py (or --exercise path/to/sigmoid.py)
    python -m src.verify --exercise sigmoid --hint [2]   # help in tiers; --solution: the project's code

Exit status: 0 when every row passes (with ``--mutants``: when every planted bug is caught); 1
when a row fails (a bug survives); 2 for a bad command line, and for a ``--function``,
``--shapes`` or ``--reference`` that cannot be used (one line on stderr, ``error: …``).

This file is the command only: its arguments, the printed tables and the exit status.  What is
checked lives in ``src/instruments/``:

* ``verification/`` — what is checked (``specs.py``), how (``checks.py``), the hints (``hints.py``), the table (``table.py``);
* ``mutants.py`` — the planted bugs of ``--mutants`` (subclasses of the Functions and optimizers,
  in memory; the source is never patched);
* ``custom_function.py`` — ``--function``: your Function loaded, fed random inputs and checked;
* ``exercises.py`` — ``--exercise``: a learner's stub from ``exercises/`` checked, shapes first.

The output, with an excerpt of each table: ``docs/verify.md``.  Torch only, no Lightning.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import torch

from .instruments.custom_function import UserInputError, check_user_function
from .instruments.exercises import ExerciseInputError, check_exercise, hints, resolve, solution
from .instruments.mutants import run_mutants
from .instruments.verification.checks import verify_all
from .instruments.verification.table import COLUMNS, NA, Row


def format_table(rows: Sequence[Row], first: str = "piece") -> str:
    """One line per row (a cell's value and ok / FAIL), and under a failing row its hints."""
    head = [first, *COLUMNS.values(), "result"]
    body = [[r.piece, *(r.cells.get(k, NA).show() for k in COLUMNS), "pass" if r.passed else "FAIL"] for r in rows]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    fmt = lambda line: "  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()  # noqa: E731
    out = [fmt(head), fmt(["-" * w for w in widths])]
    for r, line in zip(rows, body):
        out.append(fmt(line))
        out += [f"    ↳ {h}" for h in r.hints()]
    return "\n".join(out)


def _print_verify() -> int:
    start = time.perf_counter()
    rows = verify_all()
    print(format_table(rows))
    bad = [r.piece for r in rows if not r.passed]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} pieces pass ({time.perf_counter() - start:.1f} s)"
          + (f"; FAILED: {', '.join(bad)}" if bad else ""))  # fmt: skip
    return 1 if bad else 0


def _print_mutants() -> int:
    start = time.perf_counter()
    results = run_mutants()
    head = ["piece", "planted bug", "caught by", "hint"]
    body = []
    for bug, piece, row in results:
        caught = row.failed_columns()
        hint = row.hints()[0].split(": ", 1)[1] if row.hints() else ""
        body.append([piece, bug, ", ".join(COLUMNS[k] for k in caught) if caught else "SURVIVED", hint])
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(3)]
    fmt = lambda line: "  ".join(c.ljust(w) for c, w in zip(line[:3], widths)) + "  " + line[3]  # noqa: E731
    print(fmt(head))
    print(fmt(["-" * w for w in widths] + ["-" * 4]))
    for line in body:
        print(fmt(line).rstrip())
    survived = [b for b in body if b[2] == "SURVIVED"]
    print(f"\n{len(body) - len(survived)} of {len(body)} mutants caught ({time.perf_counter() - start:.1f} s)"
          + (f"; SURVIVED: {'; '.join(f'{b[0]}: {b[1]}' for b in survived)}" if survived else ""))  # fmt: skip
    return 1 if survived else 0


def _print_user(function: str, shapes: Sequence[str], reference: Optional[str]) -> int:
    row, verdict = check_user_function(function, shapes, reference)
    print(format_table([row], first="function"))
    if row.cells["fp64"].ok is None:
        print("\n(no --reference: only the numerical Jacobian is checked; give --reference pkg.module:callable "
              "to compare values and gradients with an implementation you trust)")  # fmt: skip
    print(f"\nverdict: {verdict}")
    return 0 if row.passed else 1


def _print_exercise(arg: str, hint: Optional[int], show_solution: bool) -> int:
    """``--exercise``: the check's report, then ``PASS``/``FAIL`` and what to do next; or a hint, or the solution."""
    ex, path = resolve(arg)
    if hint is not None or show_solution:
        print(hints(ex, hint) if hint is not None else solution(ex))
        return 0
    outcome = check_exercise(ex, path)
    print("\n".join(outcome.lines + [outcome.verdict, f"next: {outcome.next}"]))
    return 0 if outcome.passed else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.verify",
        description="Check every hand-derived gradient against gradcheck and PyTorch (exit 0 only if all pass); "
        "--mutants plants classic backward bugs; --function checks your own torch.autograd.Function.",
    )
    parser.add_argument("--mutants", action="store_true", help="plant each classic backward bug and show which check catches it")
    parser.add_argument("--function", metavar="pkg.module:MyFunction", help="check your own Function")
    parser.add_argument("--shapes", nargs="+", metavar="AxB", help="one shape per input of --function, e.g. 64x784 500x784 500")
    parser.add_argument("--reference", metavar="pkg.module:callable", help="compare --function with this implementation")
    parser.add_argument("--exercise", metavar="NAME|FILE.py", help="check a learner's exercises/NAME.py (or that file); "
                        "NAME: sigmoid, tanh, linear, softmax_cross_entropy, backprop, adam (see exercises/README.md)")
    parser.add_argument("--hint", nargs="?", const=1, type=int, metavar="N", help="with --exercise: hints 1 … N (default 1)")
    parser.add_argument("--solution", action="store_true", help="with --exercise: print the project's own code for it")
    args = parser.parse_args(argv)
    if args.exercise is None and (args.hint is not None or args.solution):
        parser.error("--hint and --solution go with --exercise NAME")
    if args.exercise is not None and (args.function or args.mutants or args.shapes or args.reference):
        parser.error("--exercise is a separate run from --mutants and --function")
    if (args.shapes or args.reference) and not args.function:
        parser.error("--shapes and --reference go with --function")
    if args.function and args.mutants:
        parser.error("--mutants and --function are separate runs")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    if args.exercise is not None:
        try:
            return _print_exercise(args.exercise, args.hint, args.solution)
        except ExerciseInputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.function:
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")  # `python -m` puts the current folder first anyway; imports from here
        try:
            return _print_user(args.function, args.shapes or [], args.reference)
        except UserInputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return _print_mutants() if args.mutants else _print_verify()


if __name__ == "__main__":
    sys.exit(main())
