"""Train, validate, test or predict from the command line (LightningCLI).

    python -m src.train fit                              # the course report's baseline (sigmoid, GD, 15 epochs)
    python -m src.train fit --config configs/relu.yaml   # another experiment of the course report
    python -m src.train fit --model.activation tanh --model.lr 0.05 --trainer.max_epochs 5
    python -m src.train fit --print_config               # every option with its value
    tensorboard --logdir lightning_logs                  # the curves

Runs log to ``lightning_logs/<experiment>/version_N/`` (experiment: ``--experiment``,
else the name of the last ``--config`` file, else ``default``); the folder is claimed
atomically, so runs started together never share one.  After ``fit`` the best checkpoint
is evaluated on the train, validation and test splits and ``results.json`` plus the train
and test classification reports are written into the run folder.
"""

from __future__ import annotations

import errno
import gc
import logging
import re
import sys
import time
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, NoReturn, Optional

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .system import lightning_private, runs, stops
from .system.callbacks import ResumableModelCheckpoint, RNGStateCallback
from .system.checkpoints import (
    AtomicCheckpointIO, batch_size_change, check_lightning_checkpoint, checkpoint_conflicts, checkpoint_seed, completed_epochs, explicit_keys,
)
from .system.config import check_config, check_config_files, check_no_optimizer_flags, check_precision
from .data.mnist import MNISTDataModule, check_files
from .instruments.after_fit import finish_fit
from .instruments.diagnostics import GradientFlowDiagnostics
from .errors import ConfigError, DataError, DivergenceError, OutputError, one_line
from .system.runs import LOG_ROOT, claim_run_dir
from .system.module import MLPClassifier
from .system.predict import PredictionWriter

__all__ = ["CLI", "RunLogger", "main"]

SIGTERM_STATUS = 128 + 15  # the shell's status for a process ended by SIGTERM
SIGINT_STATUS = 128 + 2  # … and by SIGINT (Ctrl-C)
#: the logger of LightningCLI's "Seed set to N", which comes before the classes are built
SEED_LOG = logging.getLogger(seed_everything.__module__)


#: Lightning's lines that tell the user nothing they chose or can act on (by their exact text)
UNASKED_LINES = {
    "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
    "(https://pypi.org/project/litlogger/) to enable LitLogger, which logs metrics and artifacts automatically "
    "to the Lightning Experiments platform.",
    "GPU available: False, used: False",  # (a GPU that exists is still named, with Lightning's hint to use it)
    "TPU available: False, using: 0 TPU cores",
}
#: warnings of the installed packages about each other, by their exact text (torch 2.14 and Lightning 2.6's pytree copy)
UNASKED_WARNINGS = ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
                    "treespec.is_leaf()` instead.",)  # fmt: skip


class _Unasked(logging.Filter):
    """Drop :data:`UNASKED_LINES` from Lightning's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in UNASKED_LINES


def _quiet() -> None:
    """Leave out Lightning's and torch's lines that concern nothing the user chose (each by its exact text)."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _Unasked) for f in log.filters):
        log.addFilter(_Unasked())
    for text in UNASKED_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(text))


class _HeldRecords(logging.Filter):
    """Hold a logger's records (:data:`SEED_LOG`'s) until :func:`_release_held`: an error comes first."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def _release_held(emit: bool) -> None:
    """Stop holding :data:`SEED_LOG`'s records; log them now if ``emit`` (the checks passed), else drop them."""
    for held in [f for f in SEED_LOG.filters if isinstance(f, _HeldRecords)]:
        SEED_LOG.removeFilter(held)
        for record in held.records if emit else ():
            SEED_LOG.handle(record)


class RunLogger(TensorBoardLogger):
    """``TensorBoardLogger`` whose ``version_N`` folder is claimed atomically (:func:`src.system.runs.claim_run_dir`).

    Lightning's own logger lists the folders and takes the next number, so two runs started
    together both took ``version_0``.  Only global rank 0 claims; the other DDP processes get
    rank 0's folder from Lightning's broadcast of ``trainer.log_dir`` and the checkpoint folder.
    The claim happens where Lightning first asks for the public ``version``, not in Lightning's
    private ``_get_next_version`` that the property calls.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claimed: Optional[int] = None

    @property
    def version(self) -> int | str:
        if rank_zero_only.rank != 0 or self._version is not None:  # given: the folder of a run being completed
            return super().version
        if self._claimed is None:
            self._claimed = int(claim_run_dir(self.root_dir).name.split("_")[1])
        return self._claimed


def _plain(value: Any) -> Any:
    """jsonargparse's restricted numbers (``PositiveInt(3)``) as plain ``int``/``float``.

    Checkpoints are loaded with ``weights_only=True``, which refuses any class it does not know.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


class CLI(LightningCLI):
    """LightningCLI with the run folder and the checks before anything starts; after ``fit``, the report (src.instruments.after_fit)."""

    #: the run folder a ``fit --ckpt_path`` completes: its checkpoint has trained every epoch, its report is missing
    completes: Optional[Path] = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            type=Optional[str],
            default=None,
            help="Run folder name under lightning_logs/ (default: the last --config file's name, else 'default').",
        )
        parser.add_argument(  # issue 12: gradient-flow diagnostics (src/instruments/diagnostics.py)
            "--diagnostics",
            type=bool,
            default=True,
            help="Log per-layer gradient-flow diagnostics under diagnostics/ in TensorBoard (src/instruments/diagnostics.py).",
        )

    def experiment_name(self) -> str:
        if self.completes is not None:
            return self.completes.parent.name
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.get("experiment"):
            return cfg["experiment"]
        configs = cfg.get("config") or []
        return Path(str(configs[-1])).stem if configs else "default"

    # ------------------------------------------------- configuration checks
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        check_config_files(argv)
        check_no_optimizer_flags(argv)  # LightningCLI's --optimizer / --lr_scheduler are off (_cli)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        cfg = self.config[subcommand] if subcommand else self.config
        # Rules between groups, before anything is built or written (src.system.config).
        check_config(cfg, subcommand)
        data = cfg.get("data")
        if subcommand in ("fit", "validate", "test") and data is not None:
            check_files(data.get("data_dir"), data.get("dataset"))  # before Lightning prints anything
        # LightningCLI next replaces the --model.* values with --ckpt_path's, so a resume rebuilds
        # the checkpoint's architecture: refuse a damaged file, or explicit values that differ.
        ckpt_path = cfg.get("ckpt_path")
        ckpt = AtomicCheckpointIO().load_checkpoint(ckpt_path) if ckpt_path else None
        if ckpt is not None:  # before anything reads it (LightningCLI next takes its hyper_parameters)
            check_lightning_checkpoint(ckpt, ckpt_path)
        implementation = (cfg.get("model") or {}).get("implementation")
        if ckpt is not None:  # the checkpoint's net is the one trained or evaluated
            implementation = (ckpt.get("hyper_parameters") or {}).get("implementation", implementation)
        check_precision((cfg.get("trainer") or {}).get("precision"), implementation)
        if ckpt_path:
            conflicts = checkpoint_conflicts(
                cfg.get("model"), cfg.get("data"), ckpt, explicit_keys(argv), cfg.get("seed_everything")
            )
            if conflicts:
                raise ConfigError(
                    f"--ckpt_path {ckpt_path} was trained with other values than given: {'; '.join(conflicts)}; "
                    "leave them out to use the checkpoint's, or train a new run without --ckpt_path"
                )
            done, max_epochs = completed_epochs(ckpt), cfg.get("trainer", {}).get("max_epochs")
            if subcommand == "fit" and max_epochs is not None and max_epochs < done:
                raise ConfigError(
                    f"--trainer.max_epochs={max_epochs} is not allowed with this checkpoint: it has already trained "
                    f"{done} epochs; give --trainer.max_epochs {done + 1} or more to train further"
                )
            seed = checkpoint_seed(ckpt)
            if seed is not None and "seed_everything" not in explicit_keys(argv)["run"]:
                cfg["seed_everything"] = seed  # the run's own seed (what results.json and TensorBoard record)
            change = batch_size_change(cfg.get("data"), ckpt) if subcommand == "fit" else None
            if change and rank_zero_only.rank == 0:  # accepted, said once
                print(f"warning: {change}", file=sys.stderr, flush=True)
            if subcommand == "fit" and max_epochs == done:  # nothing to train: a run stopped before its report
                self.completes = runs.unreported_run(ckpt_path)
        # LightningCLI sets the seed next and logs it, before the classes check their own values:
        # held until they have (instantiate_classes), so a refused value is the only line.
        SEED_LOG.addFilter(_HeldRecords())

    def instantiate_classes(self) -> None:
        built = False
        try:
            super().instantiate_classes()
            built = True
        except ConfigError:
            raise
        except (ValueError, MisconfigurationException) as err:  # a class refused a value: its message names it
            raise ConfigError(str(err)) from err
        finally:
            _release_held(emit=built)
        for obj in (self.model, self.datamodule):  # what checkpoints and hparams.yaml get
            for hparams in (obj.hparams, lightning_private.initial_hparams(obj)):
                for key in list(hparams):
                    hparams[key] = _plain(hparams[key])

    def instantiate_trainer(self, **kwargs):
        config = (self.config_init[self.subcommand] if self.subcommand else self.config_init).get("trainer") or {}
        run = self.completes  # a run whose training ended but whose report was not written: into its own folder
        if run is not None:
            self.save_config_callback = None  # its config.yaml stays the one it was trained with
        logger = config.get("logger")
        if self.subcommand == "predict" and logger in (None, True):
            # predict logs nothing: its run folder holds predictions.csv and config.yaml, no empty events file
            logger = kwargs["logger"] = False
        if logger in (None, True):
            where = dict(name=self.experiment_name()) if run is None else dict(name=run.parent.name, version=run.name)
            kwargs["logger"] = RunLogger(str(LOG_ROOT), **where, default_hp_metric=False)
        elif logger is False:
            # no logger: checkpoints and results still go into a run folder, never the current one
            parent = LOG_ROOT / self.experiment_name()
            claimed = run or (claim_run_dir(parent) if rank_zero_only.rank == 0 else parent)
            kwargs["default_root_dir"] = str(claimed)
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            # Redrawing the bar every step costs more than a training step here.
            callbacks.append(TQDMProgressBar(refresh_rate=50))
        if self.subcommand == "fit":  # a stop after training waits for the report (src.system.stops)
            self._stops = stops.HoldStops()
            callbacks.append(self._stops)
        if config.get("enable_checkpointing") is False:  # validate/test/predict: nothing to save
            self.trainer_defaults["callbacks"] = [
                c for c in self.trainer_defaults["callbacks"] if not isinstance(c, ResumableModelCheckpoint)
            ]
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.get("diagnostics", True) and not any(isinstance(c, GradientFlowDiagnostics) for c in callbacks):
            callbacks.append(GradientFlowDiagnostics())  # per-layer gradient flow (src/instruments/diagnostics.py), on by default
        kwargs["callbacks"] = callbacks
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # temp file + rename; loads with weights_only=True
        kwargs["plugins"] = plugins
        self._hand_over_gradient_steps(config, kwargs)
        return super().instantiate_trainer(**kwargs)

    def _hand_over_gradient_steps(self, config: Any, kwargs: dict) -> None:
        """``--trainer.gradient_clip_val`` / ``gradient_clip_algorithm`` / ``accumulate_grad_batches`` go to the module.

        Lightning's Trainer refuses them under manual optimization (this module's); the module's
        training step applies them as automatic optimization would (``MLPClassifier.configure_gradient_steps``).
        The saved config.yaml and results.json keep them under ``trainer``, where they were given.
        """
        names = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")
        values = {name: config.get(name) for name in names}
        self.model.configure_gradient_steps(**{**values, "accumulate_grad_batches": values["accumulate_grad_batches"] or 1})
        kwargs.update(gradient_clip_val=None, gradient_clip_algorithm=None, accumulate_grad_batches=1)

    # --------------------------------------------------------------- fit
    def before_fit(self) -> None:
        # ddp_spawn / ddp_fork train in child processes that are gone when after_fit runs here,
        # so the report could not be made: refuse before training (``ddp`` keeps every process).
        start = lightning_private.ddp_start_method(self.trainer.strategy)
        if start != "popen":
            raise ConfigError(
                f"a DDP strategy that starts processes by {start!r} (ddp_spawn, ddp_fork, ddp_notebook) is not "
                "supported by fit: its processes end before the after-fit evaluation; use --trainer.strategy ddp"
            )
        self._fit_start = time.perf_counter()
        self._stops.install()

    def after_fit(self) -> None:  # the report of the run (src/instruments/after_fit.py)
        finish_fit(self.trainer, self.model, self.datamodule, self.config[self.subcommand], self.experiment_name(),
                   self._fit_start, self._stops)


def main(args: ArgsType = None, run: bool = True) -> CLI:
    """The command-line entry point; ``args`` (a list of strings) lets tests call the real CLI.

    Every error a user can meet ends with one line on stderr and ``SystemExit`` (statuses in
    :mod:`src.errors`); a run folder that this call created and that holds no checkpoint is
    removed then, and after any other exception too (a bug keeps its traceback), so a failed
    start leaves nothing behind.
    """
    # Flush subnormal floats to zero (tiny gradients and Adam moments late in training are many
    # times slower to compute on CPUs otherwise). The flag is per thread and PyTorch's worker
    # threads copy it when they start, so it is set here, before any parallel op starts them.
    torch.set_flush_denormal(True)
    _quiet()
    runs.forget_claims()
    try:
        return _cli(args, run)
    except (ArgumentError, ConfigError) as err:
        _exit(one_line(err), 2)
    except MisconfigurationException as err:  # Lightning refusing a value once it knows the data (limit_train_batches 0.01)
        _exit(one_line(err), 2)
    except OutputError as err:  # a read-only or full disk: the checkpoints so far can be resumed
        _exit(one_line(err) + _resume_hint(), 1)
    except (DataError, DivergenceError) as err:
        _exit(one_line(err), 1)
    except SIGTERMException:
        _exit(_stopped_message("SIGTERM"), SIGTERM_STATUS)
    except KeyboardInterrupt:  # Ctrl-C before or after fit
        _exit(_stopped_message("SIGINT (Ctrl-C)"), SIGINT_STATUS)
    except SystemExit as err:
        if isinstance(err.__context__, KeyboardInterrupt):  # Ctrl-C in fit: Lightning shuts down, then sys.exit(1)
            _exit(_stopped_message("SIGINT (Ctrl-C)"), SIGINT_STATUS)
        runs.discard_unfinished()
        raise
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk outside the checkpoints (events, configs)
            _exit(f"cannot write {err.filename or 'into the run folder'}: {err.strerror}" + _resume_hint(), 1)
        runs.discard_unfinished()
        raise
    except RuntimeError as err:
        if _peer_gone(err):  # DDP: another process of the run ended (killed, crashed): one line, how to resume
            _exit(f"{_this_process()}stopped: another process of this DDP run ended ({_peer_gone(err)})"
                  + _resume_hint(), 1)  # fmt: skip
        runs.discard_unfinished()
        raise
    except BaseException:  # a crash: its traceback, without the empty run folder
        runs.discard_unfinished()
        raise
    finally:
        _release_held(emit=False)  # a start that failed before the classes were built
        stops.release()  # the signal handlers of a fit that ended in an exception


def _last_checkpoint() -> tuple[Path, int] | None:
    """This command's run's ``last.ckpt`` and its finished epochs, if it has written one.

    The run folder this process claimed, else the checkpoint folder Lightning gave it (every DDP
    process has rank 0's; a run being completed claims none).
    """
    folders = [run / "checkpoints" for run in runs.CLAIMED[-1:]] + runs.CHECKPOINT_DIR
    last = next((f / "last.ckpt" for f in folders if (f / "last.ckpt").is_file()), None)
    if last is None or not last.is_file():
        return None
    return last, completed_epochs(AtomicCheckpointIO().load_checkpoint(last))


#: what the collective backends say when a peer process is gone (gloo, NCCL), and how it is said here
_PEER_GONE = {
    "Connection closed by peer": "connection closed by peer",
    "Connection reset by peer": "connection reset by peer",
    "remote worker": "a remote worker crashed or was killed",
    "NCCL communicator was aborted": "NCCL communicator aborted",
}


def _peer_gone(err: BaseException) -> str | None:
    """In words, when ``err`` says another process of a distributed run is gone; else None."""
    text = str(err)
    return next((words for pattern, words in _PEER_GONE.items() if pattern in text), None)


def _this_process() -> str:
    rank = rank_zero_only.rank
    return f"DDP rank {rank} " if rank else ""


def _resume_hint() -> str:
    found = _last_checkpoint()
    return "" if found is None else f"; resume with --ckpt_path {found[0]} ({found[1]} finished epoch(s))"


def _stopped_message(signal_name: str) -> str:
    """What a SIGTERM or SIGINT left behind, and how to resume (the last finished epoch's ``last.ckpt``)."""
    found, who = _last_checkpoint(), _this_process()
    if found is None:
        return f"{who}stopped by {signal_name} before the first epoch ended: no checkpoint to resume from"
    return f"{who}stopped by {signal_name} after {found[1]} finished epoch(s); resume with --ckpt_path {found[0]}"


def _exit(message: str, status: int) -> NoReturn:
    runs.discard_unfinished()
    sys.stderr.write(f"error: {message}\n")  # one write: the lines of several DDP processes do not interleave
    sys.stderr.flush()
    raise SystemExit(status)


def _cli(args: ArgsType, run: bool) -> CLI:
    return CLI(
        MLPClassifier,
        MNISTDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        # no --optimizer / --lr_scheduler: they would replace the module's hand-written optimizers
        auto_configure_optimizers=False,
        # parse errors raise ArgumentError (main prints one line) instead of usage + exit
        parser_kwargs={"exit_on_error": False},
        trainer_defaults={
            "max_epochs": 15,
            "accelerator": "cpu",
            "log_every_n_steps": 50,
            # always on; --trainer.callbacks+=… adds to them
            "callbacks": [
                ResumableModelCheckpoint(  # a ModelCheckpoint whose best score survives a resume
                    monitor="val/acc",
                    mode="max",
                    save_last=True,
                    filename="best-epoch{epoch:02d}",
                    auto_insert_metric_name=False,
                ),
                RNGStateCallback(),  # the random states travel in checkpoints: exact resume
                PredictionWriter(),  # predict: predictions.csv in the run folder
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
