"""A multi-layer perceptron for MNIST whose every gradient is derived by hand.

Modules: :mod:`src.functional` (affine layer and activations), :mod:`src.losses`
(losses and weight penalties), :mod:`src.init` (parameter initializers),
:mod:`src.optim` (GD and Adam).
"""
