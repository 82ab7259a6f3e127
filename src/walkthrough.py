"""One training step of the net, walked through in the order of the derivation, each tensor checked against autograd.

    python -m src.walkthrough                      # the default net on the first training batch of `src.train fit`
    python -m src.walkthrough --sizes 4 3 2        # a tiny net: every number printed, for pencil and paper
    python -m src.walkthrough --graph step.md      # also write the step's graph as a Mermaid flowchart
    python -m src.walkthrough --activation tanh --seed 1 --batch 32 --lr 0.05

One step of plain gradient descent, without Lightning, printed as the derivation reads
(``docs/derivations.md``, "The whole net"): the forward tensors ``x → z₁ → h₁ → … → z_L → ŷ``
and the loss; then the backward recursion ``δ_L = (ŷ − t)/B``, and per layer ``∂W_l``, ``∂b_l``,
``∂L/∂h_{l−1}`` and ``δ_{l−1}``; then the update ``W ← W − η ∂W`` and the loss after it.  Every
tensor comes with its shape and a verdict in the manner of nn-zero-to-hero's ``cmp()``: ``exact``
(every bit equal to autograd's), ``close`` (``max|Δ| ≤ 10⁻⁵ · max|autograd|``) or ``WRONG``, with
the largest difference.  Exit status 0 when no line is WRONG, 1 when one is (a bug in a derivative
or in the recursion: the first WRONG line of the backward section is where it starts), 1 for a
missing or damaged data file, 2 for a bad option (one line on stderr, before any work).

Our side is the project's own code, unchanged:

* the forward pass and the backprop recursion: :func:`src.hand.backprop.forward_pass` and
  :func:`~src.hand.backprop.backward_pass` (the ``δ``'s and ``∂L/∂h``'s are recorded as
  ``backward_pass`` computes them, from its calls of the activation's ``derivative``);
* ``δ_L``: the fused :class:`~src.hand.losses.SoftmaxCrossEntropy`'s backward, through
  :meth:`~src.hand.losses.CrossEntropyLoss.from_logits` as training calls it;
* the update: :class:`src.hand.optim.GD`.

The reference is autograd on :class:`~src.hand.nets.SequentialNet` (``nn.Linear`` and torch's
activations) started from the same weights, ``F.cross_entropy`` and ``torch.optim.SGD``.

The batch is the first training batch of ``python -m src.train fit --seed_everything <seed>``
(:class:`~src.data.mnist.MNISTDataModule`'s split, standardization and shuffle), and the initial
weights are that run's: the walked step is that run's first step.  With ``--sizes`` the input is
the same pictures average-pooled to ``k×k`` (``k² = --sizes``' first number) and the class is the
digit modulo the output size (2 outputs: even or odd).  The output of each form, and how to read
it: ``docs/walkthrough.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hand import backprop
from .hand import functional as HF
from .hand.functional import ACTIVATION_FUNCTIONS, HIDDEN_ACTIVATIONS, softmax
from .hand.losses import CrossEntropyLoss
from .hand.nets import FeedForwardNet, SequentialNet
from .hand.optim import GD

__all__ = [
    "DEFAULT_SIZES", "Verdict", "Line", "Step", "Batch", "cmp", "load_batch", "walk", "format_step", "step_graph",
    "graph_markdown", "main",
]  # fmt: skip

#: the course report's net, ``src.train``'s default (configs/baseline.yaml)
DEFAULT_SIZES = (784, 500, 250, 100, 10)
DEFAULT_LR = 0.3  # configs/baseline.yaml: sigmoid saturates, plain GD needs a large step
#: ``close`` means ``max|Δ| ≤ CLOSE · max|autograd|``: float32 rounding in a different order, not a bug
CLOSE = 1e-5
#: a tensor's elements are printed when the largest tensor of the step has at most this many
NUMBERS_UP_TO = 100
#: the largest side of a picture: ``--sizes``' input ``k²`` pools the 28×28 pictures to ``k×k``
SIDE = 28
MAX_SEED = 2**63

_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
#: the activation's symbol in ``h = g(z)``, and its derivative from the output ``h`` (what ``derivative`` uses)
_SYMBOL = {"sigmoid": "σ", "tanh": "tanh", "relu": "relu", "identity": "id"}
_PRIME = {
    "sigmoid": "h{l}(1 − h{l})",
    "tanh": "(1 − h{l}²)",
    "relu": "1[h{l} ≠ 0]",
    "identity": "1",
}


def sub(l: int) -> str:
    """``12`` → ``₁₂``: a layer index as a subscript."""
    return str(l).translate(_SUB)


def shape_text(shape: Sequence[int]) -> str:
    """``(64, 784)`` → ``64×784``; a scalar is ``scalar``."""
    return "×".join(str(n) for n in shape) if len(shape) else "scalar"


# --------------------------------------------------------------------------- the cmp() of a line


class Verdict(NamedTuple):
    """A ``cmp()`` result: ``exact``, ``close`` or ``WRONG``, and why."""

    word: str  # "exact", "close", "WRONG"
    detail: str = ""  # "max|Δ| 2.4e-07", or the two shapes

    @property
    def ok(self) -> bool:
        return self.word != "WRONG"

    def __str__(self) -> str:
        return f"{self.word}  {self.detail}".rstrip()


def cmp(ours: Tensor, reference: Tensor) -> Verdict:
    """nn-zero-to-hero's ``cmp(name, dt, t)``: is ``ours`` equal to autograd's ``reference``, bit for bit or nearly?

    ``exact``: same shape, every element equal.  ``close``: ``max|Δ| ≤ 10⁻⁵ · max|reference|``
    (float32 sums in another order).  ``WRONG``: anything else, or another shape.
    """
    if tuple(ours.shape) != tuple(reference.shape):
        return Verdict("WRONG", f"shape {shape_text(ours.shape)}, autograd's {shape_text(reference.shape)}")
    if torch.equal(ours, reference):
        return Verdict("exact")
    diff = (ours - reference).abs().max().item() if ours.numel() else 0.0
    scale = reference.abs().max().item() if reference.numel() else 0.0
    word = "close" if diff <= CLOSE * scale else "WRONG"  # NaN anywhere: WRONG
    return Verdict(word, f"max|Δ| {diff:.1e}")


@dataclass
class Line:
    """One printed line: a tensor of the step, its formula, and its verdict against autograd (``None``: not checked)."""

    section: str  # "forward", "backward", "update"
    name: str  # the symbol: "z₁", "δ₄", "∂W₂", "W₁" …
    formula: str  # what it is: "= x W₁ᵀ + b₁"
    value: Tensor
    verdict: Optional[Verdict] = None
    note: str = ""  # a number worth reading: "max|·| 3.1e-01", "= 2.3026"
    code: str = ""  # where our side computes it (named in the hint under the first WRONG line)
    shown_shape: Optional[str] = None  # instead of the value's (a line without a tensor)

    @property
    def shape(self) -> str:
        return self.shown_shape if self.shown_shape is not None else shape_text(self.value.shape)


@dataclass
class Step:
    """The walked step: its lines in the order printed, and what it was run on."""

    header: list[str]
    lines: list[Line] = field(default_factory=list)
    loss_before: float = math.nan
    loss_after: float = math.nan
    numbers: bool = False  # print every element

    def check(self, section: str, name: str, formula: str, ours: Tensor, reference: Tensor | None = None,
              code: str = "", **kw) -> None:  # fmt: skip
        """Add the line of ``ours``, with its ``cmp()`` against autograd's ``reference`` (none: an input, not checked)."""
        verdict = None if reference is None else cmp(ours, reference.detach())
        self.lines.append(Line(section, name, formula, ours, verdict, code=code, **kw))

    def wrong(self) -> list[Line]:
        return [line for line in self.lines if line.verdict is not None and not line.verdict.ok]

    @property
    def passed(self) -> bool:
        return not self.wrong()


# --------------------------------------------------------------------------- the batch


class Batch(NamedTuple):
    x: Tensor  # (B, n_0), float32
    t: Tensor  # (B, K) one-hot targets
    labels: Tensor  # (B,) class indices
    digits: Tensor  # (B,) the pictures' digits
    about: str  # what x and the classes are


class WalkthroughError(Exception):
    """A bad option (``status`` 2) or a data problem (``status`` 1), said in one line."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _option_names(message: str) -> str:
    """The data module names its options as ``src.train`` spells them; here they are ``--val_size``, ``--data_dir``."""
    for theirs, ours in (("--data.val_size", "--val_size"), ("--data.data_dir", "--data_dir")):
        message = message.replace(theirs, ours)
    return message


def load_batch(sizes: Sequence[int], batch: int, seed: int, data_dir: str = "data/", val_size: int = 10_000) -> Batch:
    """The first training batch of ``python -m src.train fit --seed_everything <seed>``, shaped for ``sizes``.

    The data module's own split, standardization (the training split's mean and std) and epoch-0
    shuffle; for an input of ``k² < 784`` the pictures are average-pooled to ``k×k``, and for ``K``
    outputs the class is the digit modulo ``K``.
    """
    from .data.mnist import MNISTDataModule  # Lightning's import: only when data is read
    from .errors import ConfigError, DataError, one_line

    try:
        dm = MNISTDataModule(data_dir=data_dir, batch_size=batch, val_size=val_size, seed=seed)
        dm.setup()  # the split and the standardization, as training's
    except DataError as err:
        raise WalkthroughError(_option_names(one_line(err)), 1) from err
    except (ConfigError, ValueError) as err:
        raise WalkthroughError(_option_names(one_line(err)), 2) from err
    n_train = len(dm.splits["train"][1])
    if batch > n_train:
        raise WalkthroughError(
            f"--batch {batch}: larger than the {n_train} training pictures ({n_train + val_size} of MNIST minus "
            f"--val_size {val_size}); give at most {n_train}",
            2,
        )
    x, _, digits = next(iter(dm.train_dataloader()))  # epoch 0's first batch, as training's first step
    n0, K = sizes[0], sizes[-1]
    k = math.isqrt(n0)
    command = f"python -m src.train fit --seed_everything {seed}" + (f" --data.batch_size {batch}" if batch != 64 else "")
    about = f"{len(digits)} MNIST training pictures (the first batch of `{command}`), standardized"
    if k != SIDE:
        x = F.adaptive_avg_pool2d(x.reshape(-1, 1, SIDE, SIDE), k).reshape(len(x), n0)
        about += f", average-pooled from 28×28 to {k}×{k} = {n0} inputs"
    else:
        about += ", flattened to 784 inputs"
    labels = digits % K
    if K != 10:
        kinds = "even 0 / odd 1" if K == 2 else f"0 … {K - 1}"
        about += f"; class = digit mod {K} ({kinds})"
    return Batch(x.contiguous(), F.one_hot(labels, K).to(x.dtype), labels, digits, about)


# --------------------------------------------------------------------------- our side, recorded


class _Recorded:
    """The activation's Function with what ``backprop`` asks of it kept: each ``z``, ``h`` and each ``∂L/∂h``, ``δ``.

    ``forward_pass`` calls ``value(z_l)`` once per hidden layer, upwards; ``backward_pass`` calls
    ``derivative(∂L/∂h_{l−1}, h_{l−1})`` once per layer below the top, downwards, and its result is
    ``δ_{l−1}``.  Nothing is changed: each call goes to the Function itself.
    """

    def __init__(self, function) -> None:
        self.function = function
        self.values: list[tuple[Tensor, Tensor]] = []  # (z_l, h_l), l = 1 … L−1
        self.derivatives: list[tuple[Tensor, Tensor]] = []  # (∂L/∂h_l, δ_l), l = L−1 … 1

    def value(self, z: Tensor, out: Tensor | None = None) -> Tensor:
        h = self.function.value(z) if out is None else self.function.value(z, out=out)
        self.values.append((z, h))
        return h

    def derivative(self, grad: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
        delta = self.function.derivative(grad, y) if out is None else self.function.derivative(grad, y, out=out)
        self.derivatives.append((grad, delta))
        return delta


class _recording:
    """``with _recording("sigmoid") as (name, record)``: ``name`` is an activation that ``backprop`` records in ``record``."""

    def __init__(self, activation: str) -> None:
        self.record = _Recorded(ACTIVATION_FUNCTIONS[activation])
        self.name = f"{activation} (recorded by src.walkthrough)"

    def __enter__(self) -> tuple[str, _Recorded]:
        ACTIVATION_FUNCTIONS[self.name] = self.record
        return self.name, self.record

    def __exit__(self, *exc) -> None:
        del ACTIVATION_FUNCTIONS[self.name]


def _ours(x: Tensor, t: Tensor, weights: list[Tensor], biases: list[Tensor], activation: str):
    """Our forward and backward: ``(logits, loss, δ_L, Gradients, record, failure)`` from the project's code.

    ``backward_pass`` raising (a product of the wrong shapes, the classic ``δ Wᵀ``) gives ``Gradients``
    ``None`` and ``failure`` the error in one line; what it recorded before that is kept.
    """
    with _recording(activation) as (recorded, record):
        logits, tape = backprop.forward_pass(x, weights, biases, recorded)
        z = logits.detach().requires_grad_()  # the loss's backward alone: its one node
        loss = CrossEntropyLoss().from_logits(z, t)  # the fused SoftmaxCrossEntropy, as training calls it
        loss.backward()
        delta = z.grad  # δ_L = (ŷ − t)/B, from SoftmaxCrossEntropy.backward
        grads, failure = None, ""
        try:
            grads = backprop.backward_pass(delta, weights, tape, recorded)
        except Exception as err:  # noqa: BLE001 (a planted bug may raise anything: it becomes a WRONG line)
            failure = " ".join(f"{type(err).__name__}: {err}".split())
    return logits, loss.detach(), delta, grads, record, failure


def _autograd(twin: SequentialNet, x: Tensor, labels: Tensor):
    """The twin's step with autograd: every module's output with its ``.grad``, ``ŷ``, the loss, ``∂L/∂x``."""
    x = x.clone().requires_grad_()
    zs, hs, h = [], [], x
    for module in twin.net[:-1]:  # not the output activation: the loss takes the logits
        h = module(h)
        if h.requires_grad:
            h.retain_grad()
        (zs if isinstance(module, nn.Linear) else hs).append(h)
    y_hat = twin.net[-1](zs[-1]).detach()
    loss = F.cross_entropy(zs[-1], labels)
    loss.backward()
    return zs, hs, y_hat, loss.detach(), x


def _summary(value: Tensor) -> str:
    return f"= {value.item():.4f}" if value.dim() == 0 else f"max|·| {value.abs().max().item():.1e}"


# --------------------------------------------------------------------------- the walk


class _Sides(NamedTuple):
    """Both sides of the step: ours (the project's code) and autograd's on the twin."""

    W: list[Tensor]  # our W_1 … W_L, (n_l, n_{l−1})
    b: list[Tensor]  # our b_1 … b_L, (n_l,)
    logits: Tensor  # our z_L
    loss: Tensor
    delta_L: Tensor  # δ_L, from SoftmaxCrossEntropy.backward
    grads: Optional[backprop.Gradients]  # None: backward_pass raised
    record: _Recorded  # z_l, h_l, ∂L/∂h_l, δ_l as backprop computed them
    failure: str  # backward_pass's error, in one line
    twin: SequentialNet
    linear: list[nn.Linear]  # the twin's layers, with .weight.grad, .bias.grad
    zs: list[Tensor]  # autograd's z_1 … z_L (with .grad)
    hs: list[Tensor]  # autograd's h_1 … h_{L−1} (with .grad)
    y_hat: Tensor
    loss_ref: Tensor
    x_ref: Tensor  # the input, with .grad


def walk(
    batch: Batch, sizes: Sequence[int], activation: str = "sigmoid", seed: int = 0, lr: float = DEFAULT_LR
) -> Step:
    """One GD step of the ``sizes`` net on ``batch``, every tensor of ours beside autograd's (see the module docstring)."""
    n0, hidden, K = sizes[0], list(sizes[1:-1]), sizes[-1]
    L = len(sizes) - 1
    layers = FeedForwardNet(n0, hidden, K, activation, "softmax", "glorot", seed=seed).layers()
    W = [w.detach().clone() for w, _ in layers]
    b = [bias.detach().clone() for _, bias in layers]
    twin = SequentialNet(n0, hidden, K, activation, "softmax", "glorot", seed=seed)
    s = _Sides(W, b, *_ours(batch.x, batch.t, W, b, activation), twin,
               [m for m in twin.net if isinstance(m, nn.Linear)], *_autograd(twin, batch.x, batch.labels))  # fmt: skip
    if len(s.record.values) != L - 1 or (s.grads is not None and len(s.record.derivatives) != L - 1):
        raise RuntimeError(f"backprop called the activation {len(s.record.values)}, {len(s.record.derivatives)} times, not {L - 1}")

    largest = max(max(len(batch.x) * n, n * m) for m, n in zip(sizes[:-1], sizes[1:]))
    step = Step(_header(batch, sizes, activation, seed), numbers=largest <= NUMBERS_UP_TO, loss_before=s.loss.item())
    _forward_lines(step, s, batch, activation)
    _backward_lines(step, s, activation)
    if s.grads is not None:  # (None: backward_pass raised, nothing to update with)
        _update_lines(step, s, batch, activation, lr)
    return step


def _inputs(L: int) -> list[str]:
    """``d_{l−1}``, layer l's input, for l = 1 … L: ``x``, ``h₁``, …"""
    return ["x", *(f"h{sub(l)}" for l in range(1, L))]


def _forward_lines(step: Step, s: _Sides, batch: Batch, activation: str) -> None:
    """x → z₁ → h₁ → … → z_L → ŷ → L, with the weights each layer starts from."""
    L, g, fn = len(s.W), _SYMBOL[activation], _fn(activation)
    d = _inputs(L)
    step.check("forward", "x", "the batch", batch.x)
    step.check("forward", "t", "one-hot targets", batch.t)
    for l in range(1, L + 1):
        step.check("forward", f"W{sub(l)}", "glorot", s.W[l - 1], s.linear[l - 1].weight)
        step.check("forward", f"b{sub(l)}", "zeros (glorot)", s.b[l - 1], s.linear[l - 1].bias)
        z = s.record.values[l - 1][0] if l < L else s.logits
        logits_note = "   the logits" if l == L else ""
        step.check("forward", f"z{sub(l)}", f"= {d[l - 1]} W{sub(l)}ᵀ + b{sub(l)}{logits_note}", z, s.zs[l - 1], "forward_pass")
        if l < L:
            step.check("forward", f"h{sub(l)}", f"= {g}(z{sub(l)})", s.record.values[l - 1][1], s.hs[l - 1], f"{fn}.value")
    step.check("forward", "ŷ", f"= softmax(z{sub(L)})", softmax(s.logits), s.y_hat, "Softmax.forward")
    step.check("forward", "L", "= −(1/B) Σ t ⊙ log ŷ", s.loss, s.loss_ref, "SoftmaxCrossEntropy.forward",
               note=f"= {s.loss.item():.4f}")  # fmt: skip


def _backward_lines(step: Step, s: _Sides, activation: str) -> None:
    """δ_L, then per layer ∂W_l, ∂b_l, ∂L/∂h_{l−1}, δ_{l−1}; last ∂L/∂x (or the error backward_pass raised)."""
    L, g_prime, fn, here = len(s.W), _PRIME[activation], _fn(activation), "(src/hand/backprop.py)"
    d = _inputs(L)
    step.check("backward", f"δ{sub(L)}", f"= ∂L/∂z{sub(L)} = (ŷ − t)/B", s.delta_L, s.zs[-1].grad,
               "SoftmaxCrossEntropy.backward (src/hand/losses.py)")  # fmt: skip
    for l in range(L, 0, -1):
        if s.grads is not None:  # (None: backward_pass raised; the δ's it computed before that still print)
            step.check("backward", f"∂W{sub(l)}", f"= δ{sub(l)}ᵀ {d[l - 1]}", s.grads.W[l - 1],
                       s.linear[l - 1].weight.grad, f"backward_pass: dW {here}")  # fmt: skip
            step.check("backward", f"∂b{sub(l)}", f"= Σ_batch δ{sub(l)}", s.grads.b[l - 1],
                       s.linear[l - 1].bias.grad, f"backward_pass: db {here}")  # fmt: skip
        if l > 1 and L - l < len(s.record.derivatives):
            grad_h, delta = s.record.derivatives[L - l]  # what backward_pass handed g.derivative, and what it got back
            step.check("backward", f"∂L/∂h{sub(l - 1)}", f"= δ{sub(l)} W{sub(l)}", grad_h, s.hs[l - 2].grad,
                       f"backward_pass: grad_d = δ_l W_l {here}")  # fmt: skip
            step.check("backward", f"δ{sub(l - 1)}", f"= ∂L/∂h{sub(l - 1)} ⊙ {g_prime.format(l=sub(l - 1))}", delta,
                       s.zs[l - 2].grad, f"{fn}.derivative (src/hand/functional.py)")  # fmt: skip
    if s.grads is None:
        step.lines.append(Line("backward", "backward_pass", f"raised {s.failure}", torch.tensor(math.nan),
                               Verdict("WRONG", "no gradients"), note="—", code=f"backward_pass {here}", shown_shape="—"))  # fmt: skip
        return
    step.check("backward", "∂L/∂x", "= δ₁ W₁", s.grads.x, s.x_ref.grad, f"backward_pass: dx {here}")


def _update_lines(step: Step, s: _Sides, batch: Batch, activation: str, lr: float) -> None:
    """Our GD on our gradients beside torch.optim.SGD on autograd's; then the loss on the same batch."""
    before = [p for pair in zip(s.W, s.b) for p in pair]  # W_1, b_1, W_2, …
    ours_grads = [gr for pair in zip(s.grads.W, s.grads.b) for gr in pair]
    params = [nn.Parameter(p.clone()) for p in before]
    for p, gr in zip(params, ours_grads):
        p.grad = gr.clone() if gr.shape == p.shape else None  # a gradient of the wrong shape is not applied
    GD(params, lr=lr).step()
    torch.optim.SGD(s.twin.parameters(), lr=lr).step()
    twin_params = [p for lin in s.linear for p in (lin.weight, lin.bias)]
    for i, (p, old, gr, ref) in enumerate(zip(params, before, ours_grads, twin_params)):
        kind, new = "Wb"[i % 2], p.detach()
        name = f"{kind}{sub(i // 2 + 1)}"
        if p.grad is None:
            why = f"not applied: ∂{name} is {shape_text(gr.shape)}, {name} is {shape_text(new.shape)}"
            step.lines.append(Line("update", name, f"← {name} − η ∂{name}", new, Verdict("WRONG", why),
                                   code="backward_pass (src/hand/backprop.py)"))  # fmt: skip
            continue
        change = new - old
        ratio = f"‖Δ{kind}‖/‖{kind}‖ {(change.norm() / old.norm()).item():.1e}" if old.norm() > 0 else f"‖{kind}‖ was 0"
        note = f"max|Δ{kind}| {change.abs().max().item():.1e}  {ratio}"
        step.check("update", name, f"← {name} − η ∂{name}", new, ref, "GD (src/hand/optim.py)", note=note)

    with torch.no_grad():  # the loss on the same batch, after the step: ours and the twin's
        logits = backprop.forward_pass(batch.x, params[0::2], params[1::2], activation)[0]
        after = CrossEntropyLoss().from_logits(logits, batch.t)
        after_ref = F.cross_entropy(s.twin.logits(batch.x), batch.labels)
    step.loss_after = after.item()
    verdict = "lower" if step.loss_after < step.loss_before else "NOT lower: the step overshot, try a smaller --lr"
    step.check("update", "L", "after the step, same batch", after, after_ref, "the updated weights",
               note=f"= {step.loss_after:.4f} (was {step.loss_before:.4f}: {verdict})")  # fmt: skip


def _header(batch: Batch, sizes: Sequence[int], activation: str, seed: int) -> list[str]:
    """What was run: the net, the batch, which code is ours and what it is checked against."""
    classes = f"  →  classes {_digits(batch.labels)}" if sizes[-1] != 10 else ""
    return [
        f"net       {'-'.join(str(n) for n in sizes)}: {activation} hidden layers, softmax output, glorot weights "
        f"(seed {seed}), float32",
        f"batch     {batch.about}",
        f"          digits {_digits(batch.digits)}{classes}",
        "ours      src/hand/backprop.py forward_pass, backward_pass; δ from SoftmaxCrossEntropy.backward "
        "(src/hand/losses.py); GD (src/hand/optim.py)",
        "autograd  the nn.Sequential twin (SequentialNet, src/hand/nets.py) from the same weights; "
        "F.cross_entropy; torch.optim.SGD",
        f"verdict   exact: every bit equal · close: max|Δ| ≤ {CLOSE:.0e}·max|autograd| · WRONG: otherwise, or another shape",
    ]


def _fn(activation: str) -> str:
    return ACTIVATION_FUNCTIONS[activation].__name__


def _digits(values: Tensor, most: int = 16) -> str:
    shown = " ".join(str(int(v)) for v in values[:most])
    return shown + (" …" if len(values) > most else "")


# --------------------------------------------------------------------------- printing


_TITLES = {
    "forward": "forward: x → z₁ → h₁ → … → logits → ŷ → L",
    "backward": "backward: δ_L = (ŷ − t)/B, then per layer ∂W_l = δ_lᵀ h_{l−1}, ∂b_l = Σ δ_l, "
    "δ_{l−1} = (δ_l W_l) ⊙ g'(z_{l−1})",
    "update": "update: W ← W − η ∂W (GD)",
}


def _rows(value: Tensor) -> list[str]:
    """Every element, 5 decimals: a row per line (a vector on one line)."""
    if value.dim() == 0:
        return []
    rows = value.reshape(1, -1) if value.dim() == 1 else value.reshape(value.shape[0], -1)
    return ["[" + " ".join(f"{v: .5f}" for v in row.tolist()) + " ]" for row in rows]


def format_step(step: Step, lr: float) -> str:
    """The printed walk-through: the header, then one line per tensor in three sections, then the summary."""
    out = ["One training step, walked through (src.walkthrough)", *step.header]
    name_w = max(len(line.name) for line in step.lines)
    width = max(len(f"{line.name:<{name_w}}  {line.formula}") for line in step.lines if len(line.formula) < 60)
    shape_w = max(len(line.shape) for line in step.lines)
    note_w = max(len(line.note or _summary(line.value)) for line in step.lines)
    section = None
    for line in step.lines:
        if line.section != section:
            section = line.section
            title = _TITLES[section] + (f", η = {lr:g}" if section == "update" else "")
            out += ["", title]
        label = f"{line.name:<{name_w}}  {line.formula}"
        verdict = "" if line.verdict is None else str(line.verdict)
        if len(label) > width:  # a long formula: on its own line, the columns under it
            out.append(f"  {label}")
            label = ""
        note = line.note or _summary(line.value)
        out.append(f"  {label:<{width}}  {line.shape:>{shape_w}}  {note:<{note_w}}  {verdict}".rstrip())
        if step.numbers:
            out += [f"      {row}" for row in _rows(line.value)]
    wrong = step.wrong()
    out.append("")
    if wrong:
        groups = {}
        for w in wrong:
            groups.setdefault(w.section, []).append(w.name)
        first = next((w for w in wrong if w.section == "backward"), wrong[0])
        lines_word = "line" if len(wrong) == 1 else "lines"
        out.append(f"{len(wrong)} {lines_word} WRONG: " + "; ".join(f"{sec} {', '.join(names)}" for sec, names in groups.items()))
        if first.name == "backward_pass":
            out.append("backward_pass stopped with an error after the last line above it: look in src/hand/backprop.py "
                       "for the product of the wrong shapes")  # fmt: skip
        elif first.section == "backward":
            out.append(f"the first WRONG line of the backward pass is {first.name}, computed by {first.code}: the "
                       "lines after it inherit its error, so look there first")  # fmt: skip
        else:
            out.append(f"the first WRONG line is {first.name}, computed by {first.code}")
    else:
        checked = sum(line.verdict is not None for line in step.lines)
        out.append(
            f"all {checked} checked lines exact or close: our derivation agrees with autograd; "
            f"loss {step.loss_before:.4f} → {step.loss_after:.4f} after one step"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- the graph


#: what ``step_graph`` knows of a Function node: (its output, the Function's name, the output's label, the gradient's)
_Named = dict[object, tuple[Tensor, str, str, str]]


def step_graph(sizes: Sequence[int] = DEFAULT_SIZES, activation: str = "sigmoid", batch: int = 64) -> str:
    """The step's autograd graph as a Mermaid flowchart (the text inside a ```mermaid block).

    As micrograd's ``draw_dot`` traces ``_prev`` from the output, this traces ``grad_fn.next_functions``
    from the loss of the per-op chain (our Functions ``Linear``, the activation's, ``SoftmaxCrossEntropy``,
    each one autograd node: :meth:`~src.hand.nets.FeedForwardNet.layer_outputs`' path), then runs its
    backward.  Each Function is a node labelled with its output and that output's gradient, each with
    its shape as measured; the parameters are leaves with their gradients; edges point forward.
    Shapes depend on ``sizes`` and ``batch`` only (the input is zeros), so the text is deterministic.
    """
    net = FeedForwardNet(sizes[0], list(sizes[1:-1]), sizes[-1], activation, "softmax", "glorot", seed=0, fused=False)
    x = torch.zeros(batch, sizes[0])
    t = F.one_hot(torch.zeros(batch, dtype=torch.long), sizes[-1]).float()
    loss, named = _chain(net, x, t, activation)
    order = _trace(loss.grad_fn)
    loss.backward()
    # the inputs that need no gradient have no node in autograd's graph: drawn as leaves all the same
    data_leaves = {
        ("Linear", 0): ("input", f"x · {shape_text(x.shape)}"),
        ("SoftmaxCrossEntropy", 1): ("target", f"t · {shape_text(t.shape)} one-hot"),
    }
    return _mermaid(order, named, {id(p): name for name, p in net.named_parameters()}, data_leaves)


def _chain(net: FeedForwardNet, x: Tensor, t: Tensor, activation: str) -> tuple[Tensor, _Named]:
    """The per-op chain's loss, one of our Functions per op, and each Function node's output and labels."""
    L, g = net.num_layers, _SYMBOL[activation]
    d = _inputs(L)
    named: _Named = {}
    out = x
    for l, (W, b) in enumerate(net.layers(), start=1):
        z = HF.linear(out, W, b)
        named[z.grad_fn] = (z, "Linear", f"z{sub(l)} = {d[l - 1]} W{sub(l)}ᵀ + b{sub(l)}", f"δ{sub(l)} = ∂L/∂z{sub(l)}")
        out = z
        if l < L:
            out = HF.ACTIVATIONS[activation](z)
            named[out.grad_fn] = (out, _fn(activation), f"h{sub(l)} = {g}(z{sub(l)})", f"∂L/∂h{sub(l)}")
    loss = CrossEntropyLoss().from_logits(out, t)
    named[loss.grad_fn] = (loss, "SoftmaxCrossEntropy", f"L = −(1/B) Σ t ⊙ log softmax(z{sub(L)})", "∂L/∂L = 1")
    for tensor, *_ in named.values():
        tensor.retain_grad()
    return loss, named


def _trace(root) -> list:
    """Every node of autograd's graph below ``root``, inputs before outputs (post-order): the order of the step."""
    order: list = []
    seen: set = set()

    def visit(node) -> None:
        if node is None or node in seen:
            return
        seen.add(node)
        for parent, _ in node.next_functions:
            visit(parent)
        order.append(node)

    visit(root)
    return order


def _mermaid(order: list, named: _Named, param_names: dict[int, str], data_leaves: dict) -> str:
    """The traced nodes as a Mermaid flowchart: each Function, the leaves that enter it, the edges into it."""
    lines = ["flowchart TB"]
    ids: dict[object, str] = {}  # Function node → its Mermaid id, f1, f2, … in the order of the step
    for node in order:
        if type(node).__name__ == "AccumulateGrad":  # a parameter: a leaf, drawn with its Function
            continue
        tensor, function, out_label, grad_label = named.get(node, (None, type(node).__name__, "?", "?"))
        node_id = ids[node] = f"f{len(ids) + 1}"
        sources = []
        for index, (parent, _) in enumerate(node.next_functions):
            if parent is None:  # x, t (or the loss's ε): drawn once where it enters
                if (function, index) in data_leaves:
                    leaf_id, text = data_leaves.pop((function, index))
                    lines.append(f'    {leaf_id}(["{text}"])')
                    sources.append(leaf_id)
            elif type(parent).__name__ == "AccumulateGrad":
                p, name = parent.variable, param_names[id(parent.variable)]
                symbol = f"{name[0]}{sub(int(name[1:]))}"
                lines.append(f'    {name}(["{symbol} · {shape_text(p.shape)}<br/>∂L/∂{symbol} · {shape_text(p.grad.shape)}"])')
                sources.append(name)
            else:
                sources.append(ids[parent])
        shape = shape_text(tensor.shape) if tensor is not None else "?"
        grad = shape_text(tensor.grad.shape) if tensor is not None and tensor.grad is not None else "?"
        lines.append(f'    {node_id}["{function}<br/>{out_label} · {shape}<br/>{grad_label} · {grad}"]')
        lines += [f"    {source} --> {node_id}" for source in sources]
    return "\n".join(lines) + "\n"


def graph_markdown(sizes: Sequence[int], activation: str, batch: int) -> str:
    """The Markdown file ``--graph`` writes: one line saying what it is, then the ```mermaid block."""
    command = "python -m src.walkthrough --graph FILE"
    if tuple(sizes) != DEFAULT_SIZES:
        command += " --sizes " + " ".join(str(n) for n in sizes)
    return (
        f"The graph of one training step of the {'-'.join(str(n) for n in sizes)} net ({activation}, batch {batch}): "
        f"our Functions, forward; each with its output and that output's gradient (`{command}`).\n\n"
        f"```mermaid\n{step_graph(sizes, activation, batch)}```\n"
    )


# --------------------------------------------------------------------------- the command


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m src.walkthrough",
        description="One training step of the net on a real MNIST batch, in the order of the derivation: every "
        "tensor with its shape and a cmp() against autograd (exact / close / WRONG); exit 1 if a line is WRONG.",
    )
    p.add_argument("--sizes", type=int, nargs="+", metavar="N", default=list(DEFAULT_SIZES),
                   help="layer sizes, input first (a square k², the pictures pooled to k×k), output last (2 … 10 "
                   "classes: digit mod N); default 784 500 250 100 10; e.g. 4 3 2 for a tiny net whose numbers are printed")  # fmt: skip
    p.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="sigmoid", help="the hidden layers' activation (default sigmoid)")
    p.add_argument("--seed", type=int, default=0, help="the initial weights' and the data's seed, as --seed_everything (default 0)")
    p.add_argument("--batch", type=int, help="batch size (default 64; 2 with --sizes other than the default)")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"GD's learning rate η (default {DEFAULT_LR}, configs/baseline.yaml)")
    p.add_argument("--graph", metavar="FILE", help="also write the step's graph: FILE.md a ```mermaid block, FILE.mmd Mermaid alone")
    p.add_argument("--data_dir", default="data/", help="the folder holding MNIST/raw/ (default data/)")
    p.add_argument("--val_size", type=int, default=10_000,
                   help="pictures held out of training, as src.train's --data.val_size (default 10000)")  # fmt: skip
    return p


def _bad_option(args: argparse.Namespace) -> str | None:
    """The first bad value, as one line naming it and what is allowed; ``None`` when all are fine."""
    sizes = args.sizes
    text = " ".join(str(n) for n in sizes)
    if len(sizes) < 3:
        return f"--sizes {text}: give at least three sizes (input, one or more hidden layers, output), e.g. 4 3 2"
    if any(n < 1 for n in sizes):
        return f"--sizes {text}: every size must be a whole number ≥ 1"
    k = math.isqrt(sizes[0])
    if k * k != sizes[0] or k > SIDE:
        return (f"--sizes {text}: the input size {sizes[0]} is not a square k² with k ≤ 28 (the pictures are "
                "average-pooled to k×k); allowed: 1, 4, 9, 16, …, 784")  # fmt: skip
    if not 2 <= sizes[-1] <= 10:
        return f"--sizes {text}: the output size {sizes[-1]} must be 2 … 10 (the class is the digit mod it)"
    if not 0 <= args.seed < MAX_SEED:
        return f"--seed {args.seed}: must be a whole number in [0, 2**63)"
    if args.batch is not None and args.batch < 1:
        return f"--batch {args.batch}: must be a whole number ≥ 1"
    if not (args.lr > 0 and math.isfinite(args.lr)):
        return f"--lr {args.lr}: must be a positive finite number"
    if args.val_size < 1:
        return f"--val_size {args.val_size}: must be a whole number ≥ 1"
    if args.graph is not None:
        path = Path(args.graph)
        if path.suffix not in (".md", ".mmd"):
            return f"--graph {args.graph}: name a .md file (a ```mermaid block) or a .mmd file (Mermaid alone)"
        if path.is_dir():
            return f"--graph {args.graph}: is a folder; name a .md or .mmd file"
        if not path.parent.is_dir():
            return f"--graph {args.graph}: the folder {path.parent} does not exist"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    problem = _bad_option(args)
    if problem is None:
        try:  # the nets' own checks (a net too large for this machine's memory), before any data is read
            FeedForwardNet(args.sizes[0], args.sizes[1:-1], args.sizes[-1], args.activation, seed=0)
        except ValueError as err:
            problem = f"--sizes {' '.join(str(n) for n in args.sizes)}: {err}"
    if problem is not None:
        print(f"python -m src.walkthrough: error: {problem}", file=sys.stderr)
        return 2
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    sizes = tuple(args.sizes)
    batch_size = args.batch or (64 if sizes == DEFAULT_SIZES else 2)
    try:
        batch = load_batch(sizes, batch_size, args.seed, args.data_dir, args.val_size)
    except WalkthroughError as err:
        print(f"python -m src.walkthrough: error: {err}", file=sys.stderr)
        return err.status
    step = walk(batch, sizes, args.activation, args.seed, args.lr)
    print(format_step(step, args.lr))
    if args.graph is not None:
        from .errors import OutputError
        from .system.runs import write_text_atomic

        mermaid_only = args.graph.endswith(".mmd")
        text = (step_graph if mermaid_only else graph_markdown)(sizes, args.activation, batch_size)
        try:
            write_text_atomic(args.graph, text)
        except OutputError as err:
            print(f"python -m src.walkthrough: error: {err}", file=sys.stderr)
            return 1
        print(f"graph written to {args.graph}")
    return 0 if step.passed else 1


if __name__ == "__main__":
    sys.exit(main())
