"""``python -m src.walkthrough``: one training step, every line checked against autograd, a planted bug caught in its line.

Most tests run on the fake MNIST of ``tests/conftest.py`` (600 training pictures, so ``--val_size
100``); the last one compares the real MNIST run with the output pasted in ``docs/walkthrough.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from src import walkthrough as WT
from src.hand import backprop
from src.hand.functional import ACTIVATION_FUNCTIONS, Sigmoid
from src.hand.losses import SoftmaxCrossEntropy
from tests.conftest import ROOT, needs_real_mnist

FAKE = ["--val_size", "100"]  # the fake MNIST has 600 training pictures
DOC = ROOT / "docs" / "walkthrough.md"
LINE = re.compile(r"^  (?P<name>\S+)\s+(?P<formula>.*?)\s+(?P<shape>scalar|\d+(?:×\d+)*)  (?P<note>max\||= )")
VERDICT = re.compile(r"\s(exact|close|WRONG)(\s|$)")

#: the shapes of the default step, as docs/derivations.md states them (batch 64)
DEFAULT_SHAPES = {
    ("forward", "x"): "64×784", ("forward", "W₁"): "500×784", ("forward", "z₁"): "64×500", ("forward", "h₁"): "64×500",
    ("forward", "W₂"): "250×500", ("forward", "z₂"): "64×250", ("forward", "h₂"): "64×250",
    ("forward", "W₃"): "100×250", ("forward", "z₃"): "64×100", ("forward", "h₃"): "64×100",
    ("forward", "W₄"): "10×100", ("forward", "z₄"): "64×10", ("forward", "ŷ"): "64×10", ("forward", "L"): "scalar",
    ("backward", "δ₄"): "64×10", ("backward", "∂W₄"): "10×100", ("backward", "∂b₄"): "10",
    ("backward", "∂L/∂h₃"): "64×100", ("backward", "δ₃"): "64×100", ("backward", "∂W₃"): "100×250",
    ("backward", "∂b₃"): "100", ("backward", "∂L/∂h₂"): "64×250", ("backward", "δ₂"): "64×250",
    ("backward", "∂W₂"): "250×500", ("backward", "∂b₂"): "250", ("backward", "∂L/∂h₁"): "64×500",
    ("backward", "δ₁"): "64×500", ("backward", "∂W₁"): "500×784", ("backward", "∂b₁"): "500",
    ("backward", "∂L/∂x"): "64×784", ("update", "W₁"): "500×784", ("update", "b₄"): "10", ("update", "L"): "scalar",
}  # fmt: skip


def run(argv, capsys) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit status, stdout, stderr)."""
    try:
        status = WT.main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def printed(out: str) -> list[dict]:
    """The printed tensor lines: section, name, formula, shape, verdict (None: not checked), and the numbers under each."""
    lines, section = [], None
    for text in out.splitlines():
        for key in WT._TITLES:
            if text.startswith(key + ":"):
                section = key
        m = LINE.match(text)
        if m and section:
            v = VERDICT.search(text[m.end() :])
            lines.append({"section": section, **m.groupdict(), "verdict": v.group(1) if v else None, "rows": []})
        elif text.startswith("      [") and lines:
            lines[-1]["rows"].append([float(v) for v in text.strip()[1:-1].split()])
    return lines


def wrong(lines: list[dict]) -> set[tuple[str, str]]:
    return {(line["section"], line["name"]) for line in lines if line["verdict"] == "WRONG"}


def test_cmp_says_exact_close_and_wrong():
    a = torch.tensor([1.0, -2.0, 3.0])
    assert WT.cmp(a, a.clone()).word == "exact"
    assert WT.cmp(torch.nextafter(a, a + 1), a).word == "close"  # one ulp: rounding, not a bug
    assert WT.cmp(a * 1.001, a).word == "WRONG"
    assert WT.cmp(torch.tensor([1.0, float("nan"), 3.0]), a).word == "WRONG"
    bad = WT.cmp(torch.zeros(3, 2), torch.zeros(2, 3))
    assert bad.word == "WRONG" and "3×2" in bad.detail and "2×3" in bad.detail


def test_default_step_every_line_exact_or_close(fake_data, capsys):
    status, out, err = run(FAKE, capsys)
    assert status == 0, out + err
    lines = printed(out)
    checked = [line for line in lines if line["verdict"] is not None]
    assert len(checked) == 42  # 4 W, 4 b, 4 z, 3 h, ŷ, L; δ₄, 4×(∂W, ∂b), 3×(∂L/∂h, δ), ∂L/∂x; 8 updates, L after
    assert {line["verdict"] for line in checked} <= {"exact", "close"}
    assert "lines WRONG" not in out and "all 42 checked lines exact or close" in out
    assert not [k for k in ACTIVATION_FUNCTIONS if "recorded" in k]  # the recording left nothing behind
    assert not any(line["rows"] for line in lines)  # a big net: shapes, not numbers


def test_printed_shapes_are_the_documented_ones(fake_data, capsys):
    status, out, _ = run(FAKE, capsys)
    shapes = {(line["section"], line["name"]): line["shape"] for line in printed(out)}
    assert {key: shapes.get(key) for key in DEFAULT_SHAPES} == DEFAULT_SHAPES
    # the order of the derivation: forward up, then δ₄ and the layers downwards, then the update
    names = [line["name"] for line in printed(out) if line["section"] == "backward"]
    assert names[:4] == ["δ₄", "∂W₄", "∂b₄", "∂L/∂h₃"] and names[-1] == "∂L/∂x"


#: what a planted bug in σ' breaks: δ₃ and everything computed from it, and nothing before it
SIGMOID_BUG = {
    *(("backward", n) for n in ["δ₃", "∂W₃", "∂b₃", "∂L/∂h₂", "δ₂", "∂W₂", "∂b₂", "∂L/∂h₁", "δ₁", "∂W₁", "∂b₁", "∂L/∂x"]),
    *(("update", n) for n in ["W₁", "b₁", "W₂", "b₂", "W₃", "b₃", "L"]),
}


def test_planted_sigmoid_derivative_bug_shows_in_its_lines(fake_data, capsys, monkeypatch):
    # the classic slip: σ(1 + σ) for σ(1 − σ)
    monkeypatch.setattr(Sigmoid, "derivative", staticmethod(lambda grad, y, out=None: grad * y * (1 + y)))
    status, out, _ = run(FAKE, capsys)
    assert status == 1
    assert wrong(printed(out)) == SIGMOID_BUG
    assert "the first WRONG line of the backward pass is δ₃, computed by Sigmoid.derivative" in out


def test_planted_transposed_weight_gradient_shows_in_its_lines(fake_data, capsys, monkeypatch):
    right = backprop.backward_pass

    def transposed(*args, **kwargs):  # ∂W_l = d_{l−1}ᵀ δ_l: the product the wrong way round
        grads = right(*args, **kwargs)
        return grads._replace(W=[w.t() for w in grads.W])

    monkeypatch.setattr(backprop, "backward_pass", transposed)
    status, out, _ = run(FAKE, capsys)
    assert status == 1
    lines = printed(out)
    expected = {("backward", f"∂W{WT.sub(l)}") for l in range(1, 5)} | {("update", f"W{WT.sub(l)}") for l in range(1, 5)}
    assert wrong(lines) == expected | {("update", "L")}
    dW4 = next(line for line in lines if line["name"] == "∂W₄")
    assert dW4["shape"] == "100×10" and "autograd's 10×100" in out
    assert "not applied: ∂W₁ is 784×500, W₁ is 500×784" in out


def test_a_recursion_that_raises_is_a_wrong_line_not_a_traceback(fake_data, capsys, monkeypatch):
    right = backprop.backward_pass

    def delta_times_w_transposed(delta, weights, tape, activation):  # δ_l W_lᵀ: the product of the wrong shapes
        return right(delta, [w.t() for w in weights], tape, activation)

    monkeypatch.setattr(backprop, "backward_pass", delta_times_w_transposed)
    status, out, err = run(FAKE, capsys)
    assert status == 1 and err == ""
    assert wrong(printed(out)) == set()  # δ₄ came before the error and is right; nothing else was computed
    assert "backward_pass  raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x10 and 100x10)" in out
    assert "1 line WRONG: backward backward_pass" in out and "update:" not in out
    assert "backward_pass stopped with an error after the last line above it" in out


def test_planted_loss_backward_bug_breaks_every_gradient(fake_data, capsys, monkeypatch):
    right = SoftmaxCrossEntropy.backward

    def no_mean(ctx, grad):  # forgets the 1/B of (ŷ − t)/B
        grad_z, grad_t, grad_eps = right(ctx, grad)
        return grad_z * len(grad_z), grad_t, grad_eps

    monkeypatch.setattr(SoftmaxCrossEntropy, "backward", staticmethod(no_mean))
    status, out, _ = run(FAKE, capsys)
    lines = printed(out)
    assert status == 1
    checked_after_forward = {(x["section"], x["name"]) for x in lines if x["verdict"] and x["section"] != "forward"}
    assert wrong(lines) == checked_after_forward
    assert "the first WRONG line of the backward pass is δ₄, computed by SoftmaxCrossEntropy.backward" in out


def test_tiny_net_prints_numbers_a_learner_can_check(fake_data, capsys):
    status, out, _ = run(["--sizes", "4", "3", "2", *FAKE], capsys)
    assert status == 0, out
    assert "average-pooled from 28×28 to 2×2 = 4 inputs" in out and "digit mod 2" in out
    rows = {(line["section"], line["name"]): torch.tensor(line["rows"]) for line in printed(out)}
    x, t, W1, b1, z1 = (rows["forward", n] for n in ["x", "t", "W₁", "b₁", "z₁"])
    assert x.shape == (2, 4) and W1.shape == (3, 4) and t.shape == (2, 2)  # batch 2 by default for a tiny net
    # pencil and paper: the printed numbers (5 decimals) obey the printed formulas
    assert torch.allclose(z1, x @ W1.T + b1, atol=3e-5)
    h1, W2, y_hat, delta2 = (rows[k] for k in [("forward", "h₁"), ("forward", "W₂"), ("forward", "ŷ"), ("backward", "δ₂")])
    assert torch.allclose(h1, torch.sigmoid(z1), atol=3e-5)
    assert torch.allclose(delta2, (y_hat - t) / 2, atol=3e-5)
    assert torch.allclose(rows["backward", "∂W₂"], delta2.T @ h1, atol=3e-5)
    assert torch.allclose(rows["backward", "δ₁"], (delta2 @ W2) * h1 * (1 - h1), atol=3e-5)
    assert torch.allclose(rows["update", "W₂"], W2 - 0.3 * rows["backward", "∂W₂"], atol=3e-5)


def test_tiny_input_is_the_first_batch_pooled_and_the_class_is_the_parity(fake_data):
    from src.data.mnist import MNISTDataModule

    batch = WT.load_batch((4, 3, 2), 5, seed=0, val_size=100)
    dm = MNISTDataModule(data_dir="data/", batch_size=5, val_size=100, seed=0)
    dm.setup("fit")
    x, _, digits = next(iter(dm.train_dataloader()))
    quadrants = x.reshape(5, 2, 14, 2, 14).mean(dim=(2, 4)).reshape(5, 4)  # the 2×2 average pool
    assert torch.allclose(batch.x, quadrants, atol=1e-6)
    assert torch.equal(batch.digits, digits) and torch.equal(batch.labels, digits % 2)
    assert torch.equal(batch.t, torch.nn.functional.one_hot(digits % 2, 2).float())


def test_the_walked_weights_are_the_first_weights_of_src_train_fit(monkeypatch):
    # the doc's claim: `python -m src.train fit --seed_everything 0` starts from these very weights
    from lightning.fabric.utilities.seed import seed_everything

    from src.hand.nets import FeedForwardNet
    from src.system.module import MLPClassifier

    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # seed_everything sets it: restored after the test
    with torch.random.fork_rng():  # … and the global generator
        seed_everything(0, verbose=False)
        trained = MLPClassifier().net.weights()
    walked = FeedForwardNet(seed=0).weights()  # what walk() builds for --seed 0
    assert all(torch.equal(a, b) for a, b in zip(trained, walked)) and len(trained) == 4


def test_one_step_lowers_the_loss_and_the_line_says_so(fake_data, capsys):
    batch = WT.load_batch(WT.DEFAULT_SIZES, 64, seed=0, val_size=100)
    step = WT.walk(batch, WT.DEFAULT_SIZES, "sigmoid", seed=0, lr=0.3)
    assert step.loss_after < step.loss_before
    assert step.passed
    for lr in ("0.3", "300"):  # the printed verdict follows the numbers, whichever way they went
        status, out, _ = run(["--lr", lr, *FAKE], capsys)
        before, after = (float(v) for v in re.search(r"= ([\d.]+) \(was ([\d.]+)", out).groups()[::-1])
        assert ("(was" in out) and (("NOT lower" in out) == (after >= before)), out
        if lr == "0.3":
            assert after < before and status == 0


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
def test_other_activations_pass_and_name_their_derivative(fake_data, capsys, activation):
    status, out, _ = run(["--activation", activation, "--sizes", "16", "8", "8", "3", "--batch", "4", *FAKE], capsys)
    assert status == 0, out
    delta1 = next(line for line in printed(out) if line["name"] == "δ₁")
    assert WT._PRIME[activation].format(l="₁") in delta1["formula"] and delta1["shape"] == "4×8"


def test_graph_is_a_mermaid_block_with_one_node_per_function(fake_data, capsys):
    status, out, _ = run(["--sizes", "4", "3", "2", "--graph", "step.md", *FAKE], capsys)
    assert status == 0 and "graph written to step.md" in out
    text = Path("step.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", text, re.S).group(1)
    assert block.startswith("flowchart TB\n")
    nodes = re.findall(r'^    (f\d+)\["(\w+)<br/>(.*?)"\]$', block, re.M)
    assert [(n[0], n[1]) for n in nodes] == [("f1", "Linear"), ("f2", "Sigmoid"), ("f3", "Linear"), ("f4", "SoftmaxCrossEntropy")]
    assert "z₁ = x W₁ᵀ + b₁ · 2×3<br/>δ₁ = ∂L/∂z₁ · 2×3" in nodes[0][2]
    assert "W₁ · 3×4<br/>∂L/∂W₁ · 3×4" in block and "x · 2×4" in block and "t · 2×2 one-hot" in block
    edges = re.findall(r"^    (\w+) --> (f\d+)$", block, re.M)
    assert ("f1", "f2") in edges and ("f2", "f3") in edges and ("f3", "f4") in edges and ("W1", "f1") in edges
    # .mmd: the Mermaid text alone, the same
    status, _, _ = run(["--sizes", "4", "3", "2", "--graph", "step.mmd", *FAKE], capsys)
    assert status == 0 and Path("step.mmd").read_text() == block


def test_default_graph_is_the_one_pasted_in_the_doc():
    blocks = re.findall(r"```mermaid\n(.*?)```", DOC.read_text(), re.S)
    assert blocks and blocks[0] == WT.step_graph()
    nodes = re.findall(r'^    f\d+\["(\w+)<br/>', blocks[0], re.M)
    assert nodes == ["Linear", "Sigmoid"] * 3 + ["Linear", "SoftmaxCrossEntropy"]


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--sizes", "5", "3", "2"], "--sizes 5 3 2"),
        (["--sizes", "4", "2"], "--sizes 4 2"),
        (["--sizes", "4", "0", "2"], "--sizes 4 0 2"),
        (["--sizes", "4", "3", "11"], "--sizes 4 3 11"),
        (["--sizes", "841", "3", "2"], "--sizes 841 3 2"),
        (["--batch", "0"], "--batch 0"),
        (["--batch", "two"], "'two'"),
        (["--lr", "0"], "--lr 0.0"),
        (["--lr", "nan"], "--lr nan"),
        (["--seed", "-1"], "--seed -1"),
        (["--activation", "softmax"], "'softmax'"),
        (["--val_size", "0"], "--val_size 0"),
        (["--graph", "step.png"], "--graph step.png"),
        (["--graph", "no/such/folder/step.md"], "--graph no/such/folder/step.md"),
        (["--graph", "data"], "--graph data"),
        (["--batch", "501", *FAKE], "--batch 501"),  # more than the 500 training pictures: known once read
        (["--val_size", "600"], "--val_size=600"),
        (["--colour"], "--colour"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(fake_data, capsys, argv, names):
    status, out, err = run(argv, capsys)
    assert status == 2
    assert out == "" and len(err.strip().splitlines()) == 1 and names in err, err
    assert not list(Path(".").glob("step*")) and not list(Path(".").glob(".step*"))


def test_a_damaged_data_file_is_one_line_and_exit_1(fake_data, capsys):
    images = Path("data/MNIST/raw/train-images-idx3-ubyte")
    images.write_bytes(images.read_bytes()[:1000])
    status, out, err = run([*FAKE, "--graph", "step.md"], capsys)
    assert status == 1 and out == "" and len(err.strip().splitlines()) == 1 and "train-images" in err
    assert not Path("step.md").exists()


@pytest.mark.slow
@needs_real_mnist
def test_real_mnist_run_is_the_one_pasted_in_the_doc(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, out, _ = run([], capsys)
    assert status == 0
    doc = DOC.read_text()
    pasted = re.search(r"```text\n\$ python -m src.walkthrough\n(.*?)```", doc, re.S).group(1)
    key = lambda lines: [(x["section"], x["name"], x["formula"], x["shape"], x["verdict"] is not None) for x in lines]  # noqa: E731
    assert key(printed(pasted)) == key(printed(out))
    assert out.splitlines()[:4] == pasted.splitlines()[:4]  # the same net, batch and digits


def test_the_derivations_page_shows_the_default_graph():
    """docs/derivations.md embeds the same graph between its markers (regenerate it with --graph when the step changes)."""
    page = (DOC.parent / "derivations.md").read_text()
    inside = page.split("<!-- graph: begin -->", 1)[1].split("<!-- graph: end -->", 1)[0]
    assert re.findall(r"```mermaid\n(.*?)```", inside, re.S) == [WT.step_graph()]
