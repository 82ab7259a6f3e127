"""The instruments that show the math works: verification against gradcheck and PyTorch
(:mod:`~src.instruments.verification`, :mod:`~src.instruments.mutants`,
:mod:`~src.instruments.custom_function`; ``python -m src.verify``), gradient-flow diagnostics
(:mod:`~src.instruments.diagnostics`), the after-fit report of one run (:mod:`~src.instruments.after_fit`),
and the report of several (:mod:`~src.instruments.results`,
:mod:`~src.instruments.why`, :mod:`~src.instruments.figures`; ``python -m src.report``)."""
