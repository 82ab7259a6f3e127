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
from src.hand import norm as HN
from src.hand import optim as HO
from src.instruments.exercises import (END, EXERCISES, START, _adam_reference, _closed_dx, _ln_dx, _recursion,
                                       _trajectory, _walk_dx)  # fmt: skip
from tests.test_derivations import _anchors

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
    "batchnorm_staged": """
        dbeta = g.sum(0)
        dgamma = (g * x_hat).sum(0)
        dx_hat = g * gamma
        dvar = (dx_hat * x_mu).sum(0) * -0.5 * inv_std**3
        dmean_via_x_hat = (dx_hat * -inv_std).sum(0)
        dmean_via_var = dvar * (-2.0 / B) * x_mu.sum(0)
        dmean = dmean_via_x_hat + dmean_via_var
        dx = dx_hat * inv_std + dvar * 2.0 * x_mu / B + dmean / B
    """,
    "batchnorm": """
        mean = x.mean(0)
        var = ((x - mean) ** 2).mean(0)
        inv_std = 1 / torch.sqrt(var + eps)
        x_hat = (x - mean) * inv_std
        dbeta = g.sum(0)
        dgamma = (g * x_hat).sum(0)
        dx = (gamma * inv_std / B) * (B * g - dbeta - x_hat * dgamma)
    """,
    "layernorm": """
        mean = x.mean(1, keepdim=True)
        var = ((x - mean) ** 2).mean(1, keepdim=True)
        inv_std = 1 / torch.sqrt(var + eps)
        x_hat = (x - mean) * inv_std
        g_hat = g * gamma
        dx = (inv_std / F) * (F * g_hat - g_hat.sum(1, keepdim=True) - x_hat * (g_hat * x_hat).sum(1, keepdim=True))
        dgamma = (g * x_hat).sum(0)
        dbeta = g.sum(0)
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
    # batch norm through the graph: the first wrong intermediate, and the hint for it
    ("batchnorm_staged", RIGHT["batchnorm_staged"].replace("dbeta = g.sum(0)", "dbeta = g.mean(0)"),
     "FAIL: the first wrong gradient is dbeta"),
    ("batchnorm_staged", RIGHT["batchnorm_staged"].replace("dx_hat = g * gamma", "dx_hat = g"),
     "likely: γ forgotten: ∂L/∂x̂ = g"),
    ("batchnorm_staged", RIGHT["batchnorm_staged"].replace("inv_std**3", "inv_std"),
     "likely: (σ² + ε)^(−½) for (σ² + ε)^(−3/2)"),
    ("batchnorm_staged", RIGHT["batchnorm_staged"].replace("* -0.5 *", "* 0.5 *"), "dvar             ∂L/∂σ²              FAIL"),
    ("batchnorm_staged", RIGHT["batchnorm_staged"].replace("(dx_hat * x_mu).sum(0)", "(dx_hat * x_mu).sum(0, keepdim=True)"),
     "FAIL: dvar has the wrong shape"),
    ("batchnorm_staged", RIGHT["batchnorm_staged"].replace("(dx_hat * -inv_std)", "(dx_hat * inv_std)"),
     "FAIL: the first wrong gradient is dmean_via_x_hat"),
    ("batchnorm_staged", RIGHT["batchnorm_staged"].replace(" + dmean / B", ""), "likely: the path through μ left out"),
    ("batchnorm_staged", RIGHT["batchnorm_staged"].replace(" + dmean / B", " + dmean"),
     "likely: a missing 1/B in the path through μ"),
    ("batchnorm_staged", RIGHT["batchnorm_staged"].replace("2.0 * x_mu / B", "2.0 * x_mu / (B - 1)"),
     "likely: B − 1 for B in the path through σ² (the unbiased variance)"),
    # batch norm in one expression: the classic wrong answers of the simplification
    ("batchnorm", RIGHT["batchnorm"].replace("(B * g - dbeta - x_hat * dgamma)", "(B * g - x_hat * dgamma)"),
     "likely: the mean term dropped"),
    ("batchnorm", RIGHT["batchnorm"].replace("(B * g - dbeta - x_hat * dgamma)", "(B * g - dbeta)"),
     "likely: the Σ(g·x̂) term dropped"),
    ("batchnorm", RIGHT["batchnorm"].replace("var = ((x - mean) ** 2).mean(0)", "var = x.var(0)"),
     "likely: the unbiased variance (÷ (B − 1)) in x̂"),
    ("batchnorm", RIGHT["batchnorm"].replace("(gamma * inv_std / B)", "(inv_std / B)"), "likely: γ forgotten"),
    ("batchnorm", RIGHT["batchnorm"].replace("(gamma * inv_std / B)", "(gamma * inv_std)"), "likely: a missing 1/B"),
    ("batchnorm", RIGHT["batchnorm"].replace("(gamma * inv_std / B) * (B * g - dbeta - x_hat * dgamma)",
                                             "gamma * inv_std * (g - dbeta - x_hat * dgamma)"),
     "likely: a missing 1/B on the two sums"),
    ("batchnorm", RIGHT["batchnorm"].replace("dbeta = g.sum(0)", "dbeta = g"), "↳ a missing sum over the batch"),
    # a wrong coefficient on a term: not a named mistake, the residual says which term
    ("batchnorm", RIGHT["batchnorm"].replace("- dbeta -", "- 2 * dbeta -"),
     "likely: ∂L/∂x is off by the same amount in every row of a column (feature): the mean term"),
    # layer norm: γ inside the sums, the statistics per row
    ("layernorm", RIGHT["layernorm"].replace("g_hat = g * gamma", "g_hat = g").replace("dx = (inv_std / F)",
                                                                                        "dx = gamma * (inv_std / F)"),
     "likely: γ outside the sums (batch norm's form)"),
    ("layernorm", RIGHT["layernorm"].replace("dgamma = (g * x_hat).sum(0)", "dgamma = (g * x_hat).sum(1)"),
     "↳ summed over the wrong dimension"),
    ("layernorm", RIGHT["layernorm"].replace("var = ((x - mean) ** 2).mean(1, keepdim=True)",
                                             "var = x.var(1, keepdim=True)"),
     "likely: the unbiased variance (÷ (F − 1)) in x̂"),
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
               "backward_pass": HB.backward_pass, "Adam": HO.Adam, "batch_norm_graph_walk": HN.batch_norm_graph_walk,
               "batch_norm_backward": HN.batch_norm_backward, "layer_norm_backward": HN.layer_norm_backward}  # fmt: skip
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
        assert f"python -m src.verify --exercise {name}" in text and ex.doc in text


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


def test_every_exercise_links_a_heading_of_its_page_and_the_readme_lists_them_in_order():
    """The stub's and the checker's link (``ex.doc``) is a real heading; exercises/README.md's table is EXERCISES in order."""
    for name, ex in EXERCISES.items():
        assert ex.section in _anchors((ROOT / ex.page).read_text(encoding="utf-8")), (name, ex.doc)
    readme = (STUBS / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| \[`(\w+)`\]\((\w+)\.py\) \|.*\(\.\./([\w/.]+#[\w-]+)\) \|$", readme, re.M)
    assert [(int(n), a, b) for n, a, b, _ in rows] == [(i, e, e) for i, e in enumerate(EXERCISES, 1)]
    assert [link for *_, link in rows] == [ex.doc for ex in EXERCISES.values()]


def test_batchnorm_staged_grades_node_by_node_in_the_walks_order(capsys, tmp_path):
    """The report lists every intermediate in the order of the walk; only the first wrong one gets the diagnosis."""
    path = fill("batchnorm_staged", RIGHT["batchnorm_staged"].replace("dx_hat = g * gamma", "dx_hat = g"), tmp_path)
    _, out, _ = run(capsys, "--exercise", str(path))
    values = out.split("values (float64", 1)[1].splitlines()[1:]
    graded = [l for l in values if l.startswith("  ") and not l.lstrip().startswith("↳")]
    assert [l.split()[0] for l in graded] == list(HN.batch_norm_graph_walk(*_bn_args()))  # every key, the walk's order
    assert [l.split()[0] for l in graded if "FAIL" in l] == ["dx_hat", "dvar", "dmean_via_x_hat", "dmean", "dx"]
    assert out.count("↳ likely:") == 1 and "FAIL: the first wrong gradient is dx_hat" in out


def test_the_fourth_term_left_out_is_right(capsys, tmp_path):
    """Σ_b (x − μ) = 0: a walk that writes the term through σ² into μ as 0 passes, and the report says why it is 0."""
    code = RIGHT["batchnorm_staged"].replace("dvar * (-2.0 / B) * x_mu.sum(0)", "torch.zeros_like(dvar)")
    code = code.replace("dmean = dmean_via_x_hat + dmean_via_var", "dmean = dmean_via_x_hat")
    status, out, _ = run(capsys, "--exercise", str(fill("batchnorm_staged", code, tmp_path)))
    assert status == 0, out
    assert "dmean_via_var" in out and 'the "fourth term": 0 up to rounding, because Σ_b (x − μ) = 0' in out


def _bn_args() -> tuple:
    gen = torch.Generator().manual_seed(0)
    x, gamma = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 2 + 1, torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    return torch.randn(6, 5, generator=gen, dtype=torch.float64), x, gamma, 1e-5


def test_the_normalizations_wrong_answers_are_the_right_code_switched():
    """Off, each switch of the wrong-answer helpers gives the project's ∂L/∂x (so a mistake differs only by its switch)."""
    g, x, gamma, eps = args = _bn_args()
    walk = HN.batch_norm_graph_walk(*args)
    close = lambda a, b: torch.allclose(a, b, rtol=1e-12, atol=1e-14)  # noqa: E731
    assert close(_walk_dx(*args, walk), walk["dx"])
    assert close(_closed_dx(*args), HN.batch_norm_backward(*args)[0])
    assert close(_ln_dx(*args), HN.layer_norm_backward(*args)[0])
    for mistake in ("no mean term", "no x̂ term", "no gamma", "no 1/B", "no 1/B on the sums"):
        assert not close(_closed_dx(*args, mistake=mistake), walk["dx"]), mistake
