"""Only Timely's network-thread panic (flows/cluster.py) passes for a failed two-process run's stderr,
and a cluster launch is never waited for forever."""

from __future__ import annotations

import subprocess
import sys
import time

from flows.cluster import (
    KILLED_AFTER_PEER,
    KILLED_TIMEOUT,
    ProcessOutcome,
    is_timely_failure,
    is_timely_network_panic,
    wait_cluster,
)

TRACEBACK = """Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "<frozen runpy>", line 88, in _run_code
  File "/x/.venv/lib/python3.11/site-packages/bytewax/run.py", line 355, in <module>
    cli_main(**kwargs)
"""
RACE = TRACEBACK + "pyo3_runtime.PanicException: Send thread panic: Any { .. }\n"
POISONED = ("RuntimeError: (src/run.rs:292:17) panicked at /home/runner/.cargo/git/checkouts/timely-dataflow-4c0cc365061cd263/"
            "432ef57/communication/src/allocator/zero_copy/bytes_exchange.rs:55:48:\nMergeQueue poisoned.\n")


def test_the_race_as_seen_in_either_process_is_recognised():
    assert is_timely_network_panic(RACE)
    assert is_timely_network_panic(RACE + "FATAL: exception not rethrown\n")
    assert is_timely_network_panic(RACE + POISONED)


def test_any_other_error_is_not_the_race():
    assert not is_timely_network_panic("")
    assert not is_timely_network_panic(TRACEBACK + "ValueError: bad row\n")
    assert not is_timely_network_panic(TRACEBACK + "ValueError: bad row\n" + RACE)  # a real error, then the race
    assert not is_timely_network_panic(RACE + "RuntimeError: (src/run.rs:292:17) panicked at src/operators.rs:10:5:\n"
                                "KeyError: 'x'\n")
    assert not is_timely_network_panic(TRACEBACK + "pyo3_runtime.PanicException: Recv thread panic: Any { .. }\n")


def python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_wait_cluster_returns_each_processes_exit_and_stderr():
    outcomes = wait_cluster([python("import sys; sys.stderr.write('a' * 200000)"),
                             python("import sys; sys.stderr.write('b'); sys.exit(0)")], timeout_s=60)
    assert [o.code for o in outcomes] == [0, 0] and all(o.ok for o in outcomes)
    assert outcomes[0].stderr == "a" * 200000 and outcomes[1].stderr == "b"  # a full pipe does not block it


def test_a_process_hanging_after_its_peer_failed_is_killed_after_the_grace():
    began = time.monotonic()
    outcomes = wait_cluster([python("import time; time.sleep(120)"), python("import sys; sys.exit(3)")],
                            timeout_s=120, grace_s=0.5)
    assert time.monotonic() - began < 30
    assert outcomes[0].killed == KILLED_AFTER_PEER and not outcomes[0].ok
    assert outcomes[1].code == 3 and outcomes[1].killed is None
    assert "killed" in outcomes[0].describe(0) and "exit 3" in outcomes[1].describe(1)


def test_a_launch_past_its_deadline_is_killed():
    outcomes = wait_cluster([python("import time; time.sleep(120)"), python("import time; time.sleep(120)")],
                            timeout_s=0.5)
    assert [o.killed for o in outcomes] == [KILLED_TIMEOUT, KILLED_TIMEOUT]


def test_a_timely_failure_is_the_panic_with_peers_done_panicked_or_hung_on_it():
    ok, panic = ProcessOutcome(0, ""), ProcessOutcome(1, RACE)
    hung = ProcessOutcome(-9, "", KILLED_AFTER_PEER)
    assert is_timely_failure([panic, ok]) and is_timely_failure([panic, panic]) and is_timely_failure([hung, panic])
    assert not is_timely_failure([ok, ok])  # nothing failed
    assert not is_timely_failure([hung, ProcessOutcome(1, TRACEBACK + "ValueError: bad row\n")])
    assert not is_timely_failure([ProcessOutcome(-9, "", KILLED_TIMEOUT), panic])  # a hang of its own
    assert not is_timely_failure([ProcessOutcome(-9, RACE, KILLED_AFTER_PEER), ok])  # no process panicked by itself


def test_the_flow_bench_reruns_a_failed_variant_under_a_name_feast_accepts(monkeypatch, tmp_path):
    from feast.repo_operations import is_valid_name

    from kairos.bench import flow as bench_flow

    names: list[str] = []

    def run_variant(base, root, name, flow, processes, env_extra, timeout_s):
        names.append(name)
        if len(names) < 3:
            raise RuntimeError("full failed (Timely send-thread panic):\nprocess 0 (exit 1):\n...")
        return 1.5

    monkeypatch.setattr(bench_flow, "run_variant", run_variant)
    failures: list[str] = []
    assert bench_flow.run_with_retries(tmp_path, tmp_path, "full_2_processes", "f", 2, {}, failures) == 1.5
    assert len(failures) == 2 and all("Timely send-thread panic" in f for f in failures)
    assert len(set(names)) == 3  # each attempt on a fresh home
    # run_variant makes the Feast project from the name: a '-' in it failed every retry at once.
    assert all(is_valid_name(f"bench_{name}_1765000000") for name in names)
