"""Train a task's teacher once and keep it on disk, safely shared between processes.

Teachers take tens of seconds to train, and parallel test workers or search workers often
ask for the same one at the same moment, so the cache holds a lock while training: the
first process trains, the others wait on the lock and then load what it wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from slimsearch.config import default_cache_dir
from slimsearch.evaluators.accuracy import accuracy

# Bump when something the key does not spell out changes how teachers are trained
# (e.g. the training loop or the data preprocessing), so stale weights are never reused.
TEACHER_CACHE_VERSION = "1"


def teacher_key(task: str, **recipe: object) -> str:
    """A cache key naming the task, the cache version and every recipe setting, in a fixed order."""
    settings = "/".join(f"{name}={_format(value)}" for name, value in sorted(recipe.items()))
    return f"{task}/v{TEACHER_CACHE_VERSION}/{settings}"


def _format(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


def teacher_info(meta: dict, *, dataset: str, description: str) -> dict:
    """Task.info from the teacher's cache metadata: the facts reports show about the teacher."""
    return {
        "dataset": dataset,
        "description": description,
        "teacher_val_accuracy": meta["val_accuracy"],
        "teacher_test_accuracy": meta["test_accuracy"],
        "teacher_training_seconds": meta["training_seconds"],
        "teacher_seed": meta["seed"],
        "teacher_key": meta["key"],
        "teacher_cache_path": meta["cache_path"],
        "teacher_trained_now": meta["trained_now"],
    }


def load_or_train_teacher(*, key: str, build: Callable[[], nn.Module], train: Callable[[nn.Module], nn.Module],
                          evaluate: Callable[[nn.Module], dict[str, float]], cache_dir: Path | None = None,
                          label: str = "teacher", seed: int | None = None) -> tuple[nn.Module, dict]:
    """The teacher for `key`, loaded from the cache or built, trained, evaluated and cached.

    `build()` makes an untrained model (its architecture must not depend on training);
    `train(model)` trains it and returns it; `evaluate(model)` returns metrics such as
    `{"val_accuracy": ..., "test_accuracy": ...}`, stored in the metadata. Weights are read
    with `torch.load(weights_only=True)`, so the cache never unpickles arbitrary objects.
    Returns the model in eval mode on the CPU and the metadata, plus `cache_path` and
    `trained_now` (whether this call trained it).
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string, but got {key!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = _file_stem(key)
    weights_path = cache_dir / f"{stem}.pt"
    meta_path = cache_dir / f"{stem}.json"

    # The metadata is written last, so its presence means the weights are complete.
    loaded = _try_load(build, weights_path, meta_path, key)
    if loaded is None:
        with _file_lock(cache_dir / f"{stem}.lock", waiting=f"waiting for another process to train the {label}"):
            # Another process may have trained it while we waited for the lock.
            loaded = _try_load(build, weights_path, meta_path, key)
            if loaded is None:
                loaded = _train_and_store(build, train, evaluate, key=key, label=label, seed=seed,
                                          weights_path=weights_path, meta_path=meta_path)
    model, meta = loaded
    meta["cache_path"] = str(weights_path)
    return model.cpu().eval(), meta


def _file_stem(key: str) -> str:
    # Readable prefix for people browsing the cache; the hash makes it unique and filename-safe.
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)[:60].strip("_")
    return f"teacher-{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _try_load(build: Callable[[], nn.Module], weights_path: Path, meta_path: Path,
              key: str) -> tuple[nn.Module, dict] | None:
    if not (meta_path.exists() and weights_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            raise ValueError(f"metadata is for key {meta.get('key')!r}")
        model = build()
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    except Exception as error:  # a corrupt or incompatible file: retrain rather than fail forever
        print(f"slimsearch: ignoring unreadable cached teacher {weights_path} "
              f"({type(error).__name__}: {error}); retraining", file=sys.stderr)
        return None
    meta["trained_now"] = False
    return model, meta


def _train_and_store(build, train, evaluate, *, key: str, label: str, seed: int | None,
                     weights_path: Path, meta_path: Path) -> tuple[nn.Module, dict]:
    print(f"slimsearch: training the {label} once (cached in {weights_path.parent})", file=sys.stderr, flush=True)
    start = time.perf_counter()
    model = train(build()).cpu().eval()
    seconds = time.perf_counter() - start
    meta = {
        "key": key,
        **{name: float(value) for name, value in evaluate(model).items()},
        "training_seconds": round(seconds, 2),
        "seed": seed,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _atomic_write(weights_path, lambda tmp: torch.save(model.state_dict(), tmp))
    _atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    meta["trained_now"] = True
    return model, meta


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write via a private temporary file and rename, so readers never see a partial file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _file_lock(path: Path, *, waiting: str) -> Iterator[None]:
    """An exclusive advisory lock between processes (released by the OS if the holder dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no lock; the worst case is training twice
        yield
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Say why we seem to hang: the holder may take tens of seconds.
            print(f"slimsearch: {waiting} ({path})", file=sys.stderr, flush=True)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def task_with_cached_teacher(*, name: str, splits, build: Callable[[], nn.Module],
                             train: Callable[[nn.Module], nn.Module], key: str, dataset: str, description: str,
                             cache_dir: Path | None, seed: int):
    """A built-in Task whose teacher is trained once on `splits` and then read from the cache.

    The built-in tasks differ only in data, architecture and recipe; this is the rest of them.
    """
    from slimsearch.tasks.base import Task

    train_split, val, test = splits
    teacher, meta = load_or_train_teacher(
        key=key, build=build, train=train,
        evaluate=lambda model: {"val_accuracy": accuracy(model, val), "test_accuracy": accuracy(model, test)},
        cache_dir=cache_dir, label=f"{name} teacher", seed=seed,
    )
    return Task(name=name, teacher=teacher, train=train_split, val=val, test=test,
                example_input=train_split.tensors[0][:1].clone(), num_classes=10,
                info=teacher_info(meta, dataset=dataset, description=description))
