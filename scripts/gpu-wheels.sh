#!/usr/bin/env bash
# Download, on a machine with network, the wheels scripts/gpu-check.sh installs on a GPU machine
# that has no network but has its own PyTorch, torchvision, onnx, onnxruntime, numpy, pandas,
# scikit-learn, typer and rich (the H200 image this project borrows: Python 3.12).
# Usage: bash scripts/gpu-wheels.sh [DIR]   (default .whl/, which .gitignore keeps out of git)
set -euo pipefail
dir=${1:-.whl}
python=${PYTHON:-python3}
mkdir -p "$dir"
# Pinned to what `make` installs here, one version each (two versions of one stop the install).
wheels=(
    optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 greenlet==3.5.6 colorlog==6.12.0 Mako==1.4.3
    plotly==7.1.0 torch-pruning==1.6.1
)
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform any -d "$dir" "${wheels[@]}"
du -sh "$dir"
ls "$dir"
