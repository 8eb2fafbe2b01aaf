"""How many threads torch's pool gets in a search, so that a busy machine slows a search in
proportion rather than by an order of magnitude.

Torch's OpenMP threads spin while they wait for each other at the end of every parallel region.
With every core given to the pool and another job holding one of them, a spinning thread keeps
waiting for a partner the scheduler has not run yet: on a 2-core machine beside one other
single-threaded job, fine-tuning took 45-80 s per candidate instead of about 2 s. Two remedies,
both applied:

- OpenMP's passive wait policy (waiting threads sleep), set by `import slimsearch` when torch is
  not loaded yet (`OMP_WAIT_POLICY=PASSIVE`; the CLI always gets it, a notebook that imported torch
  first does not: OpenMP reads it once, when torch loads);
- without it, the pool is sized to the cores actually free (`free_cores`: /proc/stat sampled for a
  fifth of a second), which costs the same candidate different float rounding in a later study
  that finds a different load: with the passive policy the pool is sized by the cores alone, and a
  candidate trains to the same weights in any study on one machine.
"""

from __future__ import annotations

import os
import time

SAMPLE_SECONDS = 0.2


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity: a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores(seconds: float = SAMPLE_SECONDS) -> int:
    """Available cores minus what the machine kept busy over the last `seconds` (at least 1)."""
    cores = available_cores()
    first, second = _cpu_times(), None
    if first is not None:
        time.sleep(seconds)
        second = _cpu_times()
    if first is None or second is None:
        return cores
    busy, total = second[0] - first[0], second[1] - first[1]
    machine = os.cpu_count() or cores
    return max(1, min(cores, round(machine * (1 - busy / total)) if total > 0 else cores))


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies over all cores since boot, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def passive_wait() -> bool:
    """Whether torch's OpenMP threads sleep when they wait (see the module docstring)."""
    import slimsearch

    return slimsearch.OPENMP_PASSIVE


def size_threads(jobs: int = 1) -> int:
    """Set torch's intra-op threads for one of `jobs` search processes on this machine; returns it."""
    import torch

    threads = max(1, available_cores() // jobs)
    if not passive_wait():
        threads = max(1, min(threads, free_cores() // jobs))
    torch.set_num_threads(threads)
    return threads
