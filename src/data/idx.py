"""MNIST-format IDX files: header, length, image size, label range and, for official MNIST, identity.

* :func:`check_idx_file` / :func:`check_split_files` — one file / one split's two files;
* :func:`count_train_images` — the training image count, from the headers alone (8 bytes each),
  so the CLI can check ``--data.val_size`` before anything starts.

Every problem is a :class:`~src.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["check_idx_file", "check_split_files", "count_train_images", "MNIST_SHA256", "IMAGE_SIZE"]

IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # 0x08 = unsigned byte, then the number of dims
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10

#: SHA-256 of the four official (uncompressed) MNIST files, from ../shared/data/mnist/README.md
#: (the same bytes torchvision downloads): name → (size in bytes, digest).  A file whose size is
#: that of any official file is hashed: under its own name it must match, and an official file
#: under another name (train and test swapped, say) is refused.  Files of other sizes (the
#: tests' small synthetic MNIST-format files) are judged by their header alone.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": (47_040_016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (60_008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (7_840_016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (10_008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
_OFFICIAL_BY_DIGEST = {digest: name for name, (_, digest) in MNIST_SHA256.items()}
_OFFICIAL_SIZES = {size for size, _ in MNIST_SHA256.values()}

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


def _check_identity(path: Path, size: int) -> None:
    """An official MNIST file must be the one its name says (its SHA-256), wherever it lies."""
    if size not in _OFFICIAL_SIZES:
        return
    digest = _sha256(path)
    actual = _OFFICIAL_BY_DIGEST.get(digest)
    if actual is not None and actual != path.name:
        raise DataError(
            f"{path}: this is the official MNIST file {actual} (by its SHA-256) under the name {path.name}; "
            f"the files are swapped or misnamed: put each file under its own name"
        )
    official = MNIST_SHA256.get(path.name)
    if official is not None and size == official[0] and digest != official[1]:
        raise DataError(
            f"{path}: SHA-256 {digest} differs from the official MNIST file's {official[1]}; "
            "the file is corrupted: delete it and unpack or download it again"
        )


def check_idx_file(path: str | Path, kind: str, dataset: str = "MNIST") -> int:
    """Check one uncompressed IDX file (``kind`` ``"images"`` or ``"labels"``); return its item count.

    Raises :class:`DataError` naming the file for a wrong magic number, a wrong image size, a length
    that does not match the header (truncated or padded), a label outside 0–9, or (MNIST, files of
    an official size) a SHA-256 that is not the official one of its name.
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
    if dataset == "MNIST":
        _check_identity(path, stat.st_size)
    _checked.add(key)
    return dims[0]


def _mismatch(images: Path, n_images: int, labels: Path, n_labels: int) -> DataError:
    return DataError(
        f"{images} holds {n_images} images but {labels} holds {n_labels} labels; "
        "the two files must come from the same split"
    )


def check_split_files(raw: str | Path, names: tuple[str, str], dataset: str = "MNIST") -> int:
    """Check a split's images and labels file (``names`` = (images, labels)); return the image count."""
    raw = Path(raw)
    n_images = check_idx_file(raw / names[0], "images", dataset)
    n_labels = check_idx_file(raw / names[1], "labels", dataset)
    if n_images != n_labels:
        raise _mismatch(raw / names[0], n_images, raw / names[1], n_labels)
    return n_images


def _header_count(raw: Path, name: str, magic: int) -> tuple[Path, int] | None:
    """``(file, item count)`` from a raw or ``.gz`` file's 8-byte header; ``None`` if absent or unreadable."""
    try:
        if (raw / name).exists():
            path, opener = raw / name, open
        elif (raw / f"{name}.gz").exists():
            path, opener = raw / f"{name}.gz", gzip.open
        else:
            return None
        with opener(path, "rb") as f:
            head = f.read(8)
    except (OSError, EOFError):
        return None  # the data module reports damaged files itself
    if len(head) < 8 or struct.unpack(">I", head[:4])[0] != magic:
        return None
    return path, struct.unpack(">I", head[4:])[0]


def count_train_images(data_dir: str | Path, dataset: str) -> int | None:
    """The training image count from the two files' headers, ``None`` if they are absent or unreadable.

    Images and labels of different counts are a :class:`DataError` here already, before any other
    value is compared with the count.
    """
    raw = Path(data_dir) / dataset / "raw"
    images = _header_count(raw, "train-images-idx3-ubyte", IMAGE_MAGIC)
    labels = _header_count(raw, "train-labels-idx1-ubyte", LABEL_MAGIC)
    if images is None or labels is None:
        return None
    if images[1] != labels[1]:
        raise _mismatch(images[0], images[1], labels[0], labels[1])
    return labels[1]
