"""The data module: layout handling, split, standardization, batching, per-epoch order."""

import re

import pytest
import torch

from src.data.mnist import MNISTDataModule, TensorBatches, prepare_raw_files
from tests.fakedata import FILES, write_fake_mnist

from tests.conftest import REAL_DATA, needs_real_mnist as needs_real


@pytest.fixture(scope="module")
def real_dm():
    dm = MNISTDataModule(data_dir=str(REAL_DATA), seed=0)
    dm.prepare_data()
    dm.setup()
    return dm


@needs_real
def test_real_split_sizes_shapes_dtypes(real_dm):
    sizes = {k: len(v[1]) for k, v in real_dm.splits.items()}
    assert sizes == {"train": 50000, "val": 10000, "test": 10000}
    for x, y in real_dm.splits.values():
        assert x.shape[1:] == (784,) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.min() == 0 and y.max() == 9
    # the split is a partition of the 60 000 training images: known test labels, full counts
    assert real_dm.splits["test"][1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    counts = torch.bincount(real_dm.splits["train"][1]) + torch.bincount(real_dm.splits["val"][1])
    assert counts.sum() == 60000


@needs_real
def test_real_standardization(real_dm):
    x = real_dm.splits["train"][0]
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-4
    # statistics come from the training split, close to MNIST's well-known 0.1307 / 0.3081
    assert real_dm.mean == pytest.approx(0.1307, abs=2e-3) and real_dm.std == pytest.approx(0.3081, abs=2e-3)
    # validation and test are standardized with the same numbers, so they are near, not exactly, 0/1
    assert abs(real_dm.splits["test"][0].mean().item()) < 0.05


def test_unpacks_gz_files(tmp_path):
    raw = write_fake_mnist(tmp_path, n_train=300, n_test=50, gz=True)
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert prepare_raw_files(tmp_path, "MNIST")
    for train in (True, False):
        for name in FILES[train]:
            assert (raw / name).exists()
    assert not list(raw.glob(".*tmp*"))  # no temporary file left behind
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=50, seed=0)
    dm.setup()
    assert {k: len(v[1]) for k, v in dm.splits.items()} == {"train": 250, "val": 50, "test": 50}


@pytest.mark.parametrize("dataset", ["FashionMNIST", "KMNIST"])
def test_other_datasets_use_their_own_folder(tmp_path, dataset):
    write_fake_mnist(tmp_path, dataset=dataset, n_train=120, n_test=20, gz=False)
    dm = MNISTDataModule(dataset=dataset, data_dir=str(tmp_path), val_size=20, seed=0)
    dm.setup()
    assert len(dm.splits["train"][1]) == 100


def test_missing_files_offline_names_expected_files(tmp_path, monkeypatch):
    from torchvision import datasets

    def no_network(self):
        raise RuntimeError("no network")

    monkeypatch.setattr(datasets.MNIST, "download", no_network)
    expected = re.escape(
        f"{tmp_path / 'MNIST' / 'raw'}/ (--data.data_dir={str(tmp_path)!r}) and could not be downloaded, so nothing "
        "was created there. Expected the files train-images"
    )
    with pytest.raises(RuntimeError, match=expected):
        MNISTDataModule(data_dir=str(tmp_path)).setup()


def _batches(shuffle, seed=0, epoch=0, n=100, batch=16):
    class FakeTrainer:
        current_epoch = epoch
        global_rank = 0
        world_size = 1

    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)
    return TensorBatches(x, torch.arange(n) % 10, batch, shuffle=shuffle, seed=seed, trainer=FakeTrainer())


def test_batches_cover_every_sample_once():
    b = _batches(shuffle=True)
    seen = torch.cat([x[:, 0] for x, _, _ in b]).long()
    assert len(b) == 7 and sorted(seen.tolist()) == list(range(100))
    x, onehot, labels = next(iter(b))
    assert onehot.shape == (16, 10) and torch.equal(onehot.argmax(1), labels)


def test_order_repeats_per_seed_and_epoch_and_changes_across_them():
    order = lambda **kw: torch.cat([x[:, 0] for x, _, _ in _batches(True, **kw)]).tolist()  # noqa: E731
    assert order(seed=1, epoch=3) == order(seed=1, epoch=3)
    assert order(seed=1, epoch=3) != order(seed=1, epoch=4)
    assert order(seed=1, epoch=3) != order(seed=2, epoch=3)
    assert torch.cat([x[:, 0] for x, _, _ in _batches(False)]).tolist() == list(range(100))


def test_shards_are_disjoint_and_interleave_to_the_single_process_batches():
    """Two processes of batch 8: step k together holds exactly step k of one process of batch 16."""

    def trainer(rank, world):
        return type("T", (), {"current_epoch": 2, "global_rank": rank, "world_size": world})()

    x = torch.arange(100, dtype=torch.float32)[:, None]
    y = torch.arange(100) % 10
    single = TensorBatches(x, y, 16, shuffle=True, seed=5, trainer=trainer(0, 1), drop_uneven=True)
    shards = [TensorBatches(x, y, 8, shuffle=True, seed=5, trainer=trainer(r, 2), drop_uneven=True) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(single) == 7
    for (a, _, _), (b, _, _), (s, _, _) in zip(*shards, single):
        assert sorted(torch.cat([a, b])[:, 0].tolist()) == sorted(s[:, 0].tolist())
