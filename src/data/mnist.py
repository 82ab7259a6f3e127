"""MNIST-format data as preloaded tensors, served in batches by slicing.

``MNISTDataModule`` wraps torchvision's ``MNIST`` / ``FashionMNIST`` / ``KMNIST``:

1. raw IDX files already in torchvision's layout (``<data_dir>/<Dataset>/raw/``) are used as is;
2. otherwise the four standard ``.gz`` files in that folder are unpacked there
   (this is how offline machines get MNIST: copy the ``.gz`` files in);
3. otherwise torchvision downloads them the usual way.

The 60 000 training images are split (seeded) into train / validation; pixels
are scaled to [0, 1], standardized with the *training split's* mean and std
and flattened to 784; targets come both as labels and one-hot rows.

Batches are slices of the preloaded tensors (no per-sample Python work), in
an order drawn per epoch from a generator seeded by ``(seed, epoch)``, so a
resumed run sees the same order.  Under DDP each process takes a disjoint,
strided share of that order: with ``W`` processes of batch ``b``, step ``k``
covers exactly the samples of step ``k`` of one process with batch ``W·b``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
from pathlib import Path
from typing import Literal, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor
from jsonargparse.typing import PositiveInt
from torchvision import datasets

from .augment import BatchAugment, check_augment
from ..ranges import FiniteNonNegativeFloat, FinitePositiveFloat, HalfTurnDegrees, UnitIntervalCO
from ..errors import ConfigError, DataError
from .idx import NUM_CLASSES, check_split_files
from .images import load_folder

__all__ = [
    "MNISTDataModule", "TensorBatches", "DATASETS", "epoch_seed", "prepare_raw_files", "check_files", "ensure_split", "load_split", "check_val_size",
    "check_batch_size",
]  # fmt: skip

DATASETS = {"MNIST": datasets.MNIST, "FashionMNIST": datasets.FashionMNIST, "KMNIST": datasets.KMNIST}
TRAIN_SIZE = 60_000


@rank_zero_only
def _tell(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def epoch_seed(seed: int, epoch: int) -> int:
    """The run's seed and the epoch mixed into one integer: the seed of that epoch's random draws.

    ``seed · 1 000 003 + epoch`` with the prime 1 000 003 above any epoch count, so distinct
    ``(seed, epoch)`` pairs give distinct integers and a resumed run draws what an uninterrupted
    one would.  The shuffle and the augmentation both start from it.
    """
    return seed * 1_000_003 + epoch


def _raw_names(dataset: str) -> list[str]:
    """The four uncompressed file names torchvision expects, e.g. ``train-images-idx3-ubyte``."""
    return [os.path.splitext(os.path.basename(url))[0] for url, _ in DATASETS[dataset].resources]


def prepare_raw_files(data_dir: str | Path, dataset: str = "MNIST") -> bool:
    """Unpack ``<name>.gz`` beside any missing raw file; return whether all four raw files exist.

    Each file is unpacked to a temporary name and renamed, so an interrupted
    unpack never leaves a truncated raw file behind.
    """
    raw = Path(data_dir) / dataset / "raw"
    for name in _raw_names(dataset):
        target, packed = raw / name, raw / f"{name}.gz"
        if target.exists() or not packed.exists():
            continue
        tmp = target.with_name(f".{name}.tmp{os.getpid()}")
        try:
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, target)
        except (OSError, EOFError) as err:  # truncated or not gzip at all
            raise DataError(f"{packed}: cannot be unpacked ({err}); delete it and copy or download it again") from err
        finally:
            tmp.unlink(missing_ok=True)
    return all((raw / name).exists() for name in _raw_names(dataset))


def ensure_split(data_dir: str | Path, dataset: str, train: bool) -> None:
    """Make one official split's raw files present (unpacked or downloaded) and checked, without loading them.

    A download that fails removes the folders it created (torchvision makes ``<dataset>/raw/`` before
    it tries), so a mistyped ``data_dir`` leaves nothing behind.
    """
    cls = DATASETS[dataset]
    have_files = prepare_raw_files(data_dir, dataset)
    raw = Path(data_dir) / dataset / "raw"
    names = _raw_names(dataset)[:2] if train else _raw_names(dataset)[2:]
    created = None  # the outermost folder of raw/'s path that is not there yet: everything in it is the download's
    for folder in (raw, *raw.parents):
        if folder.exists():
            break
        created = folder
    try:
        if not have_files:
            cls(str(data_dir), train=train, download=True)
        # header, length, image size, labels, checksum (src.data.idx), before torchvision reads
        check_split_files(raw, tuple(names), dataset)
    except DataError:
        raise
    except RuntimeError as err:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise DataError(
            f"{dataset} is not in {raw}/ (--data.data_dir={str(data_dir)!r}) and could not be downloaded, so "
            "nothing was created there. Expected the files "
            f"{', '.join(_raw_names(dataset))} there (or the same names with .gz); missing: "
            f"{', '.join(n for n in _raw_names(dataset) if not (raw / n).exists()) or 'none'}. Offline, "
            f"copy them there; online, torchvision downloads them by itself. Download error: {err}"
        ) from err


def check_files(data_dir: str | Path, dataset: str = "MNIST") -> bool:
    """Unpack and check the four files if they are all there (no download); return whether they were.

    The CLI calls this before Lightning starts, so a damaged file is the only line the user sees.
    """
    if not Path(data_dir).is_dir() or not prepare_raw_files(data_dir, dataset):
        return False  # missing files: prepare_data downloads them (or says which are missing)
    raw, names = Path(data_dir) / dataset / "raw", _raw_names(dataset)
    for pair in (names[:2], names[2:]):
        check_split_files(raw, tuple(pair), dataset)
    return True


def load_split(data_dir: str | Path, dataset: str, train: bool) -> tuple[Tensor, Tensor]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of one official split."""
    ensure_split(data_dir, dataset, train)
    ds = DATASETS[dataset](str(data_dir), train=train, download=False)
    return ds.data, ds.targets.long()


class TensorBatches:
    """An iterable of ``(x, onehot, labels)`` batches sliced from preloaded tensors.

    ``trainer`` (optional) supplies the epoch for the shuffle seed and the
    process rank / count for sharding; without one, a single process at epoch 0.
    """

    def __init__(
        self,
        x: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        trainer: Optional[pl.Trainer] = None,
        drop_uneven: bool = False,
    ) -> None:
        self.x, self.labels = x, labels
        self.onehot = torch.nn.functional.one_hot(labels, NUM_CLASSES).to(x.dtype)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.trainer = trainer
        # Training under DDP must give every process the same number of steps.
        self.drop_uneven = drop_uneven

    def _shard(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _num_samples(self) -> int:
        rank, world = self._shard()
        n = len(self.labels)
        if self.drop_uneven:
            n -= n % world
        return len(range(rank, n, world))

    def __len__(self) -> int:
        return -(-self._num_samples() // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """Sample indices of this process for ``epoch``."""
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch) % 2**63)
            perm = torch.randperm(n, generator=gen)
        else:
            perm = torch.arange(n)
        rank, world = self._shard()
        if self.drop_uneven:
            perm = perm[: n - n % world]
        return perm[rank::world]

    def __iter__(self):
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        idx = self.order(epoch)
        if not self.shuffle and len(idx) == len(self.labels):
            # unshuffled, one process: contiguous slices are views, no copy
            for i in range(0, len(idx), self.batch_size):
                s = slice(i, i + self.batch_size)
                yield self.x[s], self.onehot[s], self.labels[s]
            return
        # one small gather per batch (a shuffled copy of the whole split per epoch would cost
        # as much time and 150 MB more peak memory)
        for i in range(0, len(idx), self.batch_size):
            b = idx[i : i + self.batch_size]
            yield self.x.index_select(0, b), self.onehot.index_select(0, b), self.labels.index_select(0, b)


class MNISTDataModule(pl.LightningDataModule):
    """MNIST-format digits, standardized and flattened, as preloaded tensors.

    Args:
        dataset: ``MNIST``, ``FashionMNIST`` or ``KMNIST``.
        data_dir: root folder; files live in ``<data_dir>/<dataset>/raw/``.
        batch_size: training batch size per process; under DDP one step takes
            ``world_size × batch_size`` images (the effective batch).
        val_size: images held out of the 60 000 training images for validation.
        eval_batch_size: batch size for validation, test and the train-split report
            (larger is faster and does not change any result).
        seed: seeds the train/validation split and the per-epoch order; ``None``
            takes the run's ``--seed_everything`` value.  Checkpoints carry the seed and
            ``val_size`` actually used, with the training split's mean and std: restored,
            they rebuild the same split (``validate``/``test``/a resumed ``fit``), so no
            training image leaks into validation whatever the command line's seed.
        predict_dir: folder of digit images (PNG, JPEG, … any format PIL reads) for ``predict``.
        augment: deform every training batch (never validation, test or predict batches) with a
            random affine map per image (:mod:`src.data.augment`): rotation uniform in
            ``±augment_degrees``, shift in ``±augment_translate`` × 28 pixels (whole pixels),
            zoom uniform in ``augment_scale``, plus torchvision's elastic field when
            ``augment_elastic_alpha`` > 0 (``augment_elastic_sigma`` its smoothness).  The draws
            are seeded by ``(seed, epoch, rank)``, so a resumed run deforms like an uninterrupted one.
    """

    def __init__(
        self,
        dataset: Literal["MNIST", "FashionMNIST", "KMNIST"] = "MNIST",
        data_dir: str = "data/",
        batch_size: PositiveInt = 64,
        val_size: PositiveInt = 10_000,
        eval_batch_size: PositiveInt = 1000,
        seed: Optional[int] = None,
        predict_dir: Optional[str] = None,
        augment: bool = False,
        augment_degrees: HalfTurnDegrees = 10.0,
        augment_translate: UnitIntervalCO = 0.1,
        augment_scale: tuple[FinitePositiveFloat, FinitePositiveFloat] = (0.9, 1.1),
        augment_elastic_alpha: FiniteNonNegativeFloat = 0.0,
        augment_elastic_sigma: FinitePositiveFloat = 4.0,
    ) -> None:
        super().__init__()
        if Path(data_dir).exists() and not Path(data_dir).is_dir():
            raise ValueError(f"--data.data_dir={data_dir!r} is a file; give the folder that holds {dataset}/raw/")
        self.save_hyperparameters()
        check_augment(augment_degrees, augment_translate, augment_scale, augment_elastic_alpha, augment_elastic_sigma)
        self.augment = augment
        self.augmenter: BatchAugment | None = None  # made in setup, when the background value is known
        self._augment_epoch: int | None = None  # the epoch the augmenter's generator was seeded for
        self.dataset, self.data_dir = dataset, data_dir
        self.batch_size, self.val_size, self.eval_batch_size = batch_size, val_size, eval_batch_size
        self._seed = seed
        self.predict_dir = predict_dir
        self.predict_names: list[str] = []  # files read by setup("predict"), in batch order
        self.predict_pixels: Tensor | None = None  # their pixels in [0, 1], (N, 28, 28)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self._split_of: tuple[int, int] | None = None  # (seed, val_size) that made self.splits
        self.mean: float | None = None
        self.std: float | None = None

    @property
    def seed(self) -> int:
        if self._seed is not None:
            return self._seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def prepare_data(self) -> None:
        # Runs on one process: unpack or download before the others read.
        if self.trainer is not None and self.trainer.state.fn == "predict":
            return  # predict needs only the training mean and std, which the checkpoint holds
        for train in (True, False):
            ensure_split(self.data_dir, self.dataset, train)  # setup() reads them

    def setup(self, stage: Optional[str] = None) -> None:
        if stage == "predict":
            self.setup_predict()
            return
        if not self.splits:
            self._split(self.seed, self.val_size)
        if stage == "fit" and (self.trainer is None or self.trainer.state.fn == "fit"):  # before training starts
            n_val = len(self.splits["val"][1])
            check_batch_size(self.batch_size, len(self.splits["train"][1]) + n_val, n_val, self.dataset)

    def _split(self, seed: int, val_size: int, mean: float | None = None, std: float | None = None) -> None:
        """Split the training images (seeded), standardize every split with the training split's statistics.

        ``mean``/``std`` given (from a checkpoint) are used instead of the training split's own.
        """
        images, labels = load_split(self.data_dir, self.dataset, train=True)
        test_images, test_labels = load_split(self.data_dir, self.dataset, train=False)
        check_val_size(val_size, len(labels), self.dataset)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        val_idx, train_idx = perm[:val_size], perm[val_size:]
        train_x = images[train_idx].float().div_(255)
        if mean is None or std is None:
            mean, std = train_x.mean().item(), train_x.std().item()
        self.mean, self.std = mean, std

        def standardized(x01: Tensor) -> Tensor:  # in place on a fresh copy: one float copy per split
            return x01.sub_(self.mean).div_(self.std).reshape(len(x01), -1)

        self.splits = {
            "train": (standardized(train_x), labels[train_idx]),
            "val": (standardized(images[val_idx].float().div_(255)), labels[val_idx]),
            "test": (standardized(test_images.float().div_(255)), test_labels),
        }
        self._split_of = (seed, val_size)
        if self.augment:
            hp = self.hparams
            self.augmenter = BatchAugment(
                hp.augment_degrees, hp.augment_translate, hp.augment_scale, hp.augment_elastic_alpha,
                hp.augment_elastic_sigma, background=-self.mean / self.std,  # standardized black
            )  # fmt: skip

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # Batches are already CPU tensors: skip Lightning's recursive walk when there is no move.
        # (Here, not in the LightningModule: there Lightning warned on every run that a data module was given.)
        tensors = batch if isinstance(batch, (tuple, list)) else [batch]
        if device.type == "cpu" and all(t.device.type == "cpu" for t in tensors):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Deform training batches (``--data.augment``); every other batch passes unchanged."""
        trainer = self.trainer
        if self.augmenter is None or trainer is None or not trainer.training or not isinstance(batch, (tuple, list)):
            return batch  # (a bare tensor: the model summary's example input)
        epoch, rank = trainer.current_epoch, trainer.global_rank
        if self._augment_epoch != epoch:  # the epoch's first batch: reseed from (seed, epoch, rank)
            seed = self._split_of[0] if self._split_of else self.seed  # the split's seed (a checkpoint's on resume)
            self.augmenter.seed(epoch_seed(seed, epoch) * 65_537 + rank + 0xA06)
            self._augment_epoch = epoch
        x, onehot, labels = batch
        return self.augmenter(x), onehot, labels

    def standardize(self, x01: Tensor) -> Tensor:
        """Pixels in [0, 1], any leading shape ``(N, 28, 28)`` → standardized ``(N, 784)``."""
        return x01.sub(self.mean).div_(self.std).reshape(len(x01), -1)

    def _batches(self, split: str, batch_size: int, shuffle: bool) -> TensorBatches:
        x, y = self.splits[split]
        return TensorBatches(
            x, y, batch_size, shuffle=shuffle, seed=self.seed, trainer=self.trainer, drop_uneven=shuffle
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size, shuffle=False)

    def eval_dataloader(self, split: str) -> TensorBatches:
        """Unshuffled batches of any split (``train``, ``val`` or ``test``) for the final report."""
        return self._batches(split, self.eval_batch_size, shuffle=False)

    def setup_predict(self) -> None:
        """Read ``predict_dir``'s images in MNIST's format (:mod:`src.data.images`), warning of each skipped file."""
        try:
            self.predict_names, self.predict_pixels, problems = load_folder(self.predict_dir)
        except ValueError as err:  # no such folder, or not one usable image in it: the message names it
            raise DataError(str(err)) from err
        for problem in problems:  # one line each, without the source line a Python warning shows
            _tell(f"warning: skipped {problem}")

    def predict_dataloader(self) -> TensorBatches:
        # Called after the checkpoint (with the training mean and std) is restored; without one,
        # the statistics come from the training split itself.
        if self.mean is None or self.std is None:
            self.setup("fit")
        x = self.standardize(self.predict_pixels)
        return TensorBatches(x, torch.zeros(len(x), dtype=torch.long), self.eval_batch_size)

    def state_dict(self) -> dict:
        # Saved in checkpoints: predict standardizes new images the same way, and validate, test
        # and a resumed fit rebuild the very split the weights were trained on.
        seed, val_size = self._split_of or (self.seed, self.val_size)
        return {"mean": self.mean, "std": self.std, "seed": int(seed), "val_size": int(val_size)}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning restores this after setup() has split with the command line's values.
        self.mean, self.std = state_dict.get("mean"), state_dict.get("std")
        seed, val_size = state_dict.get("seed"), state_dict.get("val_size")
        if seed is None or val_size is None:  # a checkpoint written before the split was saved
            return
        self._seed, self.val_size = seed, val_size
        if self.splits and self._split_of != (seed, val_size):
            self._split(seed, val_size, self.mean, self.std)


def check_batch_size(batch_size: int, n_images: int, val_size: int, dataset: str) -> None:
    """A training batch no larger than the training split (larger: every epoch one step of the whole split)."""
    n_train = n_images - val_size
    if batch_size > n_train:
        raise ConfigError(
            f"--data.batch_size={batch_size!r} is larger than the {n_train} training images ({n_images} of "
            f"{dataset} minus --data.val_size {val_size}): every epoch would be one step of {n_train}; "
            f"give at most {n_train}"
        )


def check_val_size(val_size: int, n_train: int, dataset: str) -> None:
    """The validation split must leave at least one training image."""
    if not 0 < val_size < n_train:
        raise ConfigError(
            f"--data.val_size={val_size!r} is not allowed; it must be > 0 and smaller than the "
            f"{n_train} training images of {dataset}"
        )
