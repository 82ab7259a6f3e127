"""GD and Adam step in lockstep with torch.optim.SGD / Adam (tinygrad's optimizer tests' habit), through the lockstep of src.verify."""

import re

import pytest
import torch

from src.hand.optim import GD, Adam
from src.instruments.verification.checks import lockstep

TOL = dict(rtol=1e-12, atol=1e-12)


FOREACH = pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])


@FOREACH
@pytest.mark.parametrize("steps", [1, 10, 25])
@pytest.mark.parametrize("lr", [1e-3, 0.1, 0.5])
def test_gd_matches_sgd(lr, steps, foreach):
    _, a, b, _ = lockstep(GD, torch.optim.SGD, dict(lr=lr), steps=steps, ours_kw=dict(lr=lr, foreach=foreach), seed=0)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, **TOL)


@FOREACH
@pytest.mark.parametrize("steps", [1, 10, 25])
@pytest.mark.parametrize(
    "lr,betas,eps",
    [(1e-3, (0.9, 0.999), 1e-8), (0.05, (0.8, 0.99), 1e-6), (0.01, (0.0, 0.5), 1e-3), (0.1, (0.95, 0.9999), 1e-8)],
)
def test_adam_matches_torch_adam(lr, betas, eps, steps, foreach):
    kw = dict(lr=lr, betas=betas, eps=eps)
    _, a, b, opt = lockstep(Adam, torch.optim.Adam, kw, steps=steps, ours_kw=dict(kw, foreach=foreach), seed=0)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, **TOL)
    assert all(opt.state[p]["step"] == steps for p in a)


def test_adam_state_round_trips_through_state_dict():
    _, a, _, opt = lockstep(Adam, torch.optim.Adam, dict(lr=0.01), steps=3, seed=0)
    fresh = Adam(a, lr=0.01)
    fresh.load_state_dict(opt.state_dict())
    for p in a:
        assert fresh.state[p]["step"] == 3
        torch.testing.assert_close(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"], rtol=0, atol=0)


@pytest.mark.parametrize("cls", [GD, Adam])
def test_step_calls_closure_with_grad_enabled(cls):
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = cls([p], lr=0.1)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    before = p.detach().clone()
    loss = opt.step(closure)
    assert calls == [True]
    assert loss.item() == pytest.approx(5.0)
    assert not torch.equal(p.detach(), before)


def test_params_without_grad_are_left_alone():
    p, q = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = Adam([p, q], lr=0.1)
    p.sum().backward()
    opt.step()
    assert q.tolist() == [1.0, 1.0] and p.tolist() != [1.0, 1.0]
    assert q not in opt.state


@pytest.mark.parametrize(
    "cls,kwargs,needle",
    [
        (GD, dict(lr=0.0), "lr=0.0"),
        (GD, dict(lr=-1.0), "lr=-1.0"),
        (Adam, dict(lr=-0.1), "lr=-0.1"),
        (Adam, dict(lr=float("nan")), "lr=nan"),
        (Adam, dict(betas=(1.0, 0.999)), "betas[0]=1.0"),
        (Adam, dict(betas=(0.9, -0.1)), "betas[1]=-0.1"),
        (Adam, dict(eps=0.0), "eps=0.0"),
        (Adam, dict(eps=-1e-8), "eps=-1e-08"),
    ],
)
def test_bad_hyperparameters(cls, kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        cls([torch.zeros(1, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("cls", [GD, Adam])
def test_foreach_must_be_a_bool(cls):
    with pytest.raises(TypeError, match=re.escape("foreach='no'")):
        cls([torch.zeros(1, requires_grad=True)], foreach="no")


@pytest.mark.parametrize("cls,ref", [(GD, torch.optim.SGD), (Adam, torch.optim.Adam)])
def test_foreach_none_is_taken_as_torch_optim_takes_it(cls, ref):
    """torch.optim's default ``foreach=None`` (the implementation's choice): ours chooses the foreach form."""
    p = torch.zeros(3, requires_grad=True)
    assert cls([p], lr=0.1, foreach=None).param_groups[0]["foreach"] is True
    assert ref([p], lr=0.1, foreach=None).param_groups[0]["foreach"] is None  # the same argument, taken by torch


def _train(cls, kw, steps, late=None):
    """A small tanh regression trained ``steps`` steps; ``late`` (an index) gets no gradient before step 3."""
    gen = torch.Generator().manual_seed(1)
    params = [torch.randn(5, 4, generator=gen, dtype=torch.float64).requires_grad_(),
              torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_()]  # fmt: skip
    opt = cls(params, **kw)
    x = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    for step in range(1, steps + 1):
        opt.zero_grad()
        frozen = late is not None and step < 3
        bias = params[1].detach() if frozen else params[1]
        torch.tanh(x @ params[0].t() + bias).pow(2).sum().backward()
        opt.step()
    return params, opt


@FOREACH
def test_adam_counts_steps_per_parameter(foreach):
    """A parameter that first gets a gradient at step 3 starts its bias correction there, as torch.optim.Adam."""
    kw = dict(lr=0.05, betas=(0.8, 0.99))
    ours, opt = _train(Adam, dict(kw, foreach=foreach), 6, late=1)
    ref, ref_opt = _train(torch.optim.Adam, kw, 6, late=1)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **TOL)
    assert opt.state[ours[0]]["step"] == 6 and opt.state[ours[1]]["step"] == 4
    assert int(ref_opt.state[ref[1]]["step"]) == 4


def _three_params(seed=2):
    """A weight, a bias and a late weight (no gradient before step 4): float32, as training runs."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(6, 5, generator=gen), torch.randn(6, generator=gen), torch.randn(3, 6, generator=gen)]


@pytest.mark.parametrize(
    "cls,kw",
    [(GD, dict(lr=0.1)), (Adam, dict(lr=0.05, betas=(0.8, 0.99))), (Adam, dict(lr=1e-3))],
    ids=["gd", "adam", "adam-default"],
)
def test_loop_and_foreach_forms_are_equal_to_the_last_bit(cls, kw):
    """The per-parameter loop and the foreach form, 12 steps, one parameter joining at step 4: the same bits."""
    sides = []
    for foreach in (True, False):
        params = [p.clone().requires_grad_() for p in _three_params()]
        opt = cls(params, foreach=foreach, **kw)
        gen = torch.Generator().manual_seed(3)
        trace = []
        for step in range(1, 13):
            opt.zero_grad()
            x = torch.randn(9, 5, generator=gen)
            h = torch.tanh(x @ params[0].t() + params[1])  # (9, 6)
            late = params[2] if step >= 4 else params[2].detach()
            ((h @ late.t()).square().sum() + h.square().sum()).backward()
            opt.step()
            trace.append([p.detach().clone() for p in params])
        sides.append((trace, opt))
    (trace_a, opt_a), (trace_b, opt_b) = sides
    for step, (a, b) in enumerate(zip(trace_a, trace_b), start=1):
        for pa, pb in zip(a, b):
            assert torch.equal(pa, pb), step  # every step, every parameter
    assert not torch.equal(trace_a[-1][2], _three_params()[2])  # the late one did move
    if cls is Adam:
        steps = [opt_a.state[p]["step"] for p in opt_a.param_groups[0]["params"]]
        assert steps == [opt_b.state[p]["step"] for p in opt_b.param_groups[0]["params"]] == [12, 12, 9]
        for pa, pb in zip(opt_a.param_groups[0]["params"], opt_b.param_groups[0]["params"]):
            assert torch.equal(opt_a.state[pa]["exp_avg_sq"], opt_b.state[pb]["exp_avg_sq"])


def test_foreach_travels_with_the_state_dict():
    """The switch is a group setting like lr: saved, loaded, and defaulted for a state saved without it."""
    p = torch.zeros(2, requires_grad=True)
    saved = Adam([p], foreach=False).state_dict()
    assert saved["param_groups"][0]["foreach"] is False
    fresh = Adam([p])
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["foreach"] is False
    del saved["param_groups"][0]["foreach"]  # a checkpoint written before the switch existed
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["foreach"] is True
