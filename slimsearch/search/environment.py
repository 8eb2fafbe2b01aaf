"""The conditions latency numbers hold under: machine, runtime versions, threads, batch size."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from slimsearch.config import SearchConfig


def _cpuinfo(field: str) -> str | None:
    """The first `field` line of /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _int8_dot_product() -> str | None:
    """Which instruction x86 int8 kernels multiply with: VNNI, or (without it) VPMADDUBSW, whose
    16-bit pair sums are why int8 weights use -64..64 (techniques/quantization.py) and which makes
    int8 slower. None off x86 Linux."""
    flags = set((_cpuinfo("flags") or "").split())
    if "avx2" not in flags:
        return None
    return "VNNI" if flags & {"avx512_vnni", "avx_vnni"} else "no VNNI"


def int8_kernels_note(environment: dict) -> str:
    """', int8 dot product: VNNI' (or 'no VNNI') for a machine description, '' where unknown:
    int8 latency depends on it (without VNNI, x86 int8 kernels multiply in 16-bit pairs, slower)."""
    return f", int8 dot product: {environment['cpu_int8']}" if environment.get("cpu_int8") else ""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_info(config: SearchConfig) -> dict:
    """A record kept with the study, so every figure can be read with its conditions."""
    import torch

    from slimsearch.evaluators.compute import compute_device

    target = config.target
    uses_gpu = target.device == "cuda" or compute_device() == "cuda"
    gpu = torch.cuda.get_device_name(0) if uses_gpu and torch.cuda.is_available() else None
    return {
        "machine": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_int8": _int8_dot_product(),
        "gpu": gpu,
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("slimsearch", "torch", "onnxruntime", "onnx", "optuna", "torch-pruning")},
        "runtime": target.runtime,
        "device": target.device,
        "batch_size": target.batch_size,
        "threads": target.threads,
        "training_device": compute_device(),
        # torch's pool in the search process (search/threads.py): fine-tuning's float rounding follows it
        "torch_threads": torch.get_num_threads(),
        "latency": config.to_dict()["latency"],
    }
