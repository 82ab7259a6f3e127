#!/usr/bin/env bash
# Create .venv, install the project with its test extra, and put MNIST where the
# data module looks (data/MNIST/raw/).  Offline machines of this project keep the
# four MNIST .gz files in ../shared/data/mnist; elsewhere torchvision downloads
# them on the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
src=../shared/data/mnist
if [ -d "$src" ] && ! ls data/MNIST/raw/train-images-idx3-ubyte* >/dev/null 2>&1; then
    mkdir -p data/MNIST/raw
    cp "$src"/*.gz data/MNIST/raw/
    echo "copied MNIST from $src to data/MNIST/raw/"
fi
