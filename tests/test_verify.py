"""python -m src.verify: every piece passes, every planted bug is caught, a user's Function is judged."""

import re
from pathlib import Path

import textwrap

import pytest

from src import verify
from src.instruments.verification.checks import check_function, verify_all
from src.instruments.verification.specs import B, SPECS
from src.instruments.verification.table import Cell, Row
from src.instruments.custom_function import check_user_function
from src.instruments.mutants import run_mutants

@pytest.fixture(scope="module")
def rows():
    return verify_all()


def test_verify_lists_every_piece_and_all_pass(rows):
    names = [r.piece for r in rows]
    for piece in ("Linear", "ReLU", "Sigmoid", "Tanh", "Softmax", "Identity", "MSELoss", "CrossEntropy",
                  "SoftmaxCrossEntropy", "L1Penalty", "L2Penalty", "GD", "Adam", "BatchNorm", "LayerNorm"):  # fmt: skip
        assert any(n.split(" ")[0] == piece for n in names), piece
    for act in ("sigmoid", "tanh", "relu"):
        assert f"FeedForward ({act}, one node)" in names
        assert f"FeedForwardNet ({act}) vs nn.Sequential twin" in names
        assert f"FeedForward ({act}, one node, workspace)" in names  # the training path's buffers
    assert [r.piece for r in rows if not r.passed] == []
    by = {r.piece: r for r in rows}
    assert by["ReLU"].cells["kink"].ok and by["L1Penalty"].cells["kink"].ok  # the conventions at 0 are checked
    assert by["Adam (vs torch.optim, 25 steps)"].cells["lockstep"].ok
    assert by["BatchNorm (train mode)"].cells["gradgrad"].ok and by["BatchNorm (eval mode)"].cells["gradgrad"].ok
    assert by["Sigmoid"].cells["gradgrad"].ok and by["FeedForward (relu, one node)"].cells["gradgrad"].ok is None


def test_verify_cli_exit_status(capsys, monkeypatch, rows):
    monkeypatch.setattr(verify, "verify_all", lambda: rows)  # the rows are computed once for the module
    assert verify.main([]) == 0
    out = capsys.readouterr().out
    assert f"{len(rows)} of {len(rows)} pieces pass" in out and "gradgradcheck" in out and "FAIL" not in out
    broken = [*rows[:-1], Row("broken", {"fp64": Cell(False, "1e+00", "ratio ≈ −1: a flipped sign")})]
    monkeypatch.setattr(verify, "verify_all", lambda: broken)
    assert verify.main([]) == 1
    assert "↳ max|Δ| fp64: ratio ≈ −1: a flipped sign" in capsys.readouterr().out


@pytest.fixture(scope="module")
def mutants():
    return run_mutants()


def test_every_mutant_is_caught_with_the_right_hint(mutants):
    results = mutants
    survivors = [(bug, piece) for bug, piece, row in results if row.passed]
    assert survivors == []
    hints = {(piece, bug): " ".join(row.hints()) for bug, piece, row in results}
    assert "flipped sign" in hints[("Sigmoid", "flipped sign")]
    assert "transposed shape" in hints[("Linear", "dropped transpose (∂L/∂W = xᵀ g, not gᵀ x)")]
    assert "ratio ≈ 2" in hints[("L2Penalty", "missing ½ (∂P/∂W = 2αW)")]
    assert f"ratio ≈ {B}" in hints[("SoftmaxCrossEntropy", "sum for mean (no 1/B)")]
    assert "without bias correction" in hints[("Adam", "no bias correction")]
    norm = {bug.split(" (")[0]: (row.failed_columns(), " ".join(row.hints())) for bug, piece, row in results if "Norm" in piece}
    assert "the path through μ" in norm["dropped mean term"][1] and "gradcheck" in norm["dropped mean term"][0]
    assert "the path through σ²" in norm["dropped Σ(g·x̂) term"][1]
    # a consistent bug: gradcheck passes, only the comparison with F.batch_norm sees it
    assert norm["unbiased variance"][0] == ["fp32", "fp64", "extreme"] and "√((N−1)/N)" in norm["unbiased variance"][1]
    assert "running mean and variance" in norm["batch statistics in evaluation mode"][1]
    assert "must stay inside them" in norm["γ outside the sums over the features"][1]
    kink = [row.failed_columns() for bug, piece, row in results if piece == "ReLU"]
    assert kink == [["kink"]]  # ReLU'(0) = 1 is wrong only at the kink, and only that column sees it


def test_a_correct_function_passes_the_checks():
    assert check_function(SPECS[0]).passed  # Linear, the real one


USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch.autograd import Function

    class GoodLinear(Function):
        @staticmethod
        def forward(x, w, b):
            return x @ w.t() + b

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], inputs[1])

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g @ w, g.t() @ x, g.sum(0)

    class MeanBiasLinear(GoodLinear):
        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g @ w, g.t() @ x, g.mean(0)   # the bug: mean over the batch where the sum belongs

    class RaisingLinear(GoodLinear):
        @staticmethod
        def backward(ctx, g):
            raise ValueError("dW is not written yet")   # a learner's unfinished backward

    class KeyErrorLinear(GoodLinear):
        @staticmethod
        def backward(ctx, g):
            return {}["dx"]   # any exception a learner's code can raise

    def reference(x, w, b):
        return torch.nn.functional.linear(x, w, b)

    not_a_function = 3
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "student_fn.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "student_fn"


def test_user_function_correct_is_accepted(user_module, capsys):
    assert verify.main(["--function", f"{user_module}:GoodLinear", "--shapes", "6x5", "3x5", "3",
                   "--reference", f"{user_module}:reference"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "verdict: PASS" in out


def test_user_function_large_shapes_use_projections(user_module):
    row, verdict = check_user_function(f"{user_module}:MeanBiasLinear", ["64x784", "50x784", "50"])
    assert verdict.startswith("FAIL") and row.cells["gradcheck"].text == "fast"
    assert "ratio ≈ 1/64" in row.cells["gradcheck"].hint


def test_user_function_wrong_is_rejected_with_hint(user_module, capsys):
    assert verify.main(["--function", f"{user_module}:MeanBiasLinear", "--shapes", "6x5", "3x5", "3"]) == 1
    out = capsys.readouterr().out
    assert "verdict: FAIL" in out and "ratio ≈ 1/6" in out


@pytest.mark.parametrize("name,error", [("RaisingLinear", "ValueError: dW is not written yet"),
                                        ("KeyErrorLinear", "KeyError: 'dx'")])
@pytest.mark.parametrize("shapes", [["6x5", "3x5", "3"], ["64x50", "40x50", "40"]], ids=["gradcheck", "projections"])
def test_a_backward_that_raises_is_a_fail_row(name, error, shapes, user_module, capsys):
    """Regression: a ValueError in the backward (only RuntimeError was handled) was a traceback and no table."""
    assert verify.main(["--function", f"{user_module}:{name}", "--shapes", *shapes,
                        "--reference", f"{user_module}:reference"]) == 1  # fmt: skip
    captured = capsys.readouterr()
    assert captured.err == ""
    assert f"gradcheck: {'input 0: ' if shapes[0] == '64x50' else ''}{error}" in captured.out
    assert f"verdict: FAIL: {name}'s backward is wrong" in captured.out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--function", "no_such_module_xyz:F", "--shapes", "3"], "module 'no_such_module_xyz' does not import"),
        (["--function", "{m}:Missing", "--shapes", "3"], "has no attribute 'Missing'"),
        (["--function", "{m}:not_a_function", "--shapes", "3"], "is not a torch.autograd.Function subclass"),
        (["--function", "{m}:GoodLinear", "--shapes", "6x5", "4x5", "3"], "do not fit GoodLinear"),
        (["--function", "{m}:GoodLinear", "--shapes", "6xa"], "'6xa' is not allowed"),
        (["--function", "{m}GoodLinear", "--shapes", "3"], "write it as pkg.module:Name"),
    ],
)
def test_user_function_bad_input_is_one_line(user_module, capsys, args, message):
    assert verify.main([a.format(m=user_module) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_verify_needs_no_lightning():
    import subprocess
    import sys

    code = "import sys; sys.modules['lightning'] = None; sys.modules['lightning.pytorch'] = None; import src.verify, src.hand"
    result = subprocess.run([sys.executable, "-c", code], cwd=verify.__file__.rsplit("/src/", 1)[0], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_the_docs_quote_what_verify_prints(rows, mutants, capsys, monkeypatch):
    """Every "N of N pieces pass" / "N of N mutants caught" / "plants N classic bugs" in README.md and docs/ is today's."""
    monkeypatch.setattr(verify, "verify_all", lambda: rows)
    monkeypatch.setattr(verify, "run_mutants", lambda: mutants)
    verify.main([]), verify.main(["--mutants"])
    printed = capsys.readouterr().out
    pieces = re.search(r"^(\d+) of (\d+) pieces pass", printed, re.M).groups()
    caught = re.search(r"^(\d+) of (\d+) mutants caught", printed, re.M).groups()
    assert pieces == (str(len(rows)),) * 2 and caught == (str(len(mutants)),) * 2
    root = Path(__file__).resolve().parents[1]
    quoted = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        quoted += [(doc.name, m.groups(), pieces) for m in re.finditer(r"(\d+) of (\d+) pieces pass", text)]
        quoted += [(doc.name, m.groups(), caught) for m in re.finditer(r"(\d+) of (\d+) mutants caught", text)]
        quoted += [(doc.name, m.groups() * 2, caught) for m in re.finditer(r"plants (\d+) classic bugs", text)]
    assert len(quoted) >= 3  # docs/verify.md quotes all three
    assert [(name, got) for name, got, want in quoted if got != want] == []
