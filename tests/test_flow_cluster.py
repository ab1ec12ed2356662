"""Only Timely's end-of-run race (flows/cluster.py) passes for a failed two-process run's stderr."""

from __future__ import annotations

from flows.cluster import is_timely_network_panic

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
