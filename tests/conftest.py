"""Shared test fixtures: float64 random inputs from a fixed generator."""

import pytest
import torch


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def randn(*shape, gen, requires_grad=True, scale=1.0):
    """Float64 normal tensor from ``gen``."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_(requires_grad)


def away_from_zero(*shape, gen, margin=0.1):
    """Float64 tensor whose entries have |x| ≥ margin (kept off ReLU's and L1's kink)."""
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    x = x + margin * torch.sign(x)
    return x.requires_grad_(True)


def onehot(batch, classes, gen):
    labels = torch.randint(classes, (batch,), generator=gen)
    return torch.nn.functional.one_hot(labels, classes).to(torch.float64), labels


from pathlib import Path  # noqa: E402
import os  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT / "data"
HAVE_REAL_MNIST = any((REAL_DATA / "MNIST" / "raw").glob("train-images-idx3-ubyte*"))

#: Tests on the real MNIST copy.  Locally they skip (with the reason) when the copy is
#: missing; under CI (CI=true) they always run, so a missing copy fails loudly.
needs_real_mnist = pytest.mark.skipif(
    not HAVE_REAL_MNIST and not os.environ.get("CI"),
    reason="real MNIST not in data/MNIST/raw (scripts/setup.sh copies it)",
)


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    """A small fake MNIST (600 training, 200 test images) in tmp_path/data, and tmp_path as the working folder.

    Modules that need other sizes define their own ``fake_data``, which takes precedence.
    """
    from tests.fakedata import write_fake_mnist

    write_fake_mnist(tmp_path / "data", n_train=600, n_test=200, gz=False)
    monkeypatch.chdir(tmp_path)  # lightning_logs/ goes to the temporary folder
    return tmp_path
