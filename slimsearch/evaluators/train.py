"""Fine-tuning with knowledge distillation, and the teacher's logits it feeds on.

One loop serves both jobs: training a teacher from scratch (alpha = 0: plain cross-entropy)
and fine-tuning a student against the teacher's logits. The data is any map-style Dataset of
(input, label), read batch by batch (slimsearch/tasks/loading.py): in-memory tensors are sliced,
anything else streams through DataLoader workers, so no split is ever needed whole in memory.
The teacher's logits are cached on disk as a memory-mapped array, or computed on the fly, batch
by batch, when that costs less (see `distillation_targets`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from slimsearch.evaluators.compute import autocast_dtype, compute_device, training_precision
from slimsearch.evaluators.latency import gpu_work
from slimsearch.techniques.precision import in_execution_dtype


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor,
                      *, temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels).

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones
    whatever the temperature (Hinton et al., 2015).
    """
    hard = F.cross_entropy(student_logits, labels)
    if teacher_logits is None or alpha == 0.0:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def _seeded_global_rng(function: Callable) -> Callable:
    """Run `function` with torch's global generator seeded from its `seed`, and restored after:
    dropout (and any random layer) draws from it, and what ran before in the process (other
    trials, another study's) must not change how a candidate trains."""

    @functools.wraps(function)
    def seeded(*args, seed: int = 0, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return function(*args, seed=seed, **kwargs)

    return seeded


# The teacher's logits for the fine-tune: one row per train sample (a tensor, often memory-mapped),
# or a function of (inputs, dataset indices) computing them for each batch.
TeacherLogits = Union[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


@_seeded_global_rng
def fit(model: nn.Module, data: Dataset, *, epochs: float | None = None, lr: float, batch_size: int = 64,
        teacher_logits: TeacherLogits | None = None, temperature: float = 4.0, alpha: float = 0.0,
        weight_decay: float = 1e-4, seed: int = 0, device: str = "cpu", autocast: bool = False,
        on_step: Callable[[], None] | None = None, checkpoint: float | None = None,
        on_checkpoint: Callable[[nn.Module], bool] | None = None, steps: int | None = None,
        workers: int | None = None) -> nn.Module:
    """Train `model` in place with AdamW and a cosine learning-rate decay; returns it in eval mode,
    on `device`.

    `data` is any map-style Dataset of (input, label); `workers` DataLoader processes read it
    when it is not in memory (None: automatic). The length is `epochs` (may be fractional: a
    short fine-tune on part of an epoch) or `steps` optimiser steps, which wins when given.
    `teacher_logits` is a tensor with one row per sample of `data`, or a function of (inputs,
    indices) returning the batch's logits. `on_step` is called after every optimiser step so a
    caller can enforce a time limit or stop early by raising. After `checkpoint` epochs
    (part-way through the one schedule), `on_checkpoint(model)` sees the model in eval mode;
    training goes on only if it returns True. `autocast`: bf16 autocast on a CUDA device where it
    costs no accuracy (evaluators/compute.py). On CUDA every step counts as GPU work
    (evaluators/latency.gpu_work): it waits while another process measures latency on this machine.
    """
    from slimsearch.tasks.loading import epoch_batches, load_batches

    count = len(data)
    if isinstance(teacher_logits, torch.Tensor) and len(teacher_logits) != count:
        raise ValueError(f"teacher_logits has {len(teacher_logits)} rows but the data has {count}")
    if steps is None and epochs is None:
        raise ValueError("fit needs epochs or steps")
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, math.ceil(count / batch_size))
    total_steps = steps if steps is not None else max(1, round(epochs * steps_per_epoch))
    model.to(device).train()
    half = autocast_dtype(model, device, autocast)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    checkpoint_step = None if checkpoint is None or on_checkpoint is None else round(checkpoint * steps_per_epoch)
    batches = load_batches(data, epoch_batches(count, batch_size, generator), workers=workers)
    try:
        for step, (inputs, labels, index) in enumerate(batches, start=1):
            soft_targets = None
            if teacher_logits is not None:
                soft_targets = (teacher_logits(inputs, index) if callable(teacher_logits)
                                else teacher_logits[index]).to(device)
            with gpu_work(device):
                with training_precision(half, device):
                    loss = sum(distillation_loss(logits.float(), soft_targets, labels.to(device), temperature=temperature,
                                                 alpha=alpha)
                               for logits in _all_outputs(model, inputs.to(device)))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss.item()} at step {step - 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            schedule.step()
            if on_step is not None:
                on_step()
            if step == checkpoint_step and step < total_steps:
                if not on_checkpoint(model.eval()):
                    return model
                model.train()
            if step >= total_steps:
                break
    finally:
        batches.close()  # stops the DataLoader's workers at once, also when training stops early
    return model.eval()


def _all_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every output to train: an early-exit model's exit heads as well as its final output, each
    distilled from the teacher (such models offer `exit_logits`); otherwise the one output."""
    exit_logits = getattr(model, "exit_logits", None)
    return exit_logits(x) if callable(exit_logits) else [model(x)]


def predict_logits(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 256, device: str | None = None) -> torch.Tensor:
    """The model's logits for `inputs`, computed in eval mode on `device` (default: this process's
    compute device, evaluators/compute.py) in the precision it deploys in, returned on the CPU.
    `model` is left in eval mode on the device it was on."""
    device = device or compute_device()
    home = next(iter(model.parameters()), torch.empty(0)).device
    # Moved outside inference mode: parameters moved inside it are inference tensors, and a model
    # evaluated on a GPU (a teacher, a probed candidate) could never be trained again (the first
    # CUDA search of scripts/gpu-check.sh stopped on it before its first trial).
    model.to(device).eval()
    try:
        runner = in_execution_dtype(model)
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(inputs), batch_size):
                with gpu_work(device):
                    chunks.append(runner(inputs[i:i + batch_size].to(device)).float().cpu())
        return torch.cat(chunks)
    finally:
        model.to(home)


def predict_dataset(predict: Callable[[torch.Tensor], torch.Tensor], data: Dataset, *, batch_size: int | None = None,
                    workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`predict(inputs)` over every sample of `data`, streamed: (logits, labels), in dataset order.

    Only the logits and labels are kept (samples x classes), never the inputs. `batch_size`
    defaults to 256 samples or 16 MB of inputs, whichever is fewer.
    """
    from slimsearch.tasks.loading import eval_batch_size, load_batches, sequential_batches

    batch_size = batch_size or eval_batch_size(data)
    logits, labels = [], []
    for inputs, batch_labels, _ in load_batches(data, sequential_batches(len(data), batch_size), workers=workers):
        logits.append(torch.as_tensor(predict(inputs)).float().cpu())
        labels.append(batch_labels)
    return torch.cat(logits), torch.cat(labels)


def model_predictor(model: nn.Module, *, device: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`inputs -> logits` of `model` in eval mode, without autograd, on `device` (default: this
    process's compute device) in the precision it deploys in. A model elsewhere is copied there,
    so the caller's (a task's teacher, say) stays where it is.

    no_grad, not inference_mode: on-the-fly teacher logits enter the distillation loss, whose
    backward pass keeps them, and inference tensors cannot be kept for backward.
    """
    import copy

    device = device or compute_device()
    home = next(iter(model.parameters()), torch.empty(0)).device
    if home != torch.device(device):
        model = copy.deepcopy(model).to(device)
    runner = in_execution_dtype(model.eval())

    @torch.no_grad()
    def predict(inputs: torch.Tensor) -> torch.Tensor:
        with gpu_work(device):
            return runner(inputs.to(device)).float().cpu()

    return predict


def teacher_logits(teacher: nn.Module, data: Dataset | torch.Tensor, *, cache_dir: Path,
                   workers: int | None = None) -> torch.Tensor:
    """The teacher's logits on every sample of `data` (or on a tensor of inputs), computed once and
    kept on disk as a .npy file, returned memory-mapped: only the rows a batch reads are in memory.

    The key hashes the teacher's weights and the data's fingerprint (tasks/loading.py), so a
    retrained teacher or changed data never reads stale logits.
    """
    from slimsearch.tasks.loading import fingerprint

    if isinstance(data, torch.Tensor):  # inputs alone, as older callers pass them
        data = TensorDataset(data, torch.zeros(len(data), dtype=torch.long))
    data_key = fingerprint(data)
    if data_key is None:
        raise ValueError(f"{type(data).__name__} has no fingerprint to key a logit cache by; "
                         f"use distillation_targets, which computes such logits on the fly")
    digest = hashlib.sha256(teacher_fingerprint(teacher).encode())
    digest.update(data_key.encode())
    path = Path(cache_dir) / f"teacher-logits-{digest.hexdigest()[:24]}.npy"
    if not path.exists():
        _write_logits(teacher, data, path, workers=workers)
    # Copy-on-write mapping: a writable view for torch (no warning), pages read from the file on demand.
    return torch.from_numpy(np.load(path, mmap_mode="c", allow_pickle=False))


def teacher_fingerprint(teacher: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in teacher.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _write_logits(teacher: nn.Module, data: Dataset, path: Path, *, workers: int | None) -> None:
    """Stream the data through the teacher into a memory-mapped .npy, renamed into place when complete."""
    from slimsearch.tasks.loading import eval_batch_size, load_batches, sequential_batches

    predict = model_predictor(teacher)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")  # parallel writers produce the same bytes
    try:
        array = None
        for inputs, _, index in load_batches(data, sequential_batches(len(data), eval_batch_size(data)), workers=workers):
            logits = predict(inputs).numpy()
            if array is None:
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(data), logits.shape[1]))
            array[int(index[0]):int(index[-1]) + 1] = logits
        array.flush()
        del array
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def distillation_targets(teacher: nn.Module, data: Dataset, *, samples_seen: int, cache_dir: Path,
                         workers: int | None = None) -> TeacherLogits:
    """The teacher's logits for fine-tuning on `data`: cached on disk, or computed batch by batch.

    Caching costs one teacher pass over the whole train split, once per teacher and data; on
    the fly costs one teacher pass per fine-tuning batch. So they are cached when the search's
    fine-tunes together read at least the whole split (`samples_seen`: steps x batch size x
    trials) and the data has a fingerprint to key them by; otherwise computed on the fly (an
    ImageNet-size split of which a search reads a small part, or a dataset without a fingerprint).
    In-memory data is always cached, as before.
    """
    from slimsearch.tasks.loading import fingerprint, in_memory

    cache = in_memory(data) is not None or (samples_seen >= len(data) and fingerprint(data) is not None)
    if cache:
        return teacher_logits(teacher, data, cache_dir=cache_dir, workers=workers)
    predict = model_predictor(teacher)
    return lambda inputs, _index: predict(inputs)
