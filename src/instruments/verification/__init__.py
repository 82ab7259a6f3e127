"""The checks behind ``python -m src.verify``: every hand-derived piece against numbers and against PyTorch.

Read in this order: :mod:`.specs` — what is checked (:class:`~.specs.FunctionSpec` and
:data:`~.specs.SPECS`: per Function how to call it, the PyTorch built-in it mirrors, the inputs it
is checked on; the optimizers' references); :mod:`.checks` — how (:func:`~.checks.check_function`:
the columns below, for one spec; :func:`~.checks.check_optimizer`: GD and Adam;
:func:`~.checks.check_net`: the whole net; :func:`~.checks.verify_all`: one row per piece);
:mod:`.hints` — what a failing cell's numbers suggest; :mod:`.table` — the columns
(:data:`~.table.COLUMNS`), :class:`~.table.Row` and :class:`~.table.Cell`.

Columns (:data:`~.table.COLUMNS`; a row passes when no cell fails; ``—``: does not apply):

* ``gradcheck`` — :func:`torch.autograd.gradcheck` in float64: the backward against the numerical
  Jacobian (central differences);
* ``gradgradcheck`` — the same for the backward's own backward, where the piece is twice
  differentiable (the one-node ``FeedForward`` is ``once_differentiable``);
* ``fp32``, ``fp64`` — the largest |ours − PyTorch built-in| over the value and every input's
  gradient, on random inputs; it passes when below ``rtol·max|built-in| + atol``;
* ``extreme`` — the same in float32 on extreme inputs (logits ±1e4, saturated sigmoid and tanh,
  probabilities down to 1e-30, weights of 1e4); both must also stay finite;
* ``kink`` — the value at the non-differentiable point, against PyTorch's convention: ReLU′(0) and
  ∂|w|/∂w at w = 0 (L1);
* ``lockstep`` — GD and Adam against ``torch.optim.SGD`` / ``Adam`` for 25 steps (the fp32/fp64/extreme
  cells then hold the parameters' largest difference after them); for the whole net, 25 GD steps
  of the custom net against its ``nn.Sequential`` twin.

When a cell fails, its hint says what the numbers suggest: the ratio of our gradient to the
reference (≈ 2: a missing ½; ≈ the batch size: a sum for a mean; ≈ −1: a flipped sign) or a
transposed shape.

Beside this package: :mod:`~src.instruments.mutants` (the planted bugs of ``--mutants``) and
:mod:`~src.instruments.custom_function` (``--function``: a user's own Function); the command
(arguments, the printed tables, the exit status) is :mod:`src.verify`.  Torch only, no Lightning.
"""
