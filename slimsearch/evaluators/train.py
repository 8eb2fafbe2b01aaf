"""Fine-tuning with knowledge distillation, and the teacher-logit cache it feeds on.

One loop serves both jobs: training a teacher from scratch (alpha = 0: plain cross-entropy)
and fine-tuning a student against the teacher's cached logits.
"""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset


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


@_seeded_global_rng
def fit(model: nn.Module, data: TensorDataset, *, epochs: float, lr: float, batch_size: int = 64,
        teacher_logits: torch.Tensor | None = None, temperature: float = 4.0, alpha: float = 0.0,
        weight_decay: float = 1e-4, seed: int = 0, device: str = "cpu",
        on_step: Callable[[], None] | None = None, checkpoint: float | None = None,
        on_checkpoint: Callable[[nn.Module], bool] | None = None) -> nn.Module:
    """Train `model` in place with AdamW and a cosine learning-rate decay; returns it in eval mode.

    `epochs` may be fractional (a short fine-tune on part of an epoch). `on_step` is called after
    every optimiser step so a caller can enforce a time limit or stop early by raising. After
    `checkpoint` epochs (part-way through the one `epochs`-long schedule), `on_checkpoint(model)`
    sees the model in eval mode; training goes on only if it returns True.
    """
    inputs, labels = data.tensors
    if teacher_logits is not None and len(teacher_logits) != len(inputs):
        raise ValueError(f"teacher_logits has {len(teacher_logits)} rows but the data has {len(inputs)}")
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, math.ceil(len(inputs) / batch_size))
    total_steps = max(1, round(epochs * steps_per_epoch))
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    checkpoint_step = None if checkpoint is None or on_checkpoint is None else round(checkpoint * steps_per_epoch)
    step = 0
    while step < total_steps:
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            soft_targets = None if teacher_logits is None else teacher_logits[batch].to(device)
            loss = sum(distillation_loss(logits, soft_targets, labels[batch].to(device), temperature=temperature, alpha=alpha)
                       for logits in _all_outputs(model, inputs[batch].to(device)))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if on_step is not None:
                on_step()
            if step == checkpoint_step and step < total_steps:
                if not on_checkpoint(model.eval()):
                    return model
                model.train()
            if step >= total_steps:
                break
    return model.eval()


def _all_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every output to train: an early-exit model's exit heads as well as its final output, each
    distilled from the teacher (such models offer `exit_logits`); otherwise the one output."""
    exit_logits = getattr(model, "exit_logits", None)
    return exit_logits(x) if callable(exit_logits) else [model(x)]


@torch.inference_mode()
def predict_logits(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """The model's logits for `inputs`, computed in eval mode, on the CPU."""
    model.to(device).eval()
    return torch.cat([model(inputs[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(inputs), batch_size)])


def teacher_logits(teacher: nn.Module, inputs: torch.Tensor, *, cache_dir: Path) -> torch.Tensor:
    """The teacher's logits on `inputs`, computed once and kept on disk.

    The cache key hashes the teacher's weights and the inputs, so a retrained teacher or
    different data never reads stale logits.
    """
    digest = hashlib.sha256()
    for name, tensor in teacher.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(inputs.contiguous().numpy().tobytes())
    path = Path(cache_dir) / f"teacher-logits-{digest.hexdigest()[:16]}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    logits = predict_logits(teacher, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(logits, tmp)
    tmp.replace(path)
    return logits
