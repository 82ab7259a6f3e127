"""Hand-derived losses and weight penalties, and the course report's loss classes.

Definitions (``B`` = batch size, ``N`` = number of elements of ``pred``)::

    mse_loss(p, t)               = (1/N) Σ (p − t)²               (same as F.mse_loss)
    cross_entropy(p, t)          = −(1/B) Σ_b Σ_k t_bk log p_bk   (p: probabilities; = F.nll_loss(log p, y))
    softmax_cross_entropy(z, t)  = cross_entropy(softmax(z), t), computed from logits z (= F.cross_entropy)
    softmax_cross_entropy(z, t, ε) = the same against ((1 − ε) t + ε/K)  (label smoothing, K classes)
    l1_penalty(α, W₁…W_L)        = α Σ_l Σ_ij |W_l,ij|
    l2_penalty(α, W₁…W_L)        = (α/2) Σ_l Σ_ij W_l,ij²

The L2 penalty carries the factor ½ so that its gradient is exactly ``α W``:
that is what ``torch.optim.SGD(weight_decay=α)`` adds to the gradient, and it is
added **once per step**, independent of the batch size, because the data term
is a *mean* over the batch.  Penalties apply to weight matrices only, never to
biases.

What the public functions take (:mod:`~src.hand.checks` refuses anything else in one line, before
any work): the cross-entropies take ``(B, C)`` or unbatched ``(C,)`` inputs, and targets that are
either one-hot or probability rows of the input's shape and dtype (the course report's form, the
training path's) or int64 class indices of shape ``(B,)`` (``()`` when unbatched) in ``[0, C)``, as
``F.cross_entropy``; class indices stand for their one-hot rows, so one Function serves both.
``mse_loss`` takes ``pred`` and ``target`` of the same shape and dtype (``F.mse_loss`` would
broadcast, with a warning).  Every tensor is of a real floating dtype.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor
from torch.autograd import Function

from .checks import check_alpha, check_choice, check_class_target, check_same, check_smoothing, check_weights
from .functional import softmax

__all__ = [
    "MSELoss",
    "CrossEntropy",
    "SoftmaxCrossEntropy",
    "L1Penalty",
    "L2Penalty",
    "Add",
    "mse_loss",
    "cross_entropy",
    "softmax_cross_entropy",
    "one_hot_rows",
    "smoothed",
    "l1_penalty",
    "l2_penalty",
    "add",
    "SquaredErrorLoss",
    "CrossEntropyLoss",
    "REGULARIZATIONS",
]

#: Allowed values of ``regularization`` (``"none"`` is the CLI's spelling of ``None``).
REGULARIZATIONS = (None, "none", "l1", "l2")


def _rows(x: Tensor) -> int:
    """``B``, the number of rows the cross-entropies average over: 1 for an unbatched ``(C,)`` input."""
    return 1 if x.dim() == 1 else x.shape[0]


def one_hot_rows(labels: Tensor, like: Tensor) -> Tensor:
    """The one-hot rows ``(B, C)`` that int64 class indices ``(B,)`` stand for, in ``like``'s dtype.

    The cross-entropy Functions take rows; the wrappers turn class indices into these first.
    """
    return torch.nn.functional.one_hot(labels, like.shape[-1]).to(like.dtype)


class MSELoss(Function):
    """``L = (1/N) Σ (p − t)²``;  ``∂L/∂p = 2 (p − t) / N``,  ``∂L/∂t = −∂L/∂p``."""

    @staticmethod
    def forward(pred: Tensor, target: Tensor) -> Tensor:
        diff = pred - target
        return (diff * diff).mean()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        pred, target = inputs
        ctx.save_for_backward(pred, target)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        pred, target = ctx.saved_tensors
        d = (pred - target) * (2.0 / pred.numel()) * grad
        return (d if ctx.needs_input_grad[0] else None), (-d if ctx.needs_input_grad[1] else None)


class CrossEntropy(Function):
    """``L = −(1/B) Σ t log p`` on probabilities ``p``.

    ``∂L/∂p = −t / (B p)``,  ``∂L/∂t = −log p / B``.

    ``p`` is clamped below at the dtype's smallest normal number before the log,
    so a probability that underflowed to 0 gives a large but finite loss instead
    of ``inf``.  For a softmax output prefer :func:`softmax_cross_entropy`,
    which works on logits and never forms ``log 0``.
    """

    @staticmethod
    def forward(probs: Tensor, target: Tensor) -> Tensor:
        p = probs.clamp_min(torch.finfo(probs.dtype).tiny)
        return -(target * p.log()).sum() / _rows(probs)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        probs, target = inputs
        ctx.save_for_backward(probs, target)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        probs, target = ctx.saved_tensors
        p = probs.clamp_min(torch.finfo(probs.dtype).tiny)
        scale = grad / _rows(probs)
        grad_p = -target / p * scale if ctx.needs_input_grad[0] else None
        grad_t = -p.log() * scale if ctx.needs_input_grad[1] else None
        return grad_p, grad_t


def smoothed(target: Tensor, label_smoothing: float) -> Tensor:
    """The smoothed target rows ``t̃ = (1 − ε) t + ε/K`` (``K`` classes); ``t`` itself when ``ε = 0``."""
    if label_smoothing == 0:
        return target
    return target * (1 - label_smoothing) + label_smoothing / target.shape[-1]


class SoftmaxCrossEntropy(Function):
    """Fused softmax + cross-entropy on logits ``z`` (rows of ``t`` need not be one-hot), with label smoothing ε.

    With ``log y = z − logsumexp(z)`` (finite for any finite ``z``) and the smoothed target
    ``t̃ = (1 − ε) t + ε/K`` (``K`` classes; ``t̃ = t`` for ε = 0, as ``F.cross_entropy``'s
    ``label_smoothing``)::

        L     = −(1/B) Σ t̃ ⊙ log y
        ∂L/∂z = (y Σ_k t̃_k − t̃) / B      (= (y − t̃)/B for one-hot rows: Σ_k t̃_k = 1)
        ∂L/∂t = −(1 − ε) log y / B

    since ``∂ log y_k / ∂z_j = δ_kj − y_j``: smoothing moves the target the softmax is pulled
    towards, not the form of the gradient.
    """

    @staticmethod
    def forward(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
        log_y = logits - logits.logsumexp(-1, keepdim=True)
        return -(smoothed(target, label_smoothing) * log_y).sum() / _rows(logits)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        logits, target, label_smoothing = inputs
        ctx.label_smoothing = label_smoothing
        ctx.save_for_backward(logits, target)

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        logits, target = ctx.saved_tensors
        eps = ctx.label_smoothing
        scale = grad / _rows(logits)
        t = smoothed(target, eps)  # (B, K)
        grad_z = grad_t = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # double backward: build it from our own Functions
                grad_z = (softmax(logits) * t.sum(-1, keepdim=True) - t) * scale
            else:  # the usual case: the same formula in place, on a fresh softmax
                grad_z = torch.softmax(logits, -1).mul_(t.sum(-1, keepdim=True)).sub_(t).mul_(scale)
        if ctx.needs_input_grad[1]:
            grad_t = -(logits - logits.logsumexp(-1, keepdim=True)) * scale
            if eps:
                grad_t = grad_t * (1 - eps)
        return grad_z, grad_t, None


class L1Penalty(Function):
    """``P = α Σ_l Σ |W_l|``;  ``∂P/∂W_l = α sign(W_l)`` (0 at the kink, as ``torch.abs``)."""

    @staticmethod
    def forward(alpha: float, *weights: Tensor) -> Tensor:
        return alpha * torch.stack([w.abs().sum() for w in weights]).sum()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.alpha = inputs[0]
        ctx.save_for_backward(*inputs[1:])

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        scale = grad * ctx.alpha
        return (None, *(w.sign() * scale for w in ctx.saved_tensors))


class L2Penalty(Function):
    """``P = (α/2) Σ_l Σ W_l²``;  ``∂P/∂W_l = α W_l``."""

    @staticmethod
    def forward(alpha: float, *weights: Tensor) -> Tensor:
        return 0.5 * alpha * torch.stack([(w * w).sum() for w in weights]).sum()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.alpha = inputs[0]
        ctx.save_for_backward(*inputs[1:])

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        scale = grad * ctx.alpha
        return (None, *(w * scale for w in ctx.saved_tensors))


class Add(Function):
    """``s = a + b``;  ``∂s/∂a = ∂s/∂b = 1``.

    Trivial, but it keeps the path from the total loss to the parameters free of
    autograd-derived nodes (the data term plus the penalty).
    """

    @staticmethod
    def forward(a: Tensor, b: Tensor) -> Tensor:
        return a + b

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        return grad, grad


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements of ``pred`` and ``target``, of one shape (see :class:`MSELoss`)."""
    check_same("mse_loss", pred, target)
    return MSELoss.apply(pred, target)


def cross_entropy(probs: Tensor, target: Tensor) -> Tensor:
    """Batch-mean cross-entropy on probabilities ``(B, C)`` or ``(C,)`` (see :class:`CrossEntropy`).

    ``target``: one-hot or probability rows of ``probs``' shape, or int64 class indices ``(B,)``
    (``F.nll_loss(probs.log(), target)``).
    """
    if check_class_target("cross_entropy", probs, target, "probs"):
        target = one_hot_rows(target, probs)
    return CrossEntropy.apply(probs, target)


def softmax_cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """``cross_entropy(softmax(logits), target)`` fused and stable; ``F.cross_entropy`` (see :class:`SoftmaxCrossEntropy`).

    ``logits``: ``(B, C)`` or ``(C,)``; ``target``: one-hot or probability rows of ``logits``' shape,
    or int64 class indices ``(B,)`` (``()`` for unbatched logits); ``label_smoothing`` ε in [0, 1]
    mixes each target row with the uniform one, ``(1 − ε) t + ε/K``, as ``F.cross_entropy`` does.
    """
    eps = check_smoothing(label_smoothing)
    if check_class_target("softmax_cross_entropy", logits, target, "logits"):
        target = one_hot_rows(target, logits)
    return SoftmaxCrossEntropy.apply(logits, target, eps)


def l1_penalty(weights: Sequence[Tensor], alpha: float) -> Tensor:
    """``α Σ |W|`` over all given weight matrices (see :class:`L1Penalty`)."""
    return L1Penalty.apply(check_alpha(alpha), *check_weights("l1_penalty", weights))


def l2_penalty(weights: Sequence[Tensor], alpha: float) -> Tensor:
    """``(α/2) Σ W²`` over all given weight matrices (see :class:`L2Penalty`)."""
    return L2Penalty.apply(check_alpha(alpha), *check_weights("l2_penalty", weights))


def add(a: Tensor, b: Tensor) -> Tensor:
    """``a + b`` of one shape and dtype, with a hand-written backward (see :class:`Add`)."""
    check_same("add", a, b, ("a", "b"))
    return Add.apply(a, b)


_PENALTIES = {"l1": l1_penalty, "l2": l2_penalty}


class _PenalizedLoss:
    """Data loss plus an optional L1/L2 penalty, as the course report's loss classes."""

    _data_loss = staticmethod(mse_loss)

    def __init__(self, alpha: float = 0.0, regularization: str | None = None) -> None:
        check_choice("regularization", regularization, REGULARIZATIONS)
        self.alpha = check_alpha(alpha)
        self.regularization = None if regularization == "none" else regularization

    def penalty(self, weights: Iterable[Tensor]) -> Tensor | None:
        """The weight penalty alone, or ``None`` when there is none."""
        if self.regularization is None or self.alpha == 0:
            return None
        if not isinstance(weights, Tensor):  # a lone tensor goes on to the penalty, which refuses it
            weights = list(weights)
            if not weights:
                return None
        return _PENALTIES[self.regularization](weights, self.alpha)

    def _with_penalty(self, loss: Tensor, weights: Iterable[Tensor]) -> Tensor:
        if self.regularization is None or self.alpha == 0:
            return loss
        penalty = self.penalty(weights)  # both 0-d and ours: no argument to check
        return loss if penalty is None else Add.apply(loss, penalty)

    def __call__(self, y_pred: Tensor, y_true: Tensor, weights: Iterable[Tensor] = ()) -> Tensor:
        """Data loss of ``y_pred`` against ``y_true`` (one-hot rows; class indices for cross-entropy) plus the penalty over ``weights``."""
        return self._with_penalty(self._data_loss(y_pred, y_true), weights)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, regularization={self.regularization!r})"


class SquaredErrorLoss(_PenalizedLoss):
    """The course report's ``SquaredErrorLoss``: :func:`mse_loss` plus an optional penalty."""

    _data_loss = staticmethod(mse_loss)


class CrossEntropyLoss(_PenalizedLoss):
    """The course report's ``CrossEntropyLoss``: :func:`cross_entropy` on probabilities plus an optional penalty.

    :meth:`from_logits` is the fused, overflow-free path for a softmax output layer.
    """

    _data_loss = staticmethod(cross_entropy)

    def __init__(self, alpha: float = 0.0, regularization: str | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__(alpha, regularization)
        #: ε of :class:`SoftmaxCrossEntropy`: only the fused path from logits smooths (torch's nll_loss has no ε)
        self.label_smoothing = check_smoothing(label_smoothing)

    def __call__(self, y_pred: Tensor, y_true: Tensor, weights: Iterable[Tensor] = ()) -> Tensor:
        if self.label_smoothing:
            raise ValueError(
                f"label_smoothing={self.label_smoothing} needs the logits: call from_logits (a softmax output "
                "layer); the cross-entropy on probabilities has no smoothing, like F.nll_loss"
            )
        return super().__call__(y_pred, y_true, weights)

    def from_logits(self, logits: Tensor, y_true: Tensor, weights: Iterable[Tensor] = ()) -> Tensor:
        """Same value as ``self(softmax(logits), y_true, weights)``, computed stably from logits (smoothed by ε).

        :func:`softmax_cross_entropy` with this loss's ε, which ``__init__`` has checked.
        """
        if check_class_target("softmax_cross_entropy", logits, y_true, "logits"):
            y_true = one_hot_rows(y_true, logits)
        return self._with_penalty(SoftmaxCrossEntropy.apply(logits, y_true, self.label_smoothing), weights)

    def __repr__(self) -> str:  # the course report's repr, and ε only when it smooths
        base = super().__repr__()
        return f"{base[:-1]}, label_smoothing={self.label_smoothing})" if self.label_smoothing else base
