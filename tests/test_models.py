"""The custom network against its nn.Sequential twin, and the purity of its backward graph."""

import re
import typing

import pytest
import torch

from src.hand import functional as HF
from src.hand.nets import _TORCH_ACTIVATIONS, FeedForwardNet, SequentialNet
from src.system.module import MLPClassifier
from src.train import main

ARCH = dict(inputs=12, hidden_layers=[9, 7, 5], outputs=4)
TOL = dict(rtol=1e-10, atol=1e-10)

SETTINGS = [
    dict(activation="sigmoid", output_activation="softmax", loss="cross_entropy"),
    dict(activation="tanh", output_activation="softmax", loss="cross_entropy", regularization="l2", alpha=0.01),
    dict(activation="relu", output_activation="softmax", loss="mse", regularization="l1", alpha=0.01),
    dict(activation="identity", output_activation="identity", loss="mse"),
    dict(activation="relu", output_activation="sigmoid", loss="cross_entropy"),
    dict(activation="sigmoid", output_activation="sigmoid", loss="mse", initialization="gaussian"),
    dict(activation="tanh", output_activation="softmax", loss="cross_entropy", initialization="random"),
]
IDS = ["sigmoid-ce", "tanh-ce-l2", "relu-mse-l1", "identity-mse", "relu-sigmoid-ce", "sigmoid-mse-gauss", "tanh-random"]


def _pair(setting, optimizer="gd", lr=0.1):
    """The custom system and its twin in float64, from the same seeded draw."""
    systems = []
    for impl in ("custom", "sequential"):
        kw = dict(ARCH, implementation=impl, optimizer=optimizer, lr=lr, **setting)
        torch.manual_seed(3)
        systems.append(MLPClassifier(**kw).double())
    return systems


def _batch(seed=0, n=16):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ARCH["inputs"], generator=gen, dtype=torch.float64)
    labels = torch.randint(ARCH["outputs"], (n,), generator=gen)
    return x, torch.nn.functional.one_hot(labels, ARCH["outputs"]).double(), labels


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_same_logits_loss_and_gradients(setting):
    custom, twin = _pair(setting)
    for (name_a, a), (name_b, b) in zip(custom.net.named_parameters(), twin.net.named_parameters()):
        assert torch.equal(a, b), (name_a, name_b)  # identical start
    batch = _batch()
    loss_a, logits_a = custom.compute_loss(*batch)
    loss_b, logits_b = twin.compute_loss(*batch)
    torch.testing.assert_close(logits_a, logits_b, **TOL)
    torch.testing.assert_close(custom(batch[0]), twin(batch[0]), **TOL)
    torch.testing.assert_close(loss_a, loss_b, **TOL)
    grads_a = torch.autograd.grad(loss_a, list(custom.net.parameters()))
    grads_b = torch.autograd.grad(loss_b, list(twin.net.parameters()))
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, **TOL)


@pytest.mark.parametrize("optimizer,lr", [("gd", 0.1), ("adam", 0.01)])
@pytest.mark.parametrize("setting", SETTINGS[:3], ids=IDS[:3])
def test_same_parameters_after_20_steps(setting, optimizer, lr):
    systems = _pair(setting, optimizer, lr)
    opts = [s.configure_optimizers() for s in systems]
    assert [type(o).__module__ for o in opts] == ["src.hand.optim", f"torch.optim.{'sgd' if optimizer == 'gd' else 'adam'}"]
    for step in range(20):
        batch = _batch(seed=step)
        for system, opt in zip(systems, opts):
            opt.zero_grad()
            system.compute_loss(*batch)[0].backward()
            opt.step()
    start = _pair(setting)[0]
    for a, b, s in zip(systems[0].net.parameters(), systems[1].net.parameters(), start.net.parameters()):
        torch.testing.assert_close(a, b, **TOL)
        assert not torch.allclose(a, s)  # they did move


def _walk(fn, seen=None):
    seen = set() if seen is None else seen
    if fn is None or fn in seen:
        return seen
    seen.add(fn)
    for next_fn, _ in fn.next_functions:
        _walk(next_fn, seen)
    return seen


OURS = {
    "LinearBackward", "ReLUBackward", "SigmoidBackward", "TanhBackward", "SoftmaxBackward", "IdentityBackward",
    "MSELossBackward", "CrossEntropyBackward", "SoftmaxCrossEntropyBackward", "L1PenaltyBackward",
    "L2PenaltyBackward", "AddBackward", "FeedForwardBackward", "AccumulateGrad",
}  # fmt: skip


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per-op"])
@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_custom_graph_holds_only_hand_derived_nodes(setting, fused):
    custom, twin = _pair(setting)
    custom.net.fused = fused
    loss, _ = custom.compute_loss(*_batch())
    names = {type(f).__name__ for f in _walk(loss.grad_fn)}
    assert names <= OURS, names - OURS
    assert ("FeedForwardBackward" if fused else "LinearBackward") in names and "AccumulateGrad" in names
    # the walk does see autograd's own nodes when they are there: the twin is all autograd
    twin_loss, _ = twin.compute_loss(*_batch())
    assert {type(f).__name__ for f in _walk(twin_loss.grad_fn)} - OURS


def test_default_architecture_is_the_seeds():
    net = FeedForwardNet()
    assert [tuple(p.shape) for p in net.parameters()] == [
        (500, 784), (500,), (250, 500), (250,), (100, 250), (100,), (10, 100), (10,)
    ]  # fmt: skip
    assert [type(m).__name__ for m in SequentialNet().net] == [
        "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear", "Softmax"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(activation="softplus"), "activation='softplus'"),
        (dict(output_activation="tanh"), "output_activation='tanh'"),
        (dict(hidden_layers=[]), "hidden_layers=[]"),
        (dict(hidden_layers=[5, 0]), "hidden_layers=[5, 0]"),
    ],
)
def test_bad_network_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        FeedForwardNet(**kwargs)


def test_printing_the_net_shows_its_layers():
    text = repr(FeedForwardNet())
    expected = "FeedForwardNet(784 → 500 → 250 → 100 → 10, activation=sigmoid, output=softmax, fused=True, dropout=0.0)"
    assert text == expected
    small = repr(FeedForwardNet(inputs=12, hidden_layers=[9, 7], outputs=4, activation="relu", fused=False,
                                dropout=0.25, input_dropout=0.1))  # fmt: skip
    assert "12 → 9 → 7 → 4" in small and "activation=relu" in small and "fused=False" in small
    assert "dropout=0.25" in small and "input_dropout=0.1" in small


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per-op"])
def test_layer_outputs_is_the_per_op_chain_of_logits(fused):
    """layer_outputs runs one node per op; its last output is what logits gives on either path, to the last bit."""
    net = FeedForwardNet(**ARCH, activation="tanh", seed=4, fused=fused)
    x = _batch()[0].float()
    outputs, weights = net.layer_outputs(x)
    assert [tuple(h.shape) for h in outputs] == [(16, 9), (16, 7), (16, 5), (16, 4)]
    assert weights == net.weights()
    assert [type(h.grad_fn).__name__ for h in outputs] == ["TanhBackward", "TanhBackward", "TanhBackward", "LinearBackward"]
    assert torch.equal(outputs[-1], net.logits(x))


def test_layer_outputs_of_the_twin_match():
    """The twin's layer_outputs (module by module, dropout skipped) gives the same h_l and W_l."""
    kw = dict(ARCH, activation="relu", seed=4, dtype=torch.float64, dropout=0.5)
    ours, twin = FeedForwardNet(**kw), SequentialNet(**kw)
    x = _batch()[0]
    (h_a, w_a), (h_b, w_b) = ours.layer_outputs(x), twin.layer_outputs(x)
    assert len(h_a) == len(h_b) == len(w_a) == len(w_b) == 4
    for a, b in zip(h_a, h_b):
        torch.testing.assert_close(a, b, **TOL)
    assert all(torch.equal(a, b) for a, b in zip(w_a, w_b))


def test_activation_names_have_one_home():
    """The CLI's choices are the tuples the nets check against: one list of names."""
    hints = typing.get_type_hints(MLPClassifier.__init__)
    assert typing.get_args(hints["activation"]) == HF.HIDDEN_ACTIVATIONS
    assert typing.get_args(hints["output_activation"]) == HF.OUTPUT_ACTIVATIONS
    assert set(HF.HIDDEN_ACTIVATIONS) | set(HF.OUTPUT_ACTIVATIONS) == set(HF.ACTIVATIONS) == set(HF.ACTIVATION_FUNCTIONS)
    assert set(_TORCH_ACTIVATIONS) == set(HF.ACTIVATIONS)  # the twin knows every name


@pytest.mark.parametrize("key,allowed", [("activation", HF.HIDDEN_ACTIVATIONS), ("output_activation", HF.OUTPUT_ACTIVATIONS)])
def test_cli_refuses_an_unknown_activation_naming_the_choices(key, allowed, capsys):
    with pytest.raises(SystemExit):
        main([f"--model.{key}", "softplus"], run=False)
    err = capsys.readouterr().err
    assert f"--model.{key}='softplus' is not allowed; allowed: {', '.join(map(repr, allowed))}" in err
