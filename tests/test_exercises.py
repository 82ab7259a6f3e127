"""python -m src.verify --exercise: every stub is "not written yet", the project's answer passes,
each classic wrong answer fails with the hint that names it, and the help comes in tiers."""

import importlib.util
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from src import verify
from src.hand import backprop as HB
from src.hand import functional as HF
from src.hand import losses as HL
from src.hand import optim as HO
from src.instruments.exercises import END, EXERCISES, START, _adam_reference, _recursion, _trajectory

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "exercises"

#: the project's own answer, as a learner would write it between the markers
RIGHT = {
    "sigmoid": "return grad * (1 - y) * y",
    "tanh": "return grad * (1 - y * y)",
    "linear": """
        grad_x = grad.mm(weight)  # (B, in)
        grad_weight = grad.t().mm(x)  # (out, in)
        grad_bias = grad.sum(0)  # (out,)
    """,
    "softmax_cross_entropy": "grad_logits = (torch.softmax(logits, -1) - target) * grad / logits.shape[0]",
    "backprop": """
        for l in range(L, 0, -1):
            dW[l - 1] = delta.t().mm(tape.d[l - 1])
            db[l - 1] = delta.sum(0)
            if l > 1:
                delta = g.derivative(delta.mm(weights[l - 1]), tape.h[l - 2])
        dx = delta.mm(weights[0])
    """,
    "adam": """
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        p.addcdiv_(m_hat, v_hat.sqrt().add_(eps), value=-lr)
    """,
}

#: (exercise, what the learner wrote, text the report must contain)
WRONG = [
    ("sigmoid", "return grad * y * (1 + y)", "σ(1+σ) for σ(1−σ)"),
    ("sigmoid", "return -grad * y * (1 - y)", "a flipped sign"),
    ("tanh", "return grad * (1 + y * y)", "1 + y² for 1 − y²"),
    ("linear", """
        grad_x = grad.mm(weight)
        grad_weight = x.t().mm(grad)
        grad_bias = grad.sum(0)
    """, "∂L/∂weight  expected (3, 5)  got (5, 3)  FAIL\n    ↳ transposed: (A B)ᵀ = Bᵀ Aᵀ"),
    ("linear", """
        grad_x = grad.mm(weight)
        grad_weight = grad.t().mm(x)
        grad_bias = grad
    """, "↳ a missing sum over the batch"),
    ("linear", """
        grad_x = grad.mm(weight)
        grad_weight = grad.t().mm(x)
        grad_bias = grad.mean(0)
    """, "likely: a mean over the batch for the bias"),
    ("softmax_cross_entropy", "grad_logits = (torch.softmax(logits, -1) - target) * grad",
     "likely: a missing 1/B"),
    ("softmax_cross_entropy", "grad_logits = (target - torch.softmax(logits, -1)) * grad / logits.shape[0]",
     "likely: a flipped sign: (t − ŷ)/B"),
    ("backprop", RIGHT["backprop"].replace("delta = g.derivative(delta.mm(weights[l - 1]), tape.h[l - 2])",
                                           "delta = delta.mm(weights[l - 1])"),
     "likely: g' left out"),
    ("backprop", RIGHT["backprop"].replace("delta.t().mm(tape.d[l - 1])", "tape.d[l - 1].t().mm(delta)"),
     "↳ transposed"),
    ("backprop", RIGHT["backprop"].replace("db[l - 1] = delta.sum(0)", "db[l - 1] = delta"),
     "↳ a missing sum over the batch"),
    ("adam", RIGHT["adam"].replace("m / (1 - beta1**t)", "m").replace("v / (1 - beta2**t)", "v"),
     "likely: Adam without bias correction"),
    ("adam", """
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p.addcdiv_(m / (1 - beta1**t), (v / (1 - beta2**t)).sqrt() + eps, value=-lr)
    """, "likely: the state is not kept"),
    ("adam", RIGHT["adam"].replace("value=-lr", "value=lr"), "likely: a flipped sign"),
    # beyond the named mistakes: what the numbers say, and where
    ("sigmoid", "return y * (1 - y)", "likely: the upstream gradient `grad` (backward's argument) is not multiplied in"),
    ("softmax_cross_entropy", "e = logits.exp()\ngrad_logits = (e / e.sum() - target) * grad / logits.shape[0]",
     "likely: softmax over the whole batch, not each row"),
    ("backprop", RIGHT["backprop"].replace("delta = g.derivative(delta.mm(weights[l - 1]), tape.h[l - 2])",
                                           "delta = delta.mm(weights[l - 1]) * tape.h[l - 2] * (1 - tape.h[l - 2])"),
     "with sigmoid every gradient was right, with tanh not"),  # sigmoid's formula written out: right for sigmoid only
    ("backprop", RIGHT["backprop"].replace("tape.h[l - 2])", "tape.h[l - 2]) * (2 if l == 3 else 1)"),
     "∂L/∂W_2  FAIL: 12 of 12 elements differ; at (0, 0)"),
    ("backprop", RIGHT["backprop"].replace("tape.h[l - 2])", "tape.h[l - 2]) * (2 if l == 3 else 1)"),
     "ratio ≈ 2: a missing ½ (or a factor 2 too many). Where: the layers above are right, so the error enters in δ_2"),
    ("adam", "p = p - lr * m / (v.sqrt() + eps)", "FAIL: step() leaves the parameters as they were"),
    ("sigmoid", "return grad.mul_(1 - y).mul_(y)", "FAIL: Sigmoid.backward wrote into grad"),
    ("adam", RIGHT["adam"].replace("addcmul_(g, g, value=1 - beta2)", "add_(g, alpha=1 - beta2)"),
     "likely: not finite: a square root of a negative number"),
]


def fill(name: str, code: str, folder: Path) -> Path:
    """A copy of ``exercises/NAME.py`` in ``folder`` with ``code`` between the markers."""
    text = (STUBS / f"{name}.py").read_text()
    indent = re.search(rf"^( *){re.escape(START)}$", text, re.M).group(1)
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), indent)
    new = re.sub(rf"(^ *{re.escape(START)}\n).*?(^ *{re.escape(END)}$)", lambda m: m.group(1) + body + "\n" + m.group(2),
                 text, count=1, flags=re.M | re.S)  # fmt: skip
    assert new != text
    path = folder / f"{name}.py"
    path.write_text(new)
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = verify.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # `--exercise NAME` reads exercises/NAME.py from the current folder


def test_every_stub_has_an_entry_and_the_projects_name():
    assert sorted(p.stem for p in STUBS.glob("*.py")) == sorted(EXERCISES)
    project = {"Sigmoid": HF.Sigmoid, "Tanh": HF.Tanh, "Linear": HF.Linear, "SoftmaxCrossEntropy": HL.SoftmaxCrossEntropy,
               "backward_pass": HB.backward_pass, "Adam": HO.Adam}  # fmt: skip
    for name, ex in EXERCISES.items():
        spec = importlib.util.spec_from_file_location(f"stub_{name}", STUBS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ours, theirs = getattr(module, ex.symbol), project[ex.symbol]  # the same name as the project's piece
        if isinstance(theirs, type):  # the same kind: a Function, an Optimizer
            kind = torch.autograd.Function if issubclass(theirs, torch.autograd.Function) else torch.optim.Optimizer
            assert issubclass(ours, kind), name
        else:
            assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), name
        text = (STUBS / f"{name}.py").read_text()
        assert text.count(START) == 1 and text.count(END) == 1 and "NotImplementedError" in text
        assert f"python -m src.verify --exercise {name}" in text and "docs/derivations.md#" + ex.section in text


@pytest.mark.parametrize("name", list(EXERCISES))
def test_stub_as_shipped_is_not_written_yet(capsys, name):
    code, out, err = run(capsys, "--exercise", name)
    assert code == 1
    assert f"not written yet: open exercises/{name}.py, lines" in out
    assert out.rstrip().splitlines()[-2] == "FAIL: not written yet"
    assert out.rstrip().splitlines()[-1].startswith("next: ")
    assert "Traceback" not in out + err and err == ""


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_projects_answer_passes(capsys, tmp_path, name):
    path = fill(name, RIGHT[name], tmp_path)
    code, out, err = run(capsys, "--exercise", str(path))
    assert code == 0, out
    assert "FAIL" not in out and "the project's checks" in out
    last = out.rstrip().splitlines()
    assert last[-2].startswith("PASS: ") and last[-1].startswith("next: ")
    if name != list(EXERCISES)[-1]:
        nxt = list(EXERCISES)[list(EXERCISES).index(name) + 1]
        assert last[-1] == f"next: the next exercise: python -m src.verify --exercise {nxt}"


@pytest.mark.parametrize("name, code, expected", WRONG, ids=[f"{w[0]}: {w[2][:40]}" for w in WRONG])
def test_a_classic_wrong_answer_fails_with_its_hint(capsys, tmp_path, name, code, expected):
    path = fill(name, code, tmp_path)
    status, out, err = run(capsys, "--exercise", str(path))
    assert status == 1
    assert expected in out, out
    assert out.rstrip().splitlines()[-2].startswith("FAIL: ") and "Traceback" not in out + err


def test_shapes_come_before_values(capsys, tmp_path):
    path = fill("linear", "grad_x = grad.mm(weight)\ngrad_weight = x.t().mm(grad)\ngrad_bias = grad.mean(0)", tmp_path)
    _, out, _ = run(capsys, "--exercise", str(path))
    assert "shapes (B = 6):" in out and "values (float64" not in out  # the transposed shape stops it; no value compared
    assert "∂L/∂bias    expected (3,)    got (3,)    ok" in out


def test_values_name_the_elements_that_differ(capsys, tmp_path):
    path = fill("sigmoid", "out = grad * (1 - y) * y\nout[0, 2] = 0\nreturn out", tmp_path)
    _, out, _ = run(capsys, "--exercise", str(path))
    assert "∂L/∂x  FAIL: 1 of 42 elements differ; at (0, 2): yours 0, expected" in out


def test_an_exception_is_one_line_with_the_learners_file_and_line(capsys, tmp_path):
    path = fill("linear", "grad_x = grad.mm(weight.t())\ngrad_weight = grad.t().mm(x)\ngrad_bias = grad.sum(0)", tmp_path)
    line = path.read_text().splitlines().index("        grad_x = grad.mm(weight.t())") + 1
    code, out, err = run(capsys, "--exercise", str(path))
    assert code == 1 and "Traceback" not in out + err
    fails = [l for l in out.splitlines() if l.startswith("FAIL")]
    assert fails == [f"FAIL: {path}:{line}: RuntimeError: mat1 and mat2 shapes cannot be multiplied (6x3 and 5x3)"]
    assert "next: fix that line (`grad_x = grad.mm(weight.t())`); the shapes: x (6, 5), weight (3, 5)" in out


def test_a_syntax_error_is_one_line_too(capsys, tmp_path):
    path = fill("tanh", "return grad * (1 - y * y", tmp_path)
    code, out, err = run(capsys, "--exercise", str(path))
    assert code == 1 and "Traceback" not in out + err
    assert re.search(rf"FAIL: {re.escape(str(path))}:\d+: SyntaxError", out)


def test_hints_in_tiers_then_the_solution(capsys):
    code, out, _ = run(capsys, "--exercise", "sigmoid", "--hint")
    assert code == 0 and "hint 1 of 2 (sigmoid)" in out and "hint 2 of 2" not in out and "more: --hint 2" in out
    code, out, _ = run(capsys, "--exercise", "sigmoid", "--hint", "2")
    assert code == 0 and "hint 1 of 2" in out and "hint 2 of 2 (sigmoid)" in out and "y(1 − y)" in out
    assert "the whole answer: --solution" in out
    code, out, _ = run(capsys, "--exercise", "sigmoid", "--solution")
    assert code == 0 and "src/hand/functional.py:" in out
    assert inspect.getsource(HF.Sigmoid.derivative).strip().splitlines()[0].strip() in out
    assert "return grad * (1 - y) * y" in out  # the project's real line
    for name, ex in EXERCISES.items():  # every exercise has at least two tiers and a solution that exists
        assert len(ex.hints) >= 2 and run(capsys, "--exercise", name, "--solution")[0] == 0


@pytest.mark.parametrize("args, message", [
    (["--exercise", "sigmod"], "error: --exercise 'sigmod' is not an exercise (did you mean sigmoid?); allowed: sigmoid, tanh, "
                               "linear, softmax_cross_entropy, backprop, adam"),
    (["--exercise", "x/relu.py"], "error: --exercise 'x/relu.py' (a file named relu.py) is not an exercise"),
    (["--exercise", "sigmoid", "--hint", "3"], "error: --hint 3 is not allowed for sigmoid: its hints are 1 to 2 (then --solution)"),
    (["--exercise", "/nonexistent/tanh.py"], "error: --exercise tanh: /nonexistent/tanh.py does not exist here"),
])  # fmt: skip
def test_bad_values_are_one_line_exit_2(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith(message)


def test_a_missing_stub_folder_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "--exercise", "adam")
    assert code == 2 and out == "" and err.startswith("error: --exercise adam: exercises/adam.py does not exist here")


def test_hint_without_exercise_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        verify.main(["--hint"])
    assert exc.value.code == 2 and "--hint and --solution go with --exercise NAME" in capsys.readouterr().err


def test_the_real_command(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stub = subprocess.run([sys.executable, "-m", "src.verify", "--exercise", "sigmoid"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert stub.returncode == 1 and "not written yet: open exercises/sigmoid.py" in stub.stdout and stub.stderr == ""
    path = fill("sigmoid", RIGHT["sigmoid"], tmp_path)
    done = subprocess.run([sys.executable, "-m", "src.verify", "--exercise", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "\nPASS: Sigmoid in " in done.stdout and "--exercise tanh" in done.stdout


def test_the_recognised_mistakes_are_computed_by_the_right_code_switched():
    """The wrong answers are the right computation with one switch turned: off, it equals the project's."""
    gen = torch.Generator().manual_seed(0)
    params0 = [torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)]
    grads = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params0] for _ in range(3)]
    kw = EXERCISES["adam"].kw
    for ours, project in zip(_adam_reference(params0, grads, **kw), _trajectory(HO.Adam, params0, grads, kw)):
        assert all(torch.allclose(a, b, rtol=1e-12, atol=0) for a, b in zip(ours, project))
    x, weights, biases = torch.randn(6, 5, generator=gen, dtype=torch.float64), [], []
    for n_in, n_out in ((5, 4), (4, 3)):
        weights.append(torch.randn(n_out, n_in, generator=gen, dtype=torch.float64))
        biases.append(torch.randn(n_out, generator=gen, dtype=torch.float64))
    _, tape = HB.forward_pass(x, weights, biases, "tanh")
    delta = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    ours, project = _recursion(delta, weights, tape, "tanh"), HB.backward_pass(delta, weights, tape, "tanh")
    assert torch.equal(ours.x, project.x) and all(torch.equal(a, b) for a, b in zip(ours.W + ours.b, project.W + project.b))
