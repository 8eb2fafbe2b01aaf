"""Reading a split in batches, whatever it is: in-memory tensors are sliced, anything else is streamed.

A split is any map-style `torch.utils.data.Dataset` whose items are `(input, label)`. A
`TensorDataset` (or a `Subset` of one) is indexed directly, as one tensor operation per batch,
exactly as before streaming existed; any other dataset goes through a `DataLoader` with worker
processes, so only the batches in flight are ever in memory.

Every batch comes with the dataset indices of its samples, so per-sample data kept beside the
split (the teacher's cached logits) is looked up by index, not by position in the stream.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

# How many train inputs set a quantized model's activation ranges, and the memory they may take:
# 512 digits images are 1 MB, but 512 RGB images at 224x224 would be 300 MB in every process.
CALIBRATION_SAMPLES = 512
CALIBRATION_BYTES = 128 * 2**20
# Seeds of the fixed draws (calibration inputs, latency samples, the search-time validation subset):
# part of the definition of a study, whatever the search's own seed.
DRAW_SEED = 0


def in_memory(dataset: Dataset) -> TensorDataset | None:
    """The `TensorDataset` of (inputs, labels) behind `dataset` if it is one (not a `Subset` of one), else None."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return dataset
    return None


def resolve_workers(dataset: Dataset, workers: int | None) -> int:
    """DataLoader worker processes for `dataset`: none for in-memory data, else `workers`, else automatic.

    Automatic is one worker per core beyond the one training runs on (at least one, at most four):
    decoding images is the bottleneck of a CPU fine-tune, and workers overlap it with training.
    """
    if in_memory(dataset) is not None:
        return 0
    if workers is not None:
        return workers
    return min(4, max(1, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class _Failed:
    """A sample that could not be read, carried to the main process so it can say which and why."""

    index: int
    message: str


class _Indexed(Dataset):
    """`dataset[i]` as `(input, label, i)`; a sample that fails to load becomes a `_Failed`."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            inputs, label = self.dataset[index]
        except Exception as error:  # an unreadable image, a user dataset raising: named in the main process
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            return _Failed(index, f"{type(error).__name__}: {first_line}")
        return inputs, label, index


def _collate(items: list):
    failed = next((item for item in items if isinstance(item, _Failed)), None)
    if failed is not None:
        return failed
    first = items[0][0]
    for inputs, _, index in items[1:]:
        if not isinstance(inputs, torch.Tensor) or inputs.shape != first.shape or inputs.dtype != first.dtype:
            return _Failed(index, f"its input is {_describe(inputs)}, but sample {items[0][2]}'s is {_describe(first)}; "
                                  f"every sample must have the same shape and dtype")
    return (torch.stack([item[0] for item in items]), torch.as_tensor([int(item[1]) for item in items]),
            torch.as_tensor([item[2] for item in items]))


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    return type(value).__name__


class _BatchSampler:
    """An iterable of index batches for `DataLoader(batch_sampler=...)`; consumed in the main process."""

    def __init__(self, batches: Iterable[Sequence[int]]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def load_batches(dataset: Dataset, index_batches: Iterable[Sequence[int]], *,
                 workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`(inputs, labels, indices)` for each batch of dataset indices, in order.

    A sample that cannot be read, or one whose shape differs from the rest of its batch, stops
    the stream with a `TaskError` naming the sample (and its file, when the dataset has files).
    """
    from slimsearch.errors import TaskError

    tensors = in_memory(dataset)
    if tensors is not None:
        inputs, labels = tensors.tensors
        for batch in index_batches:
            index = torch.as_tensor(batch, dtype=torch.long)
            yield inputs[index], labels[index], index
        return
    from torch.utils.data import DataLoader

    count = resolve_workers(dataset, workers)
    loader = DataLoader(_Indexed(dataset), batch_sampler=_BatchSampler(index_batches), num_workers=count,
                        collate_fn=_collate, prefetch_factor=2 if count else None)
    for batch in loader:
        if isinstance(batch, _Failed):
            raise TaskError(f"{describe_sample(dataset, batch.index)} cannot be used: {batch.message}")
        yield batch


def sequential_batches(count: int, batch_size: int) -> list[list[int]]:
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def epoch_batches(count: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches: each epoch a fresh permutation of `count` samples, cut into `batch_size` pieces
    (the last piece of an epoch may be smaller; an epoch's batches never mix with the next one's)."""
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, batch_size):
            yield order[start:start + batch_size]


def draw_indices(count: int, wanted: int, *, seed: int = DRAW_SEED) -> list[int]:
    """`wanted` distinct indices of `count`, drawn with `seed` (all of them, in order, if wanted >= count).

    Folders list their images class by class, so the first N samples of a split are rarely a fair sample.
    """
    if wanted >= count:
        return list(range(count))
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:wanted].tolist()


def stack_inputs(dataset: Dataset, indices: Sequence[int], *, workers: int | None = None,
                 batch_size: int = 64) -> torch.Tensor:
    """The inputs of `dataset[indices]` as one tensor, read through the stream."""
    batches = [list(indices[start:start + batch_size]) for start in range(0, len(indices), batch_size)]
    return torch.cat([inputs for inputs, _, _ in load_batches(dataset, batches, workers=workers)])


# Inputs per evaluation batch: up to 256, but at most this many bytes of them. A model's activations
# grow with the batch (resnet18's first layer alone makes 3 MB per 224x224 image), so a fixed 256
# would make peak memory grow with the image size, and with the split up to 256 samples.
EVAL_BATCH = 256
EVAL_BATCH_BYTES = 16 * 2**20


def eval_batch_size(dataset: Dataset) -> int:
    return max(1, min(EVAL_BATCH, EVAL_BATCH_BYTES // max(1, sample_bytes(dataset))))


def sample_bytes(dataset: Dataset) -> int:
    inputs = dataset[0][0]
    return inputs.element_size() * inputs.numel() if isinstance(inputs, torch.Tensor) else 0


def sample_path(dataset: Dataset, index: int) -> str | None:
    """The file a sample was read from, for datasets that know it (ours, torchvision's folders, Subsets of them)."""
    if isinstance(dataset, Subset):
        return sample_path(dataset.dataset, int(dataset.indices[index]))
    path_of = getattr(dataset, "sample_path", None)
    if callable(path_of):
        return path_of(index)
    samples = getattr(dataset, "samples", None)  # torchvision's DatasetFolder / ImageFolder
    if isinstance(samples, (list, tuple)) and 0 <= index < len(samples) and isinstance(samples[index], tuple):
        return str(samples[index][0])
    return None


def describe_sample(dataset: Dataset, index: int) -> str:
    path = sample_path(dataset, index)
    return f"sample {index} ({path})" if path else f"sample {index}"


def fingerprint(dataset: Dataset) -> str | None:
    """A string that changes whenever the samples may have, or None when it cannot be known cheaply.

    In-memory tensors are hashed; a dataset may say itself through a `fingerprint()` method or
    attribute (the image folders here do: file names, sizes, times and the preprocessing);
    torchvision's folder datasets are described by their files and transform. Anything else is
    None, and the teacher's logits for it are computed on the fly instead of cached.
    """
    tensors = in_memory(dataset)
    digest = hashlib.sha256()
    if tensors is not None:
        for tensor in tensors.tensors:
            digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            digest.update(tensor.contiguous().numpy().tobytes())
        return "tensors-" + digest.hexdigest()[:24]
    if isinstance(dataset, Subset):
        base = fingerprint(dataset.dataset)
        if base is None:
            return None
        digest.update(base.encode())
        digest.update(",".join(map(str, dataset.indices)).encode())
        return "subset-" + digest.hexdigest()[:24]
    own = getattr(dataset, "fingerprint", None)
    if own is not None:
        return str(own() if callable(own) else own)
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and samples and isinstance(samples[0], tuple):
        digest.update(repr(getattr(dataset, "transform", None)).encode())
        for path, label in samples:
            stat = os.stat(path)
            digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return "folder-" + digest.hexdigest()[:24]
    return None
