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
    "check_no_optimizer_flags",
    "check_precision",
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
    if ckpt and Path(ckpt).is_dir():
        from .checkpoints import folder_given  # (checkpoints imports this module)

        raise ConfigError(folder_given(ckpt))
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


#: what --trainer.fast_dev_run's refusal suggests: one epoch of 2 training and 2 validation batches
#: (an integer counts batches, a float is a fraction, and "1" parses as 1.0: every batch)
QUICK_CHECK = "--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 2"


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
            f"the run's results come from; for a quick check use {QUICK_CHECK}"
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
    limit = _get(trainer, "limit_train_batches")
    if subcommand == "fit" and limit is not None and not isinstance(limit, bool) and limit == 0:
        raise ConfigError(
            f"--trainer.limit_train_batches={limit!r} is not allowed by fit: it would train nothing and report the "
            "initial weights as a finished run; give a number of batches >= 1 or a fraction in (0, 1]"
        )
    if _get(trainer, "default_root_dir") is not None:
        raise ConfigError(
            f"--trainer.default_root_dir={str(_get(trainer, 'default_root_dir'))!r} is not supported: every run goes to "
            "lightning_logs/<experiment>/version_N/ under the current folder; run from the folder that should hold "
            "lightning_logs/ (cd there), and name the run with --experiment"
        )
    if _get(trainer, "sync_batchnorm"):
        raise ConfigError(
            "--trainer.sync_batchnorm=true is not supported: the hand-derived batch norm (src.hand.norm.BatchNorm) "
            "is not synchronized across processes, so under DDP each process normalizes with its own batch's "
            "statistics (docs/scaling-out.md); leave it false"
        )
    check_step_limit(trainer)
    check_gradient_steps_flags(trainer)


#: Lightning's mixed precisions (and their older names): autocast around the forward pass
MIXED_PRECISIONS = ("16-mixed", "bf16-mixed", "16", "bf16")


def check_precision(precision: Any, implementation: str | None) -> None:
    """No mixed precision for the custom net: its hand-derived Functions compute in their inputs' dtype.

    Under autocast the custom net's products come out in half precision and meet float32 targets
    and weights (the loss refuses the mix, and the backward's products would mix them too); the
    twin's torch ops are autocast's own, so ``--model.implementation sequential`` trains under it.
    ``*-true`` precisions cast the whole net and the data to one dtype and train either net.
    """
    if precision is not None and str(precision) in MIXED_PRECISIONS and implementation in (None, "custom"):
        raise ConfigError(
            f"--trainer.precision={str(precision)!r} is not supported by --model.implementation custom: its "
            "hand-derived Functions compute in their inputs' dtype, not autocast's; use 32-true, 64-true, bf16-true "
            "or 16-true, or --model.implementation sequential (torch's ops under autocast)"
        )


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
    """Each ``--config`` file is UTF-8 YAML text holding a mapping, or one line names it and says what it is.

    jsonargparse would say ``Unexpected config:`` (empty, or plain text) without the file's name,
    print the YAML parser's lines about a ``"<unicode string>"``, or let a ``UnicodeDecodeError`` out.
    """
    import yaml  # jsonargparse's own parser of config files

    for path in config_files(argv):
        if not Path(path).is_file():
            continue  # the parser names a missing file
        raw = Path(path).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise ConfigError(
                f"--config {path} is not UTF-8 text: byte 0x{raw[err.start]:02x} on line {line} is not UTF-8; "
                "a config is a YAML text file: save it as UTF-8"
            ) from err
        if "\0" in text:
            raise ConfigError(f"--config {path} is a binary file, not a YAML text file; give a file like configs/relu.yaml")
        if not text.strip():
            raise ConfigError(f"--config {path}: the file is empty; give at least one key, e.g. 'model: {{lr: 0.1}}'")
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or " ".join(str(err).split())
            raise ConfigError(f"--config {path} is not valid YAML: {problem}{where}") from err
        if not isinstance(content, dict):
            raise ConfigError(
                f"--config {path} holds {type(content).__name__} {text.strip().splitlines()[0][:40]!r}, not options; "
                "a config maps option groups to values, e.g. 'model: {lr: 0.1}'"
            )


#: LightningCLI's own optimizer and scheduler groups (which would replace the module's configure_optimizers): what to use
TORCH_OPTIMIZER_GROUPS = {
    "optimizer": "use --model.optimizer gd|adam with --model.lr, --model.betas, --model.eps",
    "lr_scheduler": "use --model.lr_schedule constant|cosine with --model.optimizer gd|adam",
}


def check_no_optimizer_flags(argv: list[str]) -> None:
    """No ``--optimizer`` / ``--lr_scheduler`` (flags or a config file's keys): the optimizers are the hand-written ones.

    LightningCLI offers them by default and, given, silently replaces the module's
    ``configure_optimizers`` with ``torch.optim``'s; the CLI turns them off
    (``auto_configure_optimizers=False``) and this names what to use instead.
    """
    flags = {arg.split("=", 1)[0].split(".", 1)[0].lstrip("-") for arg in argv if arg.startswith("--")}
    for group, instead in TORCH_OPTIMIZER_GROUPS.items():
        if group in flags:
            raise ConfigError(
                f"--{group} is not supported: it would replace the hand-written optimizer and schedule "
                f"(src/hand/optim.py, --model.*) with torch.optim's; {instead}"
            )
    for path in config_files(argv):
        try:
            import yaml  # jsonargparse's own reader of config files

            keys = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError):  # jsonargparse names a broken file itself
            keys = None
        for group, instead in TORCH_OPTIMIZER_GROUPS.items():
            if isinstance(keys, dict) and group in keys:
                why = (  # the config.yaml of a run before issue 24 holds "optimizer: null"
                    "is no longer taken; delete that line" if keys[group] is None
                    else "is not supported: it would replace the hand-written optimizer and schedule with torch.optim's"
                )  # fmt: skip
                raise ConfigError(f"--config {path}: the key {group!r} {why}; {instead}")
