"""Where a search keeps its state: the run folder, the Optuna study and its artifacts.

`runs/<name>/` holds `run.json` (how to reopen the study), `study.db` (the default SQLite
storage; any Optuna storage URL works instead), `artifacts/` (each trial's fine-tuned
weights) and the result tables and report.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from slimsearch.config import SearchConfig
from slimsearch.errors import ConfigError, SlimsearchError, StudyMismatchError, os_reason
from slimsearch.search.attrs import CONSTRAINT_NAME, FAIL_REASON_ATTR, FIRST_LATENCY_ATTR  # noqa: F401  (re-exported)

DIRECTIONS = ("maximize", "minimize", "minimize")  # accuracy, latency_ms, size_bytes
OBJECTIVES = ("accuracy", "latency_ms", "size_bytes")
RUN_FILE = "run.json"
FINGERPRINT_ATTR = "slimsearch_fingerprint"
CONFIG_ATTR = "slimsearch_config"


def default_storage_url(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'study.db').resolve()}"


def open_storage(url: str, *, heartbeat: tuple[int, int] | None = None, on_stale_trial=None):
    """An Optuna RDB storage; SQLite waits for its lock instead of failing when workers write at once.

    `heartbeat` = (interval, grace period) in seconds, for the processes that run trials: each
    running trial then writes a heartbeat, and a trial whose heartbeat is older than the grace
    period is failed, with its reason, by the next worker that looks (search/recovery.py), which
    then calls `on_stale_trial(study, trial)`.
    """
    import warnings

    import optuna

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if not url.startswith("sqlite"):
        # Workers live for hours: a connection the server dropped meanwhile (restart, idle
        # timeout) is replaced instead of failing the next heartbeat or trial.
        engine_kwargs["pool_pre_ping"] = True
    if heartbeat is None:
        storage_class, interval, grace = optuna.storages.RDBStorage, None, None
    else:
        from slimsearch.search.heartbeat_storage import HeartbeatStorage

        storage_class, (interval, grace) = HeartbeatStorage, heartbeat
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are marked so
            storage = storage_class(url, engine_kwargs=engine_kwargs, heartbeat_interval=interval,
                                    grace_period=grace, heartbeat_stale_trial_callback=on_stale_trial)
    except Exception as error:  # SQLAlchemy reports bad URLs and unreachable servers in many ways
        raise ConfigError(f"cannot open storage {url!r}: {str(error).splitlines()[0]}") from None
    if url.startswith("sqlite"):
        _write_ahead_log(storage.engine)
    return storage


def _write_ahead_log(engine) -> None:
    """SQLite in WAL mode with `synchronous=NORMAL`: a trial makes some fifty small writes (one per
    sampled knob and recorded attribute), and a commit without a full fsync halves the engine's
    bookkeeping per trial (measured: 84 -> 38 ms). A killed process still loses nothing committed;
    only a power cut can lose the last commits, which the study then never saw.
    """
    import sqlalchemy

    def on_connect(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while the storage set up its schema lack the pragmas


def redacted(url: str) -> str:
    """The URL without its password, fit for an error line."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def is_default_storage(url: str, run_dir: Path) -> bool:
    """True for the run folder's own SQLite file, which only processes holding the run lock use."""
    return url == default_storage_url(run_dir)


def prepare_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"  # one per process: workers start side by side
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to run folder {str(run_dir)!r}: {os_reason(error)}") from None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for one driver at a time; the lock dies with its process (even on SIGKILL)."""
    handle = open(run_dir / ".lock", "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SlimsearchError(
                f"run folder {str(run_dir)!r} is in use by another slimsearch process; "
                f"wait for it to finish or choose another --name"
            ) from None
        yield
    finally:
        handle.close()


def fingerprint(config: SearchConfig, space_signature: str) -> dict[str, Any]:
    """What must not change between sessions of one study, or its trials would not be comparable."""
    fields = {
        "task": config.task,
        "space": space_signature,
        "latency_budget": str(config.latency_budget),
        "target": config.to_dict()["target"],
        # Unset optional keys (finetune.steps) are left out, so studies made before they existed still match.
        "finetune": {key: value for key, value in config.to_dict()["finetune"].items() if value is not None},
    }
    # The task's data and the search-time validation subset: only when set, for the same reason.
    fields.update({key: getattr(config, key) for key in ("data", "weights", "image_size", "val_samples")
                   if getattr(config, key) is not None})
    return fields


def check_fingerprint(study, expected: dict[str, Any], run_dir: Path) -> None:
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    if stored is None or stored == expected:
        return
    differences = [f"{key}: study has {stored.get(key)!r}, this run asks for {expected.get(key)!r}"
                   for key in [*expected, *(k for k in stored if k not in expected)] if stored.get(key) != expected.get(key)]
    raise StudyMismatchError(
        f"study {study.study_name!r} in {run_dir} was created with different settings ({'; '.join(differences)}); "
        f"use another --name, or delete {run_dir} to start over"
    )


def check_directions(study, run_dir: Path) -> None:
    """A study made by hand (say, to enqueue candidates first) must optimise our three objectives."""
    directions = tuple(d.name.lower() for d in study.directions)
    if directions != DIRECTIONS:
        raise StudyMismatchError(
            f"study {study.study_name!r} in {run_dir} optimises {list(directions)}, but slimsearch needs "
            f"{list(DIRECTIONS)} ({', '.join(OBJECTIVES)}); use another --name"
        )


def write_run_file(run_dir: Path, *, storage_url: str, study_name: str, config: SearchConfig) -> None:
    data = {"storage": storage_url, "study_name": study_name, "config": config.to_dict()}
    tmp = run_dir / f"{RUN_FILE}.{os.getpid()}.tmp"  # workers on one machine may write at once
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, run_dir / RUN_FILE)


def read_run_file(run_dir: Path) -> dict[str, Any]:
    if not isinstance(run_dir, (str, os.PathLike)):
        raise ConfigError(f"a run folder must be a path such as 'runs/demo', but got {run_dir!r}")
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a slimsearch run folder (no {RUN_FILE}); "
                          f"expected a folder written by 'slimsearch run', such as runs/<name>")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{str(path)!r} is unreadable ({type(error).__name__}: {error}); "
                          f"expected the JSON file 'slimsearch run' writes") from None
    if not (isinstance(info, dict) and isinstance(info.get("storage"), str) and isinstance(info.get("study_name"), str)
            and isinstance(info.get("config"), dict)):
        raise ConfigError(f"{str(path)!r} is not a slimsearch run file: expected the keys 'storage', 'study_name' "
                          f"and 'config' that 'slimsearch run' writes")
    return info


def load_study(run_dir: Path):
    import optuna

    info = read_run_file(run_dir)
    url = info["storage"]
    # Opening a missing SQLite file would create an empty one; say what is missing instead.
    database = url[len("sqlite:///"):].split("?")[0] if url.startswith("sqlite:///") else None
    if database and database != ":memory:" and not Path(database).is_file():
        raise ConfigError(f"the study database of {str(run_dir)!r} is missing: {database!r} "
                          f"(named in {RUN_FILE}) does not exist")
    try:
        return optuna.load_study(study_name=info["study_name"], storage=open_storage(url))
    except KeyError:
        raise ConfigError(f"storage {url!r} (named in {str(Path(run_dir) / RUN_FILE)!r}) holds no study "
                          f"named {info['study_name']!r}") from None


def artifact_store(run_dir: Path):
    from optuna.artifacts import FileSystemArtifactStore

    path = Path(run_dir) / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))
