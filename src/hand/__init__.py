"""The hand-derived math: every gradient written by hand, nothing but torch imported.

Reading order:

1. :mod:`~src.hand.functional` — the affine layer and the activations as ``torch.autograd.Function``
   (each activation's rule once: ``value`` and ``derivative`` beside its ``forward``/``backward``);
2. :mod:`~src.hand.losses` — MSE, cross-entropy (and the fused softmax cross-entropy), L1/L2;
3. :mod:`~src.hand.nets` — ``FeedForwardNet``, the course report's net: its per-op chain of those
   Functions is ``FeedForwardNet.layer_outputs``; and its ``nn.Sequential`` twin;
4. :mod:`~src.hand.optim` — gradient descent and Adam as ``torch.optim.Optimizer`` subclasses, each
   update written as a loop over the parameters beside its foreach form;
5. :mod:`~src.hand.dropout` and :mod:`~src.hand.init` — inverted dropout, the initializers;
6. :mod:`~src.hand.fused` — an optimization: the whole chain of step 3 in one autograd node with
   buffers reused between steps, equal to it to the last bit (``tests/test_fast_path.py``);
7. :mod:`~src.hand.norm` — batch norm (training and evaluation mode, the backward both as the graph
   walk and in closed form) and layer norm, derived in ``docs/batchnorm.md``.
"""
