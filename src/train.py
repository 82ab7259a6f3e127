"""Train, validate, test or predict from the command line (LightningCLI).

    python -m src.train fit                              # the seed's baseline (sigmoid, GD, 15 epochs)
    python -m src.train fit --config configs/relu.yaml   # another experiment of the seed
    python -m src.train fit --model.activation tanh --model.lr 0.05 --trainer.max_epochs 5
    python -m src.train fit --print_config               # every option with its value
    tensorboard --logdir lightning_logs                  # the curves

Runs log to ``lightning_logs/<experiment>/version_N/`` (experiment: ``--experiment``,
else the name of the last ``--config`` file, else ``default``).  After ``fit`` the
best checkpoint is evaluated on the train, validation and test splits and
``results.json`` plus the train and test classification reports are written
into the run folder.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from argparse import ArgumentError
from typing import NoReturn, Optional

import torch
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import CheckpointIO

from .callbacks import AtomicCheckpointIO, ResumableModelCheckpoint, RNGStateCallback
from .checks import ConfigError, DataError, DivergenceError, check_config, one_line
from .data import MNISTDataModule
from .files import write_text_atomic
from .metrics import format_report
from .module import EVAL_SPLITS, MLPClassifier
from .predict import format_predictions, write_predictions

__all__ = ["CLI", "main", "write_json_atomic"]

LOG_ROOT = "lightning_logs"


def write_json_atomic(path: Path, obj) -> None:
    """``obj`` as indented JSON, written atomically (:func:`src.files.write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


class CLI(LightningCLI):
    """LightningCLI with a named TensorBoard logger, checkpoints, and the after-fit report."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            type=Optional[str],
            default=None,
            help="Run folder name under lightning_logs/ (default: the last --config file's name, else 'default').",
        )

    def experiment_name(self) -> str:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.get("experiment"):
            return cfg["experiment"]
        configs = cfg.get("config") or []
        return Path(str(configs[-1])).stem if configs else "default"

    def instantiate_trainer(self, **kwargs):
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True):
            kwargs["logger"] = TensorBoardLogger(LOG_ROOT, name=self.experiment_name(), default_hp_metric=False)
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            # Redrawing the bar every step costs more than a training step here.
            callbacks.append(TQDMProgressBar(refresh_rate=50))
        # src.callbacks: carry the random states in checkpoints (a NaN/inf loss is stopped by the module)
        callbacks += [RNGStateCallback()]
        kwargs["callbacks"] = callbacks
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # temp file + rename; loads with weights_only=True
        kwargs["plugins"] = plugins
        return super().instantiate_trainer(**kwargs)

    # ------------------------------------------------- configuration checks
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        # Ranges and combinations, before anything is built or written (src.checks).
        cfg = self.config[self.config["subcommand"]] if self.config.get("subcommand") else self.config
        check_config(cfg, self.config.get("subcommand"))
        # LightningCLI next reads --ckpt_path's hyperparameters (they replace the --model.* values,
        # so a resume rebuilds the checkpoint's architecture): refuse a damaged file in one line.
        ckpt = cfg.get("ckpt_path")
        if ckpt and Path(ckpt).is_file():
            AtomicCheckpointIO().load_checkpoint(ckpt)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ConfigError:
            raise
        except ValueError as err:  # a class refused a value: its message names it
            raise ConfigError(str(err)) from err

    # --------------------------------------------------------------- fit
    def before_fit(self) -> None:
        # ddp_spawn / ddp_fork train in child processes that are gone when after_fit runs here,
        # so the report could not be made: refuse before training (``ddp`` keeps every process).
        start = getattr(self.trainer.strategy, "_start_method", "popen")
        if start != "popen":
            raise ConfigError(
                f"a DDP strategy that starts processes by {start!r} (ddp_spawn, ddp_fork, ddp_notebook) is not "
                "supported by fit: its processes end before the after-fit evaluation; use --trainer.strategy ddp"
            )
        self._fit_start = time.perf_counter()

    def after_fit(self) -> None:
        trainer, model, dm = self.trainer, self.model, self.datamodule
        if trainer.interrupted:
            return
        fit_time = time.perf_counter() - self._fit_start
        ckpt = trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
        for i, split in enumerate(EVAL_SPLITS):
            model.eval_split = split
            # the first test loads the best checkpoint into the model; the others reuse its weights
            ckpt_path = best if i == 0 else None
            trainer.test(model, dataloaders=dm.eval_dataloader(split), ckpt_path=ckpt_path, verbose=False)
        model.eval_split = "test"
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
                "wall_time_s": time.perf_counter() - self._fit_start,
                "fit_time_s": fit_time,
                "epochs": trainer.current_epoch,
                **model.epoch_times,  # seconds per epoch run by this process
                "best_checkpoint": best,
                "config": self.config[self.subcommand].as_dict(),
            }
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            text = format_report(results[split]["report"])
            write_text_atomic(run_dir / f"{split}_report.txt", text)
            print(f"\n{split.capitalize()} classification report ({self.experiment_name()}):\n{text}")
        write_json_atomic(run_dir / "results.json", results)
        print(
            f"test accuracy {results['test']['accuracy']:.4f}, wall time {results['wall_time_s']:.1f} s; "
            f"results in {run_dir / 'results.json'}"
        )
        if isinstance(trainer.logger, TensorBoardLogger):
            self._log_to_tensorboard(results)

    def _log_to_tensorboard(self, results: dict) -> None:
        """The confusion matrix, classification reports and hyperparameters (HParams metric: test accuracy)."""
        from .report import log_to_tensorboard  # matplotlib is imported only here

        # flat, like the hyperparameters Lightning logs at the start (module's and data module's)
        params = {**self.datamodule.hparams, **self.model.hparams}
        params = {k: v for k, v in params.items() if not k.startswith("_")}  # not the CLI's _instantiator
        params.update(
            experiment=self.experiment_name(),
            max_epochs=self.trainer.max_epochs,
            seed_everything=self.config[self.subcommand].get("seed_everything"),
        )
        log_to_tensorboard(self.trainer.logger, results, params, self.experiment_name())

    # ----------------------------------------------------------- predict
    def after_predict(self) -> None:
        trainer, dm = self.trainer, self.datamodule
        run_dir = Path(trainer.log_dir)  # a collective call under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        outputs = torch.cat(trainer.predict_loop.predictions)
        path = write_predictions(run_dir / "predictions.csv", dm.predict_names, outputs)
        print(f"\n{format_predictions(dm.predict_names, outputs)}predictions for {len(outputs)} images in {path}")


def main(args: ArgsType = None, run: bool = True) -> CLI:
    """The command-line entry point; ``args`` (a list of strings) lets tests call the real CLI.

    A bad value (or a checkpoint of another architecture), a data problem or a diverged run ends
    with one line on stderr and ``SystemExit``: status 2 for configuration errors (as argparse),
    1 for data and divergence (:mod:`src.checks`).
    """
    # Flush subnormal floats to zero (tiny gradients and Adam moments late in training are many
    # times slower to compute on CPUs otherwise). The flag is per thread and PyTorch's worker
    # threads copy it when they start, so it is set here, before any parallel op starts them.
    torch.set_flush_denormal(True)
    try:
        return _cli(args, run)
    except (ArgumentError, ConfigError) as err:
        _exit(err, 2)
    except (DataError, DivergenceError) as err:
        _exit(err, 1)


def _exit(err: BaseException, status: int) -> NoReturn:
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    raise SystemExit(status) from err


def _cli(args: ArgsType, run: bool) -> CLI:
    return CLI(
        MLPClassifier,
        MNISTDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        # parse errors raise ArgumentError (main prints one line) instead of usage + exit
        parser_kwargs={"exit_on_error": False},
        trainer_defaults={
            "max_epochs": 15,
            "accelerator": "cpu",
            "log_every_n_steps": 50,
            "callbacks": [
                ResumableModelCheckpoint(  # a ModelCheckpoint whose best score survives a resume
                    monitor="val/acc",
                    mode="max",
                    save_last=True,
                    filename="best-epoch{epoch:02d}",
                    auto_insert_metric_name=False,
                ),
            ],
        },
    )


if __name__ == "__main__":
    # Everything imported so far (torch, Lightning, …: about a million objects) lives until exit.
    # Moved out of the collector's reach, it is neither scanned by the full collections during
    # training nor walked again by the collections at interpreter exit, which otherwise take
    # about a second (BENCHMARKS.md).
    gc.freeze()
    main()
