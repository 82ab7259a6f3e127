"""``--model.norm batch|layer`` in the net: the hand-derived net against its nn.Sequential twin, the
running statistics, the fast path standing aside, exact resume, the diagnostics, one-line refusals."""

import pytest
import torch
import torch.nn.functional as F

from src.hand import fused as FF
from src.hand import norm as HN
from src.hand.dropout import MaskStream
from src.hand.nets import FeedForwardNet, SequentialNet
from src.instruments.diagnostics import probe_diagnostics
from src.system.module import MLPClassifier
from src.train import main
from tests.cli_helpers import run_cli, run_folders
from tests.test_fast_path import ARCH as FAST_ARCH, _DM, _straightforward

ARCH = dict(inputs=12, hidden_layers=[9, 7, 5], outputs=4)
TOL = dict(rtol=1e-10, atol=1e-10)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100", *QUIET,
        "--model.hidden_layers", "[16, 12]"]  # fmt: skip

SETTINGS = [
    dict(norm="batch", activation="sigmoid"),
    dict(norm="batch", activation="relu", regularization="l2", alpha=0.01),
    dict(norm="batch", activation="tanh", loss="mse", output_activation="sigmoid", regularization="l1", alpha=0.01),
    dict(norm="layer", activation="sigmoid"),
    dict(norm="layer", activation="relu", regularization="l2", alpha=0.01),
]
IDS = ["batch-sigmoid", "batch-relu-l2", "batch-tanh-mse-l1", "layer-sigmoid", "layer-relu-l2"]


def _pair(setting, optimizer="gd", lr=0.1):
    """The custom system and its twin in float64, from the same seeded draw."""
    systems = []
    for impl in ("custom", "sequential"):
        torch.manual_seed(3)
        systems.append(MLPClassifier(**ARCH, implementation=impl, optimizer=optimizer, lr=lr, **setting).double())
    return systems


def _batch(seed=0, n=16):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ARCH["inputs"], generator=gen, dtype=torch.float64) * 2 + 0.5
    labels = torch.randint(ARCH["outputs"], (n,), generator=gen)
    return x, F.one_hot(labels, ARCH["outputs"]).double(), labels


def _redundant(setting, name):
    """``b_l`` of a batch-normalized layer: batch norm subtracts the batch mean, and ``b_l`` with it.

    Its gradient is zero up to rounding (``Σ_b ∂L/∂z = 0``), so it cannot be compared bit for bit
    between two implementations' rounding, and Ioffe and Szegedy drop it (``β`` takes its place).
    """
    return setting["norm"] == "batch" and name in {f"b{l}" for l in range(1, len(ARCH["hidden_layers"]) + 1)}


def _running(net):
    """The running statistics, in layer order: ours by name, the twin's BatchNorm1d modules'."""
    if isinstance(net, FeedForwardNet):
        return [b for name, b in net.named_buffers()]
    return [t for m in net.net if isinstance(m, torch.nn.BatchNorm1d) for t in (m.running_mean, m.running_var)]


# ------------------------------------------------------------------ the twins
def test_parameters_and_buffers_by_name():
    net = FeedForwardNet(**ARCH, norm="batch")
    assert list(dict(net.named_parameters())) == [
        "W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3", "gamma3", "beta3", "W4", "b4"
    ]  # fmt: skip
    assert list(dict(net.named_buffers())) == [f"running_{s}{l}" for l in (1, 2, 3) for s in ("mean", "var")]
    assert all(torch.equal(net.get_parameter(f"gamma{l}"), torch.ones(n)) for l, n in zip((1, 2, 3), (9, 7, 5)))
    assert all(torch.equal(net.get_parameter(f"beta{l}"), torch.zeros(n)) for l, n in zip((1, 2, 3), (9, 7, 5)))
    assert net.weights() == [net.W1, net.W2, net.W3, net.W4]  # what L1/L2 penalize: not γ, β
    assert "running_mean2" in net.state_dict() and "gamma2" in net.state_dict()  # so in every checkpoint
    layer = FeedForwardNet(**ARCH, norm="layer")
    assert "gamma1" in dict(layer.named_parameters()) and not list(layer.buffers())  # layer norm keeps no statistics
    assert [type(m).__name__ for m in SequentialNet(**ARCH, norm="batch").net][:4] == [
        "Linear", "BatchNorm1d", "Sigmoid", "Linear"
    ]  # fmt: skip


def test_norm_none_is_the_net_as_before():
    net = FeedForwardNet(**ARCH)
    assert net.norm == "none" and net.fused  # the one-node fast path still runs
    assert list(net.state_dict()) == ["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4"]
    assert [type(m).__name__ for m in SequentialNet(**ARCH).net] == ["Linear", "Sigmoid"] * 3 + ["Linear", "Softmax"]
    assert MLPClassifier(ema_decay=0.9).averaged.use_buffers is False  # the averaging as before


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_same_logits_loss_and_gradients_as_the_twin(setting):
    custom, twin = _pair(setting)
    for (name_a, a), (name_b, b) in zip(custom.net.named_parameters(), twin.net.named_parameters(), strict=True):
        assert torch.equal(a, b), (name_a, name_b)  # identical start, γ and β included
    batch = _batch()
    loss_a, logits_a = custom.compute_loss(*batch)
    loss_b, logits_b = twin.compute_loss(*batch)
    torch.testing.assert_close(logits_a, logits_b, **TOL)
    torch.testing.assert_close(loss_a, loss_b, **TOL)
    grads_a = torch.autograd.grad(loss_a, list(custom.net.parameters()))
    grads_b = torch.autograd.grad(loss_b, list(twin.net.parameters()))
    for (name, _), ga, gb in zip(custom.net.named_parameters(), grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, **TOL, msg=name)
        if _redundant(setting, name):  # the mean is subtracted: zero up to rounding
            assert ga.abs().max() < 1e-14, name
        else:  # the gradients reach γ and β, and every weight through the norms
            assert ga.abs().sum() > 1e-6, name
    for a, b in zip(_running(custom.net), _running(twin.net), strict=True):  # one training forward each
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("optimizer,lr", [("gd", 0.1), ("adam", 0.01)])
@pytest.mark.parametrize("setting", [SETTINGS[0], SETTINGS[1], SETTINGS[3]], ids=[IDS[0], IDS[1], IDS[3]])
def test_same_parameters_and_running_stats_after_steps(setting, optimizer, lr):
    systems = _pair(setting, optimizer, lr)
    opts = [s.configure_optimizers() for s in systems]
    for step in range(6):
        batch = _batch(seed=step)
        for system, opt in zip(systems, opts):
            opt.zero_grad()
            system.compute_loss(*batch)[0].backward()
            opt.step()
    custom, twin = systems
    start = _pair(setting)[0]
    for (name, a), b, s in zip(custom.net.named_parameters(), twin.net.parameters(), start.net.parameters(), strict=True):
        if _redundant(setting, name):  # Adam's step lr·m/(√v + ε) on a rounding-sized gradient: below 1e-9
            torch.testing.assert_close(a, s, rtol=0, atol=1e-9)
            torch.testing.assert_close(b, s, rtol=0, atol=1e-9)
            continue
        torch.testing.assert_close(a, b, **TOL)
        assert not torch.equal(a, s)  # every other parameter moved, γ and β too
    stats = _running(custom.net)
    assert len(stats) == (6 if setting["norm"] == "batch" else 0)
    for a, b, s in zip(stats, _running(twin.net), _running(start.net), strict=True):
        torch.testing.assert_close(a, b, **TOL)
        assert not torch.equal(a, s)
    # evaluation mode: batch norm normalizes with the running statistics, in both nets alike
    custom.eval(), twin.eval()
    x = _batch(seed=99, n=5)[0]
    torch.testing.assert_close(custom(x), twin(x), **TOL)
    one = custom.net.logits(x[:1])  # a batch of one is fine in evaluation
    torch.testing.assert_close(one, custom.net.logits(x)[:1], **TOL)  # and each row on its own


def test_running_stats_follow_f_batch_norm_and_eval_uses_them():
    torch.manual_seed(0)
    net = FeedForwardNet(inputs=6, hidden_layers=[5], outputs=3, norm="batch", dtype=torch.float64)
    x = torch.randn(8, 6, dtype=torch.float64)
    mean, var = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    for _ in range(3):
        z = F.linear(x, net.W1, net.b1).detach()
        F.batch_norm(z, mean, var, None, None, True, 0.1, 1e-5)  # torch's update (momentum 0.1, unbiased)
        net.logits(x)
    torch.testing.assert_close(net.running_mean1, mean, **TOL)
    torch.testing.assert_close(net.running_var1, var, **TOL)
    net.eval()
    before = net.running_mean1.clone()
    z = F.linear(x, net.W1, net.b1)
    h = torch.sigmoid(F.batch_norm(z, mean, var, net.gamma1, net.beta1, False, 0.1, 1e-5))
    torch.testing.assert_close(net.logits(x), F.linear(h, net.W2, net.b2), **TOL)
    assert torch.equal(net.running_mean1, before)  # evaluation leaves them alone


def test_dropout_comes_after_the_activation():
    torch.manual_seed(0)
    net = FeedForwardNet(inputs=6, hidden_layers=[5, 4], outputs=3, norm="batch", dropout=0.5, dropout_seed=11,
                         dtype=torch.float64)  # fmt: skip
    x = torch.randn(8, 6, dtype=torch.float64)
    gen = MaskStream(11).generator(x.device)  # the same stream the net draws its masks from
    d = x
    for l in (1, 2):
        z = F.linear(d, net.get_parameter(f"W{l}"), net.get_parameter(f"b{l}"))
        h = torch.sigmoid(F.batch_norm(z, None, None, net.get_parameter(f"gamma{l}"), net.get_parameter(f"beta{l}"), True))
        d = h * torch.empty_like(h).bernoulli_(0.5, generator=gen) / 0.5  # dropout(g(BN(z))), F.dropout's draw
    torch.testing.assert_close(net.logits(x), F.linear(d, net.W3, net.b3), **TOL)


def test_a_batch_of_one_is_refused_in_training():
    net = FeedForwardNet(**ARCH, norm="batch")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        net.logits(torch.randn(1, ARCH["inputs"]))


# ------------------------------------------------------------------ the fast path stands aside
def test_fast_path_stands_aside_and_the_trainer_path_equals_the_loop(monkeypatch):
    """With a norm the trainer's optimized step (GD/Adam inside backward) runs the per-op chain, exactly."""
    import lightning.pytorch as pl

    def never(*args, **kwargs):
        raise AssertionError("the one-node FeedForward ran with a normalization")

    assert FeedForwardNet(**ARCH, norm="batch", fused=True).fused is False
    monkeypatch.setattr(FF, "feed_forward", never)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, FAST_ARCH["inputs"], generator=gen), torch.randint(10, (100,), generator=gen)
    for setting in (dict(norm="batch", activation="sigmoid", optimizer="gd", lr=0.3),
                    dict(norm="layer", activation="relu", optimizer="adam", lr=0.01, dropout=0.3)):  # fmt: skip
        torch.manual_seed(1)
        fast = MLPClassifier(**FAST_ARCH, **setting)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
        trainer.fit(fast, datamodule=_DM(x, y))
        slow = _straightforward(setting, x, y, 2)
        for (name, a), b in zip(fast.state_dict().items(), slow.state_dict().values(), strict=True):
            assert torch.equal(a, b), name  # to the last bit, running statistics included


# ------------------------------------------------------------------ the CLI
def test_a_stopped_run_resumes_exactly_with_batch_norm(fake_data):
    args = ["fit", *TINY, "--model.norm", "batch", "--model.optimizer", "adam", "--model.lr", "0.01",
            "--model.dropout", "0.2", "--model.ema_decay", "0.9", "--diagnostics", "false"]  # fmt: skip
    logs = fake_data / "lightning_logs"
    main([*args, "--trainer.max_epochs", "2", "--experiment", "whole"])
    main([*args, "--trainer.max_epochs", "1", "--experiment", "part"])
    part = logs / "part" / "version_0" / "checkpoints" / "last.ckpt"
    first = torch.load(part, weights_only=True)["state_dict"]
    main([*args, "--trainer.max_epochs", "2", "--experiment", "resumed", "--ckpt_path", str(part)])
    whole = torch.load(logs / "whole" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    resumed = torch.load(logs / "resumed" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert whole.keys() == resumed.keys()
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
    # γ, β and the running statistics are in the checkpoint, and they moved in the second epoch
    for k in ("net.gamma1", "net.beta2", "net.running_mean1", "net.running_var2", "averaged.module.running_mean1"):
        assert k in whole and not torch.equal(whole[k], first[k]), k
    # the averaged copy's running statistics moved away from their start (zeros), as its weights did
    assert whole["averaged.module.running_mean1"].abs().sum() > 0


BAD = [
    (["--model.norm", "group"], "'group' is not allowed; allowed: 'none', 'batch', 'layer'"),
    (["--model.norm", "batch", "--data.batch_size", "1"],
     "--data.batch_size=1 is not allowed with --model.norm batch: batch norm needs more than 1 value per feature"),
    # 500 training images: batches of 499 leave a last batch of 1
    (["--model.norm", "batch", "--data.batch_size", "499"],
     "--data.batch_size=499 is not allowed with --model.norm batch: the 500 training images leave a last batch of 1"),
    (["--trainer.sync_batchnorm", "true"],
     "--trainer.sync_batchnorm=true is not supported: the hand-derived batch norm (src.hand.norm.BatchNorm) is not "
     "synchronized across processes"),
]  # fmt: skip


@pytest.mark.parametrize("bad,expected", BAD, ids=["norm value", "batch of one", "last batch of one", "sync_batchnorm"])
def test_bad_norm_settings_are_one_line(bad, expected, fake_data, capsys):
    status, err = run_cli(["fit", *TINY, *bad], capsys)
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert run_folders(fake_data) == []  # nothing written


def test_batch_of_one_is_fine_without_batch_norm_and_in_layer_norm():
    # the refusal is batch norm's alone: layer norm normalizes each row by itself
    net = FeedForwardNet(**ARCH, norm="layer")
    assert net.logits(torch.randn(1, ARCH["inputs"])).shape == (1, ARCH["outputs"])


# ------------------------------------------------------------------ the diagnostics
@pytest.mark.parametrize("impl", ["custom", "sequential"])
def test_probe_follows_the_normalized_path_and_leaves_running_stats_alone(impl):
    torch.manual_seed(0)
    module = MLPClassifier(inputs=8, hidden_layers=[6, 5], outputs=4, activation="tanh", norm="batch",
                           implementation=impl).double()  # fmt: skip
    x, labels = torch.randn(10, 8, dtype=torch.float64) * 3, torch.arange(10) % 4
    onehot = F.one_hot(labels, 4).double()
    before = [t.clone() for t in module.net.buffers()]
    values = probe_diagnostics(module, x, onehot, lr=0.1)
    assert all(torch.equal(a, b) for a, b in zip(before, module.net.buffers(), strict=True))  # nothing moved
    # the same norms by torch's own autograd through F.batch_norm (the batch's statistics)
    w = [p.detach().requires_grad_(True) for p in module.net.parameters()]  # W1 b1 γ1 β1 W2 b2 γ2 β2 W3 b3
    h1 = torch.tanh(F.batch_norm(F.linear(x, w[0], w[1]), None, None, w[2], w[3], True))
    h2 = torch.tanh(F.batch_norm(F.linear(h1, w[4], w[5]), None, None, w[6], w[7], True))
    loss = F.cross_entropy(F.linear(h2, w[8], w[9]), labels)
    g_h1, g_w1 = torch.autograd.grad(loss, [h1, w[0]])
    assert values["diagnostics/grad_h/layer1"] == pytest.approx(g_h1.norm().item(), rel=1e-10)
    assert values["diagnostics/grad_W/layer1"] == pytest.approx(g_w1.norm().item(), rel=1e-10)
    sat = ((1 - h1 * h1) < 0.05).double().mean().item()
    assert values["diagnostics/saturated/layer1"] == pytest.approx(sat)


def test_diagnostics_with_batch_norm_log_and_do_not_change_training(fake_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    states = {}
    for on in ("true", "false"):
        cli = main(["fit", *TINY, "--model.norm", "batch", "--trainer.max_epochs", "1", "--diagnostics", on,
                    "--experiment", f"diag_{on}"])  # fmt: skip
        states[on] = torch.load(f"{cli.trainer.log_dir}/checkpoints/last.ckpt", weights_only=True)["state_dict"]
        if on == "true":
            acc = EventAccumulator(cli.trainer.log_dir)
            acc.Reload()
            tags = set(acc.Tags()["scalars"])
            assert {f"diagnostics/{n}/layer{l}" for n in ("grad_h", "grad_W", "saturated") for l in (1, 2)} <= tags
            assert all(e.value > 0 for e in acc.Scalars("diagnostics/grad_h/layer1"))
    for k, v in states["true"].items():
        assert torch.equal(v, states["false"][k]), k  # running statistics included


def test_gradient_flow_figure_reads_both_runs(fake_data, capsys):
    from src.instruments import norm_figure
    from src.instruments.why import Diagnostics

    runs = []
    for norm in ("none", "batch"):
        cli = main(["fit", *TINY, "--model.norm", norm, "--trainer.max_epochs", "2", "--experiment", f"flow_{norm}"])
        runs.append(cli.trainer.log_dir)
    capsys.readouterr()
    out = fake_data / "flow.png"
    norm_figure.main(["--runs", *runs, "--labels", "without", "with batch norm", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    for label in ("without", "with batch norm"):
        assert f"| {label} | start |" in table and f"| {label} | epoch 2 |" in table
    # the table's numbers are the runs' own: layer 1's gradient norm before training, with batch norm
    first = Diagnostics(runs[1]).series("grad_h", 1)[0]
    assert first[0] == 0 and f"| with batch norm | start | {first[1]:.3g}, " in table
    (fake_data / "empty").mkdir()
    for bad, says in (("nowhere", "no such run folder"), ("empty", "no diagnostics/ scalars in")):
        with pytest.raises(SystemExit) as exc:  # named in one line, not plotted
            norm_figure.main(["--runs", str(fake_data / bad), "--out", str(out)])
        assert exc.value.code == 2 and says in capsys.readouterr().err
