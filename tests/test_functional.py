"""Every hand-derived Function: gradcheck/gradgradcheck in float64 and equality with torch."""

import inspect
from types import SimpleNamespace

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


def test_linear_computes_only_the_gradients_asked_for(gen):
    """Linear.backward skips ∂L/∂x when x needs none (input data): one matrix product fewer per step.

    Through autograd a gradient returned for such an input is silently dropped, so only a direct
    call of ``backward`` shows whether it was computed."""
    x, w, b = _inputs(gen)
    g = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    ctx = SimpleNamespace(saved_tensors=(x.detach(), w.detach()), needs_input_grad=(False, True, True))
    grad_x, grad_w, grad_b = HF.Linear.backward(ctx, g)
    assert grad_x is None
    torch.testing.assert_close(grad_w, g.t() @ x.detach(), **TOL)
    torch.testing.assert_close(grad_b, g.sum(0), **TOL)
    ctx.needs_input_grad = (True, False, False)
    grad_x, grad_w, grad_b = HF.Linear.backward(ctx, g)
    assert grad_w is None and grad_b is None
    torch.testing.assert_close(grad_x, g @ w.detach(), **TOL)


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


def _bits(t):
    """The raw bits of a float32 tensor: equal bits, not just equal values (NaN payloads, the sign of 0)."""
    return t.contiguous().view(torch.int32)


SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30, -1e-30, 1e30]


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "identity"])
def test_value_and_derivative_into_a_buffer_equal_the_fresh_ones(activation, gen):
    """With ``out=`` (the fused node's workspace) each activation's one rule gives the same bits as without."""
    fn = HF.ACTIVATION_FUNCTIONS[activation]
    z = torch.randn(32, 8, generator=gen) * 3
    z[0] = torch.tensor(SPECIAL)  # the kink, signed zeros, infinities, NaN
    y = fn.value(z)
    buf = z.clone()
    assert fn.value(buf, out=buf) is buf and torch.equal(_bits(buf), _bits(y))  # in place, as the workspace does
    grad = torch.randn(32, 8, generator=gen)
    grad[1] = torch.tensor(SPECIAL)
    expected = fn.derivative(grad, y)
    out = torch.empty_like(y)
    assert fn.derivative(grad, y, out=out) is out and torch.equal(_bits(out), _bits(expected))
    assert torch.equal(_bits(fn.backward(SimpleNamespace(saved_tensors=(y,)), grad)), _bits(expected))


def test_relu_gradient_matches_torch_at_nan_inf_and_zero():
    """torch cuts the gradient only where relu(x) ≤ 0: a NaN input passes it on, as ours."""
    x = torch.tensor([float("nan"), 1.0, float("inf"), -float("inf"), 0.0, -0.0, 2.5, -3.0, 1e-300, -1e-300],
                     dtype=torch.float64, requires_grad=True)  # fmt: skip
    upstream = torch.tensor([2.0, -1.0, 3.0, 4.0, -5.0, 6.0, -2.0, 7.0, -8.0, 9.0], dtype=torch.float64)
    for g in (torch.ones_like(x), upstream):
        (ours,) = torch.autograd.grad(HF.relu(x), x, g)
        (ref,) = torch.autograd.grad(torch.relu(x), x, g)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, equal_nan=True)  # the same values (0 == −0)
        assert ours[0] == g[0] and not ours.isnan().any()  # NaN input: the gradient passed on
    (ours,) = torch.autograd.grad(HF.relu(x[:2]).sum(), x)
    assert ours[:2].tolist() == [1.0, 1.0]  # x = [nan, 1]: grad [1, 1], as torch


@pytest.mark.parametrize("workspace", [False, True], ids=["fresh", "workspace"])
def test_feed_forward_relu_at_nan_matches_torch(workspace):
    """The fused node's ReLU has the same rule: a NaN pre-activation passes ∂L/∂h on, as torch's chain does."""
    w1 = torch.eye(4).requires_grad_()  # z_1 = x + b_1: the bias brings NaN and -inf to the ReLU
    b1 = torch.tensor([float("nan"), 0.0, -float("inf"), 0.0]).requires_grad_()
    w2 = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, 1.0, -1.0]]).requires_grad_()
    b2 = torch.zeros(2).requires_grad_()
    x = torch.tensor([[1.0, 0.0, 2.0, -1.0], [-1.0, -0.0, 3.0, 2.0]], requires_grad=True)  # zeros: the kink
    params = [w1, b1, w2, b2]
    g = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    ours = FF.feed_forward(x, "relu", params, FF.Workspace() if workspace else None)
    ref = F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)
    grads = torch.autograd.grad(ours, [x, *params], g)
    ref_grads = torch.autograd.grad(ref, [x, *params], g)
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=0, atol=0, equal_nan=True)
    # ∂L/∂x = δ_1 (W_1 = I); at the NaN unit δ_1 = Σ_k g_k W_2[k, 0] passed on, at the others 0 but the live one
    assert grads[0].tolist() == [[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, -3.5]]


def test_backward_returns_one_gradient_per_input_in_forward_order(gen):
    """FeedForward.backward's gradients follow forward's inputs: x, the non-tensor inputs (None), W_1, b_1, …"""
    names = [p.name for p in inspect.signature(FF.FeedForward.forward).parameters.values()]
    assert names == ["x", "activation", "workspace", "masks", "params"]
    params = _net(gen)
    x = torch.randn(4, 8, generator=gen, requires_grad=True)
    logits = FF.FeedForward.apply(x, "tanh", None, None, *params)[0]
    grads = logits.grad_fn.apply(torch.ones_like(logits), *[None] * 2)  # the node's own backward: δ_L, no h grads
    assert len(grads) == 4 + len(params) and grads[1:4] == (None, None, None)
    assert [g.shape for g in (grads[0], *grads[4:])] == [x.shape, *(p.shape for p in params)]


def _net(gen, sizes=(8, 6, 5, 3), dtype=torch.float32):
    return [t for i, o in zip(sizes[:-1], sizes[1:]) for t in (randn(o, i, gen=gen).to(dtype).detach().requires_grad_(),
                                                               randn(o, gen=gen).to(dtype).detach().requires_grad_())]  # fmt: skip


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "identity"])
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
