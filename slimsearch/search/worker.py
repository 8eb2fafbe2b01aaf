"""`slimsearch worker RUN_DIR --storage URL`: one more process working a shared study.

A study started by `slimsearch run ... --storage postgresql://...` keeps everything a worker
needs in its user attrs (the search settings, the teacher's figures, the fingerprint), so a
worker on any machine rebuilds the task and the space from them, checks that they still
match, and works trials until the study is done (`driver.work`). Start it as often as there
are cores or machines to spare. The run folder is this machine's place for the fine-tuned
weights of the trials it runs; `front` and `report` read the study through it.
"""

from __future__ import annotations

import os
import socket
import zlib
from pathlib import Path

from rich.console import Console

from slimsearch.config import SearchConfig
from slimsearch.errors import ConfigError, StudyMismatchError
from slimsearch.search import storage as st


def run_worker(run_dir: str | Path, *, storage: str | None = None, trial_timeout: str | float | None = None,
               console: Console | None = None, quiet: bool = False) -> int:
    """Work the study of `run_dir` until it is done; returns how many trials the study has completed."""
    import optuna

    from slimsearch.search.driver import has_work, open_worker_storage, work
    from slimsearch.search.progress import SearchProgress
    from slimsearch.search.samplers import create_sampler
    from slimsearch.search.threads import size_threads
    from slimsearch.search.trial import TrialContext
    from slimsearch.search.capability import searched_space
    from slimsearch.tasks import task_from_config

    console = console or Console(stderr=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = Path(run_dir)
    storage_url, study_name = _locate_study(run_dir, storage)
    study = _load_study(storage_url, study_name)
    config = _study_config(study, run_dir, storage_url, trial_timeout)

    st.prepare_run_dir(run_dir)
    size_threads()
    task = task_from_config(config)
    space = searched_space(task, config, run_dir)
    st.check_fingerprint(study, st.fingerprint(config, space.signature()), run_dir)
    if not (run_dir / st.RUN_FILE).exists():  # a new machine: `front` and `report` work from here too
        st.write_run_file(run_dir, storage_url=storage_url, study_name=study_name, config=config)

    # Each worker samples with its own seed, or all of them would propose the same candidates.
    seed = config.seed + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 1_000_003
    study = optuna.load_study(study_name=study_name, storage=open_worker_storage(storage_url, config.faults, console))
    study.sampler = create_sampler(config, space, task, study, seed=seed)
    done = sum(1 for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE")
    console.print(f"Worker {socket.gethostname()}:{os.getpid()} joined study '{study_name}' "
                  f"({st.redacted(storage_url)}): {done} of {config.trials} trials done.", highlight=False,
                  markup=False, soft_wrap=True)
    if has_work(study, config) or _running(study):
        context = TrialContext.create(config, task, space, run_dir)
        try:
            with SearchProgress(total=config.trials, console=console, quiet=quiet) as progress:
                progress.update(study)
                work(study, context, config, console, on_trial=progress.update)
        finally:
            context.close()
    return sum(1 for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE")


def _locate_study(run_dir: Path, storage: str | None) -> tuple[str, str]:
    """(storage URL, study name): from the run folder's run.json, or from --storage and the folder's name."""
    if (run_dir / st.RUN_FILE).exists():
        info = st.read_run_file(run_dir)
        storage_url, study_name = storage or info["storage"], info["study_name"]
    elif storage is None:
        raise ConfigError(f"{str(run_dir)!r} has no {st.RUN_FILE}, so the study's storage is unknown; give "
                          f"--storage with the URL 'slimsearch run --storage' used, such as postgresql://host/db")
    else:
        storage_url, study_name = storage, run_dir.name
    if "://" not in storage_url:
        raise ConfigError(f"storage must be an Optuna storage URL such as 'postgresql://user@host/db', "
                          f"but got storage={storage_url!r}")
    if st.is_default_storage(storage_url, run_dir):
        raise ConfigError(
            f"{str(run_dir)!r} keeps its study in its own SQLite file, which only one 'slimsearch run' uses at a "
            f"time; workers need a shared database: start the search with --storage postgresql://... "
            f"(for parallel trials on one machine, use 'slimsearch run --jobs N' instead)"
        )
    return storage_url, study_name


def _load_study(storage_url: str, study_name: str):
    import optuna

    storage = st.open_storage(storage_url)
    names = optuna.study.get_all_study_names(storage=storage)
    if study_name not in names:
        raise ConfigError(
            f"no study named {study_name!r} in {st.redacted(storage_url)} (it holds: {', '.join(names) or 'none'}); "
            f"start one with 'slimsearch run ... --storage URL --name {study_name}', then run the workers"
        )
    return optuna.load_study(study_name=study_name, storage=storage)


def _study_config(study, run_dir: Path, storage_url: str, trial_timeout) -> SearchConfig:
    """The settings `slimsearch run` stored in the study, with this machine's folder, storage and time limit."""
    stored = study.user_attrs.get(st.CONFIG_ATTR)
    if stored is None:
        raise StudyMismatchError(f"study {study.study_name!r} holds no slimsearch settings (it was not started by "
                                 f"'slimsearch run'); start it with 'slimsearch run ... --storage URL' first")
    overrides = {"name": study.study_name, "runs_dir": str(run_dir.parent), "storage": storage_url}
    if trial_timeout is not None:
        overrides["faults"] = {"trial_timeout": trial_timeout}
    base = SearchConfig.from_mapping(stored, source=f"the settings of study {study.study_name!r}")
    return SearchConfig.from_mapping(overrides, source="slimsearch worker", base=base)


def _running(study) -> bool:
    return any(trial.state.name == "RUNNING" for trial in study.get_trials(deepcopy=False))
