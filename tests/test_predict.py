"""Predict on image files: MNIST-format conversion, then a briefly trained net through the real CLI."""

import csv
import json
import re

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image, ImageOps
from torchvision import datasets
from torchvision.transforms.functional import pil_to_tensor

from src.data.images import WORK_SIDE, load_folder, read_image, to_mnist
from src.data.mnist import MNISTDataModule
from src.system.module import MLPClassifier
from src.train import main
from tests.conftest import REAL_DATA, needs_real_mnist

N_DIGITS = 100  # 20 of each kind of file


@pytest.fixture
def one_thread():
    """Tiny nets train fastest on one thread, and a busy shared CPU makes extra threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mass_center(img: Image.Image) -> tuple[float, float]:
    x = pil_to_tensor(img)[0].double()
    r = torch.arange(28, dtype=torch.float64)
    return ((x.sum(1) * r).sum() / x.sum()).item(), ((x.sum(0) * r).sum() / x.sum()).item()


def _stroke(size=(90, 140), ink=0, paper=255, mode="L") -> Image.Image:
    """A thick vertical bar (a "1") drawn off-center."""
    im = Image.new(mode, size, paper)
    im.paste(ink, (20, 30, 35, 120))
    return im


def test_to_mnist_fits_20x20_box_and_centers_by_mass():
    out = to_mnist(_stroke())  # dark ink on light paper, off-center, 90×140
    assert out.size == (28, 28) and out.mode == "L"
    x = pil_to_tensor(out)[0]
    rows, cols = x.gt(0).any(1).nonzero(), x.gt(0).any(0).nonzero()
    assert rows.max() - rows.min() + 1 == 20  # the longer side fills the 20-pixel box
    assert cols.max() - cols.min() + 1 < 6  # aspect kept: a thin bar stays thin
    assert x.max() == 255 and x[0].max() == 0 and x[:, 0].max() == 0  # light on a black background
    cy, cx = _mass_center(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    # the same digit light-on-dark, or drawn on a transparent background, gives the same image
    assert torch.equal(pil_to_tensor(to_mnist(_stroke(ink=255, paper=0)))[0], x)
    rgba = _stroke(ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA")
    assert torch.equal(pil_to_tensor(to_mnist(rgba))[0], x)
    sixteen = Image.fromarray(pil_to_tensor(_stroke())[0].numpy().astype("uint16") * 257)  # a 16-bit PNG's mode
    assert sixteen.mode.startswith("I;16") and torch.equal(pil_to_tensor(to_mnist(sixteen))[0], x)


def on_lit_paper(ink_on_paper: Image.Image, left: int = 150, right: int = 230) -> Image.Image:
    """Dark ink on paper lit unevenly: the paper's brightness ramps from ``left`` to ``right`` across the page."""
    darkness = 1 - np.asarray(ink_on_paper.convert("L"), dtype=np.float64) / 255
    paper = np.linspace(left, right, ink_on_paper.width)[None, :]
    return Image.fromarray((paper * (1 - darkness)).round().astype(np.uint8))


def test_uneven_lighting_is_levelled():
    """A 150→230 ramp across the page: the paper's bright side used to count as ink, shrinking the digit."""
    even = pil_to_tensor(to_mnist(_stroke()))[0].float()
    for left, right in ((150, 230), (230, 150)):
        ramp = pil_to_tensor(to_mnist(on_lit_paper(_stroke(), left, right)))[0].float()
        assert (ramp - even).abs().mean() < 0.1 * even.mean(), (left, right)  # 0.58 × before the levelling
        rows, cols = ramp.gt(0).any(1).nonzero(), ramp.gt(0).any(0).nonzero()
        assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 < 6  # the bar, not the page


def test_to_mnist_leaves_mnist_digits_nearly_unchanged():
    test = datasets.MNIST(str(REAL_DATA), train=False) if (REAL_DATA / "MNIST" / "raw").is_dir() else None
    if test is None:
        pytest.skip("real MNIST not in data/MNIST/raw")
    for i in range(20):
        img, _ = test[i]
        before, after = pil_to_tensor(img)[0].float(), pil_to_tensor(to_mnist(img))[0].float()
        assert (before - after).abs().mean() < 0.15 * before.mean()


def test_load_folder_reports_and_skips_bad_files(tmp_path):
    _stroke().save(tmp_path / "one.png")
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "broken.png").write_bytes((tmp_path / "one.png").read_bytes()[:60])  # truncated
    Image.new("L", (30, 30), 255).save(tmp_path / "blank.jpg")
    names, pixels, problems = load_folder(tmp_path)
    assert names == ["one.png"] and pixels.shape == (1, 28, 28)
    assert len(problems) == 3
    for name, why in [("broken.png", "cannot read"), ("notes.txt", "not an image"), ("blank.jpg", "no digit")]:
        assert any(name in p and why in p for p in problems), (name, problems)
    (tmp_path / "one.png").unlink()
    with pytest.raises(ValueError, match="no usable image"):
        load_folder(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        load_folder(tmp_path / "missing")


def test_a_broken_link_is_said_like_every_unreadable_file(tmp_path):
    """Regression: skipped without a word among good pictures, and alone "the folder is empty"."""
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(ValueError, match=re.escape(f"no usable image in {tmp_path}/ ({tmp_path / 'gone.png'}: a broken "
                                                   f"link (its target {tmp_path / 'deleted.png'} does not exist))")):  # fmt: skip
        load_folder(tmp_path)
    _stroke().save(tmp_path / "one.png")
    names, _, problems = load_folder(tmp_path)
    assert names == ["one.png"] and problems == [f"{tmp_path / 'gone.png'}: a broken link (its target "
                                                 f"{tmp_path / 'deleted.png'} does not exist)"]  # fmt: skip


def _big_stroke(side: int) -> Image.Image:
    im = Image.new("L", (side, side), 250)
    im.paste(10, (side * 3 // 8, side // 8, side * 5 // 8, side * 7 // 8))
    return im


def test_a_large_picture_is_decoded_at_a_working_size(tmp_path, monkeypatch):
    """Regression: a 10000×10000 picture peaked at 6.8 GB; now it is shrunk while decoded (bench/predict_memory.py)."""
    from PIL import ImageFile

    big = _big_stroke(4096)
    big.save(tmp_path / "big.png")
    big.save(tmp_path / "big.jpg", quality=95)
    decoded = []  # the size each picture is decoded at
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (decoded.append(self.size), real_load(self))[1])
    jpg, png = read_image(tmp_path / "big.jpg"), read_image(tmp_path / "big.png")
    assert decoded[0] == (2048, 2048)  # the JPEG decoder's draft: half the size (thumbnail asks for twice WORK_SIDE)
    assert jpg.size == png.size == (WORK_SIDE, WORK_SIDE)
    # the result is its small copy's
    small = to_mnist(big.resize((WORK_SIDE, WORK_SIDE), Image.Resampling.LANCZOS))
    for im in (png, jpg):
        diff = (pil_to_tensor(to_mnist(im)).int() - pil_to_tensor(small).int()).abs().max().item()
        assert diff <= 8, diff
    assert read_image(tmp_path / "big.png").size == (WORK_SIDE, WORK_SIDE)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000 * 1000)  # Pillow's decompression-bomb refusal still holds
    with pytest.raises(ValueError, match="cannot read the image \\(DecompressionBombError"):
        read_image(tmp_path / "big.png")


def _write_digits(folder, images, labels) -> dict[str, int]:
    """Test digits as files: as is, enlarged, inverted (ink on paper), inverted + framed + JPEG, and
    inverted, enlarged, on unevenly lit paper."""
    folder.mkdir()
    truth = {}
    for i in range(N_DIGITS):
        img = Image.fromarray(images[i].numpy())
        kind = i % 5
        if kind == 1:
            img = img.resize((112, 112), Image.Resampling.BICUBIC)
        elif kind >= 2:
            img = ImageOps.invert(img)
        if kind == 3:
            img = ImageOps.expand(img, border=20, fill=255).resize((150, 150), Image.Resampling.BICUBIC)
        if kind == 4:
            img = on_lit_paper(ImageOps.expand(img, border=10, fill=255).resize((144, 144), Image.Resampling.BICUBIC))
        name = f"digit{i:02d}." + ("jpg" if kind == 3 else "png")
        img.save(folder / name)
        truth[name] = int(labels[i])
    return truth


@pytest.mark.slow
@needs_real_mnist
def test_predict_cli_on_image_files(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    net = ["--model.hidden_layers", "[128]", "--model.activation", "relu", "--model.optimizer", "adam",
           "--model.lr", "0.002", "--experiment", "p", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    main(["fit", *net, "--data.data_dir", str(REAL_DATA), "--trainer.max_epochs", "1",
          "--trainer.limit_train_batches", "300", "--trainer.limit_val_batches", "2"])  # fmt: skip
    run = tmp_path / "lightning_logs" / "p" / "version_0"
    test_acc = json.loads((run / "results.json").read_text())["test"]["accuracy"]
    assert test_acc > 0.9

    test = datasets.MNIST(str(REAL_DATA), train=False)
    truth = _write_digits(tmp_path / "mine", test.data, test.targets)
    (tmp_path / "mine" / "notes.txt").write_text("shopping list\n")
    (tmp_path / "mine" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)

    # No training data here: the mean and std must come from the checkpoint.
    capsys.readouterr()
    main(["predict", *net, "--data.data_dir", str(tmp_path / "no_data"), "--data.predict_dir", "mine",
          "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])  # fmt: skip
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: skipped ")]
    assert len(skipped) == 2
    assert any("corrupt.png" in m for m in skipped) and any("notes.txt" in m for m in skipped)

    with open(tmp_path / "lightning_logs" / "p" / "version_1" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "predicted", "probability", *(f"p{k}" for k in range(10))]
    assert sorted(r["file"] for r in rows) == sorted(truth)
    for r in rows:
        probs = [float(r[f"p{k}"]) for k in range(10)]
        assert abs(sum(probs) - 1) < 1e-4
        assert int(r["predicted"]) == max(range(10), key=probs.__getitem__)
        assert float(r["probability"]) == pytest.approx(max(probs), abs=1e-6)
    correct = {r["file"]: int(r["predicted"]) == truth[r["file"]] for r in rows}
    # every variant (as is, enlarged, inverted, inverted + framed JPEG, uneven lighting) is read
    # about as well as MNIST itself
    for kind in range(5):
        group = [ok for name, ok in correct.items() if int(name[5:7]) % 5 == kind]
        assert sum(group) / len(group) >= 0.75, (kind, group)
    assert sum(correct.values()) / len(correct) >= test_acc - 0.1


def test_predict_cli_empty_or_missing_folder_is_an_error(tmp_path, monkeypatch, capsys, one_thread):
    from tests.fakedata import write_fake_mnist

    monkeypatch.chdir(tmp_path)
    write_fake_mnist(tmp_path / "data", n_train=200, n_test=50)
    quiet = ["--trainer.enable_progress_bar", "false", "--model.hidden_layers", "[8]", "--experiment", "p"]
    main(["fit", *quiet, "--data.val_size", "50", "--trainer.max_epochs", "1"])
    ckpt = str(tmp_path / "lightning_logs" / "p" / "version_0" / "checkpoints" / "last.ckpt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no digits here\n")
    for folder, why in (("empty", r"no usable image in empty/ \(.*notes.txt: not an image"),
                        ("missing", "--data.predict_dir='missing' is not a folder")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(["predict", *quiet, "--data.predict_dir", folder, "--ckpt_path", ckpt])
        assert exit_.value.code == 1
        assert re.search(why, capsys.readouterr().err)
    assert sorted(p.name for p in (tmp_path / "lightning_logs" / "p").iterdir()) == ["version_0"]  # none left


class _Fed(Callback):
    """What predict feeds the net (each batch's x) and what it returns, kept for the test below."""

    inputs: list = []
    outputs: list = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        _Fed.inputs.append(batch[0].clone())
        _Fed.outputs.append(outputs.clone())


def test_predict_feeds_the_net_the_training_preprocessing_of_to_mnist(fake_data, one_thread):
    """Regression: your images standardized without dividing by the std passed the whole suite.

    The invariant, on values: the tensor predict feeds the net for a picture is the training
    splits' own preprocessing (the checkpoint's mean and std, the same flattening) of the 28×28
    pixels ``to_mnist`` returns, and predict's outputs are the net's on that tensor.
    """
    from tests.fakedata import FILES, idx_bytes, make_images

    tiny = ["--data.data_dir", "data", "--data.val_size", "100", "--model.hidden_layers", "[16]",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--experiment", "p"]  # fmt: skip
    main(["fit", *tiny, "--trainer.max_epochs", "1", "--diagnostics", "false"])
    ckpt_path = fake_data / "lightning_logs" / "p" / "version_0" / "checkpoints" / "last.ckpt"

    pictures = fake_data / "mine"  # MNIST-like, enlarged, and dark ink on light paper
    pictures.mkdir()
    for i, pixels in enumerate(make_images(np.arange(4), np.random.default_rng(1))):
        img = Image.fromarray(pixels).resize((56, 56), Image.Resampling.BICUBIC)
        (ImageOps.invert(img) if i % 2 else img).save(pictures / f"digit{i}.png")
    _Fed.inputs, _Fed.outputs = [], []
    main(["predict", *tiny, "--ckpt_path", str(ckpt_path), "--data.predict_dir", "mine",
          "--trainer.callbacks+=tests.test_predict._Fed"])  # fmt: skip
    fed, outputs = torch.cat(_Fed.inputs), torch.cat(_Fed.outputs)

    # the training splits' own preprocessing of to_mnist's pixels: those pixels as a training set's
    # IDX files, split and standardized by the data module with the checkpoint's statistics
    mnist = torch.stack([pil_to_tensor(to_mnist(Image.open(p)))[0] for p in sorted(pictures.iterdir())])
    raw = fake_data / "as_training" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, array in zip(FILES[True], (mnist.repeat(2, 1, 1).numpy(), np.tile(np.arange(4, dtype=np.uint8), 2))):
        (raw / name).write_bytes(idx_bytes(array))
    for name in FILES[False]:
        (raw / name).write_bytes((fake_data / "data" / "MNIST" / "raw" / name).read_bytes())
    ckpt = torch.load(ckpt_path, weights_only=True)
    stats = ckpt["MNISTDataModule"]
    dm = MNISTDataModule(data_dir=str(fake_data / "as_training"), val_size=1)
    dm._split(seed=0, val_size=1, mean=stats["mean"], std=stats["std"])
    train_x, train_y = dm.splits["train"]
    expected = torch.stack([train_x[train_y == k][0] for k in range(4)])  # each picture's own training row
    torch.testing.assert_close(fed, expected, rtol=0, atol=0)

    model = MLPClassifier.load_from_checkpoint(ckpt_path, weights_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(outputs, model.eval_net(expected), rtol=0, atol=0)
