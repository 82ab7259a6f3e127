"""Exercise 4 of 6: softmax and cross-entropy, fused.      Check: python -m src.verify --exercise softmax_cross_entropy

    ŷ = softmax(z)  (each row),   L = −(1/B) Σ_b Σ_k t_bk log ŷ_bk        (the mean over the batch)

``z`` are the logits (B, K), ``t`` the one-hot targets (B, K).  Write ``SoftmaxCrossEntropy.backward``:
given ``grad`` (a scalar, ∂(whatever is above)/∂L, usually 1), return ``grad_logits = ∂L/∂z``
(B, K) times ``grad``.  Derive it through both steps at once: the softmax's Jacobian and the log's
derivative collapse into something short.

The derivation: docs/derivations.md#softmax-cross-entropy.
Stuck?  python -m src.verify --exercise softmax_cross_entropy --hint
"""

import torch
from torch import Tensor
from torch.autograd import Function


class SoftmaxCrossEntropy(Function):
    """The mean cross-entropy of ``softmax(logits)``; the project's piece: ``src.hand.losses.SoftmaxCrossEntropy``."""

    @staticmethod
    def forward(logits: Tensor, target: Tensor) -> Tensor:
        log_y = logits - logits.logsumexp(-1, keepdim=True)  # log ŷ, each row (B, K), never log 0
        return -(target * log_y).sum() / logits.shape[0]  # a scalar: the mean over the B rows

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, target = inputs
        ctx.save_for_backward(logits, target)

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, target = ctx.saved_tensors  # (B, K) each; grad: a scalar ()
        # ---- your code: start ----
        raise NotImplementedError("compute grad_logits = ∂L/∂z (B, K), times grad")
        # ---- your code: end ----
        return grad_logits, None  # no gradient for the targets
