"""A multi-layer perceptron for MNIST whose every gradient is derived by hand.

Read the math first, in :mod:`src.hand` (torch only), in this order: ``functional`` (the affine
layer and the activations), ``losses``, ``nets`` (the net as a chain of them), ``backprop`` (the
recursion written out), ``optim`` (GD and Adam); then ``norm``, ``dropout``, ``init`` and, last,
``fused`` (the same math in one node, for speed).

Around it: :mod:`src.data` (MNIST, your own images, augmentation), :mod:`src.system` (the
LightningModule, callbacks, checkpoints, run folders, the configuration's rules),
:mod:`src.instruments` (verification, gradient-flow diagnostics, the report and its figures), and
the commands ``python -m src.train``, ``python -m src.verify``, ``python -m src.report``,
``python -m src.walkthrough``.
"""

import os as _os
import sys as _sys

#: OpenMP's wait policy, set before torch loads its OpenMP runtime (libgomp reads it once, at load).
#: GNU OpenMP's own default makes a thread that reaches the end of a parallel op spin for a
#: while before it sleeps.  On a busy machine the thread it waits for may not be running, and the
#: spinning takes the core from it: a 3-epoch fit took 2.6x as long with one other core-bound
#: process running.  Sleeping at once keeps that within a few percent and costs nothing
#: measurable on a quiet machine (BENCHMARKS.md, "Threads on a busy machine";
#: ``bench/busy_threads.py``).  The thread count is not touched, so results are the same bits; a
#: user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is kept.
WAIT_POLICY = "PASSIVE"
if "torch" not in _sys.modules and not ({"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ)):
    _os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
