"""Peak memory (RSS) of reading one large picture the way ``predict`` does: memory, not time.

    OMP_NUM_THREADS=1 python bench/predict_memory.py              # 10000×10000, PNG and JPEG
    OMP_NUM_THREADS=1 python bench/predict_memory.py --side 5000

Each picture (a dark stroke on white paper, RGB) is written by one process and read by a fresh
one (``src.data.images.read_image`` then ``to_mnist``, as ``load_folder`` does for each file),
which prints its peak resident memory (``resource.getrusage``'s ``ru_maxrss``) beside that of
the same process before it reads the picture (torch and Pillow imported).  The difference is
what the picture costs.  Memory does not depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WRITE = """
import sys
from PIL import Image, ImageDraw
side, path = int(sys.argv[1]), sys.argv[2]
im = Image.new("RGB", (side, side), (235, 232, 225))
ImageDraw.Draw(im).line([(side * 0.5, side * 0.15), (side * 0.5, side * 0.85)], fill=(20, 20, 30), width=side // 12)
im.save(path, quality=90) if path.endswith(".jpg") else im.save(path)
"""

READ = """
import resource, sys, warnings
from src.data.images import read_image, to_mnist
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning above 89 M pixels (an error above 179 M)
digit = to_mnist(read_image(sys.argv[1]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, peak, digit.size)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=10_000, help="the picture's width and height (default 10000)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        for ext in ("png", "jpg"):
            path = Path(tmp) / f"big.{ext}"
            subprocess.run([sys.executable, "-c", WRITE, str(args.side), str(path)], check=True)
            out = subprocess.run([sys.executable, "-c", READ, str(path)], env=env, check=True, capture_output=True, text=True)
            before, peak, size = out.stdout.split(maxsplit=2)
            mib = lambda kib: int(kib) / 1024  # noqa: E731 (ru_maxrss is in KiB on Linux)
            print(f"{args.side}x{args.side} {ext.upper():4} ({path.stat().st_size / 2**20:6.1f} MiB file): peak RSS "
                  f"{mib(peak):7.0f} MiB, {mib(peak) - mib(before):7.0f} MiB above the {mib(before):.0f} MiB before reading; "
                  f"result {size.strip()}")  # fmt: skip


if __name__ == "__main__":
    main()
