"""Recognise the Timely network-thread panic of a multi-process Bytewax run.

Two processes (``python -m bytewax.run ... -i 0/1 -a "host:p0;host:p1"``) sometimes both abort:
``PanicException: Send thread panic`` from ``cli_main``, sometimes ``MergeQueue poisoned`` from a
worker thread and ``FATAL: exception not rethrown`` (exit -6) in one of them. Measured with
``/tmp/kzK_loop/loop.py 20`` (the scale-out test's launch on its small fixture, 2 busy CPUs): 3,
0, 1 and 1 of 20 launches in four loops (5 of 80). It was taken for Timely's shutdown race (timely
PR #156), but all five crashed runs that were kept and inspected had written **no** online row
(those rows cross processes to their key's owner) and no catalog item, though they lasted about
as long as a good run: the results were incomplete, so "outputs complete, panic after completion"
is neither assumed nor claimed here. Starting process 1 only once process 0 listens (it is the
one that accepts) did not help: 3 of 11 launches. Two more hypotheses were ruled out by the lead
with the same loop (30 launches each): peers on ports below the kernel's ephemeral range (no TCP
self-connect possible) crashed 10 of 30; a fixed ``PYTHONHASHSEED`` in both processes (same
iteration orders, so the same dataflow) 5 of 30. With ``-w 2`` in one process there are no
sockets and it cannot happen. The cause is not found.

Why nothing in our Python prevents it: the sockets belong to Timely's send and receive threads,
which ``CommsGuard::drop`` joins (``.expect("Send thread panic")``) inside ``cli_main``; a linger
or a grace period in our code does not reach them.

What we do: recognise the exact signature (and nothing else) so a caller can act on it openly.
In full test-suite runs the scale-out test's first launch hit it in 3 of 5 runs (a busier machine),
no retry did. The scale-out test retries up to four times on a fresh home, on this signature only,
and still compares every online row with the one-process run; ``kairos bench flow`` reruns the variant and names the panic in its report.
"""


from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass

#: The lines the panic prints; nothing else there may name an error.
_PANIC = re.compile(r"^pyo3_runtime\.PanicException: Send thread panic")
#: A worker thread of the same process finding the queue the send thread poisoned (next line:
#: ``MergeQueue poisoned.``).
_POISONED = re.compile(r"^RuntimeError: \(src/run\.rs:\d+:\d+\) panicked at \S*/communication/src/allocator/"
                       r"zero_copy/bytes_exchange\.rs:\d+:\d+:$")
#: Any line that names an exception or a panic (a Python error of ours would print one).
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception|Panic)\b|panicked at")


def is_timely_network_panic(stderr: str) -> bool:
    """True when a process's stderr shows Timely's send-thread panic and no other error."""
    lines = stderr.splitlines()
    if not any(_PANIC.match(line) for line in lines):
        return False
    for i, line in enumerate(lines):
        if not _ERROR_LINE.search(line) or _PANIC.match(line):
            continue
        if _POISONED.match(line) and i + 1 < len(lines) and lines[i + 1].strip() == "MergeQueue poisoned.":
            continue
        return False
    return True


#: Why :func:`wait_cluster` killed a process.
KILLED_TIMEOUT = "still running at the launch's deadline"
KILLED_AFTER_PEER = "still running after its peer process failed"


@dataclass(frozen=True)
class ProcessOutcome:
    """How one process of a cluster launch ended: its exit code, its stderr, and ``killed`` when
    :func:`wait_cluster` had to kill it: :data:`KILLED_TIMEOUT` or :data:`KILLED_AFTER_PEER`."""

    code: int
    stderr: str
    killed: str | None = None

    def describe(self, index: int) -> str:
        how = f"killed ({self.killed})" if self.killed else f"exit {self.code}"
        return f"process {index} ({how}):\n{self.stderr[-3000:]}"

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.killed is None


def wait_cluster(procs: list[subprocess.Popen[str]], timeout_s: float, grace_s: float = 30.0) -> list[ProcessOutcome]:
    """Wait for every process of a multi-process run, never forever.

    A process whose peer died stays in Timely's ``cli_main`` waiting for it, idle, for good (seen
    with ``kairos bench flow``: process 1 exited, process 0 never did). So once one process fails,
    the others get ``grace_s`` to finish on their own and are then killed; and every process still
    running after ``timeout_s`` is killed. The processes' stderr must be pipes (``text=True``);
    they are drained by threads so a chatty process cannot block on a full pipe."""
    outputs: list[list[str]] = [[] for _ in procs]
    readers = [threading.Thread(target=lambda p=proc, out=out: out.append(p.stderr.read() if p.stderr else ""),
                                daemon=True) for proc, out in zip(procs, outputs, strict=True)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout_s
    killed: dict[int, str] = {}
    peer_failed_at: float | None = None
    while [proc.poll() for proc in procs].count(None):  # a list: every process polled, none short-circuited
        now = time.monotonic()
        if peer_failed_at is None and any(proc.returncode not in (None, 0) for proc in procs):
            peer_failed_at = now
        reason = None
        if now >= deadline:
            reason = KILLED_TIMEOUT
        elif peer_failed_at is not None and now - peer_failed_at >= grace_s:
            reason = KILLED_AFTER_PEER
        if reason:
            for i, proc in enumerate(procs):
                if proc.poll() is None:
                    proc.kill()
                    killed[i] = reason
            for proc in procs:
                proc.wait()
            break
        time.sleep(0.05)
    for reader in readers:
        reader.join(timeout=10)
    return [ProcessOutcome(proc.returncode, "".join(out), killed.get(i))
            for i, (proc, out) in enumerate(zip(procs, outputs, strict=True))]


def is_timely_failure(outcomes: list[ProcessOutcome]) -> bool:
    """A failed launch whose every failure is the Timely panic: at least one process shows the
    panic's exact signature and each other one succeeded, shows it too, or was killed hanging
    after its peer failed (it waits for the dead peer in ``cli_main``)."""
    failed = [o for o in outcomes if not o.ok]
    if not failed or not any(o.killed is None and is_timely_network_panic(o.stderr) for o in failed):
        return False
    return all(is_timely_network_panic(o.stderr) if o.killed is None else o.killed == KILLED_AFTER_PEER
               for o in failed)
