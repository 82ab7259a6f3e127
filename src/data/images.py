"""Your own digit images in MNIST's format: grayscale, light digit on black, 28×28, centered by mass.

    python -m src.train predict --config configs/relu.yaml \\
        --ckpt_path lightning_logs/relu/version_0/checkpoints/last.ckpt --data.predict_dir my_digits/

MNIST's digits were fitted into a 20×20 box (aspect kept, anti-aliased) and
placed in a 28×28 field so that their center of mass sits at its center
(pixel (14, 14) in index coordinates, the mean over the test set).
:func:`to_mnist` does the same to any picture of one digit:

1. transparency is flattened onto a background that contrasts with the ink;
2. grayscale; if the border is mostly light (ink on paper) the image is inverted;
3. uneven lighting is levelled: a plane fitted to the border (the paper, robustly: border
   pixels the digit touches are left out of the fit) is subtracted, so a page lit from one
   side (a 150→230 ramp, say) becomes an even background;
4. everything at or below the background level (the border's median, plus a
   tenth of the contrast, which swallows paper texture and JPEG noise) goes to
   0 and the ink is stretched to 0…255;
5. the ink's bounding box is resized to fit 20×20 and pasted into 28×28 by mass.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

__all__ = ["read_image", "to_mnist", "load_folder", "BOX", "SIZE"]

SIZE = 28  #: MNIST's field
BOX = 20  #: the box the digit is fitted into
CENTER = 14.0  #: where MNIST's centers of mass lie (index coordinates)
#: the longest side a picture is decoded at: the digit ends in a 20×20 box, and the levelling's
#: float64 planes cost 32 bytes a pixel
WORK_SIDE = 1024


def read_image(path: str | Path) -> Image.Image:
    """Open and decode one image, at most :data:`WORK_SIDE` pixels a side; ``ValueError`` naming the file if unreadable.

    A larger picture is shrunk while it is decoded (``Image.thumbnail``, which asks the decoder
    for a reduced draft first: a JPEG decodes at 1/2, 1/4 or 1/8 of its size), so a 10000×10000
    photo costs about what its small copy does, not gigabytes of full-size arrays.  Pillow's
    decompression-bomb refusal (``Image.open``, from the header) stays in force.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.LANCZOS)  # no-op for a picture already small
            im.load()  # decode now: a truncated or corrupt file fails here, not later
            return ImageOps.exif_transpose(im)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image (PIL cannot identify its format)") from None
    except Exception as err:  # noqa: BLE001 (PIL's decoders raise many kinds on corrupt data)
        raise ValueError(f"{path}: cannot read the image ({type(err).__name__}: {err})") from None


def _to_gray(im: Image.Image) -> Image.Image:
    """8-bit grayscale; transparent pixels take the opposite shade of the opaque ink."""
    if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit grayscale PNG: convert("L") would clip
        return im.convert("I").point(lambda v: v / 257).convert("L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        alpha, gray = rgba.getchannel("A"), rgba.convert("L")
        if alpha.getextrema()[0] < 255:
            ink = pil_to_tensor(gray)[pil_to_tensor(alpha) > 127]
            shade = 255 if ink.numel() == 0 or ink.float().mean() < 128 else 0
            return Image.composite(gray, Image.new("L", gray.size, shade), alpha)
        return gray
    return im.convert("L")


def _background(im: Image.Image) -> float:
    """The background's level: the median of the outer one-pixel frame (of all pixels if tiny)."""
    g = pil_to_tensor(im)[0]
    frame = g if min(g.shape) < 3 else torch.cat([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])
    return frame.median().item()


def _level(im: Image.Image, flat: float = 12.0) -> Image.Image:
    """Subtract the background's linear ramp, fitted to the outer frame; an (almost) even one is left alone.

    The plane ``a + b·x + c·y`` is fitted to the frame by least squares twice: the second fit
    leaves out the frame pixels more than 3 robust deviations off the first (where the digit
    touches the border).  Uneven lighting is smooth, so the plane carries it and the digit stays.
    """
    g = pil_to_tensor(im)[0].double()
    h, w = g.shape
    if min(h, w) < 3:
        return im
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    frame = torch.zeros(h, w, dtype=torch.bool)
    frame[0], frame[-1], frame[:, 0], frame[:, -1] = True, True, True, True
    design = torch.stack([torch.ones_like(xs), xs / w, ys / h], -1)  # (h, w, 3)
    a, v = design[frame], g[frame]  # (n, 3), (n,)
    coef = torch.linalg.lstsq(a, v[:, None]).solution
    resid = (v - (a @ coef)[:, 0]).abs()
    keep = resid <= 3 * 1.4826 * resid.median() + 2
    coef = torch.linalg.lstsq(a[keep], v[keep][:, None]).solution
    plane = (design @ coef)[..., 0]
    if plane.max() - plane.min() < flat:
        return im  # even lighting: nothing to level
    levelled = (g - plane).clamp(0, 255).round().to(torch.uint8)
    return Image.fromarray(levelled.numpy(), mode="L")


def to_mnist(im: Image.Image) -> Image.Image:
    """One digit picture (any size, either polarity) → a 28×28 ``L`` image like MNIST's."""
    gray = _to_gray(im)
    if _background(gray) > 127:
        gray = ImageOps.invert(gray)  # dark ink on light paper → light on dark, like MNIST
    gray = _level(gray)
    background, top = _background(gray), gray.getextrema()[1]
    if top - background < 16:
        raise ValueError("no digit found: the image is (nearly) uniform")
    black = background + (top - background) / 10
    # levels: ≤ black → 0, top → 255
    gray = gray.point(lambda v: 0 if v <= black else round(255 * (v - black) / (top - black)))
    digit = gray.crop(gray.getbbox())
    scale = BOX / max(digit.size)
    size = (max(1, round(digit.width * scale)), max(1, round(digit.height * scale)))
    digit = digit.resize(size, Image.Resampling.LANCZOS)
    mass = pil_to_tensor(digit)[0].double()
    total = mass.sum()
    if total == 0:
        raise ValueError("no digit found after resizing")
    cy = (mass.sum(1) * torch.arange(mass.shape[0])).sum() / total  # center of mass, (row, col)
    cx = (mass.sum(0) * torch.arange(mass.shape[1])).sum() / total
    left = min(max(round(CENTER - cx.item()), 0), SIZE - digit.width)
    upper = min(max(round(CENTER - cy.item()), 0), SIZE - digit.height)
    field = Image.new("L", (SIZE, SIZE), 0)
    field.paste(digit, (left, upper))
    return field


def load_folder(folder: str | Path | None) -> tuple[list[str], Tensor, list[str]]:
    """Every readable image in ``folder`` (sorted by name, hidden files skipped) in MNIST's format.

    Returns ``(names, pixels, problems)``: ``pixels`` float ``(N, 28, 28)`` in [0, 1], and one
    message naming the file for each file that was skipped.  ``ValueError`` if the folder is
    missing or holds no usable image.
    """
    if folder is None or not Path(folder).is_dir():
        raise ValueError(f"--data.predict_dir={None if folder is None else str(folder)!r} is not a folder")
    folder = Path(folder)
    names, images, problems = [], [], []
    for path in sorted(p for p in folder.iterdir() if (p.is_file() or p.is_symlink()) and not p.name.startswith(".")):
        if not path.exists():  # a link whose target is gone: said like every other unreadable file
            problems.append(f"{path}: a broken link (its target {path.readlink()} does not exist)")
            continue
        if not path.is_file():  # a link to a folder
            continue
        try:
            img = to_mnist(read_image(path))
        except ValueError as err:
            msg = str(err)
            problems.append(msg if msg.startswith(str(path)) else f"{path}: {msg}")
            continue
        names.append(path.name)
        images.append(pil_to_tensor(img)[0].float().div_(255))
    if not images:
        detail = "; ".join(problems) if problems else "the folder is empty"
        raise ValueError(f"no usable image in {folder}/ ({detail})")
    return names, torch.stack(images), problems
