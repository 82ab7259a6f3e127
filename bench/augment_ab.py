"""In-process A/B of `--data.augment`: one training epoch on MNIST with and without, alternating.

    OMP_NUM_THREADS=1 .venv/bin/python bench/augment_ab.py --rounds 3 --batch-size 128

Each round trains one epoch of the 784-500-250-100-10 ReLU + Adam net (dropout 0.2) on the
50 000 training images through Lightning (no logger, checkpoints, progress bar or validation),
once without augmentation and once with it, and reads the training pass's seconds from the
module's ``epoch_times``.  It also times, over one epoch's batches, the augmentation alone in three
forms: the batched per-image affine of ``src.data.augment`` (with and without the elastic field),
``v2.RandomAffine`` applied to the whole batch tensor (one draw for all images), and
``v2.RandomAffine`` applied image by image (one draw per image, the alternative to ours).
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning.pytorch as pl
import torch
from torchvision.transforms import v2

from src.data.augment import BatchAugment
from src.data.mnist import MNISTDataModule
from src.system.module import MLPClassifier


def epoch_seconds(dm: MNISTDataModule, augment: bool) -> float:
    dm.augmenter = BatchAugment(background=-dm.mean / dm.std) if augment else None
    dm._augment_epoch = None
    torch.manual_seed(0)
    model = MLPClassifier(activation="relu", optimizer="adam", lr=2e-3, dropout=0.2)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return model.epoch_times["train_epoch_s"][-1]


def augment_only(batches: list[torch.Tensor], fn) -> float:
    t0 = time.perf_counter()
    for x in batches:
        fn(x)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    torch.set_flush_denormal(True)
    dm = MNISTDataModule(batch_size=args.batch_size, seed=0)
    dm.setup("fit")
    x = dm.splits["train"][0]
    b = args.batch_size
    batches = [x[i : i + b] for i in range(0, len(x), b)]
    ours = BatchAugment(background=-dm.mean / dm.std)
    elastic = BatchAugment(elastic_alpha=34, background=-dm.mean / dm.std)
    tv = v2.RandomAffine(10, (0.1, 0.1), (0.9, 1.1), interpolation=v2.InterpolationMode.BILINEAR)
    alone = {
        "ours, per image (affine)": lambda: augment_only(batches, ours),
        "ours, per image (affine + elastic)": lambda: augment_only(batches[:40], elastic) * len(batches) / 40,
        "v2.RandomAffine on the batch (one draw)": lambda: augment_only(batches, lambda t: tv(t.view(-1, 1, 28, 28))),
        "v2.RandomAffine image by image": lambda: augment_only(
            batches[:40], lambda t: torch.stack([tv(img.view(1, 28, 28)) for img in t])
        ) * len(batches) / 40,  # the slow ones: a 40-batch sample, scaled to the epoch
    }
    times: dict[str, list[float]] = {"epoch, no augmentation": [], "epoch, --data.augment": []}
    times.update({k: [] for k in alone})
    for _ in range(args.rounds):
        times["epoch, no augmentation"].append(epoch_seconds(dm, False))
        times["epoch, --data.augment"].append(epoch_seconds(dm, True))
        for name, fn in alone.items():
            times[name].append(fn())
    base = statistics.median(times["epoch, no augmentation"])
    print(f"batch {b}, {len(batches)} batches per epoch, {args.rounds} rounds, {torch.get_num_threads()} thread(s)")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:42} min {min(t):6.2f}  median {med:6.2f} s/epoch  ({100 * med / base:5.1f} % of an epoch)")


if __name__ == "__main__":
    main()
