"""The Lightning system around the math: the LightningModule (:mod:`~src.system.module`), the callbacks
for exact resume (:mod:`~src.system.callbacks`), atomic checkpoints (:mod:`~src.system.checkpoints`),
run folders and atomic writes (:mod:`~src.system.runs`), the configuration's rules
(:mod:`~src.system.config`), metrics (:mod:`~src.system.metrics`), predictions.csv
(:mod:`~src.system.predict`), and the Lightning private names it relies on, in one place
(:mod:`~src.system.lightning_private`)."""
