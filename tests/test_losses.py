"""Losses and penalties: gradcheck in float64, equality with torch, stability, validation."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from src.hand import losses as L
from src.hand.functional import softmax
from tests.conftest import away_from_zero, onehot, randn

TOL = dict(rtol=1e-12, atol=1e-12)


def _probs(gen, batch=8, classes=5):
    return torch.softmax(torch.randn(batch, classes, generator=gen, dtype=torch.float64), -1).requires_grad_(True)


def test_mse_gradcheck(gen):
    pred, target = randn(6, 4, gen=gen), randn(6, 4, gen=gen)
    assert gradcheck(L.mse_loss, (pred, target))
    assert gradgradcheck(L.mse_loss, (pred, target))


def test_mse_matches_torch(gen):
    pred, target = randn(16, 10, gen=gen), randn(16, 10, gen=gen)
    ours, ref = L.mse_loss(pred, target), F.mse_loss(pred, target)
    torch.testing.assert_close(ours, ref, **TOL)
    for a, r in zip(torch.autograd.grad(ours, (pred, target)), torch.autograd.grad(ref, (pred, target))):
        torch.testing.assert_close(a, r, **TOL)


def test_cross_entropy_gradcheck(gen):
    target = torch.softmax(torch.randn(8, 5, generator=gen, dtype=torch.float64), -1).requires_grad_(True)
    assert gradcheck(L.cross_entropy, (_probs(gen), target))
    assert gradgradcheck(L.cross_entropy, (_probs(gen), target))


def test_cross_entropy_matches_nll_on_log_probs(gen):
    probs = _probs(gen, 16, 10)
    t, labels = onehot(16, 10, gen)
    ours = L.cross_entropy(probs, t)
    ref = F.nll_loss(probs.log(), labels)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(torch.autograd.grad(ours, probs)[0], torch.autograd.grad(ref, probs)[0], **TOL)


def test_softmax_cross_entropy_gradcheck(gen):
    logits = randn(8, 5, gen=gen, scale=3.0)
    target = torch.softmax(torch.randn(8, 5, generator=gen, dtype=torch.float64), -1).requires_grad_(True)
    assert gradcheck(L.softmax_cross_entropy, (logits, target))
    assert gradgradcheck(L.softmax_cross_entropy, (logits, target))


def test_softmax_cross_entropy_matches_torch(gen):
    logits = randn(16, 10, gen=gen, scale=3.0)
    t, labels = onehot(16, 10, gen)
    ours = L.softmax_cross_entropy(logits, t)
    ref = F.nll_loss(torch.log_softmax(logits, -1), labels)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0], **TOL)
    # and it is the composition it fuses
    composed = L.cross_entropy(softmax(logits), t)
    torch.testing.assert_close(ours, composed, **TOL)
    ours = L.softmax_cross_entropy(logits, t)
    torch.testing.assert_close(
        torch.autograd.grad(ours, logits)[0], torch.autograd.grad(composed, logits)[0], **TOL
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_logits_stay_finite(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], dtype=dtype, requires_grad=True)
    t = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
    fused = L.softmax_cross_entropy(logits, t)
    (g_fused,) = torch.autograd.grad(fused, logits)
    # exact value: row 0 has log-prob −2e4 for its target, row 1 has log-prob 0
    torch.testing.assert_close(fused, torch.tensor(1e4, dtype=dtype))
    torch.testing.assert_close(g_fused, torch.tensor([[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], dtype=dtype))
    composed = L.cross_entropy(softmax(logits), t)  # probabilities underflow to 0 here
    (g_composed,) = torch.autograd.grad(composed, logits)
    assert torch.isfinite(composed) and torch.isfinite(g_composed).all()


@pytest.mark.parametrize("penalty", [L.l1_penalty, L.l2_penalty], ids=["l1", "l2"])
def test_penalty_gradcheck(penalty, gen):
    ws = (away_from_zero(4, 3, gen=gen), away_from_zero(2, 4, gen=gen))
    fn = lambda *w: penalty(w, 0.37)  # noqa: E731
    assert gradcheck(fn, ws)
    assert gradgradcheck(fn, ws)


@pytest.mark.parametrize(
    "penalty,ref",
    [
        (L.l1_penalty, lambda ws, a: a * sum(w.abs().sum() for w in ws)),
        (L.l2_penalty, lambda ws, a: 0.5 * a * sum((w * w).sum() for w in ws)),
    ],
    ids=["l1", "l2"],
)
def test_penalty_matches_torch(penalty, ref, gen):
    ws = (away_from_zero(5, 3, gen=gen), away_from_zero(2, 5, gen=gen))
    ours, expected = penalty(ws, 0.01), ref(ws, 0.01)
    torch.testing.assert_close(ours, expected, **TOL)
    for a, r in zip(torch.autograd.grad(ours, ws), torch.autograd.grad(expected, ws)):
        torch.testing.assert_close(a, r, **TOL)


def test_l2_gradient_equals_sgd_weight_decay(gen):
    """The L2 gradient is α·W: one GD step with the penalty equals SGD(weight_decay=α)."""
    w = randn(4, 3, gen=gen)
    (g,) = torch.autograd.grad(L.l2_penalty([w], 0.05), w)
    torch.testing.assert_close(g, 0.05 * w.detach(), **TOL)


@pytest.mark.parametrize("cls", [L.SquaredErrorLoss, L.CrossEntropyLoss])
@pytest.mark.parametrize("reg", [None, "l1", "l2"])
def test_loss_classes_add_penalty(cls, reg, gen):
    probs = _probs(gen)
    t, _ = onehot(8, 5, gen)
    ws = [randn(5, 4, gen=gen), randn(3, 5, gen=gen)]
    loss_fn = cls(alpha=0.1, regularization=reg)
    data = L.mse_loss(probs, t) if cls is L.SquaredErrorLoss else L.cross_entropy(probs, t)
    extra = {None: 0.0, "l1": 0.1 * sum(w.abs().sum() for w in ws), "l2": 0.05 * sum((w**2).sum() for w in ws)}[reg]
    torch.testing.assert_close(loss_fn(probs, t, ws), data + extra, **TOL)
    assert repr(loss_fn) == f"{cls.__name__}(alpha=0.1, regularization={reg!r})"


def test_from_logits_equals_probability_path(gen):
    logits = randn(8, 5, gen=gen)
    t, _ = onehot(8, 5, gen)
    ws = [randn(5, 4, gen=gen)]
    loss_fn = L.CrossEntropyLoss(alpha=0.01, regularization="l2")
    torch.testing.assert_close(loss_fn.from_logits(logits, t, ws), loss_fn(softmax(logits), t, ws), **TOL)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(alpha=-0.1), "alpha=-0.1"),
        (dict(alpha=float("nan")), "alpha=nan"),
        (dict(regularization="l3"), "regularization='l3'"),
    ],
)
@pytest.mark.parametrize("cls", [L.SquaredErrorLoss, L.CrossEntropyLoss])
def test_bad_loss_hyperparameters(cls, kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        cls(**kwargs)


def test_penalty_graph_is_hand_derived(gen):
    ws = [randn(3, 3, gen=gen)]
    loss = L.CrossEntropyLoss(0.1, "l2").from_logits(randn(4, 3, gen=gen), onehot(4, 3, gen)[0], ws)
    assert type(loss.grad_fn).__name__ == "AddBackward"
    names = {type(f).__name__ for f, _ in loss.grad_fn.next_functions if f is not None}
    assert names == {"SoftmaxCrossEntropyBackward", "L2PenaltyBackward"}
