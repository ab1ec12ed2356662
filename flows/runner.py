"""Run the feature flow in this process (with recovery and a progress report) and, unless
``KAIROS_LEARNERS=0``, the learning flow beside it as a child process (:mod:`flows.learning_process`)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.dataflow import build_flow
from flows.gc_tuning import tuned_gc
from flows.source import PROGRESS, with_recorded_shards
from kairos.config import Settings
from kairos.stores.event_store import open_event_store

ProgressStyle = Literal["bar", "lines", "none"]


@dataclass
class FlowReport:
    records: int
    seconds: float
    resumed: bool = False
    #: Seconds until the learning flow had caught up too (None: it did not run).
    learning_seconds: float | None = None

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def learning_recovery_dir(settings: Settings) -> Path:
    """The learning flow's recovery snapshots: apart from the feature flow's, since the two flows
    have different steps and read the log at their own pace."""
    return settings.recovery_dir.with_name("recovery-learners")


def _has_partitions(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("part-*.sqlite3"))


def keep_source_layout(settings: Settings, folder: Path | None = None) -> Settings:
    """``settings`` with the source shard count of the recovery directory's snapshots (the feature
    flow's directory unless ``folder``), when recovery is on: see
    :func:`flows.source.with_recorded_shards`."""
    if not settings.recovery:
        return settings
    return with_recorded_shards(settings, folder or settings.recovery_dir)


def recovery_config(settings: Settings, folder: Path | None = None) -> tuple[RecoveryConfig | None, bool]:
    """The recovery configuration (of the feature flow unless ``folder``), creating the partitions
    on first use; also says whether an earlier run left snapshots to resume from."""
    if not settings.recovery:
        return None, False
    folder = folder or settings.recovery_dir
    resumed = _has_partitions(folder)
    if not resumed:
        folder.mkdir(parents=True, exist_ok=True)
        init_db_dir(folder, settings.recovery_partitions)
    return RecoveryConfig(folder), resumed


def start_learning_flow(settings: Settings, follow: bool) -> subprocess.Popen[bytes]:
    """The learning flow in a process of its own (its errors go to this process's stderr)."""
    child = subprocess.Popen([sys.executable, "-m", "flows.learning_process"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL)
    assert child.stdin is not None
    child.stdin.write(pickle.dumps((settings, follow)))
    child.stdin.close()
    return child


def stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_flow(settings: Settings, follow: bool = False, progress: bool | ProgressStyle = "bar") -> FlowReport:
    """Process the event log (from the last snapshot when recovery is on); stop when caught up
    unless ``follow``. ``progress``: a rich bar, plain ``progress N`` lines (for supervisors and
    tests), or nothing. Unless ``settings.learners`` is off, the learning flow runs beside it as a
    child process; without ``follow`` this returns once both have caught up."""
    style: ProgressStyle = "bar" if progress is True else "none" if progress is False else progress
    configured, settings = settings, keep_source_layout(settings)  # the learning flow checks its own
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
    learning = start_learning_flow(configured, follow) if settings.learners else None
    finished = False
    try:
        with tuned_gc(settings):
            run_main(flow, epoch_interval=timedelta(seconds=settings.epoch_interval_s), recovery_config=recovery)
        seconds = time.perf_counter() - started
        learning_seconds = None
        if learning is not None:
            code = learning.wait()
            learning_seconds = time.perf_counter() - started
            if code != 0:
                raise RuntimeError(f"the learning flow failed (exit code {code}; its errors are above)")
        finished = True
    finally:
        done.set()
        if thread:
            thread.join(timeout=2)
        if learning is not None and not finished:
            stop(learning)
    return FlowReport(records=PROGRESS.total(), seconds=seconds, resumed=resumed, learning_seconds=learning_seconds)
