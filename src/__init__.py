"""A multi-layer perceptron for MNIST whose every gradient is derived by hand.

Read the math first, in :mod:`src.hand` (torch only), in this order: ``functional`` (the affine
layer and the activations), ``losses``, ``nets`` (the net as a chain of them), ``optim`` (GD and
Adam); then ``dropout``, ``init`` and, last, ``fused`` (the same math in one node, for speed).

Around it: :mod:`src.data` (MNIST, your own images, augmentation), :mod:`src.system` (the
LightningModule, callbacks, checkpoints, run folders, the configuration's rules),
:mod:`src.instruments` (verification, gradient-flow diagnostics, the report and its figures), and
the three commands ``python -m src.train``, ``python -m src.verify``, ``python -m src.report``.
"""
