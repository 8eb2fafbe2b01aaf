#!/usr/bin/env bash
# Your model and your images, end to end, with nothing downloaded:
#   1. an image folder written from scikit-learn's digits (coloured RGB PNGs, ImageFolder layout),
#   2. a torchvision resnet18 trained on it the ordinary way, saved as a state dict,
#   3. a search with --weights / --data, then the front, the report and a verified export.
# Run from the repository root: bash examples/image_folder/run.sh   (about 15 minutes on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK:-$here/work}"
size="${SIZE:-64}"
mkdir -p "$work"
cd "$work"

[ -d images ] || python "$here/make_folder.py" images --size "$size"
[ -f teacher.pt ] || python "$here/train_teacher.py" images teacher.pt --model resnet18 --size "$size" --epochs 4

slimsearch run "$here/search.toml" --image-size "$size"
slimsearch front runs/digits-folder
slimsearch report runs/digits-folder
slimsearch export runs/digits-folder -o exported/
