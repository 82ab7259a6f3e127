"""Batch norm and layer norm (src/hand/norm.py): gradcheck, equality with F.batch_norm / F.layer_norm, the two backward forms.

Measured (64×500, x ~ 3·N(0, 1) + 1, γ ∈ [0.5, 1.5), the generator of conftest): against torch, in
fp64 every difference (value, ∂x, ∂γ, ∂β, running statistics; train, eval, layer norm) is ≤ 6e-14,
at most 6e-16 of the largest entry; in fp32 ≤ 2e-6 in the value and ∂x, ≤ 2.3e-5 in ∂γ (a sum over
64 rows, entries up to 104), ≤ 5e-7 in the running statistics: at most 3e-7 of the largest entry.
The graph walk against the closed form: ∂x within 4.4e-16 (fp64) and 2.4e-7 (fp32, of entries up
to 2); ∂γ and ∂β are the same sums, bit for bit.
"""

import re

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from src.hand import norm as N
from tests.conftest import randn

EPS = 1e-5
#: fp64: rounding only; fp32: torch's kernels sum in another order (measured above, ×5 headroom)
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def _inputs(gen, batch=6, features=5, dtype=torch.float64, offset=1.0):
    x = (torch.randn(batch, features, generator=gen, dtype=torch.float64) * 3 + offset).to(dtype).requires_grad_(True)
    gamma = (torch.rand(features, generator=gen, dtype=torch.float64) + 0.5).to(dtype).requires_grad_(True)
    beta = torch.randn(features, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(True)
    return x, gamma, beta


def _stats(gen, features=5, dtype=torch.float64):
    mean = torch.randn(features, generator=gen, dtype=torch.float64).to(dtype)
    var = (torch.rand(features, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    return mean, var


# ------------------------------------------------------------------ gradcheck, gradgradcheck (float64)
def _train(x, g, b):
    return N.batch_norm(x, g, b)


def _layer(x, g, b):
    return N.layer_norm(x, g, b)


@pytest.mark.parametrize("fn", [_train, _layer], ids=["batch norm (train)", "layer norm"])
def test_gradcheck_and_gradgradcheck(fn, gen):
    inputs = _inputs(gen)
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)  # the backward is built from differentiable ops on the saved x


def test_gradcheck_and_gradgradcheck_eval_mode(gen):
    inputs = _inputs(gen)
    mean, var = _stats(gen)
    fn = lambda x, g, b: N.batch_norm(x, g, b, mean, var, training=False)  # noqa: E731
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


# ------------------------------------------------------------------ equality with torch
def _grads(y, inputs, g):
    return torch.autograd.grad(y, inputs, g)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", [(6, 5), (64, 500)], ids=["6x5", "64x500"])
@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batch_norm_train_equals_torch_in_value_gradients_and_running_stats(gen, dtype, shape, momentum):
    x, gamma, beta = _inputs(gen, *shape, dtype=dtype)
    mean, var = _stats(gen, shape[1], dtype)
    ours_stats, torch_stats = (mean.clone(), var.clone()), (mean.clone(), var.clone())
    for step in range(3):  # the running statistics after three updates
        xs = (x.detach() * (step + 1) + step).requires_grad_(True)
        g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        ours = N.batch_norm(xs, gamma, beta, *ours_stats, training=True, momentum=momentum)
        ref = F.batch_norm(xs, *torch_stats, gamma, beta, training=True, momentum=momentum, eps=EPS)
        torch.testing.assert_close(ours, ref, **TOL[dtype])
        for a, r in zip(_grads(ours, (xs, gamma, beta), g), _grads(ref, (xs, gamma, beta), g)):
            torch.testing.assert_close(a, r, **TOL[dtype])
    for a, r in zip(ours_stats, torch_stats):
        torch.testing.assert_close(a, r, **TOL[dtype])
    assert not torch.equal(ours_stats[1], var)  # they did move


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", [(6, 5), (64, 500)], ids=["6x5", "64x500"])
def test_batch_norm_eval_equals_torch(gen, dtype, shape):
    x, gamma, beta = _inputs(gen, *shape, dtype=dtype)
    mean, var = _stats(gen, shape[1], dtype)
    g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    ours = N.batch_norm(x, gamma, beta, mean.clone(), var.clone(), training=False)
    ref = F.batch_norm(x, mean.clone(), var.clone(), gamma, beta, training=False, eps=EPS)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    for a, r in zip(_grads(ours, (x, gamma, beta), g), _grads(ref, (x, gamma, beta), g)):
        torch.testing.assert_close(a, r, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", [(1, 5), (6, 5), (64, 500)], ids=["1x5", "6x5", "64x500"])
def test_layer_norm_equals_torch(gen, dtype, shape):
    x, gamma, beta = _inputs(gen, *shape, dtype=dtype)
    g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    ours = N.layer_norm(x, gamma, beta)
    ref = F.layer_norm(x, (shape[1],), gamma, beta, eps=EPS)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    for a, r in zip(_grads(ours, (x, gamma, beta), g), _grads(ref, (x, gamma, beta), g)):
        torch.testing.assert_close(a, r, **TOL[dtype])


# ------------------------------------------------------------------ the two backward forms
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_staged_backward_equals_closed_form(gen, dtype):
    x, gamma, _ = (t.detach() for t in _inputs(gen, 64, 500, dtype=dtype))
    g = torch.randn(64, 500, generator=gen, dtype=torch.float64).to(dtype)
    staged = N.batch_norm_backward_staged(g, x, gamma, EPS)
    closed = N.batch_norm_backward(g, x, gamma, EPS)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    for a, b in zip(staged, closed):
        torch.testing.assert_close(a, b, **tol)
    assert torch.equal(staged[1], closed[1]) and torch.equal(staged[2], closed[2])  # ∂γ, ∂β: the same sums


def test_the_function_runs_the_closed_form(gen, monkeypatch):
    """BatchNorm.backward is batch_norm_backward: swap in the staged walk and the gradient is the walk's."""
    x, gamma, beta = _inputs(gen)
    g = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    calls = []
    monkeypatch.setattr(N, "batch_norm_backward", lambda *a: calls.append(1) or N.batch_norm_backward_staged(*a))
    dx, = torch.autograd.grad(N.batch_norm(x, gamma, beta), x, g)
    assert calls == [1]
    torch.testing.assert_close(dx, N.batch_norm_backward_staged(g, x.detach(), gamma.detach(), EPS)[0], rtol=0, atol=0)


def test_graph_walk_matches_autograd_node_by_node(gen):
    """Each intermediate of the walk (∂L/∂x̂, ∂L/∂σ², ∂L/∂μ, ∂L/∂x) equals autograd's on the same graph in torch ops."""
    x, gamma, beta = (t.detach() for t in _inputs(gen, 8, 7))
    g = torch.randn(8, 7, generator=gen, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    mean = xr.mean(0)
    x_mu = xr - mean
    var = (x_mu * x_mu).mean(0)
    x_hat = x_mu * torch.rsqrt(var + EPS)
    for t in (mean, var, x_hat):
        t.retain_grad()
    (gamma * x_hat + beta).backward(g)
    walk = N.batch_norm_graph_walk(g, x, gamma, EPS)
    for name, ref in (("dx_hat", x_hat.grad), ("dvar", var.grad), ("dmean", mean.grad), ("dx", xr.grad)):
        torch.testing.assert_close(walk[name], ref, rtol=1e-12, atol=1e-12, msg=name)


def test_the_fourth_term_vanishes(gen):
    """The term of ∂L/∂μ through σ², ∂L/∂σ² · (−2/B) Σ_b (x − μ), is zero: Σ_b (x − μ) = 0, whatever ∂L/∂σ² is."""
    x, gamma, _ = (t.detach() for t in _inputs(gen, 64, 500, offset=5.0))  # a mean far from 0: Σ x ≠ 0
    g = torch.randn(64, 500, generator=gen, dtype=torch.float64)
    walk = N.batch_norm_graph_walk(g, x, gamma, EPS)
    direct, fourth = walk["dmean_via_x_hat"], walk["dmean_via_var"]
    assert walk["dvar"].abs().mean() > 0.1  # ∂L/∂σ² is not zero: the sum is what vanishes
    assert direct.abs().max() > 1.0
    assert fourth.abs().max() <= 1e-12 * direct.abs().max()
    # without it, ∂L/∂x is unchanged to rounding: Caffe's three-term dE/dX misses nothing
    dx_three_terms = walk["dx"] - fourth / x.shape[0]
    torch.testing.assert_close(dx_three_terms, walk["dx"], rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------ modes and refusals
def test_eval_mode_uses_the_running_stats_and_leaves_them_alone(gen):
    x, gamma, beta = _inputs(gen)
    mean, var = _stats(gen)
    m, v = mean.clone(), var.clone()
    y = N.batch_norm(x, gamma, beta, m, v, training=False)
    assert torch.equal(m, mean) and torch.equal(v, var)
    expected = gamma * (x - mean) / torch.sqrt(var + EPS) + beta
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y, N.batch_norm(x, gamma, beta), atol=1e-3)  # not the batch statistics
    # a row's output in eval mode does not depend on the other rows
    torch.testing.assert_close(N.batch_norm(x[:1], gamma, beta, m, v, training=False), y[:1], rtol=0, atol=0)


def test_training_without_running_stats_uses_the_batch_and_updates_nothing(gen):
    x, gamma, beta = _inputs(gen)
    y = N.batch_norm(x, gamma, beta)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, gamma, beta, training=True), rtol=1e-12, atol=1e-12)
    x_hat = (y - beta) / gamma
    torch.testing.assert_close(x_hat.mean(0), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(x_hat.var(0, correction=0), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-5)


def test_a_batch_of_one_is_refused_in_training_mode_like_torch(gen):
    x, gamma, beta = _inputs(gen, 1, 5)
    mean, var = _stats(gen)
    m, v = mean.clone(), var.clone()
    with pytest.raises(ValueError) as ours:
        N.batch_norm(x, gamma, beta, m, v, training=True)
    with pytest.raises(ValueError) as theirs:
        F.batch_norm(x, m, v, gamma, beta, training=True)
    phrase = "Expected more than 1 value per channel when training"
    assert phrase in str(theirs.value) and phrase in str(ours.value) and "got x (1, 5)" in str(ours.value)
    assert "\n" not in str(ours.value)
    assert torch.equal(m, mean) and torch.equal(v, var)  # refused before any work
    assert N.batch_norm(x, gamma, beta, m, v, training=False).shape == (1, 5)  # eval mode takes one row


def _bad(gen):
    x, gamma, beta = (t.detach() for t in _inputs(gen))
    mean, var = _stats(gen)
    return x, gamma, beta, mean, var


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda x, g, b, m, v: N.batch_norm(x[0], g, b), ValueError, "takes x (batch, features) and gamma, beta of shape (features,); got x (5,)"),
        (lambda x, g, b, m, v: N.batch_norm(x.reshape(6, 5, 1), g, b), ValueError, "move it last and flatten to (-1, C) first"),
        (lambda x, g, b, m, v: N.batch_norm(x, g[:4], b), ValueError, "got x (6, 5), gamma (4,), beta (5,)"),
        (lambda x, g, b, m, v: N.batch_norm(x, g, b, m[:3], v), ValueError, "running_mean (3,)"),
        (lambda x, g, b, m, v: N.batch_norm(x, g, b, m, None), ValueError, "running_mean and running_var must both be given or both be None"),
        (lambda x, g, b, m, v: N.batch_norm(x, g, b, training=False), ValueError, "evaluation mode (training=False) normalizes with the running statistics"),
        (lambda x, g, b, m, v: N.batch_norm(x, g.float(), b), TypeError, "x, gamma and beta must share one dtype; got x float64, gamma float32 and beta float64"),
        (lambda x, g, b, m, v: N.batch_norm(x.long(), g, b), TypeError, "batch_norm: x must be a real floating tensor"),
        (lambda x, g, b, m, v: N.batch_norm(x, None, b), TypeError, "batch_norm: gamma must be a real floating tensor"),
        (lambda x, g, b, m, v: N.batch_norm(x, g, b, m, v, momentum=1.5), ValueError, "momentum=1.5 is not allowed; it must be a finite number >= 0 and <= 1"),
        (lambda x, g, b, m, v: N.batch_norm(x, g, b, m, v, momentum=None), TypeError, "momentum=None must be a real number"),
        (lambda x, g, b, m, v: N.batch_norm(x, g, b, eps=0.0), ValueError, "eps=0.0 is not allowed; it must be a finite number > 0"),
        (lambda x, g, b, m, v: N.layer_norm(x, g, b[:2]), ValueError, "layer_norm takes x (batch, features) and gamma, beta of shape (features,); got x (6, 5), gamma (5,), beta (2,)"),
        (lambda x, g, b, m, v: N.layer_norm(x, g, b, eps=-1), ValueError, "layer_norm: eps=-1.0 is not allowed"),
        (lambda x, g, b, m, v: N.layer_norm(x.to(torch.complex128), g, b), TypeError, "complex tensors are not supported"),
    ],
    ids=["1d x", "3d x", "gamma size", "running_mean size", "one stat", "eval without stats", "dtypes",
         "int x", "no gamma", "momentum 1.5", "momentum None", "eps 0", "layer beta size", "layer eps", "complex"],
)
def test_bad_inputs_are_refused_in_one_line(gen, call, error, message):
    x, gamma, beta, mean, var = _bad(gen)
    m, v = mean.clone(), var.clone()
    with pytest.raises(error, match=re.escape(message)) as err:
        call(x, gamma, beta, m, v)
    assert "\n" not in str(err.value)
    assert torch.equal(m, mean) and torch.equal(v, var)  # nothing updated before the refusal


# ------------------------------------------------------------------ docs/batchnorm.md stays true
def test_the_derivation_page_names_real_code_and_renders():
    """Every `src/…py` `Symbol` reference of docs/batchnorm.md resolves and every quoted line is in its source
    (the checker of docs/derivations.md); its math blocks are balanced plain LaTeX; every piece of norm.py is named."""
    from tests.test_derivations import ROOT, math_problems, parse_code_refs, problems, segments

    doc = (ROOT / "docs" / "batchnorm.md").read_text(encoding="utf-8")
    refs = parse_code_refs(doc)
    assert sum(len(r.quotes) for r in refs) >= 15, "the quotes are no longer parsed"
    found = [p for ref in refs for p in problems(ref)]
    assert not found, "\n".join(found)
    named = {r.symbol.split(".")[0] for r in refs if r.path == "src/hand/norm.py"}
    assert set(N.__all__) - named == set(), set(N.__all__) - named
    assert not math_problems(doc), math_problems(doc)
    blocks = [seg.text for seg in segments(doc) if seg.lang == "math"]
    assert len(blocks) >= 15 and all(b.strip() and b.isascii() for b in blocks)
