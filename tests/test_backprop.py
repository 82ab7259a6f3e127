"""The backprop recursion written out (src/hand/backprop.py) is the per-op chain's and the fused node's math, bit for bit."""

import pytest
import torch
import torch.nn.functional as F

from src.hand import backprop, fused
from src.hand.dropout import dropout_mask
from src.hand.functional import ACTIVATION_FUNCTIONS, Sigmoid, linear
from src.hand.nets import FeedForwardNet

SIZES = dict(inputs=12, hidden_layers=[9, 7, 5], outputs=4)


def _net(activation, dtype=torch.float32):
    return FeedForwardNet(**SIZES, activation=activation, seed=3, dtype=dtype, fused=False)


def _masks(net, batch, p, seed):
    gen = torch.Generator().manual_seed(seed)
    return [dropout_mask(torch.empty(batch, w.shape[0]), p, gen) for w in net.weights()[:-1]]


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity"])
@pytest.mark.parametrize("dropout", [False, True])
def test_backward_pass_equals_autograd_over_the_per_op_chain(activation, dropout):
    """Logits and every gradient, from the same δ_L, equal to the last bit."""
    net = _net(activation)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 12, generator=gen, requires_grad=True)
    delta = torch.randn(6, 4, generator=gen)  # δ_L, any upstream gradient
    weights, biases = [w for w, _ in net.layers()], [b for _, b in net.layers()]
    masks = _masks(net, 6, 0.3, 1) if dropout else None

    # the per-op chain (each Function's backward chained by autograd), the masks applied as the recursion applies them
    d = x
    for l, (w, b) in enumerate(net.layers(), start=1):
        h = linear(d, w, b)
        if l < len(weights):
            h = ACTIVATION_FUNCTIONS[activation].apply(h)
            d = h * masks[l - 1] if masks else h
    chain_logits = h
    chain = torch.autograd.grad(chain_logits, [x, *weights, *biases], delta)

    with torch.no_grad():
        logits, tape = backprop.forward_pass(x, weights, biases, activation, masks)
        grads = backprop.backward_pass(delta, weights, tape, activation)
    assert torch.equal(logits, chain_logits.detach())
    assert torch.equal(grads.x, chain[0])
    for ours, theirs in zip([*grads.W, *grads.b], chain[1:]):
        assert ours.shape == theirs.shape
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("workspace", [None, fused.Workspace()])
def test_the_fused_node_is_the_recursion_to_the_last_bit(activation, workspace):
    net = _net(activation)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 12, generator=gen)
    delta = torch.randn(8, 4, generator=gen)
    params = [p for pair in net.layers() for p in pair]
    logits = fused.feed_forward(x, activation, params, workspace)
    grads = torch.autograd.grad(logits, params, delta)

    weights, biases = params[0::2], params[1::2]
    with torch.no_grad():
        ours, tape = backprop.forward_pass(x, weights, biases, activation)
        mine = backprop.backward_pass(delta, weights, tape, activation)
    assert torch.equal(ours, logits.detach())
    for a, b in zip([g for pair in zip(mine.W, mine.b) for g in pair], grads):
        assert torch.equal(a, b)


def test_backward_pass_agrees_with_the_nn_sequential_twin_in_float64():
    """Against torch's own modules and autograd (an independent reference): the whole net, a real loss."""
    gen = torch.Generator().manual_seed(2)
    layers = [torch.nn.Linear(12, 9, dtype=torch.float64), torch.nn.Linear(9, 4, dtype=torch.float64)]
    x = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 4, (5,), generator=gen)
    logits = layers[1](torch.sigmoid(layers[0](x)))
    loss = F.cross_entropy(logits, target)
    params = [layers[0].weight, layers[0].bias, layers[1].weight, layers[1].bias]
    theirs = torch.autograd.grad(loss, params)

    with torch.no_grad():
        z, tape = backprop.forward_pass(x, params[0::2], params[1::2], "sigmoid")
        delta = (torch.softmax(z, -1) - F.one_hot(target, 4)) / len(x)  # δ_L = (ŷ − t)/B
        g = backprop.backward_pass(delta, params[0::2], tape, "sigmoid")
    for ours, ref in zip([g.W[0], g.b[0], g.W[1], g.b[1]], theirs):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)


def test_a_wrong_derivative_changes_the_recursions_result():
    """Negative control: the recursion really uses g' (a planted σ(1+σ) is visible in every δ below the top)."""
    net = _net("sigmoid", torch.float64)
    x = torch.randn(4, 12, dtype=torch.float64)
    delta = torch.randn(4, 4, dtype=torch.float64)
    weights, biases = [w.detach() for w, _ in net.layers()], [b.detach() for _, b in net.layers()]
    _, tape = backprop.forward_pass(x, weights, biases, "sigmoid")
    right = backprop.backward_pass(delta, weights, tape, "sigmoid")
    original = Sigmoid.derivative
    try:
        Sigmoid.derivative = staticmethod(lambda grad, y, out=None: grad * (1 + y) * y)
        wrong = backprop.backward_pass(delta, weights, tape, "sigmoid")
    finally:
        Sigmoid.derivative = staticmethod(original)
    assert torch.equal(right.W[-1], wrong.W[-1])  # the top layer's ∂W needs no g'
    assert not torch.allclose(right.W[0], wrong.W[0])


def test_the_sigmoid_derivative_is_torchs_to_the_last_bit():
    """``grad·(1 − y)·y`` in torch's order: the same bits as torch's sigmoid backward."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(64, 500, generator=gen, requires_grad=True)
    g = torch.randn(64, 500, generator=gen)
    y = torch.sigmoid(x)
    (theirs,) = torch.autograd.grad(y, x, g)
    assert torch.equal(Sigmoid.derivative(g, y.detach()), theirs)
    buf = torch.empty_like(g)
    assert torch.equal(Sigmoid.derivative(g, y.detach(), out=buf), theirs)
