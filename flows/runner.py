"""Run the feature flow in this process, with recovery and a progress report."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.dataflow import build_flow
from flows.source import PROGRESS
from kairos.config import Settings
from kairos.stores.event_store import open_event_store

ProgressStyle = Literal["bar", "lines", "none"]


@dataclass
class FlowReport:
    records: int
    seconds: float
    resumed: bool = False

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def recovery_config(settings: Settings) -> tuple[RecoveryConfig | None, bool]:
    """The recovery configuration, creating the partitions on first use; also says whether an
    earlier run left snapshots to resume from."""
    if not settings.recovery:
        return None, False
    folder = settings.recovery_dir
    resumed = folder.exists() and any(folder.iterdir())
    if not resumed:
        folder.mkdir(parents=True, exist_ok=True)
        init_db_dir(folder, settings.recovery_partitions)
    return RecoveryConfig(folder), resumed


def run_flow(settings: Settings, follow: bool = False, progress: bool | ProgressStyle = "bar") -> FlowReport:
    """Process the event log (from the last snapshot when recovery is on); stop when caught up
    unless ``follow``. ``progress``: a rich bar, plain ``progress N`` lines (for supervisors and
    tests), or nothing."""
    style: ProgressStyle = "bar" if progress is True else "none" if progress is False else progress
    recovery, resumed = recovery_config(settings)
    store = open_event_store(settings)
    total = store.count()
    store.close()
    flow = build_flow(settings, follow=follow)
    PROGRESS.reset()
    done = threading.Event()

    def bar() -> None:
        columns = (TextColumn("[bold]flow[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("records"),
                   TimeElapsedColumn())
        with Progress(*columns, transient=False) as progress_bar:
            # Resuming: what earlier runs read is not known here, so the total is left open.
            task = progress_bar.add_task("flow", total=None if follow or resumed else total)
            while not done.wait(0.25):
                progress_bar.update(task, completed=PROGRESS.total())
            progress_bar.update(task, completed=PROGRESS.total())

    def lines() -> None:
        while not done.wait(0.1):
            sys.stdout.write(f"progress {PROGRESS.total()}\n")
            sys.stdout.flush()

    reporter = {"bar": bar, "lines": lines}.get(style)
    thread = threading.Thread(target=reporter, daemon=True) if reporter else None
    if thread:
        thread.start()
    # Timed from here: building the flow (imports, Feast registration) is not processing.
    started = time.perf_counter()
    try:
        run_main(flow, epoch_interval=timedelta(seconds=settings.epoch_interval_s), recovery_config=recovery)
    finally:
        done.set()
        if thread:
            thread.join(timeout=2)
    return FlowReport(records=PROGRESS.total(), seconds=time.perf_counter() - started, resumed=resumed)
