"""The learning flow as a child process of ``kairos flow run`` (``python -m flows.learning_process``).

The parent writes ``pickle((settings, follow))`` to this process's stdin. The child runs
:func:`flows.dataflow.build_learning_flow` with recovery snapshots of its own, at a lower CPU
priority than the feature flow: on a machine they share, features stay fresh and the learners use
the CPU the feature flow leaves (they may lag; they never hold a feature back). It dies with its
parent, so a killed ``kairos flow run`` never leaves a learner running on the recovery directory
that the next run will use.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys
import threading
import time
from datetime import timedelta

#: Niceness added to the learning process (0 keeps the parent's priority).
LEARNING_NICENESS = 10


def die_with_parent() -> None:
    """Exit when the parent goes: at once on Linux (``PR_SET_PDEATHSIG``), else within 0.5 s."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the watch thread below
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent or parent == 1:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main() -> None:
    settings, follow = pickle.load(sys.stdin.buffer)
    die_with_parent()
    if LEARNING_NICENESS:
        with contextlib.suppress(OSError):
            os.nice(LEARNING_NICENESS)
    from bytewax.testing import run_main

    from flows.dataflow import build_learning_flow
    from flows.gc_tuning import tune_gc
    from flows.runner import keep_source_layout, learning_recovery_dir, recovery_config

    settings = keep_source_layout(settings, learning_recovery_dir(settings))
    recovery, _ = recovery_config(settings, learning_recovery_dir(settings))
    flow = build_learning_flow(settings, follow=follow)
    tune_gc(settings)  # this process runs only the learning flow
    run_main(flow, epoch_interval=timedelta(seconds=settings.epoch_interval_s),
             recovery_config=recovery)


if __name__ == "__main__":
    main()
