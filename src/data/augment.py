"""Random affine (and optionally elastic) deformations of whole training batches, one draw per image.

    python -m src.train fit --config configs/best_augmented.yaml   # --data.augment true

The parameters follow ``torchvision.transforms.v2.RandomAffine(degrees, translate, scale)`` and
``v2.ElasticTransform(alpha, sigma)``, drawn the same way (angle and scale uniform, the shift
uniform and rounded to whole pixels, the elastic field uniform noise blurred by torchvision's
``gaussian_blur``), but **per image**: a v2 transform called on a batch tensor draws one parameter
set and deforms every image of the batch alike, and calling it image by image costs about as much
as the training step itself (BENCHMARKS.md).  So each image's inverse affine matrix goes into one
batched sampling grid (``affine_grid``'s, bit for bit, with its base grid made once; the elastic
displacements are added to it), and one ``grid_sample`` resamples the batch, bilinearly, with the background outside the image: the
very grid and sampling torchvision's ``affine`` / ``elastic`` kernels build for one parameter set.
``tests/test_augment.py`` checks every image against ``v2.functional.affine`` / ``elastic`` called
with that image's own parameters.

The stream is a dedicated generator reseeded from ``(seed, epoch, rank)`` at the first batch of
each epoch, so a run resumed from an epoch's checkpoint draws the same deformations as one that
was never interrupted.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

__all__ = ["BatchAugment", "check_augment"]


def check_augment(degrees: Any, translate: Any, scale: Any, elastic_alpha: Any, elastic_sigma: Any) -> None:
    """``ValueError`` naming the first option out of range (the CLI prefixes ``--data.``)."""

    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not (number(degrees) and 0 <= degrees <= 180):
        raise ValueError(f"augment_degrees={degrees!r} is not allowed; the largest rotation must be in [0, 180] degrees")
    if not (number(translate) and 0 <= translate < 1):
        raise ValueError(
            f"augment_translate={translate!r} is not allowed; the largest shift is a fraction of the image size in [0, 1)"
        )
    if not (
        isinstance(scale, Sequence) and len(scale) == 2 and all(number(s) for s in scale) and 0 < scale[0] <= scale[1]
    ):
        raise ValueError(
            f"augment_scale={list(scale) if isinstance(scale, Sequence) else scale!r} is not allowed; "
            "give [low, high] with 0 < low <= high, e.g. [0.9, 1.1]"
        )
    if not (number(elastic_alpha) and elastic_alpha >= 0):
        raise ValueError(f"augment_elastic_alpha={elastic_alpha!r} is not allowed; it must be >= 0 (0 = no elastic)")
    if not (number(elastic_sigma) and elastic_sigma > 0):
        raise ValueError(f"augment_elastic_sigma={elastic_sigma!r} is not allowed; the blur's sigma must be > 0")


class BatchAugment:
    """Deform a batch of flattened, standardized ``(batch, H·W)`` images, each with its own random draw.

    Args:
        degrees: rotation angle uniform in ``[−degrees, degrees]`` (counter-clockwise positive).
        translate: shift uniform in ``±translate·size`` per axis, rounded to whole pixels.
        scale: zoom factor uniform in ``[scale[0], scale[1]]``.
        elastic_alpha, elastic_sigma: torchvision's ``ElasticTransform`` field (0 = none).
        background: the value outside the image (the standardized black, ``−mean/std``).
        size: ``(H, W)`` of the images.
    """

    def __init__(
        self,
        degrees: float = 10.0,
        translate: float = 0.1,
        scale: Sequence[float] = (0.9, 1.1),
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        background: float = 0.0,
        size: tuple[int, int] = (28, 28),
    ) -> None:
        check_augment(degrees, translate, scale, elastic_alpha, elastic_sigma)
        self.degrees, self.translate, self.scale = float(degrees), float(translate), tuple(map(float, scale))
        self.elastic_alpha, self.elastic_sigma = float(elastic_alpha), float(elastic_sigma)
        self.background, self.size = float(background), size
        self.generator = torch.Generator()
        self._base: Tensor | None = None  # (1, H·W, 3): the pixel centers (x, y, 1), made on first use

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed % 2**63)

    def draw(self, n: int) -> dict[str, Tensor]:
        """Per-image parameters, as :class:`~torchvision.transforms.v2.RandomAffine` draws them: ``(n,)`` each."""
        g, (h, w) = self.generator, self.size
        u = torch.rand(4, n, generator=g, dtype=torch.float64)  # angle, tx, ty, scale
        lo, hi = self.scale
        params = {
            "angle": (u[0] * 2 - 1) * self.degrees,
            "tx": torch.round((u[1] * 2 - 1) * (self.translate * w)),
            "ty": torch.round((u[2] * 2 - 1) * (self.translate * h)),
            "scale": lo + u[3] * (hi - lo),
        }
        if self.elastic_alpha:
            params["displacement"] = self.displacement(n)
        return params

    def displacement(self, n: int) -> Tensor:
        """Elastic fields ``(n, H, W, 2)`` in grid units, torchvision's recipe per image."""
        h, w = self.size
        noise = torch.rand(n, 2, h, w, generator=self.generator) * 2 - 1  # dx, dy uniform in [−1, 1]
        k = int(8 * self.elastic_sigma + 1)
        k += 1 - k % 2  # odd kernel, as torchvision makes it
        # the Gaussian is separable: a (k, 1) and a (1, k) blur equal the (k, k) one torchvision
        # applies, at 2k instead of k² multiply-adds per pixel (k = 33 for sigma 4)
        field = TF.gaussian_blur(noise, [k, 1], [self.elastic_sigma, self.elastic_sigma])
        field = TF.gaussian_blur(field, [1, k], [self.elastic_sigma, self.elastic_sigma])
        field = field * torch.tensor([self.elastic_alpha / w, self.elastic_alpha / h]).view(1, 2, 1, 1)
        return field.permute(0, 2, 3, 1)  # (n, H, W, 2)

    @staticmethod
    def theta(params: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """Inverse affine matrices ``(n, 2, 3)`` in ``affine_grid``'s normalized coordinates.

        torchvision's inverse map about the image center, without shear: output pixel ``p`` reads
        input ``M (p − t)`` with ``M = [[cos r, sin r], [−sin r, cos r]] / scale``, ``r = −angle``
        (pixel rows grow downwards, so a counter-clockwise turn on screen is a negative angle in
        these coordinates), i.e. offset ``−M t``; ``affine_grid`` measures positions in half-sizes, so the offset is divided
        by ``W/2`` and ``H/2`` (the linear part is unchanged for a square image).
        """
        h, w = size
        if h != w:
            raise ValueError(f"the batched affine supports square images only, got {h}x{w}")
        rot = torch.deg2rad(params["angle"])
        cos, sin = torch.cos(rot) / params["scale"], torch.sin(rot) / params["scale"]
        tx, ty = params["tx"], params["ty"]
        row0 = torch.stack([cos, sin, -(cos * tx + sin * ty) / (w / 2)], -1)
        row1 = torch.stack([-sin, cos, -(-sin * tx + cos * ty) / (h / 2)], -1)
        return torch.stack([row0, row1], 1)  # (n, 2, 3)

    def grid(self, theta: Tensor) -> Tensor:
        """``F.affine_grid(theta, (n, 1, H, W), align_corners=False)``, bit for bit, with its base grid made once.

        ``affine_grid`` fills an ``(n, H, W, 3)`` grid of pixel centers ``(x, y, 1)`` on every call,
        then multiplies it by each ``θᵀ`` (``bmm``); on 28×28 images that costs about as much as the
        resampling itself.  Here the centers are computed once, by the same formula (ATen's
        ``linspace(−1, 1, W) · (W − 1) / W``), and the same ``bmm`` reads them through a broadcast
        view, so the grid is identical (``tests/test_augment.py``) at about a third of the cost.
        """
        n, (h, w) = len(theta), self.size
        if self._base is None or self._base.dtype != theta.dtype or self._base.device != theta.device:
            opts = dict(dtype=theta.dtype, device=theta.device)
            base = torch.empty(1, h, w, 3, **opts)
            base[..., 0].copy_(torch.linspace(-1, 1, w, **opts) * (w - 1) / w)
            base[..., 1].copy_((torch.linspace(-1, 1, h, **opts) * (h - 1) / h).unsqueeze(-1))
            base[..., 2].fill_(1)
            self._base = base.view(1, h * w, 3)
        return self._base.expand(n, -1, -1).bmm(theta.transpose(1, 2)).view(n, h, w, 2)

    def apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``x`` ``(n, H·W)`` deformed with ``params``; same shape and dtype."""
        n, (h, w) = len(x), self.size
        theta = self.theta(params, self.size).to(x.dtype)
        grid = self.grid(theta)  # (n, H, W, 2)
        if "displacement" in params:
            grid = grid + params["displacement"].to(x.dtype)
        images = (x - self.background).view(n, 1, h, w)  # background 0, so zero padding fills it
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.view(n, h * w).add_(self.background)

    def __call__(self, x: Tensor) -> Tensor:
        return self.apply(x, self.draw(len(x)))
