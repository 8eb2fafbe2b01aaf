"""The Ray Tune backend (`backend = "ray"`): trials run as Ray Tune trials on a cluster.

Imported only when that backend runs: Ray is heavy to import.
The study's own sampler still chooses every trial: Ray's Optuna integration (`OptunaSearch`)
is given the study's storage, name and sampler, and the same define-by-run space the Optuna
backend uses (`suggest_candidate`). A trial runs on a node offering the target's custom
resource (`slimsearch_target_cpu` or `slimsearch_target_cuda` unless configured), so its
latency is measured on the kind of machine the budget is for, as is the teacher's in the
preflight. Measurements on one machine never overlap: they take the machine-wide lock of
evaluators/latency.py, whatever Ray runs beside them.

The driver is the only writer of the study: a node sends back what its trial recorded (see
search/ray_worker.py) and `_StudySearch.on_trial_complete` writes it onto the study's trial
before telling the result. So `front`, `report` and `export` read a Ray run like any other.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

from slimsearch.config import SearchConfig
from slimsearch.errors import ConfigError, SlimsearchError
from slimsearch.search import ray_worker
from slimsearch.search import storage as st
from slimsearch.search.origins import TRIAL_INPUT_ATTRS, proposed_attrs
from slimsearch.search.storage import DIRECTIONS, OBJECTIVES

# Share of a node's target resource one trial takes. The resource marks the kind of node; how
# many trials a node runs at once is set by its CPUs and GPUs, so the share only has to be small.
TARGET_SHARE = 0.01
_connected: list[str | None] = []  # the address this process joined, while connected


def target_resource(config: SearchConfig) -> str:
    return config.ray.target_resource or f"slimsearch_target_{config.target.device}"


def trial_resources(config: SearchConfig) -> dict[str, float]:
    """What one trial (or the preflight) asks of a node."""
    gpus = config.ray.gpus_per_trial
    if gpus is None:  # a CUDA target is measured on a GPU; training alone runs on CPUs
        gpus = 1.0 if config.target.device == "cuda" else 0.0
    return {"CPU": float(config.ray.cpus_per_trial), "GPU": float(gpus), target_resource(config): TARGET_SHARE}


def connect(config: SearchConfig) -> None:
    """Join the configured cluster (or $RAY_ADDRESS); with neither, start a one-machine Ray here."""
    import ray

    address = config.ray.address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        if not _connected or _connected[0] == address:
            return  # joined already, by an earlier search or by the caller's own ray.init()
        ray.shutdown()
        _connected.clear()
    options = {"include_dashboard": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **options)
        else:  # this machine is the only node, so it is of the target's kind
            ray.init(address="local", resources={target_resource(config): 1.0}, **options)
    except Exception as error:  # Ray reports unreachable or malformed addresses in many ways
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {reason} (a cluster with token "
                          f"authentication needs RAY_AUTH_MODE=token and its token here too); allowed: the address a "
                          f"head node printed ('HOST:PORT'), 'auto', or none to run Ray on this machine") from None
    _connected.append(address)


def _check_reachable(address: str) -> None:
    """Fail in seconds on a HOST:PORT nothing listens on; ray.init would retry for minutes."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # 'auto' or 'ray://...': Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as error:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {error.strerror or error}; allowed: the "
                          f"address a head node printed ('HOST:PORT', see `ray start --head`), 'auto', or none to "
                          f"run Ray on this machine") from None


def concurrent_trials(config: SearchConfig) -> int:
    """How many trials the cluster's live nodes fit at once; refuses a cluster that fits none."""
    import ray

    need = {key: amount for key, amount in trial_resources(config).items() if amount > 0}
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    fits = sum(min(int(resources.get(key, 0.0) / amount + 1e-9) for key, amount in need.items())
               for resources in nodes)
    if fits == 0:
        resource = target_resource(config)
        offered = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(r.items()) if not k.startswith("node:")
                                      and k not in ("memory", "object_store_memory")) for r in nodes)
        raise ConfigError(
            f"no node of the Ray cluster can run a trial: a trial needs {json.dumps(need)}, the nodes offer "
            f"[{offered}]; start nodes of the target's kind with `ray start --address=HEAD:PORT "
            f"--resources='{{\"{resource}\": 1}}'`, or lower ray.cpus_per_trial / ray.gpus_per_trial"
        )
    limit = config.ray.max_concurrent_trials
    return min(fits, limit) if limit else fits


def preflight(context, console: Console) -> dict:
    """The driver's budget check, run as a Ray task on a target node (see search/preflight.py)."""
    return _on_target_node(ray_worker.preflight_on_node, context)


def _on_target_node(function, context, *args):
    """`function(config_data, run_dir, *args)` run as a Ray task on a node of the target's kind."""
    import ray

    config = context.config
    connect(config)
    concurrent_trials(config)  # a cluster with no target node would leave the task waiting forever
    resources = trial_resources(config)
    task = ray.remote(function).options(num_cpus=resources.pop("CPU"), num_gpus=resources.pop("GPU"),
                                        resources=resources)
    try:
        return ray.get(task.remote(config.to_dict(), str(Path(context.run_dir).resolve()), *args))
    except ray.exceptions.RayTaskError as error:
        raise (error.cause if isinstance(error.cause, Exception) else error) from None


def compute_priors(context, *, seconds: float | None = None) -> dict:
    """The search's priors (search/priors.py), computed on a target node: its latency probes are
    measured where trials are."""
    return _on_target_node(ray_worker.priors_on_node, context, seconds)


def optimize(study, context, config: SearchConfig, *, on_trial=None, deadline: float | None = None) -> None:
    """Run Ray Tune trials until the study holds `config.trials` completed ones (or `deadline`,
    a `time.time()` value, passes: Tune then stops its trials)."""
    from ray import tune

    from slimsearch.search.faults import MAX_CONSECUTIVE_FAILURES, past

    connect(config)
    run_dir = Path(context.run_dir).resolve()
    searcher = _StudySearch(
        space=functools.partial(_define_space, space=context.space),
        metric=list(OBJECTIVES), mode=["max" if d == "maximize" else "min" for d in DIRECTIONS],
        # A storage of its own, without the heartbeat callback (which holds the console): Tune
        # pickles the searcher, and Ray itself reports trials whose worker died.
        sampler=study.sampler, study_name=study.study_name,
        storage=st.open_storage(config.storage or st.default_storage_url(run_dir)),
        target_trials=config.trials, max_failures=MAX_CONSECUTIVE_FAILURES, on_trial=on_trial,
        tune_logs=str(run_dir / "ray"),
    )
    trainable = tune.with_resources(
        tune.with_parameters(ray_worker.run_trial_on_node, config_data=config.to_dict(), run_dir=str(run_dir)),
        trial_resources(config))
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=-1, max_concurrent_trials=concurrent_trials(config),
            time_budget_s=None if deadline is None else max(1.0, deadline - time.time()),
            reuse_actors=True,  # a worker keeps its task, teacher logits and measurer between trials
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        # Tune's own logs stay with the run; our state is in the study, so Tune's checkpoints are unused.
        run_config=tune.RunConfig(storage_path=searcher.tune_logs, verbose=0),
    )
    with _quiet_tune():
        tuner.fit()
    if searcher.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
        raise SlimsearchError(
            f"search stopped after {searcher.consecutive_failures} failed trials in a row; last reason: "
            f"{searcher.last_fail_reason} (completed trials are kept in the study)")
    if searcher.done < config.trials and not past(deadline):
        # Tune ends a run early only on a stop signal (Ctrl-C), which it catches itself: say
        # so the way the Optuna backend does.
        raise KeyboardInterrupt


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune's own tables would interleave with our progress and land in stdout, which holds the
    front table; its older output engine stays silent at verbose=0."""
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def _define_space(trial, *, space) -> None:
    from slimsearch.spaces.optuna_adapter import suggest_candidate

    suggest_candidate(trial, space)  # OptunaSearch captures the suggested values itself


def _trial_name(trial) -> str:
    return f"trial-{trial.config['number']}"


class _StudySearch(OptunaSearch):
    """OptunaSearch on our study that records what the node's trial recorded, and knows when to stop.

    Like the Optuna backend it keeps asking for trials until `target_trials` are completed (a
    failed trial is replaced), and stops after `max_failures` failed trials in a row.
    """

    def __init__(self, *, target_trials: int, max_failures: int, tune_logs: str, on_trial=None, **kwargs):
        super().__init__(**kwargs)
        self.tune_logs = tune_logs
        self._target = target_trials
        self._max_failures = max_failures
        self._on_trial = on_trial
        self.consecutive_failures = 0
        self.last_fail_reason: str | None = None
        self.done = self._count_complete()

    def suggest(self, trial_id: str):
        if self.consecutive_failures >= self._max_failures or self.done >= self._target:
            return self.FINISHED
        in_flight = len(self._ot_trials) - len(self._completed_trials)
        if self.done + in_flight >= self._target:
            return None  # enough trials running; ask again when one ends (it may fail)
        super().suggest(trial_id)
        ot_trial = self._ot_trials[trial_id]
        # Flat Optuna params (the base class nests names containing '/'), the trial's number, and
        # what the proposer told the trial (its origin, a long fine-tune's factor).
        attrs = {key: value for key, value in proposed_attrs(ot_trial).items() if key in TRIAL_INPUT_ATTRS}
        return {"number": ot_trial.number, "params": dict(ot_trial.params), "attrs": attrs}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # one result per trial, handled at completion (multi-objective: nothing to report)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        record = json.loads(result[ray_worker.RECORD_KEY]) if result and ray_worker.RECORD_KEY in result else None
        if record is None:
            ot_trial.set_user_attr("fail_reason", f"the Ray trial ended without a result (its worker or node died, "
                                                  f"or the search was interrupted); see the Tune logs in {self.tune_logs}")
            state, values = TrialState.FAIL, None
        else:
            for key, value in record["user_attrs"].items():
                ot_trial.set_user_attr(key, value)
            for key, value in record["system_attrs"].items():  # the latency constraint, the weights artifact
                self._ot_study._storage.set_trial_system_attr(ot_trial._trial_id, key, value)
            complete = record["state"] == "COMPLETE"
            state = TrialState.COMPLETE if complete else TrialState.FAIL
            values = [result[name] for name in OBJECTIVES] if complete else None
        finished = self._ot_study.tell(ot_trial, values, state=state)
        self._completed_trials.add(trial_id)
        self.done = self._count_complete()
        if state == TrialState.COMPLETE:
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.last_fail_reason = finished.user_attrs.get("fail_reason", "unknown")
        if self._on_trial is not None:
            self._on_trial(self._ot_study, finished)

    def _count_complete(self) -> int:
        from optuna.trial import TrialState

        return len(self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def save(self, checkpoint_path: str) -> None:
        pass  # the study is the state: a search resumes by running the same command, not by Tune

    def __getstate__(self) -> dict:
        # Tune pickles its config (this searcher included) next to its logs; a progress view
        # holding a terminal cannot be pickled, and is not part of the searcher's state.
        return {**self.__dict__, "_on_trial": None}
