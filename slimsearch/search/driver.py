"""Runs a search end to end: open or resume the study, check the budget, drive the trials.

A search is resumable at any point: every finished trial is in the study storage the moment
it ends, a trial lost with its process (SIGKILL, power cut) is marked failed and queued again,
and running the same command again continues towards the requested number of trials.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from pathlib import Path

from rich.console import Console

from slimsearch.config import SearchConfig
from slimsearch.errors import InfeasibleBudgetError, SlimsearchError
from slimsearch.evaluators.size import packed_size_bytes, parameter_count
from slimsearch.search import storage as st
from slimsearch.search.environment import environment_info
from slimsearch.search.samplers import create_sampler
from slimsearch.search.trial import TrialContext, run_trial
from slimsearch.spaces import Space
from slimsearch.techniques import build_student

MAX_CONSECUTIVE_FAILURES = 5


def run_search(config: SearchConfig, *, console: Console | None = None, quiet: bool = False, task=None):
    """Run (or resume) the search `config` describes; returns its `Result`."""
    import optuna

    from slimsearch.tasks import create_task

    console = console or Console(stderr=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = config.run_dir
    st.prepare_run_dir(run_dir)
    with st.run_lock(run_dir):
        task = task or create_task(config.task, seed=config.seed)
        space = Space.discover(task.teacher, task.example_input, config.space)
        storage_url = config.storage or st.default_storage_url(run_dir)
        storage = st.open_storage(storage_url)
        expected = st.fingerprint(config, space.signature())
        existing = _load_existing(storage, config.run_name)
        if existing is not None:
            st.check_fingerprint(existing, expected, run_dir)

        context = _create_context(config, task, space, run_dir)
        try:
            return _search(config, context, storage, existing, expected, console, quiet)
        finally:
            context.close()


def _search(config: SearchConfig, context: TrialContext, storage, existing, expected, console: Console, quiet: bool):
    """Check the budget, open the study, run the trials still missing, write the results."""
    import optuna

    from slimsearch.search.progress import SearchProgress
    from slimsearch.search.result import Result

    run_dir, space = config.run_dir, context.space
    storage_url = config.storage or st.default_storage_url(run_dir)
    preflight, optimize = _backend(config)
    teacher = preflight(context, console)
    study = optuna.create_study(study_name=config.run_name, storage=storage, directions=list(st.DIRECTIONS),
                                sampler=create_sampler(config.sampler, seed=config.seed, trials=config.trials),
                                load_if_exists=True)
    if existing is None:
        study.set_user_attr(st.FINGERPRINT_ATTR, expected)
        study.set_user_attr(st.CONFIG_ATTR, config.to_dict())
        study.set_user_attr("teacher", teacher)
        study.set_user_attr("environment", environment_info(config))
    st.write_run_file(run_dir, storage_url=storage_url, study_name=config.run_name, config=config)
    if config.storage is None:
        _requeue_lost_trials(study, console)
    done = _count(study, "COMPLETE")
    if existing is not None:
        console.print(f"Resuming study '{config.run_name}' in {run_dir}: {done} of {config.trials} trials "
                      f"already done.", highlight=False, soft_wrap=True)
    else:
        console.print(f"New study '{config.run_name}' in {run_dir}: task {config.task}, budget "
                      f"{config.latency_budget} (teacher {teacher['latency_ms']:.3f} ms), {len(space.parameters())} "
                      f"knobs, {config.trials} trials.", highlight=False, soft_wrap=True)

    if done < config.trials:
        workers = _start_workers(config, run_dir)
        try:
            with SearchProgress(total=config.trials, console=console, quiet=quiet) as progress:
                progress.update(study)
                optimize(study, context, config, on_trial=progress.update)
        finally:
            for worker in workers:
                worker.join()
    result = Result(run_dir)
    result.write_tables()
    return result


def _create_context(config: SearchConfig, task, space, run_dir: Path) -> TrialContext:
    if config.backend == "ray":  # trials and all measurements run on the cluster's nodes, not here
        return TrialContext(config, task, space, run_dir, teacher_logits=None)
    return TrialContext.create(config, task, space, run_dir)


def _backend(config: SearchConfig):
    """The (preflight, optimize) pair that runs trials: in processes here, or on a Ray cluster."""
    if config.backend == "ray":
        from slimsearch.search import ray_backend

        return ray_backend.preflight, ray_backend.optimize
    return _preflight, _optimize


def _load_existing(storage, name: str):
    import optuna

    if name not in optuna.study.get_all_study_names(storage=storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def _preflight(context: TrialContext, console: Console) -> dict:
    """Measure the teacher and the most compressed candidate: refuse a budget nothing can meet."""
    config, task, space = context.config, context.task, context.space
    try:
        smallest = build_student(space.extreme_candidate(), task.teacher, task.example_input, config.space)
        with tempfile.TemporaryDirectory(prefix="slimsearch-preflight-") as tmp:
            measured = context.measure(smallest, Path(tmp))
        teacher_ms, teacher_iqr_ms, smallest_ms = measured.teacher.median_ms, measured.teacher.iqr_ms, measured.student.median_ms
    except Exception as error:  # a user model may not survive the extreme; its trials will say so
        console.print(f"warning: the most compressed candidate could not be built or timed "
                      f"({type(error).__name__}: {error}); the budget is not checked up front", highlight=False,
                      soft_wrap=True)
        teacher = context.measure_teacher()
        teacher_ms, teacher_iqr_ms, smallest_ms = teacher.median_ms, teacher.iqr_ms, None
    budget = config.latency_budget
    if smallest_ms is not None and budget.violation(smallest_ms, teacher_ms) > 0:
        target = config.target
        raise InfeasibleBudgetError(
            f"latency budget {budget} cannot be met: the most compressed candidate in this space measures "
            f"{smallest_ms:.3f} ms against the teacher's {teacher_ms:.3f} ms ({target.runtime} on {target.device}, "
            f"batch {target.batch_size}, {target.threads} thread(s)); allowed: a budget above {smallest_ms:.3f}ms "
            f"or {smallest_ms / teacher_ms:.2f}x"
        )
    from slimsearch.evaluators.accuracy import accuracy

    return {
        "latency_ms": teacher_ms,
        "latency_iqr_ms": teacher_iqr_ms,
        "smallest_candidate_latency_ms": smallest_ms,
        "val_accuracy": accuracy(task.teacher, task.val),
        "test_accuracy": accuracy(task.teacher, task.test),
        "size_bytes": packed_size_bytes(task.teacher),
        "params_count": parameter_count(task.teacher),
        "name": task.name,
    }


def _count(study, state: str) -> int:
    return sum(1 for trial in study.get_trials(deepcopy=False) if trial.state.name == state)


def _requeue_lost_trials(study, console: Console) -> None:
    """Trials left RUNNING belong to a process that died (we hold the run lock): fail and retry them."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                           "interrupted: the process running this trial stopped before it finished")
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        console.print(f"Trial {trial.number} was interrupted by a previous run; it is recorded as failed and queued "
                      f"again.", highlight=False, soft_wrap=True)


def _optimize(study, context: TrialContext, config: SearchConfig, *, on_trial=None) -> None:
    """Run trials until the study holds `config.trials` completed ones (across all workers)."""
    import optuna

    failures = [0]

    def after_trial(study_, trial) -> None:
        failures[0] = failures[0] + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        if on_trial is not None:
            on_trial(study_, trial)
        if _count(study_, "COMPLETE") >= config.trials:
            study_.stop()
        elif failures[0] >= MAX_CONSECUTIVE_FAILURES:
            study_.stop()
            raise SlimsearchError(
                f"search stopped after {failures[0]} failed trials in a row; last reason: "
                f"{trial.user_attrs.get('fail_reason', 'unknown')} (completed trials are kept in the study)"
            )

    study.optimize(lambda trial: run_trial(trial, context), catch=(Exception,), callbacks=[after_trial])


def _start_workers(config: SearchConfig, run_dir: Path) -> list:
    """For `jobs` > 1: extra processes on the same study, cores split between them."""
    if config.jobs <= 1:
        return []
    _split_threads(config.jobs)
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_worker_main, args=(config.to_dict(), str(run_dir)), daemon=True)
               for _ in range(config.jobs - 1)]
    for worker in workers:
        worker.start()
    return workers


def _split_threads(jobs: int) -> None:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))


def _worker_main(config_data: dict, run_dir: str) -> None:
    import optuna

    from slimsearch.tasks import create_task

    config = SearchConfig.from_mapping(config_data, source="worker")
    _split_threads(config.jobs)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = create_task(config.task, seed=config.seed)
    space = Space.discover(task.teacher, task.example_input, config.space)
    context = TrialContext.create(config, task, space, Path(run_dir))
    try:
        study = st.load_study(Path(run_dir))
        study.sampler = create_sampler(config.sampler, seed=config.seed + os.getpid(), trials=config.trials)
        _optimize(study, context, config)
    finally:
        context.close()
