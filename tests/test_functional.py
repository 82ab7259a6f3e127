"""Every hand-derived Function: gradcheck/gradgradcheck in float64 and equality with torch."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from src.hand import functional as HF
from src.hand import fused as FF
from tests.conftest import away_from_zero, randn

TOL = dict(rtol=1e-12, atol=1e-12)

# (our function, the torch op it mirrors)
ACTIVATIONS = [
    (HF.relu, torch.relu),
    (HF.sigmoid, torch.sigmoid),
    (HF.tanh, torch.tanh),
    (HF.softmax, lambda x: torch.softmax(x, dim=-1)),
    (HF.identity, lambda x: x),
]
IDS = ["relu", "sigmoid", "tanh", "softmax", "identity"]


def _inputs(gen):
    x = away_from_zero(8, 5, gen=gen)
    w = randn(3, 5, gen=gen)
    b = randn(3, gen=gen)
    return x, w, b


def test_linear_gradcheck(gen):
    assert gradcheck(HF.linear, _inputs(gen))


def test_linear_gradgradcheck(gen):
    assert gradgradcheck(HF.linear, _inputs(gen))


def test_linear_matches_torch(gen):
    x, w, b = _inputs(gen)
    g = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    ours = HF.linear(x, w, b)
    ref = F.linear(x, w, b)
    torch.testing.assert_close(ours, ref, **TOL)
    for a, r in zip(torch.autograd.grad(ours, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        torch.testing.assert_close(a, r, **TOL)


def test_linear_skips_unneeded_grads(gen):
    x, w, b = _inputs(gen)
    x = x.detach()  # input data needs no gradient
    (gw,) = torch.autograd.grad(HF.linear(x, w, b).sum(), (w,))
    torch.testing.assert_close(gw, torch.ones(8, 3, dtype=torch.float64).t() @ x, **TOL)


@pytest.mark.parametrize("ours,_ref", ACTIVATIONS, ids=IDS)
def test_activation_gradcheck(ours, _ref, gen):
    assert gradcheck(ours, (away_from_zero(6, 7, gen=gen),))


@pytest.mark.parametrize("ours,_ref", ACTIVATIONS, ids=IDS)
def test_activation_gradgradcheck(ours, _ref, gen):
    assert gradgradcheck(ours, (away_from_zero(6, 7, gen=gen),))


@pytest.mark.parametrize("ours,ref", ACTIVATIONS, ids=IDS)
def test_activation_matches_torch(ours, ref, gen):
    x = randn(16, 10, gen=gen, scale=3.0)
    g = torch.randn(16, 10, generator=gen, dtype=torch.float64)
    y = ours(x)
    y_ref = ref(x)
    torch.testing.assert_close(y, y_ref, **TOL)
    (dx,) = torch.autograd.grad(y, x, g)
    (dx_ref,) = torch.autograd.grad(y_ref, x, g)
    torch.testing.assert_close(dx, dx_ref, **TOL)


def test_relu_gradient_at_zero_matches_torch():
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    (ours,) = torch.autograd.grad(HF.relu(x).sum(), x)
    (ref,) = torch.autograd.grad(torch.relu(x).sum(), x)
    assert ours.tolist() == ref.tolist() == [0.0, 0.0, 1.0]


def test_softmax_is_stable_for_huge_logits():
    x = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    y = HF.softmax(x)
    (dx,) = torch.autograd.grad(y[0, 0], x)
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()
    torch.testing.assert_close(y, torch.tensor([[1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax", "identity"])
def test_backward_nodes_are_ours(name):
    """The graph of each wrapper holds our Function's node, not torch's."""
    x = torch.randn(2, 3, requires_grad=True)
    y = HF.ACTIVATIONS[name](x)
    assert type(y.grad_fn).__name__ == f"{name.capitalize() if name != 'relu' else 'ReLU'}Backward"


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "identity"])
def test_feed_forward_gradcheck(activation, gen):
    x = randn(6, 5, gen=gen)
    params = [randn(4, 5, gen=gen), randn(4, gen=gen), randn(3, 4, gen=gen), randn(3, gen=gen),
              randn(2, 3, gen=gen), randn(2, gen=gen)]  # fmt: skip
    assert gradcheck(lambda x, *p: FF.feed_forward(x, activation, list(p)), (x, *params))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "identity"])
def test_feed_forward_equals_the_per_op_chain(activation, gen):
    """The one-node net gives the per-op chain's logits and gradients to the last bit."""
    x = randn(16, 8, gen=gen)
    params = [randn(6, 8, gen=gen), randn(6, gen=gen), randn(5, 6, gen=gen), randn(5, gen=gen),
              randn(3, 5, gen=gen), randn(3, gen=gen)]  # fmt: skip
    g = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    fused = FF.feed_forward(x, activation, params)
    h = x
    for i in range(0, 4, 2):
        h = HF.ACTIVATIONS[activation](HF.linear(h, params[i], params[i + 1]))
    chain = HF.linear(h, params[4], params[5])
    assert torch.equal(fused, chain)
    for a, b in zip(torch.autograd.grad(fused, (x, *params), g), torch.autograd.grad(chain, (x, *params), g)):
        assert torch.equal(a, b)


def test_feed_forward_is_once_differentiable(gen):
    x = randn(4, 3, gen=gen)
    w, b = randn(2, 3, gen=gen), randn(2, gen=gen)
    (gx,) = torch.autograd.grad(FF.feed_forward(x, "tanh", [w, b]).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="does not have a grad_fn"):  # once_differentiable: no graph again
        gx.sum().backward()


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "identity"])
def test_in_place_activation_and_derivative_equal_the_out_of_place_ones(activation, gen):
    """forward_ / derivative_ (the workspace's in-place ops) give the same bits as forward / derivative."""
    fn = {"relu": HF.ReLU, "sigmoid": HF.Sigmoid, "tanh": HF.Tanh, "identity": HF.Identity}[activation]
    z = torch.randn(32, 7, generator=gen) * 3
    z[0, :3] = 0.0  # ReLU's kink: derivative 0 there, as torch
    y = fn.forward(z.clone())
    assert torch.equal(fn.forward_(z.clone()), y)
    grad = torch.randn(32, 7, generator=gen)
    expected = fn.derivative(grad, y)
    got = fn.derivative_(grad.clone(), y, torch.empty_like(y))
    assert torch.equal(got, expected)


def _net(gen, sizes=(8, 6, 5, 3), dtype=torch.float32):
    return [t for i, o in zip(sizes[:-1], sizes[1:]) for t in (randn(o, i, gen=gen).to(dtype).detach().requires_grad_(),
                                                               randn(o, gen=gen).to(dtype).detach().requires_grad_())]  # fmt: skip


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_feed_forward_with_a_workspace_equals_fresh_tensors(activation, gen):
    """Reused buffers give the same logits and gradients to the last bit, step after step, also
    when the batch size changes (the last, shorter batch of an epoch) and back."""
    params = _net(gen)
    ws = FF.Workspace()
    for batch in (16, 16, 5, 16):
        x = torch.randn(batch, 8, generator=gen)
        g = torch.randn(batch, 3, generator=gen)
        fresh = FF.feed_forward(x, activation, params)
        reused = FF.feed_forward(x, activation, params, ws)
        assert torch.equal(fresh, reused)
        for a, b in zip(torch.autograd.grad(fresh, params, g), torch.autograd.grad(reused, params, g)):
            assert torch.equal(a, b)
    assert ws.key[0] == 16 and ws.hidden[0].shape == (16, 6)


def test_workspace_refuses_a_stale_backward(gen):
    """A second training forward overwrites the buffers the first one's backward needs: that
    backward raises instead of returning wrong gradients."""
    params = _net(gen)
    ws = FF.Workspace()
    loss = FF.feed_forward(torch.randn(4, 8, generator=gen), "sigmoid", params, ws).sum()
    logits = FF.feed_forward(torch.randn(4, 8, generator=gen), "sigmoid", params, ws)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):  # the saved h_l changed
        loss.backward()
    FF.feed_forward(torch.randn(4, 8, generator=gen), "sigmoid", params, ws)
    with pytest.raises(RuntimeError, match="modified inplace"):  # and the logits held since then too
        logits.sum()


def test_workspace_logits_are_not_the_buffer(gen):
    """The caller gets a view: the buffer itself never carries a graph."""
    params = _net(gen)
    ws = FF.Workspace()
    out = FF.feed_forward(torch.randn(4, 8, generator=gen), "tanh", params, ws)
    assert out is not ws.logits and out.data_ptr() == ws.logits.data_ptr()
    assert ws.logits.grad_fn is None
