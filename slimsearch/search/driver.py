"""Runs a search end to end: open or resume the study, check the budget, drive the trials.

A search is resumable at any point: every finished trial is in the study storage the moment
it ends, a trial lost with its process (SIGKILL, power cut) is marked failed and queued again
(search/recovery.py), and running the same command again continues towards the requested
number of trials. A trial that raises, returns NaN or overruns its time limit fails alone
(search/faults.py). `slimsearch worker` (search/worker.py) runs `work` on a shared study.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import socket
import time
from pathlib import Path

from rich.console import Console

from slimsearch.config import SearchConfig
from slimsearch.errors import SlimsearchError
from slimsearch.search import recovery
from slimsearch.search import storage as st
from slimsearch.search.capability import searched_space
from slimsearch.search.environment import environment_info
from slimsearch.search.faults import MAX_CONSECUTIVE_FAILURES, guard_objective, past
from slimsearch.search.priors import compute_priors, ensure_priors
from slimsearch.search.proposals import needs_priors
from slimsearch.search.reevaluate import reevaluate_front
from slimsearch.search.samplers import create_sampler
from slimsearch.search.trial import TrialContext, run_trial

WORKER_ATTR = "worker"  # host:pid of the process that ran a trial


def run_search(config: SearchConfig, *, console: Console | None = None, quiet: bool = False, task=None):
    """Run (or resume) the search `config` describes; returns its `Result`."""
    import optuna

    from slimsearch.tasks import task_from_config

    console = console or Console(stderr=True)
    _split_threads(config.jobs)  # before the teacher, the probe and the sensitivity pass train or run
    # The time budget counts from here: loading the task and checking the budget are part of it.
    deadline = time.time() + config.time_budget if config.time_budget is not None else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = config.run_dir
    st.prepare_run_dir(run_dir)
    with st.run_lock(run_dir):
        task = task_from_config(config, task=task)
        space = searched_space(task, config, run_dir, report=_reporter(console))
        storage_url = config.storage or st.default_storage_url(run_dir)
        expected = st.fingerprint(config, space.signature())
        existing = _load_existing(st.open_storage(storage_url), config.run_name)
        if existing is not None:
            st.check_fingerprint(existing, expected, run_dir)
        config = with_study_heartbeat(config, existing)
        storage = open_worker_storage(storage_url, config.faults, console)

        context = _create_context(config, task, space, run_dir)
        try:
            return _search(config, context, storage, existing, expected, console, quiet, deadline)
        finally:
            context.close()


def _search(config: SearchConfig, context: TrialContext, storage, existing, expected, console: Console, quiet: bool,
            deadline: float | None = None):
    """Check the budget, open the study, run the trials still missing, write the results."""
    import optuna

    from slimsearch.search.progress import SearchProgress
    from slimsearch.search.result import Result

    run_dir, space = config.run_dir, context.space
    storage_url = config.storage or st.default_storage_url(run_dir)
    preflight, optimize, priors = _backend(config, console)
    teacher = preflight(context, console)
    study = optuna.create_study(study_name=config.run_name, storage=storage, directions=list(st.DIRECTIONS),
                                load_if_exists=True)
    fresh = st.FINGERPRINT_ATTR not in study.user_attrs
    if fresh:  # new, or created by hand (e.g. to enqueue candidates first)
        st.check_directions(study, run_dir)
        study.set_user_attr(st.FINGERPRINT_ATTR, expected)
        study.set_user_attr(st.CONFIG_ATTR, config.to_dict())
        study.set_user_attr("teacher", teacher)
        study.set_user_attr("environment", environment_info(config))
    if needs_priors(config) and has_work(study, config):
        ensure_priors(study, context, _reporter(console), deadline=deadline, compute=priors)
    # The proposers (warm start, sampler, predictors, allocation) answer through the study's sampler.
    study.sampler = create_sampler(config, space, context.task, study, seed=config.seed, deadline=deadline)
    st.write_run_file(run_dir, storage_url=storage_url, study_name=config.run_name, config=config)
    if st.is_default_storage(storage_url, run_dir):
        # Only lock holders use the run folder's SQLite study: whatever is RUNNING there is lost.
        recovery.recover_orphans(study, _reporter(console))
    done = _count(study, "COMPLETE")
    if existing is not None and not fresh:
        console.print(f"Resuming study '{config.run_name}' in {run_dir}: {done} of {config.trials} trials "
                      f"already done.", highlight=False, markup=False, soft_wrap=True)
    else:
        console.print(f"New study '{config.run_name}' in {run_dir}: task {config.task}, budget "
                      f"{config.latency_budget} (teacher {teacher['latency_ms']:.3f} ms), {len(space.parameters())} "
                      f"knobs, {config.trials} trials.", highlight=False, markup=False, soft_wrap=True)

    if has_work(study, config) or _count(study, "RUNNING"):
        workers = _start_workers(config, run_dir, deadline)
        try:
            with SearchProgress(total=config.trials, console=console, quiet=quiet) as progress:
                progress.update(study)
                optimize(study, context, config, on_trial=progress.update, deadline=deadline)
        finally:
            for worker in workers:
                worker.join()
        if past(deadline) and has_work(study, config):
            console.print(f"Time budget of {config.time_budget:g} s used up: {_count(study, 'COMPLETE')} of "
                          f"{config.trials} trials done; run the same command again to continue.",
                          highlight=False, markup=False, soft_wrap=True)
    reevaluate_front(study, context, _reporter(console))  # full validation and test figures, with val_samples
    result = Result(run_dir)
    result.write_tables()
    return result


def _create_context(config: SearchConfig, task, space, run_dir: Path) -> TrialContext:
    if config.backend == "ray":  # trials and all measurements run on the cluster's nodes, not here
        return TrialContext(config, task, space, run_dir, teacher_logits=None)
    return TrialContext.create(config, task, space, run_dir)


def _backend(config: SearchConfig, console: Console):
    """The (preflight, optimize, priors) functions that measure and run trials: in processes
    here, or on a Ray cluster's target nodes."""
    if config.backend == "ray":
        from slimsearch.search import ray_backend

        return ray_backend.preflight, ray_backend.optimize, ray_backend.compute_priors
    from slimsearch.search.preflight import preflight

    return preflight, functools.partial(work, console=console), compute_priors


def _load_existing(storage, name: str):
    import optuna

    if name not in optuna.study.get_all_study_names(storage=storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def _count(study, state: str) -> int:
    return sum(1 for trial in study.get_trials(deepcopy=False) if trial.state.name == state)


def with_study_heartbeat(config: SearchConfig, study) -> SearchConfig:
    """`config` with the study's heartbeat settings: every worker must agree on what 'dead' means.

    The time limit stays this process's own: raising it on resume is a fair thing to do.
    """
    stored = (study.user_attrs.get(st.CONFIG_ATTR) or {}).get("faults") if study is not None else None
    if not stored:
        return config
    heartbeat = {key: stored[key] for key in ("heartbeat_interval", "grace_period") if key in stored}
    return SearchConfig.from_mapping({"faults": heartbeat}, source="the study's settings", base=config)


def open_worker_storage(url: str, faults, console: Console):
    """The study storage as a process that runs trials opens it: with heartbeats, recovering lost trials."""
    return st.open_storage(url, heartbeat=(faults.heartbeat_interval, faults.grace_period),
                           on_stale_trial=recovery.stale_trial_callback(_reporter(console)))


def has_work(study, config: SearchConfig) -> bool:
    """Completed trials still missing, or candidates queued (retries of lost trials, enqueued by hand)."""
    return _count(study, "COMPLETE") < config.trials or _count(study, "WAITING") > 0


def _reporter(console: Console):
    return lambda message: console.print(message, highlight=False, markup=False, soft_wrap=True)


def work(study, context: TrialContext, config: SearchConfig, console: Console, *, on_trial=None,
         deadline: float | None = None) -> None:
    """Run trials until the study holds `config.trials` completed ones and none is running or queued,
    or until `deadline` (a `time.time()` value) has passed: then running trials finish, none starts.

    Several processes may work one study (`--jobs`, `slimsearch worker`). One that finds nothing
    left to start waits for the others' running trials: each either finishes, or stops sending
    heartbeats and is failed and queued again, and then this process runs the retry. So when any
    worker returns, nothing is left RUNNING behind a dead one.
    """
    import optuna

    report = _reporter(console)
    failures = [0]
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def run(trial):
        trial.set_user_attr(WORKER_ATTR, worker_id)
        return run_trial(trial, context)

    objective = guard_objective(run, trial_timeout=config.faults.trial_timeout)

    def after_trial(study_, trial) -> None:
        failures[0] = failures[0] + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        if on_trial is not None:
            on_trial(study_, trial)
        recovery.recover_stale(study_)
        if not has_work(study_, config) or past(deadline):
            study_.stop()
        elif failures[0] >= MAX_CONSECUTIVE_FAILURES:
            study_.stop()
            raise SlimsearchError(
                f"search stopped after {failures[0]} failed trials in a row; last reason: "
                f"{trial.user_attrs.get('fail_reason', 'unknown')} (completed trials are kept in the study)"
            )

    waiting_for: set[int] = set()
    while not past(deadline):
        recovery.recover_stale(study)
        if has_work(study, config):
            try:
                study.optimize(objective, catch=(Exception,), callbacks=[after_trial])
            except optuna.exceptions.UpdateFinishedTrialError:
                # Our trial went silent for a grace period (a stalled machine) and another worker
                # failed and re-queued it; its result is void, the retry will redo it.
                report("A trial of this worker was taken for lost by another worker; continuing.")
            continue
        running = {trial.number for trial in study.get_trials(deepcopy=False) if trial.state.name == "RUNNING"}
        if not running:
            return
        if running != waiting_for:
            report(f"Waiting for trial(s) {', '.join(map(str, sorted(running)))} of other workers to finish "
                   f"(or to be retried here if their worker is gone).")
            waiting_for = running
        time.sleep(config.faults.heartbeat_interval)


def _start_workers(config: SearchConfig, run_dir: Path, deadline: float | None) -> list:
    """For `jobs` > 1: extra processes on the same study, cores split between them."""
    if config.jobs <= 1:
        return []
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_worker_main, args=(config.to_dict(), str(run_dir), deadline), daemon=True)
               for _ in range(config.jobs - 1)]
    for worker in workers:
        worker.start()
    return workers


def _split_threads(jobs: int) -> None:
    from slimsearch.search.threads import size_threads

    size_threads(jobs)


def _worker_main(config_data: dict, run_dir: str, deadline: float | None = None) -> None:
    try:
        _work_in_worker(config_data, run_dir, deadline)
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the group; the driver says the one line
        pass


def _work_in_worker(config_data: dict, run_dir: str, deadline: float | None) -> None:
    import optuna

    from slimsearch.tasks import task_from_config

    config = SearchConfig.from_mapping(config_data, source="worker")
    _split_threads(config.jobs)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = task_from_config(config)
    space = searched_space(task, config, Path(run_dir))  # the driver's space.json
    context = TrialContext.create(config, task, space, Path(run_dir))
    console = Console(stderr=True, quiet=True)  # the driver reports for the whole search
    try:
        info = st.read_run_file(Path(run_dir))
        study = optuna.load_study(study_name=info["study_name"],
                                  storage=open_worker_storage(info["storage"], config.faults, console))
        study.sampler = create_sampler(config, space, task, study, seed=config.seed + os.getpid(), deadline=deadline)
        work(study, context, config, console, deadline=deadline)
    finally:
        context.close()
