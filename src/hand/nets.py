"""The networks: ``FeedForwardNet`` (hand-derived gradients only) and its ``nn.Sequential`` twin.

Both expose the same interface:

* ``layer_outputs(x)`` — every layer's output ``h_1 … h_L`` (``h_L`` the logits) and the weights
  ``W_1 … W_L``, one op at a time (what the gradient-flow diagnostics measure);
* ``logits(x)`` — the output layer's pre-activation, ``(batch, outputs)``;
* ``forward(x)`` — ``output_activation(logits(x))``, the course report's ``forward_propagation``;
* ``weights()`` — the weight matrices (what L1/L2 penalize; biases, ``γ`` and ``β`` are not penalized);
* ``predict(x)`` — the class with the highest output, the course report's ``predict``.

Given the same initializer and random seed they start from identical parameters.

``norm`` (``none``, ``batch``, ``layer``) puts a normalization between each hidden affine map and
its activation, where Ioffe and Szegedy place it: ``h_l = g(BN(d_{l−1} W_lᵀ + b_l))``, with a
learnable ``γ_l`` (ones) and ``β_l`` (zeros) per hidden layer (the output layer's logits are not
normalized).  ``FeedForwardNet`` uses :mod:`src.hand.norm`'s hand-derived Functions, the twin
``nn.BatchNorm1d`` / ``nn.LayerNorm``, both with torch's defaults (ε = 1e-5, momentum 0.1).
"""

from __future__ import annotations

import numbers
import os
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import functional as HF
from . import fused as FF
from . import norm as HN
from .checks import check_choice
from .dropout import MaskStream, check_dropout, dropout as hand_dropout, dropout_mask
from .functional import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from .init import ParameterInitializer

__all__ = ["FeedForwardNet", "SequentialNet", "NORMS"]

#: where a normalization may sit between each hidden affine map and its activation
NORMS = ("none", "batch", "layer")
#: torch's defaults (nn.BatchNorm1d, nn.LayerNorm), so the twins agree
NORM_EPS, NORM_MOMENTUM = 1e-5, 0.1


#: bytes per parameter while training: the weight, its gradient and up to two optimizer buffers (Adam)
COPIES_WHILE_TRAINING = 4


def _memory_bytes() -> int | None:
    """The machine's physical memory in bytes, ``None`` where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _check_sizes(inputs: int, hidden_layers: Sequence[int], outputs: int, dtype: torch.dtype) -> list[int]:
    """At least one hidden layer, and a net that fits in memory (checked before anything is allocated).

    That every size is a positive integer is :class:`~src.hand.init.ParameterInitializer`'s rule.
    """
    sizes = [inputs, *hidden_layers, outputs]
    if not hidden_layers:
        raise ValueError("hidden_layers=[] is not allowed; give at least one hidden layer, e.g. [500, 250, 100]")
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0 for s in sizes):
        return sizes  # ParameterInitializer names the bad size
    params = sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    need = params * torch.finfo(dtype).bits // 8 * COPIES_WHILE_TRAINING
    have = _memory_bytes()
    if have is not None and need > have:
        raise ValueError(
            f"hidden_layers={list(hidden_layers)!r} is too large: {params:,} parameters need about {_size(need)} "
            f"while training (weights, gradients, optimizer state), but this machine has {_size(have)} of memory"
        )
    return sizes


def _initial_parameters(
    inputs: int,
    hidden_layers: Sequence[int],
    outputs: int,
    activation: str,
    output_activation: str,
    initialization: str,
    seed: int | torch.Generator | None,
    dtype: torch.dtype,
) -> dict[str, Tensor]:
    """Validate a net's arguments and draw its ``W1, b1, …`` (shared by both nets, so twins start equal)."""
    check_choice("activation", activation, HIDDEN_ACTIVATIONS)
    check_choice("output_activation", output_activation, OUTPUT_ACTIVATIONS)
    _check_sizes(inputs, hidden_layers, outputs, dtype)
    return ParameterInitializer(initialization).initialize_parameters(
        inputs, hidden_layers, outputs, seed=seed, dtype=dtype
    )


class FeedForwardNet(nn.Module):
    """A fully connected net built only from the hand-derived Functions of :mod:`src.hand.functional`.

    Parameters are ``W1, b1, …, W{L+1}, b{L+1}`` as in the course report, ``W_i`` shaped
    ``(fan_out, fan_in)``.  Nothing on the path from input to loss uses an
    autograd-derived gradient.

    The net is the per-op chain of :meth:`layer_outputs`: per layer :func:`~src.hand.functional.linear`
    and the activation Function, each its own autograd node, its backward written beside its
    forward.  ``fused`` (the default, for speed: BENCHMARKS.md) computes the same logits with
    :class:`~src.hand.fused.FeedForward`, the whole chain as one node, equal to the last bit
    (``tests/test_functional.py``, ``tests/test_fast_path.py``); ``fused=False`` runs the chain.

    ``dropout`` ``p`` (0 ≤ p < 1) applies inverted dropout (:mod:`src.hand.dropout`) to every hidden
    layer's output in training mode; its masks come from ``self.masks``, a
    :class:`~src.hand.dropout.MaskStream` seeded with ``dropout_seed`` (the LightningModule checkpoints it).
    ``input_dropout`` does the same to the input pixels (its mask drawn first).

    ``norm`` ``batch`` or ``layer`` normalizes each hidden layer's pre-activation with
    :func:`~src.hand.norm.batch_norm` / :func:`~src.hand.norm.layer_norm` before its activation:
    parameters ``gamma{l}`` (ones) and ``beta{l}`` (zeros) after ``W{l}``, ``b{l}``; batch norm also keeps
    the buffers ``running_mean{l}`` (zeros) and ``running_var{l}`` (ones), so both live in every
    ``state_dict`` and checkpoint.  Batch norm in training mode normalizes with the batch's statistics
    and updates the running ones (momentum 0.1, as ``nn.BatchNorm1d``); in evaluation mode
    (``net.eval()``) it normalizes with the running ones.  With a normalization the one-node fast path
    stands aside: ``fused`` is ``False`` and the per-op chain runs.  :class:`~src.hand.fused.FeedForward`
    holds only the affine maps and activations; carrying batch norm would put its batch-coupled
    backward and the running statistics' update into that node, a second copy of the derivation to
    keep equal to the last bit, while the chain already runs each norm as one node of its own
    (``docs/batchnorm.md``, "In the net": the chain's per-step cost with and without a norm).
    """

    def __init__(
        self,
        inputs: int = 784,
        hidden_layers: Sequence[int] = (500, 250, 100),
        outputs: int = 10,
        activation: str = "sigmoid",
        output_activation: str = "softmax",
        initialization: str = "glorot",
        seed: int | torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        fused: bool = True,
        dropout: float = 0.0,
        dropout_seed: int = 0,
        input_dropout: float = 0.0,
        norm: str = "none",
    ) -> None:
        super().__init__()
        self.dropout = check_dropout(dropout)
        self.input_dropout = check_dropout(input_dropout, "input_dropout")
        check_choice("norm", norm, NORMS)
        params = _initial_parameters(
            inputs, hidden_layers, outputs, activation, output_activation, initialization, seed, dtype
        )
        self.activation, self.output_activation = activation, output_activation
        self.norm = norm
        self.fused = fused and norm == "none"  # the one node holds no normalization: the chain runs
        self.masks = MaskStream(dropout_seed)  # the dropout masks' own random stream
        self._g = HF.ACTIVATIONS[activation]
        self._o = HF.ACTIVATIONS[output_activation]
        for name, value in params.items():
            self.register_parameter(name, nn.Parameter(value))
            hidden = name[0] == "b" and int(name[1:]) <= len(hidden_layers)
            if norm != "none" and hidden:  # after W_l, b_l: the order of the twin's Linear, then its norm
                l, width = name[1:], value.shape[0]
                self.register_parameter(f"gamma{l}", nn.Parameter(torch.ones(width, dtype=dtype)))  # γ_l (out_l,)
                self.register_parameter(f"beta{l}", nn.Parameter(torch.zeros(width, dtype=dtype)))  # β_l (out_l,)
                if norm == "batch":  # the running estimates evaluation normalizes with (not learned)
                    self.register_buffer(f"running_mean{l}", torch.zeros(width, dtype=dtype))
                    self.register_buffer(f"running_var{l}", torch.ones(width, dtype=dtype))
        self.num_layers = len(hidden_layers) + 1
        self._weight_names = [f"W{l}" for l in range(1, self.num_layers + 1)]  # what weights() returns
        #: the fused node's buffers, reused from one training step to the next; ``None`` (fresh
        #: tensors every call) unless a training loop that runs one forward per backward sets one
        #: (:class:`~src.system.module.MLPClassifier` does during ``fit``)
        self.workspace: FF.Workspace | None = None

    def layers(self) -> list[tuple[Tensor, Tensor]]:
        """``(W_l, b_l)`` for ``l = 1 … L``."""
        return [(getattr(self, f"W{i}"), getattr(self, f"b{i}")) for i in range(1, self.num_layers + 1)]

    def weights(self) -> list[Tensor]:
        return list(map(self._parameters.__getitem__, self._weight_names))  # W_1 … W_L (not γ, β)

    def layer_outputs(
        self, x: Tensor, dropout: float = 0.0, generator: torch.Generator | None = None,
        update_running_stats: bool = True,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The per-op chain: every layer's output ``h_1 … h_L`` and the weights ``W_1 … W_L``.

        With ``d₀ = x``, ``h_l = g(d_{l−1} W_lᵀ + b_l)`` for the hidden layers (``g(N_l(d_{l−1} W_lᵀ
        + b_l))`` with a normalization ``N_l``), ``d_l = h_l`` (or ``dropout(h_l)``, one mask per layer
        drawn from ``generator`` in layer order), and the last ``h_L = d_{L−1} W_Lᵀ + b_L`` the
        logits: one node per op in the autograd graph.  ``update_running_stats=False`` leaves batch
        norm's running statistics as they are in training mode (the diagnostics' probe).
        """  # fmt: skip
        layers = self.layers()
        outputs, d = [], x
        for l, (w, b) in enumerate(layers, start=1):
            h = HF.linear(d, w, b)  # (batch, out_l)
            if l < len(layers):
                if self.norm != "none":
                    h = self._normalize(l, h, update_running_stats)  # (batch, out_l)
                h = self._g(h)
                d = hand_dropout(h, dropout, True, generator) if dropout else h
            outputs.append(h)
        return outputs, [w for w, _ in layers]

    def _normalize(self, l: int, z: Tensor, update_running_stats: bool) -> Tensor:
        """``N_l(z) = γ_l ẑ + β_l``: layer ``l``'s normalization (:mod:`src.hand.norm`), ``z`` (batch, out_l)."""
        gamma, beta = self._parameters[f"gamma{l}"], self._parameters[f"beta{l}"]
        if self.norm == "layer":  # over each row's features: the same in training and evaluation
            return HN.layer_norm(z, gamma, beta, NORM_EPS)
        mean, var = self._buffers[f"running_mean{l}"], self._buffers[f"running_var{l}"]
        if self.training and not update_running_stats:  # the batch's statistics, the running ones untouched
            mean = var = None
        return HN.batch_norm(z, gamma, beta, mean, var, self.training, NORM_MOMENTUM, NORM_EPS)

    def logits(self, x: Tensor) -> Tensor:
        """``h_L``, ``(batch, outputs)``: :meth:`layer_outputs`' last output, or the same from one fused node."""
        drop = self.dropout if self.training else 0.0
        gen = self.masks.generator(x.device) if self.training and (drop or self.input_dropout) else None
        if self.training and self.input_dropout:  # the input's mask first, then the hidden layers'
            x = hand_dropout(x, self.input_dropout, True, gen)
        if not self.fused or self.norm != "none":
            return self.layer_outputs(x, drop, gen)[0][-1]
        # the optimization: the chain's logits from one FeedForward node, whose buffers serve
        # training steps only (an evaluation must not overwrite what a backward needs)
        params = list(self._parameters.values())  # W1, b1, …: the order FeedForward takes them
        workspace = self.workspace if torch.is_grad_enabled() else None
        masks = None
        if drop:  # (batch, hidden) per hidden layer, drawn in layer order like the chain's
            masks = [dropout_mask(x.new_empty(len(x), w.shape[0]), drop, gen) for w in params[:-2:2]]
        return FF.feed_forward(x, self.activation, params, workspace, masks)

    def output_fn(self, logits: Tensor) -> Tensor:
        """The output activation, applied to :meth:`logits`."""
        return self._o(logits)

    def forward(self, x: Tensor) -> Tensor:
        return self._o(self.logits(x))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)

    def extra_repr(self) -> str:
        """``784 → 500 → 250 → 100 → 10, activation=sigmoid, …``: the layer sizes, then the settings."""
        weights = self.weights()
        sizes = " → ".join(str(n) for n in [weights[0].shape[1], *(w.shape[0] for w in weights)])
        text = f"{sizes}, activation={self.activation}, output={self.output_activation}, fused={self.fused}"
        text += f", dropout={self.dropout}"
        text += f", norm={self.norm}" if self.norm != "none" else ""
        return text + (f", input_dropout={self.input_dropout}" if self.input_dropout else "")


_TORCH_ACTIVATIONS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "identity": nn.Identity,
    "softmax": lambda: nn.Softmax(dim=-1),
}


_TORCH_NORMS = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}
_NORM_MODULES = (nn.BatchNorm1d, nn.LayerNorm)


class SequentialNet(nn.Module):
    """The package twin: the same architecture from ``nn.Linear`` and torch activations.

    ``self.net`` is a plain ``nn.Sequential`` ending with the output activation, with an
    ``nn.Dropout`` after each hidden activation when ``dropout`` > 0 (global random stream);
    ``logits`` runs all but that last module.  The weights are copied from the
    same :class:`~src.hand.init.ParameterInitializer` draw as :class:`FeedForwardNet`.  ``norm``
    ``batch`` / ``layer`` puts an ``nn.BatchNorm1d`` / ``nn.LayerNorm`` between each hidden
    ``nn.Linear`` and its activation (torch's own initialization: γ ones, β zeros, as ours).
    """

    def __init__(
        self,
        inputs: int = 784,
        hidden_layers: Sequence[int] = (500, 250, 100),
        outputs: int = 10,
        activation: str = "sigmoid",
        output_activation: str = "softmax",
        initialization: str = "glorot",
        seed: int | torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        norm: str = "none",
    ) -> None:
        super().__init__()
        self.dropout = check_dropout(dropout)
        self.input_dropout = check_dropout(input_dropout, "input_dropout")
        check_choice("norm", norm, NORMS)
        self.norm = norm
        params = _initial_parameters(
            inputs, hidden_layers, outputs, activation, output_activation, initialization, seed, dtype
        )
        sizes = [inputs, *hidden_layers, outputs]
        self.activation, self.output_activation = activation, output_activation
        modules: list[nn.Module] = [nn.Dropout(self.input_dropout)] if self.input_dropout else []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            layer = nn.Linear(fan_in, fan_out, dtype=dtype)
            with torch.no_grad():
                layer.weight.copy_(params[f"W{i}"])
                layer.bias.copy_(params[f"b{i}"])
            modules.append(layer)
            if norm != "none" and i < len(sizes) - 1:  # only when on, so the Linear indices stay as before
                modules.append(_TORCH_NORMS[norm](fan_out, eps=NORM_EPS, dtype=dtype))
            modules.append(_TORCH_ACTIVATIONS[activation if i < len(sizes) - 1 else output_activation]())
            if self.dropout and i < len(sizes) - 1:  # only when on, so the Linear indices stay as before
                modules.append(nn.Dropout(self.dropout))
        self.net = nn.Sequential(*modules)

    def weights(self) -> list[Tensor]:
        return [m.weight for m in self.net if isinstance(m, nn.Linear)]

    def layer_outputs(self, x: Tensor, update_running_stats: bool = True) -> tuple[list[Tensor], list[Tensor]]:
        """Every layer's output ``h_1 … h_L`` (each hidden activation's, then the logits) and ``W_1 … W_L``.

        Module by module through ``self.net`` without dropout, as :meth:`FeedForwardNet.layer_outputs`;
        ``update_running_stats=False`` leaves ``nn.BatchNorm1d``'s running statistics as they are.
        """
        outputs, weights, h = [], [], x
        for m in self.net[:-1]:  # not the output activation
            if isinstance(m, nn.Dropout):
                continue
            if isinstance(m, nn.BatchNorm1d) and m.training and not update_running_stats:
                h = F.batch_norm(h, None, None, m.weight, m.bias, True, 0.0, m.eps)  # batch statistics only
            else:
                h = m(h)
            if isinstance(m, nn.Linear):
                weights.append(m.weight)
            elif not isinstance(m, _NORM_MODULES):
                outputs.append(h)
        outputs.append(h)  # the last Linear's output: the logits
        return outputs, weights

    def logits(self, x: Tensor) -> Tensor:
        return self.net[:-1](x)

    def output_fn(self, logits: Tensor) -> Tensor:
        """The output activation (the last module of ``self.net``), applied to :meth:`logits`."""
        return self.net[-1](logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)
