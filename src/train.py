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

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from .data import MNISTDataModule
from .metrics import format_report
from .module import EVAL_SPLITS, MLPClassifier

__all__ = ["CLI", "main", "write_json_atomic"]

LOG_ROOT = "lightning_logs"


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temporary file and rename it, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    # --------------------------------------------------------------- fit
    def before_fit(self) -> None:
        self._fit_start = time.perf_counter()

    def after_fit(self) -> None:
        trainer, model, dm = self.trainer, self.model, self.datamodule
        if trainer.interrupted:
            return
        fit_time = time.perf_counter() - self._fit_start
        ckpt = trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
        for split in EVAL_SPLITS:
            model.eval_split = split
            trainer.test(model, dataloaders=dm.eval_dataloader(split), ckpt_path=best, verbose=False)
        model.eval_split = "test"
        if not trainer.is_global_zero:
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
                "best_checkpoint": best,
                "config": self.config[self.subcommand].as_dict(),
            }
        )
        run_dir = Path(trainer.log_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            text = format_report(results[split]["report"])
            _write_text_atomic(run_dir / f"{split}_report.txt", text)
            print(f"\n{split.capitalize()} classification report ({self.experiment_name()}):\n{text}")
        write_json_atomic(run_dir / "results.json", results)
        print(
            f"test accuracy {results['test']['accuracy']:.4f}, wall time {results['wall_time_s']:.1f} s; "
            f"results in {run_dir / 'results.json'}"
        )


def main(args: ArgsType = None, run: bool = True) -> CLI:
    """The command-line entry point; ``args`` (a list of strings) lets tests call the real CLI."""
    return CLI(
        MLPClassifier,
        MNISTDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "max_epochs": 15,
            "accelerator": "cpu",
            "log_every_n_steps": 50,
            "callbacks": [
                ModelCheckpoint(
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
    main()
