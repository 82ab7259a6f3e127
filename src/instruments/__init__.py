"""The instruments that show the math works: verification against gradcheck and PyTorch
(:mod:`~src.instruments.verification`, :mod:`~src.instruments.mutants`,
:mod:`~src.instruments.custom_function`; ``python -m src.verify``), gradient-flow diagnostics
(:mod:`~src.instruments.diagnostics`), and the report (:mod:`~src.instruments.results`,
:mod:`~src.instruments.why`, :mod:`~src.instruments.figures`; ``python -m src.report``)."""
