"""Write an image folder in ImageFolder layout from scikit-learn's digits (shipped with it: no network).

    python examples/image_folder/make_folder.py images/ [--size 64] [--copies 1]

writes images/train/<digit>/*.png, images/val/<digit>/*.png and images/test/<digit>/*.png
(60/20/20, stratified, fixed seed): each 8x8 digit upsampled to --size, drawn in a random
colour on a random background with a little noise, so the images are RGB photographs in form
if not in content. --copies N writes N differently coloured copies of every digit (a folder N
times larger, for trying how slimsearch scales).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_image_folder(out: str | Path, *, size: int = 64, copies: int = 1, seed: int = 0,
                       limit_per_class: int | None = None) -> dict[str, int]:
    """Write the folder; returns the number of images per split. `limit_per_class` keeps the first
    N digits of each class (before the split), for a small folder."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    if limit_per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:limit_per_class] for c in range(10)])
        images, labels = images[keep], labels[keep]
    index = np.arange(len(labels))
    train, rest = train_test_split(index, test_size=0.4, stratify=labels, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=seed)
    rng = np.random.default_rng(seed)
    counts = {}
    for split, members in (("train", train), ("val", val), ("test", test)):
        for position in members:
            folder = Path(out) / split / str(labels[position])
            folder.mkdir(parents=True, exist_ok=True)
            digit = Image.fromarray((images[position].reshape(8, 8) / 16.0 * 255).astype(np.uint8))
            ink = np.asarray(digit.resize((size, size), Image.BILINEAR), dtype=np.float32)[..., None] / 255.0
            for copy in range(copies):
                fore, back = rng.uniform(0.5, 1.0, 3), rng.uniform(0.0, 0.4, 3)
                pixels = ink * fore + (1 - ink) * back + rng.normal(0, 0.03, (size, size, 3))
                Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(folder / f"{position:04d}-{copy}.png")
        counts[split] = len(members) * copies
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to write (train/, val/ and test/ inside it)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--copies", type=int, default=1, help="coloured copies of every digit (default 1)")
    args = parser.parse_args()
    counts = write_image_folder(args.out, size=args.size, copies=args.copies)
    print(f"wrote {sum(counts.values())} images to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
