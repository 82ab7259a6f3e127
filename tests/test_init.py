"""ParameterInitializer: shapes, distributions, repeatability, bad names."""

import math
import re

import pytest
import torch

from src.hand.init import INITIALIZATIONS, ParameterInitializer


def _params(method, seed=0, sizes=(784, [500, 250, 100], 10)):
    return ParameterInitializer(method).initialize_parameters(*sizes, seed=seed)


@pytest.mark.parametrize("method", INITIALIZATIONS)
def test_shapes_and_names(method):
    p = _params(method)
    assert list(p) == ["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4"]
    shapes = [(500, 784), (500,), (250, 500), (250,), (100, 250), (100,), (10, 100), (10,)]
    assert [tuple(t.shape) for t in p.values()] == shapes
    assert all(t.dtype == torch.float32 for t in p.values())


def test_glorot_bound_variance_and_zero_bias():
    p = _params("glorot")
    for i, (fan_in, fan_out) in enumerate([(784, 500), (500, 250), (250, 100)], start=1):
        w = p[f"W{i}"]
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound  # the whole range is used
        assert w.var().item() == pytest.approx(2 / (fan_in + fan_out), rel=0.03)
        assert torch.count_nonzero(p[f"b{i}"]) == 0


def test_gaussian_mean_and_std():
    w = _params("gaussian")["W1"]
    assert w.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert w.std().item() == pytest.approx(1 / math.sqrt(784), rel=0.01)


def test_random_is_uniform_in_linear_default_range():
    w = _params("random")["W1"]
    bound = 1 / math.sqrt(784)
    assert w.abs().max() <= bound
    assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.03)


@pytest.mark.parametrize("method", INITIALIZATIONS)
def test_same_seed_same_tensors(method):
    a, b, c = _params(method, seed=7), _params(method, seed=7), _params(method, seed=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["W1"], c["W1"])
    gen_a = ParameterInitializer(method).initialize_parameters(3, [4], 2, seed=torch.Generator().manual_seed(3))
    gen_b = ParameterInitializer(method).initialize_parameters(3, [4], 2, seed=3)
    assert all(torch.equal(gen_a[k], gen_b[k]) for k in gen_a)


def test_dtype_float64():
    p = ParameterInitializer().initialize_parameters(3, [4], 2, seed=0, dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in p.values())


def test_unknown_method_lists_allowed():
    allowed = ", ".join(repr(m) for m in INITIALIZATIONS)
    with pytest.raises(ValueError, match=re.escape(f"initialization='xavier' is not supported; allowed: {allowed}")):
        ParameterInitializer("xavier")


def test_nonpositive_layer_size_rejected():
    with pytest.raises(ValueError, match=r"\[3, 0, 2\]"):
        ParameterInitializer().initialize_parameters(3, [0], 2)
