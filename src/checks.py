"""Checks that turn bad input into one clear line instead of a traceback or a broken run.

* :func:`check_config` — the parsed CLI configuration, before anything is instantiated;
* :func:`check_idx_file` / :func:`check_split_files` — MNIST-format IDX files: header, length,
  image size, label range and, for the official MNIST files, their SHA-256;
* :func:`check_state_shapes` — a checkpoint's tensors against the model they are loaded into;
* :func:`one_line` — any of these errors (or a jsonargparse parse error) as a single line.

Exit statuses of ``python -m src.train``: 2 for a bad configuration (:class:`ConfigError`, a
parse error, a checkpoint of another architecture), 1 for a data problem (:class:`DataError`)
or a diverged run (:class:`DivergenceError`).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "ConfigError",
    "DataError",
    "DivergenceError",
    "check_config",
    "check_idx_file",
    "check_split_files",
    "check_state_shapes",
    "count_train_images",
    "one_line",
    "MNIST_SHA256",
]


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the parameter, value and what is allowed."""


class DataError(RuntimeError):
    """A data file that is missing, truncated, corrupted or not the expected file; the message names it."""


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


# ----------------------------------------------------------------------------- configuration
def _positive_finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 and math.isfinite(x)


def _get(ns: Any, key: str, default: Any = None) -> Any:
    """``ns[key]`` for a jsonargparse Namespace or a dict, ``default`` when absent."""
    if ns is None:
        return default
    try:
        value = ns.get(key, default) if hasattr(ns, "get") else getattr(ns, key, default)
    except (KeyError, AttributeError):
        return default
    return default if value is None and default is not None else value


def check_config(cfg: Any, subcommand: str | None = None) -> None:
    """Raise :class:`ConfigError` for the first value in a subcommand's config that cannot work.

    ``cfg`` is the subcommand's namespace (``cli.config["fit"]``), with ``model``, ``data`` and
    ``trainer`` groups.  Names (activation, loss, …) are already checked by the parser's
    ``Literal`` types and again by the classes themselves; here go the ranges and combinations.
    ``predict`` uses no split, so ``val_size`` is not compared with the data there.
    """
    model, data, trainer = _get(cfg, "model"), _get(cfg, "data"), _get(cfg, "trainer")
    if model is not None:
        lr = _get(model, "lr")
        if lr is not None and not _positive_finite(lr):
            raise ConfigError(f"--model.lr={lr!r} is not allowed; the learning rate must be a finite number > 0")
        alpha = _get(model, "alpha")
        if alpha is not None and not (isinstance(alpha, (int, float)) and 0 <= alpha < math.inf):
            raise ConfigError(f"--model.alpha={alpha!r} is not allowed; the penalty strength must be finite and >= 0")
        for key in ("dropout", "input_dropout"):
            p = _get(model, key)
            if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1):
                raise ConfigError(
                    f"--model.{key}={p!r} is not allowed; the drop probability must be >= 0 and < 1 (0 = off)"
                )
        hidden = _get(model, "hidden_layers")
        if hidden is not None and (
            len(hidden) == 0 or any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in hidden)
        ):
            raise ConfigError(
                f"--model.hidden_layers={list(hidden)!r} is not allowed; give a non-empty list of sizes > 0, "
                "e.g. [500,250,100]"
            )
        eps = _get(model, "eps")
        if eps is not None and not _positive_finite(eps):
            raise ConfigError(f"--model.eps={eps!r} is not allowed; Adam's eps must be a finite number > 0")
        betas = _get(model, "betas")
        if betas is not None and (len(betas) != 2 or any(not 0 <= b < 1 for b in betas)):
            raise ConfigError(f"--model.betas={list(betas)!r} is not allowed; give two numbers in [0, 1)")
        if _get(model, "loss") == "cross_entropy" and _get(model, "output_activation") == "identity":
            raise ConfigError(
                "--model.loss=cross_entropy with --model.output_activation=identity is not allowed: "
                "cross-entropy takes the log of probabilities, and raw scores can be negative; "
                "use output_activation softmax or sigmoid, or loss mse"
            )
    if data is not None:
        for key in ("batch_size", "eval_batch_size"):
            value = _get(data, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"--data.{key}={value!r} is not allowed; it must be an integer > 0")
        augment = [_get(data, f"augment_{k}") for k in ("degrees", "translate", "scale", "elastic_alpha", "elastic_sigma")]
        if all(v is not None for v in augment):
            from .augment import check_augment  # torchvision: imported only here

            try:
                check_augment(*augment)
            except ValueError as err:  # its message starts with the option's name
                raise ConfigError(f"--data.{err}") from err
        val_size = _get(data, "val_size")
        if val_size is not None:
            if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size <= 0:
                raise ConfigError(f"--data.val_size={val_size!r} is not allowed; it must be an integer > 0")
            dataset = _get(data, "dataset", "MNIST")
            n = None if subcommand == "predict" else count_train_images(_get(data, "data_dir", "data/"), dataset)
            if n is not None:  # files not there yet: the data module checks after the download
                check_val_size(val_size, n, dataset)
    if trainer is not None:
        max_epochs = _get(trainer, "max_epochs")
        if max_epochs is not None and max_epochs < 1:
            raise ConfigError(f"--trainer.max_epochs={max_epochs!r} is not allowed; train for at least 1 epoch")


def check_val_size(val_size: int, n_train: int, dataset: str) -> None:
    """The validation split must leave at least one training image."""
    if not 0 < val_size < n_train:
        raise ConfigError(
            f"--data.val_size={val_size!r} is not allowed; it must be > 0 and smaller than the "
            f"{n_train} training images of {dataset}"
        )


# ----------------------------------------------------------------------------- IDX files
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # 0x08 = unsigned byte, then the number of dims
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10

#: SHA-256 of the four official (uncompressed) MNIST files, from ../shared/data/mnist/README.md
#: (the same bytes torchvision downloads).  Checked only for a file of exactly the official size
#: (name → (size in bytes, digest)): a file of any other size is not the official file and is
#: judged by its header alone, which is how the tests' small synthetic MNIST-format files pass.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": (47_040_016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (60_008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (7_840_016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (10_008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}

# (path, size, mtime_ns) of files already checked in this process: hash each file once, not per load
_checked: set[tuple[str, int, int]] = set()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_header(f, path: Path) -> tuple[int, tuple[int, ...]]:
    head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(head)} bytes, not even the 4-byte magic number)")
    magic = struct.unpack(">I", head)[0]
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{LABEL_MAGIC:08x} (labels) or "
            f"0x{IMAGE_MAGIC:08x} (images); the file is corrupted or not an MNIST-format IDX file"
        )
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({4 + len(dims_raw)} bytes, expected {4 + 4 * ndim})")
    return magic, struct.unpack(f">{ndim}I", dims_raw)


def check_idx_file(path: str | Path, kind: str, dataset: str = "MNIST") -> int:
    """Check one uncompressed IDX file (``kind`` ``"images"`` or ``"labels"``); return its item count.

    Raises :class:`DataError` naming the file for a wrong magic number, a wrong image size, a length
    that does not match the header (truncated or padded), a label outside 0–9, or (official MNIST
    files only, recognised by their exact size) a SHA-256 that differs from the known one.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _checked:
        with open(path, "rb") as f:
            return _read_header(f, path)[1][0]
    expected_magic = IMAGE_MAGIC if kind == "images" else LABEL_MAGIC
    with open(path, "rb") as f:
        magic, dims = _read_header(f, path)
        if magic != expected_magic:
            raise DataError(
                f"{path}: magic number 0x{magic:08x} is that of {'images' if magic == IMAGE_MAGIC else 'labels'}, "
                f"but this file should hold {kind} (0x{expected_magic:08x})"
            )
        if kind == "images" and tuple(dims[1:]) != IMAGE_SIZE:
            raise DataError(
                f"{path}: images are {dims[1]}x{dims[2]}, expected {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}"
            )
        expected = 4 + 4 * len(dims) + math.prod(dims)
        if stat.st_size != expected:
            what = "truncated" if stat.st_size < expected else "too long"
            raise DataError(
                f"{path}: {what}: {stat.st_size} bytes, but its header announces {dims[0]} {kind} "
                f"({expected} bytes); delete it (and its .gz if that is damaged too) and fetch it again"
            )
        if kind == "labels":
            labels = np.frombuffer(f.read(), dtype=np.uint8)
            bad = np.flatnonzero(labels >= NUM_CLASSES)
            if len(bad):
                raise DataError(
                    f"{path}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside 0-9 "
                    f"({len(bad)} such labels); the file is corrupted"
                )
    official = MNIST_SHA256.get(path.name) if dataset == "MNIST" else None
    if official is not None and stat.st_size == official[0]:
        digest = _sha256(path)
        if digest != official[1]:
            raise DataError(
                f"{path}: SHA-256 {digest} differs from the official MNIST file's {official[1]}; "
                "the file is corrupted: delete it and unpack or download it again"
            )
    _checked.add(key)
    return dims[0]


def check_split_files(raw: str | Path, names: tuple[str, str], dataset: str = "MNIST") -> int:
    """Check a split's images and labels file (``names`` = (images, labels)); return the image count."""
    raw = Path(raw)
    n_images = check_idx_file(raw / names[0], "images", dataset)
    n_labels = check_idx_file(raw / names[1], "labels", dataset)
    if n_images != n_labels:
        raise DataError(
            f"{raw / names[0]} holds {n_images} images but {raw / names[1]} holds {n_labels} labels; "
            "the two files must come from the same split"
        )
    return n_images


def count_train_images(data_dir: str | Path, dataset: str) -> int | None:
    """The training image count from the labels file's header (raw or .gz), or ``None`` if absent/unreadable.

    Cheap (reads 8 bytes), so the CLI can check ``val_size`` before anything starts.
    """
    raw = Path(data_dir) / dataset / "raw"
    name = "train-labels-idx1-ubyte"
    try:
        if (raw / name).exists():
            with open(raw / name, "rb") as f:
                head = f.read(8)
        elif (raw / f"{name}.gz").exists():
            with gzip.open(raw / f"{name}.gz", "rb") as f:
                head = f.read(8)
        else:
            return None
    except (OSError, EOFError):
        return None  # the data module reports damaged files itself
    if len(head) < 8 or struct.unpack(">I", head[:4])[0] != LABEL_MAGIC:
        return None
    return struct.unpack(">I", head[4:])[0]


# ----------------------------------------------------------------------------- checkpoints
def check_state_shapes(model_state: Mapping[str, Any], ckpt_state: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Raise :class:`ConfigError` if a checkpoint's tensors do not fit the model (names or shapes).

    Both mappings are ``name → tensor``; only parameter/buffer names of the model are compared.
    """
    mismatched = [
        (k, tuple(ckpt_state[k].shape), tuple(v.shape))
        for k, v in model_state.items()
        if k in ckpt_state and hasattr(ckpt_state[k], "shape") and tuple(ckpt_state[k].shape) != tuple(v.shape)
    ]
    if mismatched:
        k, saved, here = mismatched[0]
        raise ConfigError(
            f"{source} was saved from a different architecture: {k} has shape {saved} in the checkpoint "
            f"but {here} in this model ({len(mismatched)} tensor(s) differ); use the checkpoint's "
            "--model.hidden_layers / inputs / outputs"
        )
    missing = [k for k in model_state if k not in ckpt_state]
    extra = [k for k in ckpt_state if k not in model_state]
    if missing or extra:
        raise ConfigError(
            f"{source} was saved from a different architecture: it has "
            f"{', '.join(extra) or 'no extra tensors'} that this model lacks, and lacks "
            f"{', '.join(missing) or 'nothing'}; checkpoint shapes "
            f"{ {k: tuple(ckpt_state[k].shape) for k in extra} }, model shapes "
            f"{ {k: tuple(model_state[k].shape) for k in missing} }; use the checkpoint's --model.hidden_layers"
        )


# ----------------------------------------------------------------------------- messages
_LITERAL = re.compile(r'Parser key "([^"]+)":\s*Expected a typing\.Literal\[(.*?)\]\.\s*Got value:\s*(.*)', re.S)
_PARSER_KEY = re.compile(r'Parser key "([^"]+)":\s*(.*)', re.S)


def one_line(err: BaseException) -> str:
    """A single line for an error: jsonargparse's multi-line parse errors are rewritten, others joined."""
    text = str(err).strip()
    m = _LITERAL.search(text)
    if m:
        key, allowed, value = m.groups()
        return f"--{key}={value.strip()!r} is not allowed; allowed: {allowed}"
    m = _PARSER_KEY.search(text)
    if m:
        key, rest = m.groups()
        # the first line of jsonargparse's explanation says it; the rest lists every type it tried
        first = next((line.strip() for line in rest.splitlines() if line.strip()), "invalid value")
        return f"--{key}: {first}"
    return " ".join(text.split())
