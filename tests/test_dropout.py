"""Inverted dropout (src/hand/dropout.py): its gradient, its agreement with torch, where it is on and off."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.hand import fused as FF
from src.hand.dropout import Dropout, MaskStream, check_dropout, dropout, dropout_mask
from src.hand.nets import FeedForwardNet, SequentialNet
from src.system.module import MLPClassifier
from tests.conftest import randn

ARCH = dict(inputs=12, hidden_layers=[10, 8], outputs=5)


def test_gradcheck_at_a_fixed_mask(gen):
    x = randn(6, 7, gen=gen)
    mask = dropout_mask(x.detach(), 0.4, torch.Generator().manual_seed(0))  # a constant input
    assert (mask == 0).any() and (mask > 0).any()
    assert torch.autograd.gradcheck(Dropout.apply, (x, mask))


def test_backward_is_the_same_scaled_mask(gen):
    x = randn(6, 7, gen=gen)
    mask = dropout_mask(x.detach(), 0.25, torch.Generator().manual_seed(1))
    g = torch.randn(6, 7, generator=gen, dtype=torch.float64)
    Dropout.apply(x, mask).backward(g)
    assert torch.equal(x.grad, g * mask)
    assert set(mask.unique().tolist()) == {0.0, 1 / 0.75}  # kept units scaled by 1/q


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_equals_torch_dropout_under_the_same_random_state(p):
    """Same generator state → the same mask as F.dropout, so the same output and gradient, bit for bit."""
    x = torch.randn(64, 100, requires_grad=True)
    g = torch.randn(64, 100)
    torch.manual_seed(5)
    ref = F.dropout(x, p, training=True)
    (ref_grad,) = torch.autograd.grad(ref, x, g)
    ours = dropout(x, p, True, torch.Generator().manual_seed(5))
    (our_grad,) = torch.autograd.grad(ours, x, g)
    assert torch.equal(ours, ref) and torch.equal(our_grad, ref_grad)
    assert ours.grad_fn.name().startswith("DropoutBackward") and "Native" not in ours.grad_fn.name()


def test_off_when_not_training_or_p_zero():
    x = torch.randn(4, 5)
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x


@pytest.mark.parametrize("bad", [1, 1.0, -0.1, 1.5, float("nan"), True, "0.2"])
def test_drop_probability_is_validated(bad):
    with pytest.raises(ValueError, match="dropout=.* is not allowed; the drop probability"):
        check_dropout(bad)
    with pytest.raises(ValueError, match="dropout="):
        FeedForwardNet(**ARCH, dropout=bad)


def test_eval_mode_is_the_net_without_dropout():
    x = torch.randn(32, 12)
    plain = FeedForwardNet(**ARCH, activation="relu", seed=3)
    drop = FeedForwardNet(**ARCH, activation="relu", seed=3, dropout=0.5)
    drop.eval()
    assert torch.equal(drop.logits(x), plain.logits(x))
    drop.train()
    assert not torch.equal(drop.logits(x), plain.logits(x))  # and on in training


def test_only_hidden_layers_are_dropped():
    """Each hidden layer's output, none of the inputs or logits: p → 1 silences the hidden units only."""
    net = FeedForwardNet(**ARCH, activation="relu", seed=0, dropout=0.999999)
    x = torch.randn(3, 12, requires_grad=True)
    logits = net.logits(x)  # all hidden units dropped: the logits are the output bias alone
    assert torch.equal(logits, net.b3.detach().expand(3, -1))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_fused_and_per_op_paths_draw_the_same_masks(activation):
    """The default (fused) net with dropout on equals the per-op chain, values and gradients, bit for bit."""
    x = torch.randn(16, 12)
    nets = [FeedForwardNet(**ARCH, activation=activation, seed=1, dropout=0.3, dropout_seed=9, fused=f) for f in (True, False)]
    outs = []
    for net in nets:
        logits = net.logits(x)
        logits.square().sum().backward()
        outs.append((logits, [p.grad for p in net.parameters()]))
    (a, ga), (b, gb) = outs
    assert torch.equal(a, b)
    for u, v in zip(ga, gb):
        assert torch.equal(u, v)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_fused_with_workspace_equals_per_op_over_steps(activation):
    """The training path (fused node, buffers reused from step to step) against the per-op chain, 3 steps."""
    kw = dict(activation=activation, seed=1, dropout=0.4, dropout_seed=5, input_dropout=0.2)
    fast = FeedForwardNet(**ARCH, **kw)
    slow = FeedForwardNet(**ARCH, **kw, fused=False)
    fast.workspace = FF.Workspace()
    for step in range(3):
        x = torch.randn(16, 12, generator=torch.Generator().manual_seed(step))
        grads = []
        for net in (fast, slow):
            net.zero_grad()
            net.logits(x).square().sum().backward()
            grads.append([p.grad.clone() for p in net.parameters()])
        for u, v in zip(*grads):
            assert torch.equal(u, v), step
    assert len(fast.workspace.dropped) == 2  # the dropped outputs live in the workspace too


def test_twin_uses_nn_dropout_and_matches_with_the_same_masks():
    twin = SequentialNet(**ARCH, activation="tanh", seed=2, dropout=0.3)
    drops = [m for m in twin.net if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.3 for d in drops)
    assert [type(m) for m in twin.net][:3] == [nn.Linear, nn.Tanh, nn.Dropout]
    assert not any(isinstance(m, nn.Dropout) for m in SequentialNet(**ARCH).net)  # off: as before
    # the twin draws from the global stream; give it the custom net's mask stream state
    custom = FeedForwardNet(**ARCH, activation="tanh", seed=2, dropout=0.3, dropout_seed=11)
    x = torch.randn(20, 12)
    torch.manual_seed(11)
    twin_logits = twin.logits(x)
    torch.testing.assert_close(custom.logits(x), twin_logits)
    twin.eval()
    custom.eval()
    torch.testing.assert_close(custom.logits(x), twin.logits(x))


def test_input_dropout_drops_pixels_in_training_only():
    net = FeedForwardNet(**ARCH, activation="relu", seed=0, input_dropout=0.5)
    plain = FeedForwardNet(**ARCH, activation="relu", seed=0)
    x = torch.randn(8, 12)
    assert not torch.equal(net.logits(x), plain.logits(x))
    net.eval()
    assert torch.equal(net.logits(x), plain.logits(x))
    twin = SequentialNet(**ARCH, input_dropout=0.5, dropout=0.1)
    assert isinstance(twin.net[0], nn.Dropout) and twin.net[0].p == 0.5 and isinstance(twin.net[1], nn.Linear)
    with pytest.raises(ValueError, match="input_dropout=1 is not allowed"):
        FeedForwardNet(**ARCH, input_dropout=1)


def test_mask_stream_state_round_trip():
    stream = MaskStream(seed=4)
    gen = stream.generator(torch.device("cpu"))
    torch.rand(10, generator=gen)
    saved = stream.state_dict()
    after = torch.rand(10, generator=gen)
    fresh = MaskStream(seed=0)
    fresh.load_state_dict(saved)  # before its generator exists: applied when it is made
    assert torch.equal(torch.rand(10, generator=fresh.generator(torch.device("cpu"))), after)
    stream.load_state_dict(saved)  # an existing generator is set back
    assert torch.equal(torch.rand(10, generator=gen), after)


def test_module_checkpoints_the_mask_stream(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    model = MLPClassifier(**ARCH, activation="relu", dropout=0.2)
    assert model.net.masks.seed == 3 + 0x0D80_0D80  # from the run's seed, not the global generator's
    model.net.logits(torch.randn(4, 12))  # draw some masks
    ckpt = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    expected = model.net.logits(x := torch.randn(4, 12))
    other = MLPClassifier(**ARCH, activation="relu", dropout=0.2)
    other.load_state_dict(model.state_dict())
    other.on_load_checkpoint(ckpt)
    assert torch.equal(other.net.logits(x), expected)
    ckpt_off = {}
    MLPClassifier(**ARCH).on_save_checkpoint(ckpt_off)
    assert "dropout_masks" not in ckpt_off  # nothing new in checkpoints without dropout


@pytest.mark.parametrize("implementation", ["custom", "sequential"])
def test_gradient_flow_diagnostics_measure_the_net_without_dropout(implementation):
    """The diagnostics' probe (src/instruments/diagnostics.py) neither drops units nor draws from a mask stream."""
    from src.instruments.diagnostics import probe_diagnostics

    x, onehot = torch.randn(16, 12), torch.eye(5)[torch.arange(16) % 5]
    values = []
    for p in (0.0, 0.5):
        torch.manual_seed(0)
        model = MLPClassifier(**ARCH, implementation=implementation, activation="relu", dropout=p)
        state = torch.get_rng_state()
        values.append(probe_diagnostics(model, x, onehot, lr=0.1))
        assert torch.equal(torch.get_rng_state(), state)
    assert values[0].keys() == values[1].keys()
    for k, v in values[0].items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(values[1][k])), k
