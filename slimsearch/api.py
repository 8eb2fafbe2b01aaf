"""The Python API: `search`, `load`, `export`. It mirrors the CLI so notebooks never shell out."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def search(config: str | Path | None = None, **settings: Any):
    """Run (or resume) a search. `config` is an optional TOML file; keywords override it.

    Keywords are the TOML keys: `task`, `latency_budget`, `trials`, `name`, `sampler`, ..., and
    the sections `target`, `latency`, `finetune`, `space` as dicts. Returns a `Result`.
    """
    from slimsearch.config import SearchConfig, load_toml
    from slimsearch.errors import ConfigError
    from slimsearch.search.driver import run_search

    if isinstance(config, dict):  # a common slip: search({"task": ...}) instead of search(task=...)
        raise ConfigError(f"slimsearch.search() takes settings as keywords (search(**settings)) and an optional "
                          f"TOML path as its first argument, but got a dict: {config!r}")
    base = load_toml(config) if config is not None else None
    return run_search(SearchConfig.from_mapping(settings, source="slimsearch.search()", base=base))


def load(run_dir: str | Path):
    """Reopen a run folder (e.g. `runs/demo`) as a `Result`."""
    from slimsearch.search.result import Result

    return Result(run_dir)


def export(run_dir: str | Path, *, trial: int | None = None, best_under: str | None = None, knee: bool = False,
           out: str | Path | None = None):
    """Export a trial of a run as deployable, verified artifacts (see `Result.export`)."""
    return load(run_dir).export(trial=trial, best_under=best_under, knee=knee, out=out)
