"""Hand-derived autograd Functions: the affine layer and the activations.

Every op is a :class:`torch.autograd.Function` in PyTorch's split form
(``forward`` computes, ``setup_context`` only saves, ``backward`` returns one
gradient per input).  The derivative is written in each docstring and
``backward`` reads like it.  Model code calls the lowercase wrappers
(:func:`linear`, :func:`relu`, ...), never ``.apply``.

All per-op backward passes are built from differentiable tensor ops on saved
tensors, so each of those Functions is twice differentiable;
``tests/test_functional.py`` checks that with ``gradgradcheck``.
:class:`FeedForward` chains the same math for a whole net in one node (the
network's default path, ``once_differentiable``).

Shapes: ``x`` is ``(batch, in_features)``, ``weight`` is
``(out_features, in_features)`` like :class:`torch.nn.Linear`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

from .checks import check_float, check_linear

__all__ = ["HandFunction", "Linear", "ReLU", "Sigmoid", "Tanh", "Softmax", "Identity", "linear", "relu", "sigmoid", "tanh", "softmax", "identity", "ACTIVATIONS"]


class HandFunction(Function):
    """Base of every Function here: a split-form Function with its ``forward`` signature cached.

    ``Function.apply`` binds the call's arguments to ``forward``'s signature on every
    call, and ``inspect.signature`` rebuilds that signature each time (about 5 µs, a
    third of a small op's cost); storing it as ``__signature__`` makes the lookup free.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        fn = forward.__func__ if isinstance(forward, staticmethod) else forward
        if fn is not None:
            fn.__signature__ = inspect.signature(fn)


class Linear(HandFunction):
    """Affine map ``y = x Wᵀ + b``.

    With upstream gradient ``g = ∂L/∂y`` of shape ``(batch, out)``::

        ∂L/∂x = g W        (batch, in)
        ∂L/∂W = gᵀ x       (out, in)
        ∂L/∂b = Σ_batch g  (out,)
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        # addmm fuses the bias add into the matrix product: (batch, out)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad.mm(weight)  # (batch, in)
        if ctx.needs_input_grad[1]:
            grad_w = grad.t().mm(x)  # (out, in)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)  # (out,)
        return grad_x, grad_w, grad_b


class ReLU(HandFunction):
    """``relu(x) = max(0, x)``;  ``relu'(x) = 1[x > 0]`` (0 at the kink, as torch)."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        # The output carries the same sign information as the input: y > 0 ⇔ x > 0.
        ctx.save_for_backward(output)

    @staticmethod
    def derivative(grad: Tensor, y: Tensor) -> Tensor:
        """``grad ⊙ relu'``, from the output ``y``."""
        return grad * (y > 0)

    @staticmethod
    def forward_(z: Tensor) -> Tensor:
        """:meth:`forward` in place on ``z`` (a buffer of the :class:`Workspace`)."""
        return z.clamp_min_(0)

    @staticmethod
    def derivative_(grad: Tensor, y: Tensor, tmp: Tensor) -> Tensor:
        """:meth:`derivative` in place on ``grad``, with ``tmp`` for ``1[y > 0]`` as 1.0 / 0.0 (the same products)."""
        return grad.mul_(torch.gt(y, 0, out=tmp))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return ReLU.derivative(grad, y)


class Sigmoid(HandFunction):
    """``σ(x) = 1 / (1 + e^{-x})``;  ``σ'(x) = σ(x)(1 − σ(x))``, from the saved output ``y``."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def derivative(grad: Tensor, y: Tensor) -> Tensor:
        """``grad ⊙ σ'``, from the output ``y``: g·y − g·y·y = g·σ(1 − σ), in two kernels."""
        gy = grad * y
        return torch.addcmul(gy, gy, y, value=-1)

    @staticmethod
    def forward_(z: Tensor) -> Tensor:
        """:meth:`forward` in place on ``z`` (a buffer of the :class:`Workspace`)."""
        return torch.sigmoid(z, out=z)

    @staticmethod
    def derivative_(grad: Tensor, y: Tensor, tmp: Tensor) -> Tensor:
        """:meth:`derivative` in place on ``grad``: ``gy = g·y`` then ``gy − gy·y``, elementwise (``tmp`` unused)."""
        return grad.mul_(y).addcmul_(grad, y, value=-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return Sigmoid.derivative(grad, y)


class Tanh(HandFunction):
    """``tanh(x)``;  ``tanh'(x) = 1 − tanh(x)²``, from the saved output ``y``."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def derivative(grad: Tensor, y: Tensor) -> Tensor:
        """``grad ⊙ tanh'``, from the output ``y``: g − g·y·y = g·(1 − tanh²), in two kernels."""
        return torch.addcmul(grad, grad * y, y, value=-1)

    @staticmethod
    def forward_(z: Tensor) -> Tensor:
        """:meth:`forward` in place on ``z`` (a buffer of the :class:`Workspace`)."""
        return torch.tanh(z, out=z)

    @staticmethod
    def derivative_(grad: Tensor, y: Tensor, tmp: Tensor) -> Tensor:
        """:meth:`derivative` in place on ``grad``, with ``g·y`` in ``tmp``."""
        return grad.addcmul_(torch.mul(grad, y, out=tmp), y, value=-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return Tanh.derivative(grad, y)


class Softmax(HandFunction):
    """Softmax over the last dimension, ``y_i = e^{x_i} / Σ_j e^{x_j}``.

    The Jacobian is ``∂y_i/∂x_j = y_i(δ_ij − y_j)``; backward applies it as a
    Jacobian-vector product without ever building the ``(n, n)`` matrix::

        ∂L/∂x = y ⊙ (g − ⟨g, y⟩)
    """

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        # torch.softmax subtracts the row max first, so large logits do not overflow.
        return torch.softmax(x, dim=-1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return y * (grad - (grad * y).sum(-1, keepdim=True))


class Identity(HandFunction):
    """The identity ``f(x) = x``; ``f'(x) = 1``.

    This is the course report's ``Linear`` *activation*.  It is named ``identity``
    here so that PyTorch readers do not confuse it with the affine layer
    (:class:`Linear` / ``nn.Linear``).
    """

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        pass

    @staticmethod
    def derivative(grad: Tensor, y: Tensor) -> Tensor:
        """``grad ⊙ 1``."""
        return grad

    @staticmethod
    def forward_(z: Tensor) -> Tensor:
        return z

    @staticmethod
    def derivative_(grad: Tensor, y: Tensor, tmp: Tensor) -> Tensor:
        return grad

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ weight.T + bias`` with a hand-derived backward (see :class:`Linear`)."""
    check_linear(x, weight, bias)
    return Linear.apply(x, weight, bias)


def relu(x: Tensor) -> Tensor:
    """ReLU with a hand-derived backward (see :class:`ReLU`)."""
    check_float("relu", x)
    return ReLU.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    """Logistic sigmoid with a hand-derived backward (see :class:`Sigmoid`)."""
    check_float("sigmoid", x)
    return Sigmoid.apply(x)


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent with a hand-derived backward (see :class:`Tanh`)."""
    check_float("tanh", x)
    return Tanh.apply(x)


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last dimension with a hand-derived backward (see :class:`Softmax`)."""
    check_float("softmax", x)
    return Softmax.apply(x)


def identity(x: Tensor) -> Tensor:
    """The course report's "Linear" activation, ``f(x) = x`` (see :class:`Identity`)."""
    check_float("identity", x)
    return Identity.apply(x)


#: Activation name (as used by configs and the CLI) → hand-derived function.
ACTIVATIONS = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "softmax": softmax,
    "identity": identity,
}
