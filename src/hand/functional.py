"""Hand-derived autograd Functions: the affine layer and the activations.

Every op is a :class:`torch.autograd.Function` in PyTorch's split form
(``forward`` computes, ``setup_context`` only saves, ``backward`` returns one
gradient per input).  The derivative is written in each docstring and
``backward`` reads like it.  Model code calls the lowercase wrappers
(:func:`linear`, :func:`relu`, ...), never ``.apply``.

Each elementwise activation writes its rule once, as two static methods beside its
``forward``: ``value(x)`` and ``derivative(grad, y)`` (``grad ⊙ f'``, from the saved output
``y``).  ``forward`` is ``value``, ``backward`` is ``derivative``; the one-node net of
:mod:`src.hand.fused` calls the same two with an ``out=`` buffer, so both paths run the
same arithmetic (and give the same bits).

All per-op backward passes are built from differentiable tensor ops on saved
tensors, so each of those Functions is twice differentiable;
``tests/test_functional.py`` checks that with ``gradgradcheck``.

Shapes: ``x`` is ``(batch, in_features)``, ``weight`` is
``(out_features, in_features)`` like :class:`torch.nn.Linear`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

from .checks import check_float, check_linear

__all__ = [
    "Linear", "ReLU", "Sigmoid", "Tanh", "Softmax", "Identity",
    "linear", "relu", "sigmoid", "tanh", "softmax", "identity",
    "ACTIVATIONS", "ACTIVATION_FUNCTIONS", "HIDDEN_ACTIVATIONS", "OUTPUT_ACTIVATIONS",
]  # fmt: skip


class Linear(Function):
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


class ReLU(Function):
    """``relu(x) = max(0, x)``;  ``relu'(x) = 1[x > 0] = 1[y ≠ 0]``, from the saved output ``y``.

    ``relu'(0) = 0`` at the kink, as torch.  torch's backward zeroes the gradient where ``y ≤ 0``
    and passes it on everywhere else; for an output of relu (never negative) that is ``y ≠ 0``,
    so a NaN input passes the upstream gradient on (``y`` is NaN and ``NaN ≠ 0``), as torch's.
    The gradient is multiplied by the mask (torch selects): a dead unit gets ``0·g``, which is
    ``−0`` for a negative ``g`` and NaN for an infinite one (torch: 0); on the CPU this is about
    ten times faster than ``torch.where`` in the training step.
    """

    @staticmethod
    def value(x: Tensor, out: Tensor | None = None) -> Tensor:
        """``max(0, x)``, written into ``out`` when given (NaN stays NaN, as torch.relu)."""
        return torch.clamp_min(x, 0, out=out)

    @staticmethod
    def derivative(grad: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
        """``grad ⊙ relu'(z) = grad ⊙ 1[y ≠ 0]`` from the output ``y = relu(z)``.

        With ``out`` (the fused node's buffer, not ``grad``'s memory) the mask is written there as
        1.0 / 0.0 and multiplied in place: the same numbers, no new tensor.
        """
        if out is None:
            return grad * (y != 0)
        return torch.mul(grad, torch.ne(y, 0, out=out), out=out)

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return ReLU.value(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        # The output carries the same sign information as the input: y > 0 ⇔ x > 0.
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return ReLU.derivative(grad, y)


class Sigmoid(Function):
    """``σ(x) = 1 / (1 + e^{-x})``;  ``σ'(x) = σ(x)(1 − σ(x))``, from the saved output ``y``."""

    @staticmethod
    def value(x: Tensor, out: Tensor | None = None) -> Tensor:
        """``σ(x)``, written into ``out`` when given."""
        return torch.sigmoid(x, out=out)

    @staticmethod
    def derivative(grad: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
        """``grad ⊙ σ'(z) = grad ⊙ (1 − y) ⊙ y`` from the output ``y = σ(z)``.

        Multiplied in PyTorch's own order (``aten`` ``sigmoid_backward``), so it equals torch's
        gradient bit for bit.  With ``out`` (the fused node's buffer, which may be ``grad``'s
        memory) the same two products are written there: the same numbers, no new tensor.
        """
        if out is None:
            return grad * (1 - y) * y
        return torch.mul(grad, 1 - y, out=out).mul_(y)

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return Sigmoid.value(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return Sigmoid.derivative(grad, y)


class Tanh(Function):
    """``tanh(x)``;  ``tanh'(x) = 1 − tanh(x)²``, from the saved output ``y``."""

    @staticmethod
    def value(x: Tensor, out: Tensor | None = None) -> Tensor:
        """``tanh(x)``, written into ``out`` when given."""
        return torch.tanh(x, out=out)

    @staticmethod
    def derivative(grad: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
        """``grad ⊙ tanh'(z) = grad ⊙ (1 − y²)`` from the output ``y = tanh(z)``.

        With ``out`` (the fused node's buffer; not ``grad``'s memory, ``grad`` is read last) the
        same three operations written there: ``y·y``, ``1 − y·y``, ``grad · (1 − y·y)``.  PyTorch
        fuses ``1 − y·y`` into one rounding, so torch's gradient may differ in the last bit.
        """
        if out is None:
            return grad * (1 - y * y)
        y2 = torch.mul(y, y, out=out)
        one_minus_y2 = torch.sub(y.new_ones(()), y2, out=out)
        return torch.mul(grad, one_minus_y2, out=out)

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return Tanh.value(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return Tanh.derivative(grad, y)


class Softmax(Function):
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


class Identity(Function):
    """The identity ``f(x) = x``; ``f'(x) = 1``.

    This is the course report's ``Linear`` *activation*.  It is named ``identity``
    here so that PyTorch readers do not confuse it with the affine layer
    (:class:`Linear` / ``nn.Linear``).
    """

    @staticmethod
    def value(x: Tensor, out: Tensor | None = None) -> Tensor:
        """``x`` (a view of it), or copied into ``out`` when given (nothing to copy when ``out`` is ``x``)."""
        return x.view_as(x) if out is None else out.copy_(x)

    @staticmethod
    def derivative(grad: Tensor, y: Tensor | None, out: Tensor | None = None) -> Tensor:
        """``grad ⊙ 1``: ``grad`` itself, or copied into ``out`` when given."""
        return grad if out is None else out.copy_(grad)

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return Identity.value(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return Identity.derivative(grad, None)


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
#: Activation name → its Function (``value`` / ``derivative`` of the elementwise ones: the fused node's).
ACTIVATION_FUNCTIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax, "identity": Identity}
#: What a hidden layer may use (the nets, the CLI's choices): the elementwise activations.
HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity")
#: What the output layer may use (the nets, the CLI's choices).
OUTPUT_ACTIVATIONS = ("softmax", "identity", "sigmoid")
