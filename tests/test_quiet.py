"""A quiet console: a tiny fit (through ``src.report --run``), test and predict print no warning or tip the user can do nothing about.

Real processes, as a user runs them: what reaches the screen is what Python's warnings, Lightning's
log and our prints leave there.  Lines that concern the user's own choice stay (a skipped file of
``--data.predict_dir``), once.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.fakedata import make_images, write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data.data_dir", "data", "--data.val_size", "100", "--model.hidden_layers", "[16]",
        "--trainer.log_every_n_steps", "1"]  # fmt: skip
#: what a line the user can do nothing about looks like: a Python warning (file:line: Category), a
#: Lightning tip, a deprecation, the device census, a summary's FLOPs column of zeros, LightningCLI's args notice
UNASKED = re.compile(r"\.py:\d+: |Warning|💡|Tip:|deprecated|available: |^0 +Total Flops|args parameter|Couldn't infer|rank_zero")


def _run(module: str, *args: str, cwd: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return (proc.stdout + proc.stderr).splitlines()


def test_fit_test_and_predict_print_nothing_unasked(tmp_path):
    write_fake_mnist(tmp_path / "data", n_train=600, n_test=200, gz=False)
    (tmp_path / "tiny.yaml").write_text("trainer:\n  max_epochs: 1\n  enable_progress_bar: false\n")
    images = tmp_path / "mine"
    images.mkdir()
    for i, pixels in enumerate(make_images(np.arange(3), np.random.default_rng(0))):
        Image.fromarray(pixels).save(images / f"digit{i}.png")
    (images / "notes.txt").write_text("not a picture\n")

    fit = _run("src.report", "--run", "--configs", "tiny.yaml", "--", *TINY, cwd=tmp_path)  # fit, then the report
    ckpt = "lightning_logs/tiny/version_0/checkpoints/last.ckpt"
    common = [*TINY, "--config", "tiny.yaml", "--ckpt_path", ckpt]
    test = _run("src.train", "test", *common, cwd=tmp_path)
    predict = _run("src.train", "predict", *common, "--data.predict_dir", "mine", cwd=tmp_path)

    for name, lines in (("fit", fit), ("test", test), ("predict", predict)):
        unasked = [line for line in lines if UNASKED.search(line)]
        assert unasked == [], f"{name}: {unasked}"
    assert any(line.endswith("Total Flops") and not line.startswith("0 ") for line in fit)  # the summary, FLOPs counted
    assert predict.count(f"warning: skipped {Path('mine') / 'notes.txt'}: not an image (PIL cannot identify its format)") == 1
    assert any(line.startswith("predictions for 3 images in") for line in predict)
    # a predict logs nothing: its run folder holds its predictions and its config, no empty TensorBoard events
    assert sorted(p.name for p in (tmp_path / "lightning_logs" / "tiny" / "version_2").iterdir()) == [
        "config.yaml", "predictions.csv"
    ]
