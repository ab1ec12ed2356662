"""Run the feature flow in this process, with a progress bar over the event log."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from bytewax.testing import run_main
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.dataflow import build_flow
from flows.source import PROGRESS
from kairos.config import Settings
from kairos.stores.event_store import open_event_store


@dataclass
class FlowReport:
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def run_flow(settings: Settings, follow: bool = False, progress: bool = True) -> FlowReport:
    """Process the event log from the start; stop when caught up unless ``follow``."""
    store = open_event_store(settings)
    total = store.count()
    store.close()
    flow = build_flow(settings, follow=follow)
    PROGRESS.reset()
    done = threading.Event()
    started = time.perf_counter()

    def report() -> None:
        columns = (TextColumn("[bold]flow[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                   TimeElapsedColumn())
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task("flow", total=None if follow else total)
            while not done.wait(0.25):
                bar.update(task, completed=PROGRESS.total())
            bar.update(task, completed=PROGRESS.total())

    reporter = threading.Thread(target=report, daemon=True) if progress else None
    if reporter:
        reporter.start()
    try:
        run_main(flow)
    finally:
        done.set()
        if reporter:
            reporter.join(timeout=2)
    return FlowReport(records=PROGRESS.total(), seconds=time.perf_counter() - started)
