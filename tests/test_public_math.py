"""The public math called with PyTorch's habits: what torch does, or one refusal naming what it got.

Class-index targets, unbatched inputs and probability rows against ``F.cross_entropy`` /
``F.nll_loss`` (values, gradients, gradcheck in float64); every unsupported dtype or shape refused
with a ``TypeError`` / ``ValueError`` before any Function runs.
"""

import re

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from src.hand import functional as HF
from src.hand import losses as L
from tests.conftest import randn

TOL = dict(rtol=1e-12, atol=1e-12)
ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "identity"]


def _labels(batch, classes, gen):
    return torch.randint(classes, (batch,), generator=gen)


def _grads(loss, inputs):
    return torch.autograd.grad(loss, inputs)


# ------------------------------------------------------------ class-index targets
@pytest.mark.parametrize("batch", [1, 2, 7, 10, 128])
def test_softmax_cross_entropy_with_class_indices_equals_torch(batch, gen):
    logits = randn(batch, 10, gen=gen, scale=3.0)
    labels = _labels(batch, 10, gen)
    ours, ref = L.softmax_cross_entropy(logits, labels), F.cross_entropy(logits, labels)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(_grads(ours, logits), _grads(ref, logits), **TOL)


def test_softmax_cross_entropy_with_class_indices_in_float32_equals_torch(gen):
    logits = torch.randn(64, 10, generator=gen).mul(5).requires_grad_(True)
    labels = _labels(64, 10, gen)
    ours, ref = L.softmax_cross_entropy(logits, labels), F.cross_entropy(logits, labels)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(_grads(ours, logits), _grads(ref, logits))


@pytest.mark.parametrize("batch", [1, 10, 13])
def test_cross_entropy_on_probabilities_with_class_indices_equals_nll_of_log(batch, gen):
    probs = torch.softmax(randn(batch, 10, gen=gen, requires_grad=False), -1).requires_grad_(True)
    labels = _labels(batch, 10, gen)
    ours, ref = L.cross_entropy(probs, labels), F.nll_loss(probs.log(), labels)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(_grads(ours, probs), _grads(ref, probs), **TOL)


@pytest.mark.parametrize("fn", [L.softmax_cross_entropy, L.cross_entropy], ids=["logits", "probabilities"])
def test_class_index_path_gradcheck(fn, gen):
    x = randn(6, 5, gen=gen)
    if fn is L.cross_entropy:
        x = torch.softmax(x.detach(), -1).requires_grad_(True)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    assert gradcheck(lambda z: fn(z, labels), (x,))
    assert gradgradcheck(lambda z: fn(z, labels), (x,))


def test_class_indices_and_their_one_hot_rows_give_the_same_loss(gen):
    """The course report's one-hot path is unchanged, and class indices are exactly those rows."""
    logits = randn(9, 4, gen=gen)
    labels = _labels(9, 4, gen)
    onehot = F.one_hot(labels, 4).double()
    by_index, by_row = L.softmax_cross_entropy(logits, labels), L.softmax_cross_entropy(logits, onehot)
    assert torch.equal(by_index, by_row)
    assert torch.equal(_grads(by_index, logits)[0], _grads(by_row, logits)[0])


def test_loss_classes_take_class_indices(gen):
    logits = randn(8, 5, gen=gen)
    labels = _labels(8, 5, gen)
    w = randn(5, 4, gen=gen)
    loss_fn = L.CrossEntropyLoss(alpha=0.01, regularization="l2")
    penalty = 0.005 * (w * w).sum()
    torch.testing.assert_close(loss_fn.from_logits(logits, labels, [w]), F.cross_entropy(logits, labels) + penalty, **TOL)
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(loss_fn(probs, labels, [w]), F.nll_loss(probs.log(), labels) + penalty, **TOL)


# ------------------------------------------------------------- unbatched (C,)
def test_unbatched_logits_with_a_scalar_index_or_a_row_equal_torch(gen):
    logits = randn(7, gen=gen, scale=2.0)
    label = torch.tensor(3)
    soft = torch.softmax(randn(7, gen=gen, requires_grad=False), -1)
    for target in (label, soft, F.one_hot(label, 7).double()):
        ours, ref = L.softmax_cross_entropy(logits, target), F.cross_entropy(logits, target)
        torch.testing.assert_close(ours, ref, **TOL)
        torch.testing.assert_close(_grads(ours, logits), _grads(ref, logits), **TOL)
    assert gradcheck(lambda z: L.softmax_cross_entropy(z, label), (logits,))


def test_unbatched_probabilities_are_not_divided_by_the_class_count(gen):
    probs = torch.softmax(randn(7, gen=gen, requires_grad=False), -1).requires_grad_(True)
    label = torch.tensor(5)
    for target in (label, F.one_hot(label, 7).double()):
        ours, ref = L.cross_entropy(probs, target), F.nll_loss(probs.log()[None], label[None])
        torch.testing.assert_close(ours, ref, **TOL)
        torch.testing.assert_close(_grads(ours, probs), _grads(ref, probs), **TOL)
    assert gradcheck(lambda p: L.cross_entropy(p, label), (probs,))


# ------------------------------------------------------------------ refusals
def test_mse_loss_refuses_broadcasting_naming_both_shapes():
    pred, target = torch.randn(8, 1, requires_grad=True), torch.randn(8)
    with pytest.raises(ValueError, match=re.escape("got pred (8, 1) and target (8,) (torch would broadcast them to (8, 8))")):
        L.mse_loss(pred, target)
    with pytest.raises(ValueError, match=re.escape("got pred (3, 2) and target (4,) (torch refuses them too)")):
        L.mse_loss(torch.randn(3, 2), torch.randn(4))
    with pytest.raises(ValueError, match=re.escape("pred (8, 1) and target (8,)")):
        L.SquaredErrorLoss()(pred, target)


@pytest.mark.parametrize("bad", [torch.complex64, torch.int64, torch.bool], ids=["complex", "int", "bool"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_refuse_non_real_floating_inputs(name, bad):
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0]]).to(bad)
    short = str(bad).removeprefix("torch.")
    with pytest.raises(TypeError, match=re.escape(f"{name}: x must be a real floating tensor") + ".*" + re.escape(f"got {short} (2, 2)")):
        HF.ACTIVATIONS[name](x)


def test_complex_sigmoid_is_refused_where_it_gave_an_unconjugated_gradient():
    with pytest.raises(TypeError, match="complex tensors are not supported"):
        HF.sigmoid(torch.tensor([0.5 + 1j], requires_grad=True))


@pytest.mark.parametrize("which", ["x", "weight", "bias"])
@pytest.mark.parametrize("bad", [torch.complex128, torch.int64])
def test_linear_refuses_non_real_floating_tensors(which, bad, gen):
    args = dict(x=randn(4, 3, gen=gen), weight=randn(2, 3, gen=gen), bias=randn(2, gen=gen))
    args[which] = args[which].detach().to(bad)
    with pytest.raises(TypeError, match=re.escape(f"linear: {which} must be a real floating tensor")):
        HF.linear(**args)


@pytest.mark.parametrize(
    "shapes",
    [((5,), (2, 5), (2,)), ((3, 4, 5), (2, 5), (2,)), ((4, 5), (2, 4), (2,)), ((4, 5), (2, 5), (1, 2)), ((4, 5), (2, 5), (3,))],
    ids=["1d x", "3d x", "in mismatch", "bias (1, out)", "bias size"],
)
def test_linear_refuses_other_shapes_naming_them(shapes):
    x, w, b = (torch.randn(*s, dtype=torch.float64) for s in shapes)
    with pytest.raises(ValueError, match=re.escape(f"got x {shapes[0]}, weight {shapes[1]}, bias {shapes[2]}")):
        HF.linear(x, w, b)


def test_linear_refuses_mixed_dtypes(gen):
    with pytest.raises(TypeError, match=re.escape("x, weight and bias must share one dtype; got x float32, weight float64 and bias float64")):
        HF.linear(torch.randn(4, 3), randn(2, 3, gen=gen), randn(2, gen=gen))


def _loss_calls():
    """``(name, call(dtype))``: each loss and penalty with every tensor argument in ``dtype``."""
    labels = torch.tensor([0, 2, 1, 2])
    return [
        ("mse_loss", lambda d: L.mse_loss(torch.randn(4, 3).to(d), torch.randn(4, 3).to(d))),
        ("cross_entropy", lambda d: L.cross_entropy(torch.rand(4, 3).to(d), labels)),
        ("softmax_cross_entropy", lambda d: L.softmax_cross_entropy(torch.randn(4, 3).to(d), labels)),
        ("softmax_cross_entropy", lambda d: L.softmax_cross_entropy(torch.randn(4, 3).to(d), torch.rand(4, 3).to(d))),
        ("l1_penalty", lambda d: L.l1_penalty([torch.randn(3, 2).to(d)], 0.1)),
        ("l2_penalty", lambda d: L.l2_penalty([torch.randn(3, 2).to(d)], 0.1)),
        ("add", lambda d: L.add(torch.tensor(1.0).to(d), torch.tensor(2.0).to(d))),
    ]


@pytest.mark.parametrize("bad", [torch.complex64, torch.int64, torch.bool], ids=["complex", "int", "bool"])
@pytest.mark.parametrize("name,call", _loss_calls(), ids=[n for n, _ in _loss_calls()])
def test_losses_and_penalties_refuse_non_real_floating_inputs(name, call, bad):
    with pytest.raises(TypeError, match=re.escape(f"{name}: ") + ".* must be a real floating tensor .*" + re.escape(str(bad).removeprefix("torch."))):
        call(bad)


@pytest.mark.parametrize("fn,name", [(L.softmax_cross_entropy, "logits"), (L.cross_entropy, "probs")])
def test_cross_entropy_refuses_classes_in_dim_1(fn, name):
    x, labels = torch.rand(2, 3, 4, requires_grad=True), torch.randint(3, (2, 4))
    with pytest.raises(ValueError, match=re.escape(f"got {name} (2, 3, 4); F.cross_entropy would take dim 1 as the classes")):
        fn(x, labels)
    with pytest.raises(ValueError, match=re.escape(f"got {name} ()")):
        fn(torch.tensor(0.5), torch.tensor(0))


@pytest.mark.parametrize("value", [-1, -100, 3, 10])
@pytest.mark.parametrize("fn", [L.softmax_cross_entropy, L.cross_entropy], ids=["logits", "probabilities"])
def test_class_indices_out_of_range_are_refused_naming_the_value(fn, value):
    labels = torch.tensor([0, 2, value, 1])
    with pytest.raises(ValueError, match=re.escape(f"class index {value} is out of range [0, 3)")):
        fn(torch.rand(4, 3, dtype=torch.float64), labels)


@pytest.mark.parametrize(
    "target,error,needle",
    [
        (F.one_hot(torch.tensor([0, 2, 1, 2]), 3), ValueError, "got target int64 (4, 3) (F.one_hot gives int64 rows: convert them with .to(logits.dtype))"),
        (torch.tensor([0, 2, 1, 2], dtype=torch.int32), TypeError, "got target int32 (4,) (convert class indices with .long())"),
        (torch.tensor([0, 2, 1, 2]).bool(), TypeError, "got target bool (4,)"),
        (torch.tensor([[0], [2], [1], [2]]), ValueError, "or int64 class indices (4,); got target int64 (4, 1)"),
        (torch.tensor([0, 2, 1]), ValueError, "or int64 class indices (4,); got target int64 (3,)"),
        (torch.rand(4, 2, dtype=torch.float64), ValueError, "rows shaped like logits (4, 3); got target (4, 2) (class indices are int64 of shape (4,))"),
        (torch.rand(4, 3), TypeError, "logits and target must share one dtype; got logits float64 and target float32"),
        ([0, 2, 1, 2], TypeError, "got target list"),
    ],
    ids=["int64 one-hot", "int32 indices", "bool", "(B, 1) indices", "short batch", "rows of another shape", "row dtype", "a list"],
)
def test_cross_entropy_targets_refused_with_what_is_taken(target, error, needle):
    with pytest.raises(error, match=re.escape(needle)):
        L.softmax_cross_entropy(torch.randn(4, 3, dtype=torch.float64, requires_grad=True), target)


@pytest.mark.parametrize("fn", [L.l1_penalty, L.l2_penalty], ids=["l1", "l2"])
def test_penalties_refuse_what_is_not_a_list_of_weights(fn, gen):
    name = fn.__name__
    w = randn(3, 2, gen=gen)
    with pytest.raises(TypeError, match=re.escape(f"{name}: weights must be a list of weight tensors; got float64 (3, 2)")):
        fn(w, 0.1)
    with pytest.raises(ValueError, match=re.escape(f"{name}: weights is empty")):
        fn([], 0.1)
    with pytest.raises(TypeError, match=re.escape("weights[0] float64 and weights[1] float32")):
        fn([w, torch.randn(2, 2)], 0.1)
    with pytest.raises(ValueError, match=re.escape("alpha=-0.5 must be a finite number >= 0")):
        fn([w], -0.5)
    with pytest.raises(TypeError, match=re.escape("alpha='0.1' must be a real number >= 0; got str")):
        fn([w], "0.1")
    assert fn([w], 0.1).requires_grad  # a list, and a tuple, are what it takes
    assert fn((w,), 0.1).requires_grad


def test_add_refuses_broadcasting():
    with pytest.raises(ValueError, match=re.escape("add takes a and b of the same shape; got a () and b (3,)")):
        L.add(torch.tensor(1.0), torch.randn(3))


@pytest.mark.parametrize(
    "call",
    [
        lambda: L.softmax_cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 3, 1])),
        lambda: L.softmax_cross_entropy(torch.randn(2, 3, 4), torch.randint(3, (2, 4))),
        lambda: L.cross_entropy(torch.rand(5), torch.tensor([1])),
        lambda: L.mse_loss(torch.randn(8, 1), torch.randn(8)),
        lambda: HF.sigmoid(torch.randn(2).to(torch.complex64)),
        lambda: HF.linear(torch.randn(3, 4, 5), torch.randn(2, 5), torch.randn(2)),
    ],
    ids=["index range", "dim 1 classes", "unbatched (1,) index", "broadcast", "complex", "3d linear"],
)
def test_refusals_come_before_any_function_runs(call, monkeypatch):
    def ran(*args):
        raise AssertionError("a Function ran before the arguments were checked")

    for cls in (L.SoftmaxCrossEntropy, L.CrossEntropy, L.MSELoss, HF.Sigmoid, HF.Linear):
        monkeypatch.setattr(cls, "apply", ran)
    with pytest.raises((TypeError, ValueError)):
        call()
