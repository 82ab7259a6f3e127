"""How each piece is checked: :func:`check_function` (one :class:`~src.instruments.verification.specs.FunctionSpec`,
every column of the table), :func:`check_optimizer` (GD and Adam in lockstep with ``torch.optim``),
:func:`check_net` (the whole net against its ``nn.Sequential`` twin) and :func:`verify_all` (one row per piece).
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...hand import fused as FF
from ...hand import losses as HL
from ...hand import optim as HO
from ...hand.nets import FeedForwardNet, SequentialNet
from .hints import _adam_hint, compare_hint, _error_hint, _gradcheck_hint, _shape_hint, _values_and_grads
from .specs import B, FunctionSpec, _onehot, OPTIMIZER_SETTINGS, SIZES, SPECS
from .table import Cell, NA, Row

__all__ = ["TOL", "check_function", "check_net", "check_optimizer", "lockstep", "verify_all"]

TOL = {torch.float32: (1e-5, 1e-7), torch.float64: (1e-10, 1e-12)}  # (rtol of max|ref|, atol)
#: extreme inputs in float32: saturated tanh's 1 − t² cancels, and the two formulas (ours g − g·t·t,
#: torch's g·(1 − t²)) round differently, by up to ~5e-5 of the largest gradient; bugs are O(1) factors
EXTREME_TOL = (1e-3, 1e-6)
STEPS = 25  # lockstep steps


def _max_diff(ours: Sequence[Tensor], ref: Sequence[Tensor], dtype: torch.dtype, sizes: Sequence[int],
              tol: Optional[tuple[float, float]] = None) -> Cell:  # fmt: skip
    """Largest |ours − ref| over matching tensors; pass if below rtol·max|ref| + atol, all finite."""
    rtol, atol = tol or TOL[dtype]
    worst, hint, ok = 0.0, "", True
    for a, b in zip(ours, ref):
        if a is None or b is None:
            if (a is None) != (b is None):
                ok, hint = False, "a gradient is missing (None) on one side"
            continue
        if a.shape != b.shape:
            return Cell(False, "shape", _shape_hint(a.shape, b.shape))
        if not torch.isfinite(a).all():
            return Cell(False, "nan/inf", "ours is not finite where PyTorch's is" if torch.isfinite(b).all() else "neither is finite")
        d = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
        worst = max(worst, d)
        if d > atol + rtol * float(b.double().abs().max()) and ok:
            ok, hint = False, compare_hint(a, b, sizes)
    return Cell(ok, f"{worst:.0e}", hint)


def _worst(cells: Sequence[Cell]) -> Cell:
    """The first failing cell, else a passing one with the largest difference of all."""
    bad = [c for c in cells if c.ok is False]
    return bad[0] if bad else Cell(True, f"{max(float(c.text) for c in cells):.0e}")


def _cast(inputs: Sequence[Any], dtype: torch.dtype) -> list[Any]:
    return [
        x.detach().to(dtype).requires_grad_(x.requires_grad) if isinstance(x, Tensor) and x.is_floating_point() else x
        for x in inputs
    ]


def _sizes(inputs: Sequence[Tensor]) -> list[int]:
    shapes = [x.shape for x in inputs if isinstance(x, Tensor)]
    return [n for s in shapes for n in (s[0] if len(s) else 1, s.numel())]


def check_function(spec: FunctionSpec, cls: Optional[type] = None) -> Row:
    """Run every column that applies to ``spec`` (with ``cls`` in place of its Function class)."""
    start = time.perf_counter()
    fn, row = spec.fn(cls), Row(spec.name)
    check_fn = spec.gradcheck_call(cls or spec.cls) if spec.gradcheck_call else fn
    gen = torch.Generator().manual_seed(0)
    x64 = spec.inputs(gen)
    sizes = _sizes(x64)
    with torch.random.fork_rng(devices=[]):  # gradcheck's fast mode draws from the global generator
        torch.manual_seed(0)
        for key, check, applies in (
            ("gradcheck", torch.autograd.gradcheck, True),
            ("gradgrad", torch.autograd.gradgradcheck, spec.twice),
        ):
            if not applies:
                row.cells[key] = NA
                continue
            try:
                check(check_fn, x64, eps=1e-6, atol=1e-5, rtol=1e-3)
                row.cells[key] = Cell(True, "")
            except Exception as err:  # GradcheckError, or the engine refusing a gradient
                row.cells[key] = Cell(False, "", _gradcheck_hint(check_fn, x64, sizes, err))
    for dtype, key, maker in (
        (torch.float32, "fp32", spec.inputs),
        (torch.float64, "fp64", spec.inputs),
        (torch.float32, "extreme", spec.extreme),
    ):
        if maker is None:
            row.cells[key] = NA
            continue
        xs = _cast(maker(torch.Generator().manual_seed(1)), dtype)
        row.cells[key] = _compare(fn, spec.reference, xs, dtype, sizes, tol=EXTREME_TOL if key == "extreme" else None)
    row.cells["kink"] = _compare(fn, spec.reference, spec.kink(), torch.float64, sizes, exact=True) if spec.kink else NA
    row.cells["lockstep"] = NA
    if spec.hint is not None and not row.passed:
        hint = spec.hint(fn, spec.reference, x64)
        for cell in row.cells.values():
            if cell.ok is False and hint:
                cell.hint = hint
    row.seconds = time.perf_counter() - start
    return row


def _compare(fn, reference, xs, dtype, sizes, exact: bool = False, tol=None) -> Cell:
    gen = torch.Generator().manual_seed(2)
    try:
        with torch.no_grad():
            out = reference(*[x.detach() if isinstance(x, Tensor) else x for x in xs])
        v = torch.randn(out.shape, generator=gen, dtype=dtype) if out.dim() else None
        ref = _values_and_grads(reference, xs, v)
        ours = _values_and_grads(fn, xs, v)
    except Exception as err:  # the backward returned a gradient of the wrong shape, …
        return Cell(False, "error", _error_hint(err))
    if exact:  # the convention at the kink: the same value, not just close
        same = all((a is None and b is None) or (a is not None and b is not None and a.shape == b.shape and torch.equal(a, b))
                   for a, b in zip(ours, ref))  # fmt: skip
        return Cell(True, "same") if same else Cell(False, "differs", "the gradient at the kink differs from PyTorch's convention (ReLU′(0) = 0, ∂|w|/∂w = 0 at 0)")
    return _max_diff(ours, ref, dtype, sizes, tol)


# ---------------------------------------------------------------- optimizers
def lockstep(ours_cls: type, ref_cls: type, kw: dict, dtype: torch.dtype = torch.float64, grad_scale: float = 1.0,
             steps: int = STEPS, *, ours_kw: Optional[dict] = None,
             seed: int = 3) -> tuple[list[Tensor], list[Tensor], list[Tensor], torch.optim.Optimizer]:  # fmt: skip
    """Same start, each side's own gradients of the same loss; ``(initial, ours, torch's, our optimizer)`` after ``steps``.

    ``ours``, ``torch's``: the parameters each optimizer stepped (the keys of its state);
    ``ours_kw``: our optimizer's keywords where they differ from ``kw`` (``foreach``); ``seed``: the
    start and the inputs.  Shared by :func:`check_optimizer` and ``tests/test_optim.py``.
    """
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(5, 4, generator=gen, dtype=dtype), torch.randn(5, generator=gen, dtype=dtype)]
    x = torch.randn(7, 4, generator=gen, dtype=dtype)
    sides, opts = [], []
    for cls, cls_kw in ((ours_cls, kw if ours_kw is None else ours_kw), (ref_cls, kw)):
        params = [p.clone().requires_grad_(True) for p in init]
        opt = cls(params, **cls_kw)
        for _ in range(steps):
            opt.zero_grad()
            (torch.tanh(x @ params[0].t() + params[1]).pow(2).sum() * grad_scale).backward()
            opt.step()
        sides.append(params)
        opts.append(opt)
    return init, sides[0], sides[1], opts[0]


def check_optimizer(name: str, ours_cls: Optional[type] = None) -> Row:
    """GD or Adam in lockstep with torch.optim for 25 steps (fp32, fp64, and gradients of 1e4 and 1e-4 scale)."""
    start = time.perf_counter()
    base, ref_cls, settings = OPTIMIZER_SETTINGS[name]
    ours_cls = ours_cls or base
    row = Row(f"{name} (vs torch.optim, {STEPS} steps)", {"gradcheck": NA, "gradgrad": NA, "kink": NA})
    for key, dtype, scales in (("fp32", torch.float32, (1.0,)), ("fp64", torch.float64, (1.0,)),
                               ("extreme", torch.float32, (1e4, 1e-4))):  # fmt: skip
        cells = []
        for kw in settings:
            for s in scales:
                init, ours, ref, _ = lockstep(ours_cls, ref_cls, kw, dtype, s)
                cell = _max_diff(ours, ref, dtype, (), EXTREME_TOL if key == "extreme" else None)
                if cell.ok is False:  # what the first step says: its ratio to torch's first step
                    i1, o1, r1, _ = lockstep(ours_cls, ref_cls, kw, torch.float64, s, steps=1)
                    step_ours = torch.cat([(a - b).flatten() for a, b in zip(o1, i1)])
                    step_ref = torch.cat([(a - b).flatten() for a, b in zip(r1, i1)])
                    cell.hint = "first step: " + (_adam_hint(kw, step_ours, step_ref) or compare_hint(step_ours, step_ref))
                cells.append(cell)
        row.cells[key] = _worst(cells)
    ok = all(row.cells[k].ok for k in ("fp32", "fp64", "extreme"))
    row.cells["lockstep"] = Cell(ok, f"{len(settings)}×{STEPS}")
    row.seconds = time.perf_counter() - start
    return row


# ----------------------------------------------------------------- the net
def _nets(activation: str, dtype: torch.dtype, fused: bool = True) -> tuple[FeedForwardNet, SequentialNet]:
    """The custom net on :data:`SIZES` and its ``nn.Sequential`` twin, built from the same seed (same weights)."""
    kw = dict(inputs=SIZES[0], hidden_layers=list(SIZES[1:-1]), outputs=SIZES[-1], activation=activation, seed=0, dtype=dtype)
    return FeedForwardNet(fused=fused, **kw), SequentialNet(**kw)


def _loss_ours(net: FeedForwardNet, x: Tensor, t: Tensor) -> Tensor:
    return HL.CrossEntropyLoss().from_logits(net.logits(x), t, net.weights())


def _loss_twin(net: SequentialNet, x: Tensor, t: Tensor) -> Tensor:
    return F.cross_entropy(net.logits(x), t.argmax(-1))


def _net_gradcheck(activation: str, x: Tensor, t: Tensor) -> Cell:
    """gradcheck of the whole loss as a function of the custom net's parameters (fp64)."""
    net, _ = _nets(activation, torch.float64)
    params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]

    def loss_of(*ps: Tensor) -> Tensor:
        return HL.softmax_cross_entropy(FF.feed_forward(x, activation, list(ps)), t)

    try:
        torch.autograd.gradcheck(loss_of, params, eps=1e-6, atol=1e-5, rtol=1e-3)
        return Cell(True, "")
    except Exception as err:
        return Cell(False, "", _gradcheck_hint(loss_of, params, (B,), err))


def _net_against_twin(activation: str, x: Tensor, t: Tensor, tol: Optional[tuple[float, float]]) -> Cell:
    """Loss and every gradient of the custom net against the twin's, in ``x``'s dtype: the one node
    with the training path's reused workspace, the one node with fresh tensors, and per op."""
    cells = []
    for fused, workspace in ((True, True), (True, False), (False, False)):
        ours, twin = _nets(activation, x.dtype, fused)
        if workspace:
            ours.workspace = FF.Workspace()  # the training path: buffers reused from step to step
        lo, lt = _loss_ours(ours, x, t), _loss_twin(twin, x, t)
        go = torch.autograd.grad(lo, list(ours.parameters()))
        gt = torch.autograd.grad(lt, list(twin.parameters()))
        cells.append(_max_diff([lo.detach(), *go], [lt.detach(), *gt], x.dtype, (B,), tol))
    return _worst(cells)


def _net_lockstep(activation: str, x: Tensor, t: Tensor, as_training: bool) -> Cell:
    """25 steps: our GD on our loss, torch's SGD on torch's loss; the parameters' largest difference.

    ``as_training``: as fit runs them, with the workspace (buffers reused from step to step).
    """
    ours, twin = _nets(activation, torch.float64)
    opt_o, opt_t = HO.GD(ours.parameters(), lr=0.5), torch.optim.SGD(twin.parameters(), lr=0.5)
    if as_training:
        ours.workspace = FF.Workspace()
    for _ in range(STEPS):
        for net, opt, loss in ((ours, opt_o, _loss_ours), (twin, opt_t, _loss_twin)):
            opt.zero_grad()
            loss(net, x, t).backward()
            opt.step()
    ps_o, ps_t = [p.detach() for p in ours.parameters()], [p.detach() for p in twin.parameters()]
    return _max_diff(ps_o, ps_t, torch.float64, (B,))


def check_net(activation: str) -> Row:
    """The custom net (fused one-node and per-op) against its nn.Sequential twin: value, gradients, 25 GD steps."""
    start = time.perf_counter()
    row = Row(f"FeedForwardNet ({activation}) vs nn.Sequential twin", {"gradgrad": NA, "kink": NA})
    gen = torch.Generator().manual_seed(4)
    x64, t64 = torch.randn(B, SIZES[0], generator=gen, dtype=torch.float64), _onehot(gen, SIZES[-1])
    row.cells["gradcheck"] = _net_gradcheck(activation, x64, t64)
    for key, dtype, scale in (("fp32", torch.float32, 1.0), ("fp64", torch.float64, 1.0), ("extreme", torch.float32, 30.0)):
        tol = EXTREME_TOL if key == "extreme" else None
        row.cells[key] = _net_against_twin(activation, (x64 * scale).to(dtype), t64.to(dtype), tol)
    row.cells["lockstep"] = _worst([_net_lockstep(activation, x64, t64, as_training) for as_training in (False, True)])
    row.seconds = time.perf_counter() - start
    return row


def verify_all() -> list[Row]:
    """One row per hand-derived piece: every Function, loss, penalty, GD, Adam, and the whole net."""
    rows = [check_function(s) for s in SPECS]
    rows += [check_optimizer(n) for n in OPTIMIZER_SETTINGS]
    rows += [check_net(a) for a in ("sigmoid", "tanh", "relu")]
    return rows
