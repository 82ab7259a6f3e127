"""The configuration's rules between groups, checked on the parsed CLI configuration before anything is built or written.

:func:`check_config` relates the model, the data, the trainer and the run folder (one function per
group: :func:`check_run`, :func:`check_model`, :func:`check_data`, :func:`check_trainer`); the numeric ranges
are types in the signatures (:mod:`src.ranges`), the names are ``Literal`` choices.  A rule between two
fields of one class lives in that class (``MLPClassifier``: cross-entropy needs probabilities);
checkpoint rules live in :mod:`src.system.checkpoints`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..data.idx import IMAGE_SIZE, NUM_CLASSES, count_train_images
from ..data.mnist import check_batch_size, check_val_size

__all__ = [
    "check_config",
    "check_gradient_steps",
    "check_run",
    "check_model",
    "check_data",
    "check_trainer",
    "check_batch_norm",
    "check_config_files",
    "check_experiment_name",
    "config_files",
    "NEEDS_CHECKPOINT",
]

#: subcommands that evaluate trained weights: without --ckpt_path they would use random ones
NEEDS_CHECKPOINT = ("validate", "test", "predict")
MAX_SEED = 2**32 - 1  # NumPy's seeds, which seed_everything sets too


def _get(ns: Any, key: str, default: Any = None) -> Any:
    """``ns[key]`` for a jsonargparse Namespace or a dict, ``default`` when absent."""
    if ns is None:
        return default
    try:
        value = ns.get(key, default) if hasattr(ns, "get") else getattr(ns, key, default)
    except (KeyError, AttributeError):
        return default
    return default if value is None and default is not None else value


def check_experiment_name(name: str) -> None:
    """A run folder name: one plain folder under lightning_logs/, never a path that leads elsewhere."""
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise ConfigError(
            f"--experiment={name!r} is not allowed; give a plain folder name (letters, digits, - _), "
            "not a path: every run goes under lightning_logs/"
        )


def check_config(cfg: Any, subcommand: str | None = None) -> None:
    """Raise :class:`ConfigError` for the first rule between groups that the config breaks.

    ``cfg`` is the subcommand's namespace (``cli.config["fit"]``), with ``model``, ``data`` and
    ``trainer`` groups.  Ranges and names are already checked by the parser's types; here go the
    rules that relate the run to its files, the model to the data, and the trainer to the report,
    one function per group.
    """
    check_run(cfg, subcommand)
    check_model(_get(cfg, "model"))
    check_data(_get(cfg, "data"), subcommand)
    check_trainer(_get(cfg, "trainer"), subcommand)
    check_batch_norm(_get(cfg, "model"), _get(cfg, "data"), subcommand)


def check_run(cfg: Any, subcommand: str | None) -> None:
    """The run: its folder name, the seed, the checkpoint an evaluation needs, predict's images."""
    experiment = _get(cfg, "experiment")
    if experiment is not None:
        check_experiment_name(experiment)
    seed = _get(cfg, "seed_everything")
    if seed is not None and not isinstance(seed, bool) and not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"--seed_everything={seed!r} is not allowed; give an integer in [0, {MAX_SEED}], or true for a random one"
        )
    ckpt = _get(cfg, "ckpt_path")
    if subcommand in NEEDS_CHECKPOINT and not ckpt:
        raise ConfigError(
            f"{subcommand} needs trained weights: pass --ckpt_path lightning_logs/<experiment>/version_N/"
            "checkpoints/last.ckpt (or a best-epochNN.ckpt); without one the net's weights are random"
        )
    if ckpt and not Path(ckpt).is_file():
        raise ConfigError(f"--ckpt_path={str(ckpt)!r}: no such checkpoint file")
    if subcommand == "predict" and not _get(_get(cfg, "data"), "predict_dir"):
        raise ConfigError("predict needs --data.predict_dir <a folder of digit images (PNG, JPEG, …)>")


def check_model(model: Any) -> None:
    """The model against the data: its inputs are the images' pixels, its outputs the classes."""
    if model is None:
        return
    inputs, outputs = _get(model, "inputs"), _get(model, "outputs")
    if inputs is not None and inputs != math.prod(IMAGE_SIZE):
        raise ConfigError(
            f"--model.inputs={inputs} is not allowed; the data's images have "
            f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} = {math.prod(IMAGE_SIZE)} pixels"
        )
    if outputs is not None and outputs != NUM_CLASSES:
        raise ConfigError(f"--model.outputs={outputs} is not allowed; the data has {NUM_CLASSES} classes")


def check_data(data: Any, subcommand: str | None) -> None:
    """The data: the augmentation's scale is ``[low, high]``; the validation split leaves training images."""
    if data is None:
        return
    augment = [_get(data, f"augment_{k}") for k in ("degrees", "translate", "scale", "elastic_alpha", "elastic_sigma")]
    if all(v is not None for v in augment):  # the ranges are types; the scale must also be ordered
        from ..data.augment import check_augment  # torchvision: imported only here

        try:
            check_augment(*augment)
        except ValueError as err:  # its message starts with the option's name
            raise ConfigError(f"--data.{err}") from err
    if subcommand != "predict":  # predict uses no split
        val_size = _get(data, "val_size")
        dataset = _get(data, "dataset", "MNIST")
        data_dir = Path(_get(data, "data_dir", "data/"))
        n = count_train_images(data_dir, dataset) if data_dir.is_dir() else None
        if val_size is not None and n is not None:  # files not there yet: the data module checks after the download
            check_val_size(val_size, n, dataset)
    check_batch_size_flag(data, subcommand)


def check_trainer(trainer: Any, subcommand: str | None) -> None:
    """The trainer against the run's results: epochs, no fast_dev_run, a GPU that exists, checkpoints on."""
    if trainer is None:
        return
    max_epochs = _get(trainer, "max_epochs")
    if max_epochs is not None and max_epochs < 1:
        raise ConfigError(f"--trainer.max_epochs={max_epochs!r} is not allowed; train for at least 1 epoch")
    if _get(trainer, "fast_dev_run") not in (None, False, 0):
        raise ConfigError(
            "--trainer.fast_dev_run is not supported: it turns off the checkpoints and the logger that "
            "the run's results come from; for a quick check use --trainer.max_epochs 1 "
            "--trainer.limit_train_batches 2 --trainer.limit_val_batches 1"
        )
    accelerator = _get(trainer, "accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--trainer.accelerator={accelerator} is not allowed here: PyTorch finds no CUDA GPU on this machine "
            "(torch.cuda.is_available() is False); use --trainer.accelerator cpu"
        )
    if subcommand == "fit" and _get(trainer, "enable_checkpointing") is False:
        raise ConfigError(
            "--trainer.enable_checkpointing=false is not supported by fit: the results come from the best "
            "checkpoint, and last.ckpt is what a stopped run resumes from"
        )
    if _get(trainer, "sync_batchnorm"):
        raise ConfigError(
            "--trainer.sync_batchnorm=true is not supported: the hand-derived batch norm (src.hand.norm.BatchNorm) "
            "is not synchronized across processes, so under DDP each process normalizes with its own batch's "
            "statistics (docs/scaling-out.md); leave it false"
        )
    check_step_limit(trainer)
    check_gradient_steps_flags(trainer)


def check_batch_norm(model: Any, data: Any, subcommand: str | None) -> None:
    """``--model.norm batch`` trains on batches of two rows or more: one row's variance is 0.

    The hand-derived :func:`~src.hand.norm.batch_norm` refuses a batch of one in training mode, as
    torch does; here the same refusal comes before anything is written, for ``--data.batch_size 1``
    and for an epoch whose last batch would hold one image (where the files are there to count).
    """
    if subcommand != "fit" or _get(model, "norm") != "batch" or data is None:
        return
    batch_size = _get(data, "batch_size")
    if batch_size == 1:
        raise ConfigError(
            "--data.batch_size=1 is not allowed with --model.norm batch: batch norm needs more than 1 value per "
            "feature when training (the variance of one row is 0); give --data.batch_size 2 or more"
        )
    val_size = _get(data, "val_size")
    data_dir = Path(_get(data, "data_dir", "data/"))
    n = count_train_images(data_dir, _get(data, "dataset", "MNIST")) if data_dir.is_dir() else None
    if None not in (n, batch_size, val_size) and 0 < val_size < n and (n - val_size) % batch_size == 1:
        other = next((b for b in range(batch_size + 1, n - val_size) if (n - val_size) % b != 1), n - val_size)
        raise ConfigError(
            f"--data.batch_size={batch_size!r} is not allowed with --model.norm batch: the {n - val_size} training "
            f"images leave a last batch of 1 image each epoch, and batch norm needs more than 1 value per feature "
            f"when training; give another batch size, e.g. {other}"
        )


def check_step_limit(trainer: Any) -> None:
    """No ``--trainer.max_steps``: it ends an epoch in the middle, and a run counts, saves and resumes whole epochs."""
    if _get(trainer, "max_steps") not in (None, -1):
        raise ConfigError(
            "--trainer.max_steps is not supported: a run is counted, checkpointed and resumed in whole epochs; "
            "use --trainer.max_epochs (and --trainer.limit_train_batches for shorter epochs)"
        )


CLIP_ALGORITHMS = ("norm", "value")  # Lightning's GradClipAlgorithmType


def check_gradient_steps(gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches) -> None:
    """``ValueError`` naming the first value that cannot work (the message starts with its name)."""
    if gradient_clip_val is not None and not (
        isinstance(gradient_clip_val, (int, float)) and 0 <= gradient_clip_val < float("inf")
    ):
        raise ValueError(
            f"gradient_clip_val={float(gradient_clip_val)!r} is not allowed; it must be >= 0 and finite (0: no clipping)"
        )
    if gradient_clip_algorithm is not None and str(gradient_clip_algorithm).lower() not in CLIP_ALGORITHMS:
        raise ValueError(
            f"gradient_clip_algorithm={gradient_clip_algorithm!r} is not allowed; allowed: 'norm', 'value'"
        )
    if isinstance(accumulate_grad_batches, bool) or not (
        isinstance(accumulate_grad_batches, int) and accumulate_grad_batches >= 1
    ):
        raise ValueError(f"accumulate_grad_batches={accumulate_grad_batches!r} is not allowed; it must be an integer >= 1")


def check_gradient_steps_flags(trainer: Any) -> None:
    """``--trainer.gradient_clip_val`` / ``gradient_clip_algorithm`` / ``accumulate_grad_batches`` (the module applies them)."""
    if trainer is None:
        return
    values = [_get(trainer, k) for k in ("gradient_clip_val", "gradient_clip_algorithm")]
    try:
        check_gradient_steps(*values, _get(trainer, "accumulate_grad_batches", 1))
    except ValueError as err:  # its message starts with the option's name
        raise ConfigError(f"--trainer.{err}") from err


def check_batch_size_flag(data: Any, subcommand: str | None) -> None:
    """A training batch no larger than the training split, where the files are there (else the data module's setup)."""
    if data is None or subcommand != "fit":
        return
    batch_size, val_size = _get(data, "batch_size"), _get(data, "val_size")
    data_dir = Path(_get(data, "data_dir", "data/"))
    n = count_train_images(data_dir, _get(data, "dataset", "MNIST")) if data_dir.is_dir() else None
    if None not in (n, batch_size, val_size) and val_size < n:
        check_batch_size(batch_size, n, val_size, _get(data, "dataset", "MNIST"))


def config_files(argv: list[str]) -> list[str]:
    """The files given with ``--config`` / ``-c`` on a command line (``--config x`` or ``--config=x``)."""
    return [
        (arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else ""))
        for i, arg in enumerate(argv)
        if arg.split("=", 1)[0] in ("--config", "-c")
    ]


def check_config_files(argv: list[str]) -> None:
    """An empty ``--config`` file is named (jsonargparse would say only ``Unexpected config:``)."""
    for path in config_files(argv):
        if Path(path).is_file() and not Path(path).read_text().strip():
            raise ConfigError(f"--config {path}: the file is empty; give at least one key, e.g. 'model: {{lr: 0.1}}'")
