"""Batch augmentation (src/data/augment.py): each image deformed as torchvision deforms it, training batches only."""

from types import SimpleNamespace

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from src.data.augment import BatchAugment, check_augment
from src.data.mnist import MNISTDataModule
from tests.fakedata import write_fake_mnist

BG = -0.4242  # the standardized black of MNIST: what shows outside the shifted image


def _digits(n, gen):
    """Standardized-looking images: background BG with a bright random blob in the middle."""
    x = torch.full((n, 28, 28), BG)
    x[:, 8:20, 8:20] += 3 * torch.rand(n, 12, 12, generator=gen)
    return x.view(n, 784)


def test_each_image_equals_torchvision_affine_with_its_own_parameters():
    gen = torch.Generator().manual_seed(0)
    x = _digits(32, gen)
    aug = BatchAugment(degrees=15, translate=0.1, scale=(0.85, 1.15), background=BG)
    aug.seed(1)
    params = aug.draw(32)
    out = aug.apply(x, params).view(32, 28, 28)
    for i in range(32):
        image = (x[i].view(1, 28, 28) - BG)  # torchvision pads with 0: compare on the background-free image
        ref = TF.affine(
            image, angle=float(params["angle"][i]), translate=[float(params["tx"][i]), float(params["ty"][i])],
            scale=float(params["scale"][i]), shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR,
        ) + BG  # fmt: skip
        torch.testing.assert_close(out[i], ref[0], rtol=0, atol=2e-5)
    assert len(set(params["angle"].tolist())) == 32  # a draw per image, not one per batch


def test_grid_is_affine_grid_bit_for_bit():
    aug = BatchAugment(degrees=30, translate=0.2, scale=(0.7, 1.3))
    for seed in range(5):
        aug.seed(seed)
        theta = aug.theta(aug.draw(64), (28, 28)).float()
        assert torch.equal(aug.grid(theta), torch.nn.functional.affine_grid(theta, [64, 1, 28, 28], align_corners=False))


def test_elastic_field_equals_torchvision_elastic():
    gen = torch.Generator().manual_seed(2)
    x = _digits(4, gen)
    aug = BatchAugment(degrees=0, translate=0, scale=(1, 1), elastic_alpha=34, elastic_sigma=4, background=BG)
    aug.seed(3)
    params = aug.draw(4)
    field = params["displacement"]
    assert field.shape == (4, 28, 28, 2) and field.abs().max() > 0.01  # a real displacement
    out = aug.apply(x, params).view(4, 28, 28)
    for i in range(4):
        ref = TF.elastic(x[i].view(1, 28, 28) - BG, field[i : i + 1], interpolation=InterpolationMode.BILINEAR) + BG
        torch.testing.assert_close(out[i], ref[0], rtol=0, atol=2e-5)
    # the field is torchvision's recipe: uniform noise blurred by a (k × k) Gaussian, k = 8σ + 1 made odd
    noise = torch.rand(4, 2, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    aug.generator = torch.Generator().manual_seed(0)
    blurred = TF.gaussian_blur(noise, [33, 33], [4.0, 4.0]) * (34 / 28)
    torch.testing.assert_close(aug.displacement(4), blurred.permute(0, 2, 3, 1), rtol=0, atol=1e-6)


def test_draws_stay_in_range_and_repeat_with_the_seed():
    aug = BatchAugment(degrees=12, translate=0.1, scale=(0.9, 1.1))
    aug.seed(7)
    p = aug.draw(5000)
    assert p["angle"].abs().max() <= 12 and p["angle"].abs().max() > 11.9
    assert set(p["tx"].unique().tolist()) == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}  # ±2.8 px, whole pixels
    assert 0.9 <= p["scale"].min() and p["scale"].max() <= 1.1
    aug.seed(7)
    assert torch.equal(aug.draw(5000)["angle"], p["angle"])


def test_identity_parameters_change_nothing():
    x = _digits(3, torch.Generator().manual_seed(4))
    aug = BatchAugment(degrees=0, translate=0, scale=(1, 1), background=BG)
    torch.testing.assert_close(aug(x), x, rtol=0, atol=1e-5)  # bilinear weights of 1 and 0, up to rounding


@pytest.mark.parametrize(
    "kwargs,named",
    [
        (dict(degrees=200), "augment_degrees=200"),
        (dict(degrees=-5), "augment_degrees=-5"),
        (dict(translate=1.0), "augment_translate=1.0"),
        (dict(scale=(1.2, 0.8)), "augment_scale=[1.2, 0.8]"),
        (dict(scale=(0, 1)), "augment_scale=[0, 1]"),
        (dict(elastic_alpha=-1), "augment_elastic_alpha=-1"),
        (dict(elastic_sigma=0), "augment_elastic_sigma=0"),
    ],
)
def test_out_of_range_options(kwargs, named):
    args = dict(degrees=10, translate=0.1, scale=(0.9, 1.1), elastic_alpha=0, elastic_sigma=4) | kwargs
    with pytest.raises(ValueError, match="is not allowed") as exc:
        check_augment(**args)
    assert str(exc.value).startswith(named)


def test_only_training_batches_are_deformed_and_each_epoch_reseeds(tmp_path):
    write_fake_mnist(tmp_path, n_train=300, n_test=50)
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=100, batch_size=50, seed=0, augment=True)
    dm.setup("fit")
    assert dm.augmenter.background == pytest.approx(-dm.mean / dm.std)
    batch = next(iter(dm._batches("train", 50, shuffle=True)))

    def after(training, epoch=0, rank=0):
        dm.trainer = SimpleNamespace(training=training, current_epoch=epoch, global_rank=rank)
        return dm.on_after_batch_transfer(batch, 0)

    assert after(training=False) is batch  # validation, test, predict: untouched
    first = after(training=True, epoch=0)[0]
    again = after(training=True, epoch=0)[0]
    assert not torch.equal(first, batch[0]) and not torch.equal(first, again)  # a new draw per batch
    assert after(training=True, epoch=1)[0].ne(first).any()
    epoch0 = [after(training=True, epoch=0)[0] for _ in range(2)]  # reseeded: epoch 0's stream again
    assert torch.equal(epoch0[0], first) and torch.equal(epoch0[1], again)
    dm._augment_epoch = None  # a fresh process of rank 1
    assert not torch.equal(after(training=True, epoch=0, rank=1)[0], first)  # DDP ranks differ
    plain = MNISTDataModule(data_dir=str(tmp_path), val_size=100, seed=0)
    plain.setup("fit")
    assert plain.augmenter is None
