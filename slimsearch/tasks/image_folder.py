"""Image folders in torchvision's ImageFolder layout, read image by image.

    DIR/train/<class>/<image>     required; one subfolder per class, classes sorted by name
    DIR/val/<class>/<image>       optional; without it, a seeded 20% of each train class
    DIR/test/<class>/<image>      optional; without it, the validation split stands in

Every image is decoded when it is read, converted to RGB, resized to `size` x `size` and
normalised, so images of any size and mode can sit side by side. Only file names are kept in
memory (as one numpy byte array, which DataLoader workers share without copying), never pixels.

The folder is checked when the task is made: the layout, and that every image file opens (its
header is read, not its pixels; a folder already checked, unchanged, is not read again).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from slimsearch.errors import TaskError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.2
SPLIT_SEED = 0
# Bump when decoding or resizing changes, so cached teacher logits of the old pixels are not reused.
PREPROCESS_VERSION = "1"


@dataclass(frozen=True)
class Preprocess:
    """How a file becomes an input: RGB, resized to size x size (bilinear), scaled to [0, 1], normalised."""

    size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ImageFolderSplit(Dataset):
    """One split: `(image tensor (3, size, size) float32, class index)` per file."""

    def __init__(self, root: Path, files: list[str], labels: list[int], preprocess: Preprocess, listing: str):
        self.root = Path(root)
        # Relative paths as one fixed-width byte array: no Python object per file, so a million
        # files cost tens of MB, and forked workers do not copy them by touching refcounts.
        self._files = np.array([name.encode("utf-8") for name in files], dtype=bytes)
        self._labels = np.asarray(labels, dtype=np.int64)
        self.preprocess = preprocess
        self._listing = listing

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def targets(self) -> torch.Tensor:
        return torch.from_numpy(self._labels)

    def sample_path(self, index: int) -> str:
        return str(self.root / self._files[index].decode("utf-8"))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return load_image(self.sample_path(index), self.preprocess), int(self._labels[index])

    def fingerprint(self) -> str:
        """The files (names, sizes, modification times), labels and preprocessing: keys the teacher-logit cache."""
        digest = hashlib.sha256(self._listing.encode())
        digest.update(self._files.tobytes())
        digest.update(self._labels.tobytes())
        digest.update(f"{self.preprocess}|{PREPROCESS_VERSION}".encode())
        return "images-" + digest.hexdigest()[:24]


def load_image(path: str, preprocess: Preprocess) -> torch.Tensor:
    from PIL import Image

    size = preprocess.size
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when the file is much larger
        pixels = image.convert("RGB").resize((size, size), Image.BILINEAR)
        array = np.asarray(pixels, dtype=np.float32) / 255.0
    mean = np.asarray(preprocess.mean, dtype=np.float32)
    std = np.asarray(preprocess.std, dtype=np.float32)
    return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).copy())


@dataclass
class FolderSplits:
    classes: list[str]
    train: ImageFolderSplit
    val: ImageFolderSplit
    test: ImageFolderSplit
    val_from_train: bool
    test_from_val: bool


def image_folder_splits(data: str | os.PathLike, preprocess: Preprocess, *, cache_dir: Path | None = None) -> FolderSplits:
    """The splits of the folder `data`, checked; raises one TaskError naming the path at fault."""
    root = Path(data)
    if not root.exists():
        raise TaskError(f"data folder {str(root)!r} does not exist; expected a folder in ImageFolder layout "
                        f"({_layout(root)})")
    if not root.is_dir():
        raise TaskError(f"data {str(root)!r} is a file; expected a folder in ImageFolder layout ({_layout(root)})")
    train_dir = root / "train"
    if not train_dir.is_dir():
        found = sorted(entry.name for entry in root.iterdir())[:5]
        raise TaskError(f"data folder {str(root)!r} has no train/ folder (it holds {found or 'nothing'}); expected "
                        f"ImageFolder layout: {_layout(root)}")
    classes = _classes(train_dir)
    found = {split: _list_split(root / split, classes) for split in SPLITS if (root / split).is_dir()}
    listing = _check_images(root, found, cache_dir)
    train_files, train_labels = found["train"]
    val_from_train = "val" not in found
    if val_from_train:
        keep, held = _split_by_class(train_labels)
        found["val"] = ([train_files[i] for i in held], [train_labels[i] for i in held])
        train_files, train_labels = [train_files[i] for i in keep], [train_labels[i] for i in keep]
        if not train_files or not found["val"][0]:
            raise TaskError(f"{str(train_dir)!r} has too few images to hold out a validation split "
                            f"({len(train_labels) + len(found['val'][1])}); add images or a val/ folder")
    test_from_val = "test" not in found
    if test_from_val:
        found["test"] = found["val"]
    make = lambda files_labels: ImageFolderSplit(root, *files_labels, preprocess, listing)  # noqa: E731
    return FolderSplits(classes, make((train_files, train_labels)), make(found["val"]), make(found["test"]),
                        val_from_train, test_from_val)


def _layout(root: Path) -> str:
    return f"{root}/train/<class>/<image>, {root}/val/<class>/<image>, optional {root}/test/<class>/<image>"


def _classes(train_dir: Path) -> list[str]:
    classes = sorted(entry.name for entry in os.scandir(train_dir) if entry.is_dir() and not entry.name.startswith("."))
    if len(classes) < 2:
        files = sum(1 for entry in os.scandir(train_dir) if entry.is_file())
        what = f"{len(classes)} class subfolder(s) and {files} file(s) directly in it" if classes or files else "nothing"
        raise TaskError(f"{str(train_dir)!r} holds {what}; expected one subfolder per class (at least two), "
                        f"each holding that class's images: {train_dir}/<class>/<image>")
    return classes


def _list_split(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Relative image paths and labels of one split; its classes must be the train split's."""
    index = {name: i for i, name in enumerate(classes)}
    present = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))
    unknown = [name for name in present if name not in index]
    if unknown:
        raise TaskError(f"{str(split_dir)!r} has class folder(s) {unknown[:5]} that {split_dir.parent / 'train'} "
                        f"lacks; expected the train split's classes: {classes[:10]}{' ...' if len(classes) > 10 else ''}")
    stray = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_file() and _is_image(entry.name))
    if stray:
        raise TaskError(f"{str(split_dir / stray[0])!r} sits directly in {split_dir.name}/; expected every image in "
                        f"a class subfolder: {split_dir}/<class>/<image>")
    files, labels = [], []
    for name in present:
        images = sorted(os.path.relpath(os.path.join(folder, file), split_dir.parent)
                        for folder, _, names in os.walk(split_dir / name) for file in names if _is_image(file))
        if not images and split_dir.name == "train":
            raise TaskError(f"class folder {str(split_dir / name)!r} holds no images; expected image files "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        files += images
        labels += [index[name]] * len(images)
    if not files:
        raise TaskError(f"{str(split_dir)!r} holds no images; expected {split_dir}/<class>/<image>")
    return files, labels


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _split_by_class(labels: list[int]) -> tuple[list[int], list[int]]:
    """Positions kept for training and held out for validation: a seeded VAL_FRACTION of each class."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    by_label: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_label.setdefault(label, []).append(position)
    keep, held = [], []
    for label in sorted(by_label):
        positions = by_label[label]
        order = torch.randperm(len(positions), generator=generator).tolist()
        count = round(VAL_FRACTION * len(positions)) if len(positions) > 1 else 0
        held += [positions[i] for i in order[:count]]
        keep += [positions[i] for i in order[count:]]
    return sorted(keep), sorted(held)


def _check_images(root: Path, found: dict, cache_dir: Path | None) -> str:
    """Open every image's header (cheap: no pixels are decoded); returns the folder's listing key.

    A listing already checked (same names, sizes and modification times) is not opened again.
    """
    from PIL import Image

    digest = hashlib.sha256(str(root.resolve()).encode())
    paths = [root / name for split in found for name in found[split][0]]
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    listing = digest.hexdigest()[:24]
    marker = (Path(cache_dir) / "checked-folders" / f"{listing}.json") if cache_dir is not None else None
    if marker is not None and marker.exists():
        return listing
    for path in paths:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018  (the header is read here)
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            raise TaskError(f"image {str(path)!r} cannot be read ({type(error).__name__}: {first_line}); expected an "
                            f"image file that PIL opens ({', '.join(IMAGE_EXTENSIONS)})") from None
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"root": str(root.resolve()), "images": len(paths)}))
        os.replace(tmp, marker)
    return listing
