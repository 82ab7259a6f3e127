"""Tiny synthetic MNIST-shaped data in the real IDX format, for tests that must not need the real files.

Each image shows its label as a bright horizontal bar at row ``2 + 2·label``
on noise, so a net can learn it in a few steps.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 2 + 2 * int(label)
        images[i, row : row + 2, 4:24] = 255
    return images


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding: magic (0, 0, 0x08 = ubyte, ndim), big-endian int32 dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_mnist(
    data_dir: Path, dataset: str = "MNIST", n_train: int = 600, n_test: int = 200, gz: bool = True, seed: int = 0
) -> Path:
    """Write the four files into ``<data_dir>/<dataset>/raw/``; return that folder."""
    raw = Path(data_dir) / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for train, n in ((True, n_train), (False, n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        for name, array in zip(FILES[train], (make_images(labels, rng), labels)):
            data = idx_bytes(array)
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
            else:
                (raw / name).write_bytes(data)
    return raw
