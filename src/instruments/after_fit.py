"""The after-fit report of ``python -m src.train fit``: the best checkpoint evaluated, its results written.

:func:`finish_fit` is what the CLI calls once ``fit`` returns (``CLI.after_fit``): it evaluates the
best checkpoint on the train, validation and test splits in one test run, then writes into the run
folder the train and test classification reports, TensorBoard's share (confusion matrix, reports,
hyperparameters) and, last, ``results.json`` — a run folder that holds it is finished, with every
file.  The report of several runs (``REPORT.md``) is :mod:`~src.instruments.results`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import TensorBoardLogger

from ..errors import ConfigError
from ..system.metrics import format_report
from ..system.module import EVAL_SPLITS
from ..system.runs import write_json_atomic, write_text_atomic

__all__ = ["finish_fit"]


def finish_fit(trainer, model, datamodule, config, experiment: str, fit_start: float, stops) -> None:
    """The after-fit report, then the signal handlers of ``stops`` (src.system.stops) handed back.

    ``config`` is the subcommand's parsed configuration, ``experiment`` the run folder's name,
    ``fit_start`` the ``time.perf_counter()`` when training started.
    """
    try:
        _report(trainer, model, datamodule, config, experiment, fit_start)
    finally:
        stops.uninstall()
    if stops.held and trainer.is_global_zero:
        print(f"note: {stops.held} came after training had ended; the run was finished first "
              f"(results in {Path(trainer.log_dir) / 'results.json'})", file=sys.stderr, flush=True)


def _report(trainer, model, dm, config, experiment: str, fit_start: float) -> None:
    """Evaluate the best checkpoint on the three splits; write results.json, the reports and TensorBoard's share."""
    if trainer.interrupted:
        return
    fit_time = time.perf_counter() - fit_start
    ckpt = trainer.checkpoint_callback
    best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    unfinished = getattr(ckpt, "unfinished_epoch", None)  # a stop mid-epoch: not counted, not saved
    last = ckpt.last_model_path if ckpt is not None else None  # before the test restores the best's state
    if unfinished is not None and best is None:
        stopped = _stopped(trainer, unfinished)
        fix = "give a longer --trainer.max_time" if stopped.startswith("--trainer.max_time") else "let one epoch finish"
        raise ConfigError(f"{stopped}, before any epoch finished: there is no checkpoint to evaluate or resume from; {fix}")
    # one test run over the three splits, from the best checkpoint (loaded once)
    model.eval_splits = EVAL_SPLITS
    try:
        loaders = [dm.eval_dataloader(split) for split in EVAL_SPLITS]
        trainer.test(model, dataloaders=loaders, ckpt_path=best, verbose=False)
    finally:
        model.eval_splits = ("test",)
    # trainer.log_dir is a collective call under DDP (rank 0 broadcasts it): every rank asks.
    run_dir = Path(trainer.log_dir)
    if not trainer.is_global_zero:  # the metrics are synced: rank 0 alone writes the results
        return
    results = {
        split: {k: v for k, v in model.eval_results[split].items() if split != "val" or k != "report"}
        for split in EVAL_SPLITS
    }
    results.update(
        {
            "wall_time_s": time.perf_counter() - fit_start,
            "fit_time_s": fit_time,
            "epochs": trainer.current_epoch - (unfinished is not None),  # the finished ones
            "unfinished_epoch": _unfinished_record(unfinished),
            **model.epoch_times,  # seconds per epoch run by this process
            "best_checkpoint": best,
            "evaluated_weights": model.evaluated_weights,  # the trained ones, or their moving average
            "config": config.as_dict(),
        }
    )
    _write_results(trainer, model, dm, config, experiment, run_dir, results)
    if unfinished is not None:
        print(f"{_stopped(trainer, unfinished)}: that epoch is not counted and no checkpoint holds it; results.json "
              f"is from the {results['epochs']} finished epoch(s); to train further, resume with --ckpt_path "
              f"{last} (it trains epoch {unfinished[0] + 1} again from its start)")


def _stopped(trainer, unfinished: tuple[int, int, int]) -> str:
    """``--trainer.max_time ran out 4 of 8 batches into epoch 2`` (epochs counted from 1)."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    ran_out = timer is not None and timer.time_remaining() is not None and timer.time_remaining() <= 0
    epoch, done, total = unfinished
    return f"{'--trainer.max_time ran out' if ran_out else 'training stopped'} {done} of {total} batches into epoch {epoch + 1}"


def _unfinished_record(unfinished: tuple[int, int, int] | None) -> dict | None:
    """results.json's ``unfinished_epoch``: where a stop mid-epoch cut training (epoch counted from 1)."""
    if unfinished is None:
        return None
    epoch, done, total = unfinished
    return {"epoch": epoch + 1, "batches": done, "of": total}


def _write_results(trainer, model, dm, config, experiment: str, run_dir: Path, results: dict) -> None:
    """The train and test classification reports, TensorBoard's share, then results.json into the run folder.

    ``results.json`` comes last: a run folder that holds it is finished, with every file.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        text = format_report(results[split]["report"])
        write_text_atomic(run_dir / f"{split}_report.txt", text)
        print(f"\n{split.capitalize()} classification report ({experiment}):\n{text}")
    if isinstance(trainer.logger, TensorBoardLogger):
        _log_to_tensorboard(trainer, model, dm, config, experiment, results)
    write_json_atomic(run_dir / "results.json", results)
    print(
        f"test accuracy {results['test']['accuracy']:.4f} ({results['evaluated_weights']}), "
        f"wall time {results['wall_time_s']:.1f} s; "
        f"results in {run_dir / 'results.json'}"
    )


def _log_to_tensorboard(trainer, model, dm, config, experiment: str, results: dict) -> None:
    """The confusion matrix, classification reports and hyperparameters (HParams metric: test accuracy)."""
    from .figures import log_to_tensorboard  # matplotlib is imported only here

    # flat, like the hyperparameters Lightning logs at the start (module's and data module's)
    params: dict[str, Any] = {**dm.hparams, **model.hparams}
    params = {k: v for k, v in params.items() if not k.startswith("_")}  # not the CLI's _instantiator
    params.update(
        experiment=experiment,
        max_epochs=trainer.max_epochs,
        seed_everything=config.get("seed_everything"),
    )
    log_to_tensorboard(trainer.logger, results, params, experiment)
