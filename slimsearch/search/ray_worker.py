"""The Ray side of the Ray backend: what runs on a cluster node for one trial, or for the preflight.

A trial runs the very `run_trial` the Optuna backend runs, on a real Optuna trial, but one that
lives in a private in-memory study on the node: the params the driver's sampler chose are
enqueued there, so `suggest_*` answers with them. Everything the trial records (user attrs,
its latency constraint, the weights artifact's metadata) goes back to the driver in the Tune
result, and the driver writes it onto the study's trial. So nodes never open the study storage
(a SQLite file on the driver's disk works), and the driver is its only writer.

The fine-tuned weights are written by the node into the run folder's artifact store: on a
cluster of several machines that folder must be on a filesystem they share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The key of a Tune result that carries what the trial recorded.
RECORD_KEY = "slimsearch_record"
# User attr naming the Ray node that ran (and timed) the trial.
NODE_ATTR = "ray_node"
# System attrs of the private trial that describe it, not its outcome; never copied back.
_PRIVATE_SYSTEM_ATTRS = ("fixed_params",)

_contexts: dict[str, Any] = {}  # one TrialContext per worker process, reused by trials of one search


def trial_context(config_data: dict, run_dir: str):
    """The TrialContext of this search in this worker process (task, teacher timings, measurer)."""
    import torch

    from slimsearch.config import SearchConfig
    from slimsearch.search.capability import searched_space
    from slimsearch.search.trial import TrialContext
    from slimsearch.tasks import task_from_config

    key = json.dumps([config_data, run_dir], sort_keys=True)
    if key not in _contexts:
        close_contexts()  # Ray reuses worker processes across searches; keep one measurer alive
        config = SearchConfig.from_mapping(config_data, source="ray worker")
        # Ray gives a trial `cpus_per_trial` cores; torch's pool would otherwise take the machine.
        torch.set_num_threads(max(1, int(config.ray.cpus_per_trial)))
        task = task_from_config(config)
        space = searched_space(task, config, Path(run_dir))  # the driver's space.json, on a shared run folder
        _contexts[key] = TrialContext.create(config, task, space, Path(run_dir))
    return _contexts[key]


def close_contexts() -> None:
    for context in _contexts.values():
        context.close()
    _contexts.clear()


def run_trial_on_node(tune_config: dict, config_data: dict, run_dir: str) -> dict:
    """Tune trainable body: run trial `number` with `params`; return values and what it recorded.

    A trial that raises does not raise here: its reason is in the record (`fail_reason`, set by
    run_trial) and the driver marks it failed, as the Optuna backend does.
    """
    import optuna

    from slimsearch.search.storage import DIRECTIONS
    from slimsearch.search.trial import run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per trial in the driver's log
    try:
        context = trial_context(config_data, run_dir)
    except Exception as error:  # e.g. a user task module that is not installed on this node
        return _failed(f"setting up the task on Ray node {_node()['hostname']}: {type(error).__name__}: {error}")
    if {parameter.name for parameter in context.space.parameters()} != set(tune_config["params"]):
        # Unknown names would be sampled afresh here and the trial would not be what the study chose.
        return _failed(f"the search space found on Ray node {_node()['hostname']} differs from the driver's "
                       f"(another slimsearch, torch or teacher version there?)")
    study = optuna.create_study(directions=list(DIRECTIONS), sampler=optuna.samplers.RandomSampler())
    study.enqueue_trial(tune_config["params"])
    trial = _numbered(study, study.ask(), tune_config["number"])
    for key, value in tune_config.get("attrs", {}).items():  # as the driver's study holds them
        trial.set_user_attr(key, value)
    try:
        values: tuple | None = run_trial(trial, context)
    except Exception:  # run_trial recorded the reason on the trial
        values = None
    recorded = study.get_trials(deepcopy=False)[0]
    record = {
        "state": "COMPLETE" if values is not None else "FAIL",
        "user_attrs": {**recorded.user_attrs, NODE_ATTR: _node()},
        "system_attrs": {k: v for k, v in recorded.system_attrs.items() if k not in _PRIVATE_SYSTEM_ATTRS},
    }
    return _result(values, record)


def _failed(reason: str) -> dict:
    return _result(None, {"state": "FAIL", "user_attrs": {"fail_reason": reason[:500], NODE_ATTR: _node()},
                          "system_attrs": {}})


def _result(values: tuple | None, record: dict) -> dict:
    from slimsearch.search.storage import OBJECTIVES

    # Tune checks every result carries the searcher's metrics, even a failed trial's.
    metrics = dict(zip(OBJECTIVES, values)) if values is not None else dict.fromkeys(OBJECTIVES)
    # JSON text: Tune flattens nested result dicts into 'a/b/c' keys before the searcher sees them.
    return {**metrics, RECORD_KEY: json.dumps(record)}


def _node() -> dict[str, str]:
    import socket

    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname()}


def _numbered(study, trial, number: int):
    """The private trial, answering `trial.number` with the study trial's number.

    run_trial names files after the trial's number; with the real number a trial's records read
    exactly as they would have on the Optuna backend.
    """
    import optuna

    class NumberedTrial(optuna.trial.Trial):
        @property
        def number(self) -> int:
            return number

    return NumberedTrial(study, trial._trial_id)


def preflight_on_node(config_data: dict, run_dir: str) -> dict:
    """The driver's budget check and teacher measurement, run where trials run (a target node)."""
    from rich.console import Console

    from slimsearch.search.preflight import preflight

    try:
        return preflight(trial_context(config_data, run_dir), Console(stderr=True))
    finally:
        close_contexts()  # a task's worker process idles in Ray's pool afterwards; free its measurer


def priors_on_node(config_data: dict, run_dir: str, seconds: float | None) -> dict:
    """The search's priors (search/priors.py), computed where trials run (a target node)."""
    from slimsearch.search.priors import compute_priors

    try:
        return compute_priors(trial_context(config_data, run_dir), seconds=seconds)
    finally:
        close_contexts()
