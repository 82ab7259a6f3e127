"""The levers: max-norm in the hand-written optimizers, weight averaging and label smoothing in the system.

Each is off by default (the course report's configs keep their results to the last bit: tests/test_fast_path.py),
steps in lockstep with its torch counterpart, reaches the twin alike, and resumes exactly (tests/test_resume.py).
"""

import pytest
import torch
import torch.nn.functional as F

from src.hand.optim import GD, Adam, max_norm_
from src.system.module import MLPClassifier
from tests.test_models import ARCH, _batch

TIGHT = dict(rtol=1e-12, atol=1e-12)


def test_max_norm_projects_each_row_onto_the_ball():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    w[0] *= 0.1  # a row inside the ball
    before = w.clone()
    max_norm_(w, 1.0)
    norms = torch.linalg.vector_norm(w, dim=1)
    assert (norms <= 1.0 + 1e-12).all() and torch.allclose(norms[1:], torch.ones(5, dtype=torch.float64))
    assert torch.equal(w[0], before[0])  # inside the ball: untouched, bit for bit
    # the same projection as torch.renorm (which adds 1e-7 to the norm it divides by)
    torch.testing.assert_close(w, torch.renorm(before, 2, 0, 1.0), rtol=1e-6, atol=1e-7)
    # each row keeps its direction
    cos = F.cosine_similarity(w, before, dim=1)
    torch.testing.assert_close(cos, torch.ones(6, dtype=torch.float64), **TIGHT)


def _lockstep(ours_cls, ref_cls, kw, foreach, steps=10, max_norm=1.0):
    gen = torch.Generator().manual_seed(3)
    init = [torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)]
    x = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    ours = [p.clone().requires_grad_(True) for p in init]
    ref = [p.clone().requires_grad_(True) for p in init]
    opt, opt_ref = ours_cls(ours, foreach=foreach, max_norm=max_norm, **kw), ref_cls(ref, **kw)
    for _ in range(steps):
        for params, o in ((ours, opt), (ref, opt_ref)):
            o.zero_grad()
            torch.tanh(x @ params[0].t() + params[1]).pow(2).sum().backward()
            o.step()
        with torch.no_grad():
            max_norm_(ref[0], 1.0)  # torch.optim's step, then the same projection
    return ours, ref


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
@pytest.mark.parametrize("ours_cls,ref_cls,kw", [(GD, torch.optim.SGD, dict(lr=0.1)), (Adam, torch.optim.Adam, dict(lr=0.01))],
                         ids=["gd", "adam"])  # fmt: skip
def test_max_norm_in_lockstep_with_torch_optim_and_the_projection(ours_cls, ref_cls, kw, foreach):
    ours, ref = _lockstep(ours_cls, ref_cls, kw, foreach)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **TIGHT)
    assert (torch.linalg.vector_norm(ours[0].detach(), dim=1) <= 1.0 + 1e-12).all()


def test_without_the_projection_the_weights_leave_the_ball():
    # negative control of the lockstep test: the projection is what keeps the two sides together
    ours, ref = _lockstep(GD, torch.optim.SGD, dict(lr=0.1), True, max_norm=None)
    assert GD([torch.nn.Parameter(torch.ones(2, 2))], lr=0.1).param_groups[0]["max_norm"] is None  # off by default
    assert (torch.linalg.vector_norm(ours[0].detach(), dim=1) > 1.0).any()
    assert not torch.allclose(ours[0], ref[0])


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True])
def test_bad_max_norm_is_refused(bad):
    with pytest.raises(ValueError, match="max_norm="):
        GD([torch.nn.Parameter(torch.ones(2))], lr=0.1, max_norm=bad)


LEVERS = dict(label_smoothing=0.1, max_norm=1.5, ema_decay=0.9)


def _systems(**levers):
    systems = []
    for impl in ("custom", "sequential"):
        torch.manual_seed(3)
        systems.append(MLPClassifier(**ARCH, implementation=impl, activation="relu", optimizer="adam", lr=0.05,
                                     output_activation="softmax", **levers).double())  # fmt: skip
    return systems


def _train(system, steps=8):
    """The module's own step logic outside a Trainer: loss, backward, step, the twin's projection, the average."""
    opt = system.configure_optimizers()
    for step in range(steps):
        x, onehot, labels = _batch(seed=step)
        opt.zero_grad()
        system.compute_loss(x, onehot, labels)[0].backward()
        opt.step()
        with torch.no_grad():
            for w in system.net.weights() if system._twin_max_norm else ():
                max_norm_(w, system._twin_max_norm)
        system.averaged.update_parameters(system.net)


def test_the_twin_gets_the_same_levers():
    custom, twin = _systems(**LEVERS)
    _train(custom), _train(twin)
    for a, b in zip(custom.net.parameters(), twin.net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for a, b in zip(custom.eval_net.parameters(), twin.eval_net.parameters()):  # the averages too
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    x, onehot, labels = _batch(seed=99)
    torch.testing.assert_close(custom.compute_loss(x, onehot, labels)[0], twin.compute_loss(x, onehot, labels)[0],
                               rtol=1e-10, atol=1e-10)  # fmt: skip
    for w in custom.net.weights():
        assert (torch.linalg.vector_norm(w.detach(), dim=1) <= 1.5 + 1e-9).all()


def test_evaluation_uses_the_average_and_says_so():
    custom, _ = _systems(**LEVERS)
    _train(custom)
    assert custom.eval_net is custom.averaged.module and custom.eval_net is not custom.net
    assert not torch.equal(custom.eval_net.W1, custom.net.W1)
    x = _batch(seed=5)[0]
    torch.testing.assert_close(custom(x), custom.averaged.module(x), rtol=0, atol=0)
    assert custom.evaluated_weights == "the exponential moving average of the weights (decay 0.9)"
    plain, _ = _systems()
    assert plain.averaged is None and plain.eval_net is plain.net and plain.evaluated_weights == "the trained weights"
    assert "averaged.n_averaged" in custom.state_dict()  # the average travels in every checkpoint


def test_the_average_follows_the_ema_formula_with_its_warm_up():
    custom, _ = _systems(ema_decay=0.3)  # d_n = min(0.3, (1 + n)/(10 + n)): 2/11, 3/12, then 0.3 (4/13 > 0.3)
    opt = custom.configure_optimizers()
    expect = None
    for step in range(6):
        x, onehot, labels = _batch(seed=step)
        opt.zero_grad()
        custom.compute_loss(x, onehot, labels)[0].backward()
        opt.step()
        custom.averaged.update_parameters(custom.net)
        w = custom.net.W1.detach().clone()
        d = min(0.3, (1 + step) / (10 + step))  # step = n, the models averaged before this one
        expect = w if expect is None else d * expect + (1 - d) * w  # θ̄ ← d_n θ̄ + (1 − d_n) θ, the first a copy
    torch.testing.assert_close(custom.averaged.module.W1, expect, **TIGHT)


def test_a_short_run_average_forgets_the_first_step():
    """Regression: with a fixed d = 0.999 the first step's weights kept 0.999^390 = 68 % of a 391-step average."""
    system = MLPClassifier(**ARCH, ema_decay=0.999)
    w1 = system.net.W1
    with torch.no_grad():
        for step in range(391):  # one epoch of best.yaml: the first step's weights 1, every later one 0
            w1.fill_(1.0 if step == 0 else 0.0)
            system.averaged.update_parameters(system.net)
    kept = system.averaged.module.W1  # the first step's share of the average
    assert 0.999**390 > 0.67 and (kept < 1e-10).all(), kept.max()
    # once warmed up the decay is d itself: one more step keeps 0.999 of the average
    before = system.averaged.module.W1.clone().fill_(0.5)
    system.averaged.module.W1.data.copy_(before)
    system.averaged.n_averaged.fill_(10_000)
    with torch.no_grad():
        w1.fill_(1.5)
    system.averaged.update_parameters(system.net)
    torch.testing.assert_close(system.averaged.module.W1, 0.999 * before + 0.001 * 1.5, rtol=1e-6, atol=1e-7)


def test_label_smoothing_needs_the_fused_softmax_cross_entropy():
    with pytest.raises(ValueError, match="label_smoothing=0.1 needs loss='cross_entropy' with output_activation='softmax'"):
        MLPClassifier(**ARCH, loss="mse", label_smoothing=0.1)
    with pytest.raises(ValueError, match="ema_decay="):
        MLPClassifier(**ARCH, ema_decay=1.0)
