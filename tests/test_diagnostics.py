"""The gradient-flow diagnostics callback: what it logs, and that training is the same with or without it."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.instruments.diagnostics import GradientFlowDiagnostics, probe_diagnostics
from src.system.module import MLPClassifier
from src.train import main
from tests.fakedata import write_fake_mnist

TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100",
        "--trainer.enable_progress_bar", "false", "--model.hidden_layers", "[16, 12]"]  # fmt: skip


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "data", n_train=600, n_test=200)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _events(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("activation,unit_tag", [("sigmoid", "saturated"), ("relu", "dead")])
def test_one_epoch_logs_per_layer_diagnostics(fake_data, activation, unit_tag):
    cli = main(["fit", "--model.activation", activation, "--trainer.max_epochs", "1", *TINY])
    acc = _events(cli.trainer.log_dir)
    scalars, hists = acc.Tags()["scalars"], acc.Tags()["histograms"]
    for layer in (1, 2, 3):  # two hidden layers and the output layer
        for name in ("grad_h", "grad_W", "update_ratio"):
            assert f"diagnostics/{name}/layer{layer}" in scalars
        assert f"diagnostics/activations/layer{layer}" in hists
    assert {f"diagnostics/{unit_tag}/layer{l}" for l in (1, 2)} <= set(scalars)
    assert f"diagnostics/{unit_tag}/layer3" not in scalars  # the output layer has no hidden activation
    steps = [e.step for e in acc.Scalars("diagnostics/grad_W/layer1")]
    n = cli.trainer.num_training_batches  # 500 images / 64 = 8 steps
    assert steps[0] == 0 and steps[-1] == n and len(steps) >= 4  # before, inside and after epoch 1
    fracs = [e.value for e in acc.Scalars(f"diagnostics/{unit_tag}/layer1")]
    assert all(0.0 <= f <= 1.0 for f in fracs)
    assert all(e.value > 0 for e in acc.Scalars("diagnostics/grad_h/layer1"))


def test_diagnostics_do_not_change_training(fake_data):
    """Bit-exact parameters, optimizer state and random state with and without the callback."""
    runs = {}
    for on in ("true", "false"):
        cli = main(["fit", "--model.optimizer", "adam", "--model.lr", "0.01", "--trainer.max_epochs", "2",
                    "--diagnostics", on, "--experiment", f"diag_{on}", *TINY])  # fmt: skip
        has = any(isinstance(c, GradientFlowDiagnostics) for c in cli.trainer.callbacks)
        assert has == (on == "true")
        ckpt = torch.load(f"{cli.trainer.log_dir}/checkpoints/last.ckpt", weights_only=True)
        runs[on] = (ckpt, torch.get_rng_state())
    (a, rng_a), (b, rng_b) = runs["true"], runs["false"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])) for k in sa)
    assert torch.equal(rng_a, rng_b)


def test_probe_leaves_grads_alone_and_matches_autograd():
    torch.manual_seed(0)
    module = MLPClassifier(hidden_layers=[6, 5], activation="tanh", inputs=8, outputs=4)
    x, labels = torch.randn(10, 8), torch.arange(10) % 4
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    for p in module.parameters():
        p.grad = torch.full_like(p, 7.0)  # whatever is there must stay
    values = probe_diagnostics(module, x, onehot, lr=0.1)
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in module.parameters())
    # the same norms by torch's own autograd on the nn.functional net
    w = [p.detach().requires_grad_(True) for p in module.net.parameters()]
    h1 = torch.tanh(torch.nn.functional.linear(x, w[0], w[1]))
    logits = torch.nn.functional.linear(torch.tanh(torch.nn.functional.linear(h1, w[2], w[3])), w[4], w[5])
    g_h1, g_w1 = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, labels), [h1, w[0]])
    assert values["diagnostics/grad_h/layer1"] == pytest.approx(g_h1.norm().item(), rel=1e-5)
    assert values["diagnostics/grad_W/layer1"] == pytest.approx(g_w1.norm().item(), rel=1e-5)
    assert values["diagnostics/update_ratio/layer1"] == pytest.approx(0.1 * g_w1.norm().item() / w[0].norm().item(), rel=1e-5)
    assert values["diagnostics/saturated/layer1"] == pytest.approx((1 - h1.detach() ** 2 < 0.05).float().mean().item())
