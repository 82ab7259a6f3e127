"""Label smoothing in the fused softmax cross-entropy: gradcheck, equality with F.cross_entropy(label_smoothing=ε)."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from src.hand import losses as L

TOL = dict(rtol=1e-12, atol=1e-12)


def _logits(gen, batch=8, classes=5):
    return torch.randn(batch, classes, generator=gen, dtype=torch.float64).mul_(3).requires_grad_(True)


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.5, 1.0])
def test_smoothing_equals_torch_with_class_indices(eps, gen):
    z = _logits(gen)
    labels = torch.randint(5, (8,), generator=gen)
    ours, ref = L.softmax_cross_entropy(z, labels, eps), F.cross_entropy(z, labels, label_smoothing=eps)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(torch.autograd.grad(ours, z)[0], torch.autograd.grad(ref, z)[0], **TOL)


def test_smoothing_equals_torch_with_probability_rows(gen):
    z = _logits(gen)
    t = torch.softmax(torch.randn(8, 5, generator=gen, dtype=torch.float64), -1).requires_grad_(True)
    ours, ref = L.softmax_cross_entropy(z, t, 0.2), F.cross_entropy(z, t, label_smoothing=0.2)
    torch.testing.assert_close(ours, ref, **TOL)
    for a, b in zip(torch.autograd.grad(ours, (z, t)), torch.autograd.grad(ref, (z, t))):
        torch.testing.assert_close(a, b, **TOL)


def test_smoothing_gradcheck(gen):
    z = _logits(gen)
    t = torch.softmax(torch.randn(8, 5, generator=gen, dtype=torch.float64), -1).requires_grad_(True)
    assert gradcheck(lambda z, t: L.softmax_cross_entropy(z, t, 0.1), (z, t))
    assert gradgradcheck(lambda z, t: L.softmax_cross_entropy(z, t, 0.1), (z, t))


def test_gradient_is_softmax_minus_smoothed_target(gen):
    # the derivation's claim: ∂L/∂z = (y − t̃)/B for one-hot rows, with t̃ = (1 − ε) t + ε/K
    z = _logits(gen)
    labels = torch.randint(5, (8,), generator=gen)
    (grad,) = torch.autograd.grad(L.softmax_cross_entropy(z, labels, 0.1), z)
    smoothed = F.one_hot(labels, 5).double() * 0.9 + 0.1 / 5
    torch.testing.assert_close(grad, (torch.softmax(z, -1) - smoothed) / 8, **TOL)


def test_zero_smoothing_is_the_unsmoothed_loss_bit_for_bit(gen):
    z = _logits(gen)
    labels = torch.randint(5, (8,), generator=gen)
    a, b = L.softmax_cross_entropy(z, labels), L.softmax_cross_entropy(z, labels, 0.0)
    assert torch.equal(a, b)
    assert torch.equal(torch.autograd.grad(a, z)[0], torch.autograd.grad(b, z)[0])


def test_loss_class_smooths_from_logits_and_refuses_probabilities(gen):
    z = _logits(gen)
    labels = torch.randint(5, (8,), generator=gen)
    loss = L.CrossEntropyLoss(label_smoothing=0.1)
    torch.testing.assert_close(loss.from_logits(z, labels), F.cross_entropy(z, labels, label_smoothing=0.1), **TOL)
    assert "label_smoothing=0.1" in repr(loss)
    with pytest.raises(ValueError, match="label_smoothing=0.1 needs the logits"):
        loss(torch.softmax(z, -1), labels)


@pytest.mark.parametrize("bad,error", [(-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError), ("0.1", TypeError)])
def test_bad_smoothing_is_refused_naming_it(bad, error, gen):
    with pytest.raises(error, match="label_smoothing="):
        L.softmax_cross_entropy(_logits(gen), torch.zeros(8, dtype=torch.long), bad)
    with pytest.raises(error, match="label_smoothing="):
        L.CrossEntropyLoss(label_smoothing=bad)
