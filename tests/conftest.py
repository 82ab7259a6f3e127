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
