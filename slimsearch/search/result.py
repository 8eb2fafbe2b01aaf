"""A finished (or running) search, reopened from its run folder: the Python face of the CLI."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from slimsearch.search import storage as st


class Result:
    """`Result(run_dir).front` is what `slimsearch front` prints; `.export(...)` what it exports."""

    def __init__(self, run_dir: str | Path):
        self.info = st.read_run_file(run_dir)  # first: it refuses a run_dir that is not a path
        self.run_dir = Path(run_dir)

    @cached_property
    def study(self):
        return st.load_study(self.run_dir)

    @property
    def config(self):
        from slimsearch.config import SearchConfig

        return SearchConfig.from_mapping(self.info["config"], source=str(self.run_dir / st.RUN_FILE))

    @property
    def trials(self) -> pd.DataFrame:
        from slimsearch.reports.data import trials_frame

        return trials_frame(self.study)

    @property
    def front(self) -> pd.DataFrame:
        from slimsearch.reports.data import front_frame

        return front_frame(self.study)

    def front_records(self) -> list[dict[str, Any]]:
        from slimsearch.reports.data import front_records

        return front_records(self.study)

    @property
    def teacher(self) -> dict[str, Any]:
        from slimsearch.reports.data import teacher_info

        return teacher_info(self.study)

    @property
    def environment(self) -> dict[str, Any]:
        """Machine, runtime versions, threads and batch size the latencies were measured under."""
        return dict(self.study.user_attrs.get("environment", {}))

    def write_tables(self) -> dict[str, Path]:
        """trials.csv / trials.parquet / front.csv and the first HTML page, next to the study."""
        from slimsearch.reports.html import write_front_page

        trials = self.trials
        paths = {"trials_csv": self.run_dir / "trials.csv", "trials_parquet": self.run_dir / "trials.parquet",
                 "front_csv": self.run_dir / "front.csv"}
        trials.to_csv(paths["trials_csv"], index=False)
        trials.to_parquet(paths["trials_parquet"], index=False)
        self.front.to_csv(paths["front_csv"], index=False)
        paths["report"] = write_front_page(self, self.run_dir / "report.html")
        return paths

    def report(self, out: str | Path | None = None) -> Path:
        from slimsearch.reports.html import write_front_page

        return write_front_page(self, out if out is not None else self.run_dir / "report.html")

    def export(self, *, trial: int | None = None, best_under: str | None = None, knee: bool = False,
               out: str | Path | None = None):
        """Export a trial (default: the most accurate feasible one) as deployable, verified artifacts."""
        from slimsearch.exporter import export_trial

        return export_trial(self, trial=trial, best_under=best_under, knee=knee, out=out)

    def __repr__(self) -> str:
        return f"Result({str(self.run_dir)!r})"
