"""The custom network on CUDA equals the same steps on the CPU (skipped, with the reason, without CUDA).

Two levels: a few hand-derived-gradient steps (our Functions, losses, penalties and
GD / Adam) with every tensor on the GPU, compared with the same steps on the CPU; and one
epoch through the real CLI with ``--trainer.accelerator gpu`` (data module batches moved by
Lightning, torchmetrics on the device, the report and ``results.json``), compared with the
same run on the CPU.

GPU and CPU sum in different orders, so the comparison is within float32 tolerance; the
GPU's TF32 matmuls stay off (PyTorch's default), which these tolerances assume.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from src.system.module import MLPClassifier
from src.train import main
from tests.fakedata import write_fake_mnist

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available (no GPU on this machine)")

#: (activation, output_activation, loss, regularization, optimizer, lr)
CASES = [
    ("sigmoid", "softmax", "cross_entropy", "none", "gd", 0.3),
    ("relu", "softmax", "cross_entropy", "l2", "gd", 0.1),
    ("tanh", "sigmoid", "mse", "l1", "adam", 1e-3),
    ("relu", "softmax", "cross_entropy", "none", "adam", 1e-3),
]


def train_steps(device: str, activation, output_activation, loss, regularization, optimizer, lr, steps=5):
    """``steps`` training steps of the custom net on ``device``; (parameters on the CPU, losses)."""
    torch.manual_seed(0)  # the same initial draw on both devices
    model = MLPClassifier(
        hidden_layers=[64, 32], activation=activation, output_activation=output_activation, loss=loss,
        regularization=regularization, alpha=1e-3 if regularization != "none" else 0.0,
        optimizer=optimizer, lr=lr,
    )  # fmt: skip
    model = model.to(device)
    opt = model.configure_optimizers()
    gen = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(steps, 32, 784, generator=gen), torch.randint(10, (steps, 32), generator=gen)
    losses = []
    for x, labels in zip(xs.to(device), ys.to(device)):
        onehot = F.one_hot(labels, 10).to(x.dtype)

        def closure():
            opt.zero_grad()
            value, logits = model.compute_loss(x, onehot, labels)
            assert value.device.type == logits.device.type == torch.device(device).type
            value.backward()
            return value

        losses.append(opt.step(closure).item())
    for p in model.net.parameters():  # parameters, gradients and optimizer state stayed on the device
        assert p.device.type == p.grad.device.type == torch.device(device).type
        assert all(s.device.type == p.device.type for s in opt.state[p].values() if torch.is_tensor(s))
    return {k: v.detach().cpu() for k, v in model.net.state_dict().items()}, losses


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c[:5])) for c in CASES])
def test_cuda_steps_equal_cpu_steps(case):
    cpu_params, cpu_losses = train_steps("cpu", *case)
    gpu_params, gpu_losses = train_steps("cuda", *case)
    assert gpu_losses == pytest.approx(cpu_losses, rel=1e-4, abs=1e-6)
    # Adam's m / √v amplifies rounding in near-zero gradients: looser there.
    atol = 1e-5 if case[4] == "gd" else 5e-5
    for name, value in cpu_params.items():
        torch.testing.assert_close(gpu_params[name], value, rtol=1e-4, atol=atol, msg=name)


def test_cli_fit_on_gpu_equals_cpu(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "data", n_train=600, n_test=200)
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--data.data_dir", "data", "--data.val_size", "100", "--data.eval_batch_size", "100",
            "--model.hidden_layers", "[64,32]", "--model.activation", "relu", "--model.lr", "0.1",
            "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.devices", "1"]  # fmt: skip
    for accelerator in ("gpu", "cpu"):
        main([*args, "--trainer.accelerator", accelerator, "--experiment", accelerator])
    runs = {a: next((tmp_path / "lightning_logs" / a).glob("version_*")) for a in ("gpu", "cpu")}
    res = {a: json.loads((run / "results.json").read_text()) for a, run in runs.items()}
    ckpt = {a: torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False) for a, run in runs.items()}
    assert ckpt["gpu"]["global_step"] == ckpt["cpu"]["global_step"] == 8
    for name, value in ckpt["cpu"]["state_dict"].items():
        if name.startswith("net."):
            torch.testing.assert_close(ckpt["gpu"]["state_dict"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert res["gpu"]["test"]["report"]["macro avg"]["support"] == 200
    for split in ("train", "val", "test"):
        assert res["gpu"][split]["loss"] == pytest.approx(res["cpu"][split]["loss"], rel=1e-4)
        assert abs(res["gpu"][split]["accuracy"] - res["cpu"][split]["accuracy"]) <= 1 / 100 + 1e-6
