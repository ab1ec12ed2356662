"""``kairos bench freshness``: time from an event's append to its feature being readable online,
at a steady event rate, with the flow tailing the log (Redis profile by default).

The flow runs in its default configuration, ``kairos flow run --follow``: the feature flow with
recovery snapshots, and the learning flow beside it as a process of its own. Only the store
locations (home, Redis, Feast project) are the bench's; ``KAIROS_LEARNERS=0`` and any other
``KAIROS_*`` variable in the environment still apply, and the JSON says what ran."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def wait_until_flowing(store, features, flow: subprocess.Popen[str], timeout_s: float = 180.0) -> None:
    """Block until the tailing flow has started and turned one event into a feature row."""
    ts = datetime.now(timezone.utc)
    store.append("pings", [{"_id": "ready", "user_id": "ready-probe", "lat": 40.75, "lon": -73.98,
                            "ts": ts.isoformat()}])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if flow.poll() is not None:
            raise RuntimeError(f"the flow exited:\n{flow.stderr.read()[-3000:] if flow.stderr else ''}")
        if features.read_one("user_activity", {"user_id": "ready-probe"}) is not None:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the flow produced no feature within {timeout_s:.0f} s")


def register(app: typer.Typer) -> None:
    @app.command("freshness")
    def bench_freshness(
        rate: Annotated[int, typer.Option(help="Events appended per second.")] = 2000,
        seconds: Annotated[float, typer.Option(help="Measured duration.")] = 30.0,
        warmup: Annotated[float, typer.Option(help="Unmeasured seconds first.")] = 5.0,
        probe_every: Annotated[int, typer.Option(help="One probe event per this many events.")] = 20,
        profile: Annotated[str, typer.Option(help="redis (default) or local.")] = "redis",
        redis_url: Annotated[str, typer.Option(help="Redis for the redis profile (a DB it may flush).")] =
            "127.0.0.1:6379,db=9",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON (the default output).")] = True,
    ) -> None:
        """p50/p99 of append → online-readable latency at a steady rate."""
        from kairos.bench import emit
        from kairos.config import Settings
        from kairos.stores.event_store import open_event_store
        from kairos.stores.online_features import OnlineFeatures

        home = Path(tempfile.mkdtemp(prefix="kairos-bench-fresh-"))
        project = f"fresh_{int(time.time())}"
        settings = Settings(home=home, profile=profile, redis_url=redis_url, feast_project=project)
        if profile == "redis":
            from kairos.stores.redis_conn import redis_client

            redis_client(redis_url).flushdb()
        features = OnlineFeatures(settings)
        store = open_event_store(settings)
        env = {**os.environ, "KAIROS_HOME": str(home), "KAIROS_PROFILE": profile, "KAIROS_REDIS_URL": redis_url,
               "KAIROS_FEAST_PROJECT": project}
        ran = Settings.from_env(home=home)  # what the flow process will read (besides the stores above)
        flow = subprocess.Popen([sys.executable, "-m", "kairos.cli", "flow", "run", "--follow", "--progress", "none"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        probes: dict[str, tuple[float, float]] = {}  # user -> (event ts, appended at)
        latencies: list[float] = []
        lock = threading.Lock()
        stop = threading.Event()
        appended = 0
        measuring_from = time.time() + 1e9

        def writer() -> None:
            nonlocal appended, measuring_from
            tick = 0.05
            per_tick = max(1, round(rate * tick))
            started = time.monotonic()
            n = 0
            while not stop.is_set():
                now = time.time()
                docs, new_probes = [], {}
                for _ in range(per_tick):
                    n += 1
                    probe = n % probe_every == 0
                    user = f"probe{n}" if probe else f"u{n % 5000}"
                    docs.append({"_id": f"b{n}", "user_id": user, "lat": 40.75, "lon": -73.98,
                                 "ts": datetime.fromtimestamp(now, timezone.utc).isoformat()})
                    if probe:
                        new_probes[user] = now
                store.append("pings", docs)
                appended_at = time.time()
                with lock:
                    for user, ts in new_probes.items():
                        probes[user] = (ts, appended_at)
                appended += len(docs)
                next_tick = started + (n / per_tick) * tick
                time.sleep(max(0.0, next_tick - time.monotonic()))

        def reader() -> None:
            while not stop.is_set():
                with lock:
                    waiting = list(probes.items())[:400]
                if not waiting:
                    time.sleep(0.005)
                    continue
                rows = features.read("user_activity", [{"user_id": u} for u, _ in waiting])
                seen = time.time()
                with lock:
                    for (user, (ts, appended_at)), row in zip(waiting, rows, strict=True):
                        if row is not None and row["as_of"] >= ts - 1e-6:
                            probes.pop(user, None)
                            if appended_at >= measuring_from:
                                latencies.append(seen - appended_at)
                time.sleep(0.01)

        threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=reader, daemon=True)]
        try:
            wait_until_flowing(store, features, flow)
            for thread in threads:
                thread.start()
            measuring_from = time.time() + warmup
            time.sleep(warmup + seconds)
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            unread = sum(1 for _, (_, at) in probes.items() if at >= measuring_from)
            if flow.poll() is not None:
                raise RuntimeError(f"the flow exited early:\n{flow.stderr.read()[-3000:] if flow.stderr else ''}")
            emit({
                "benchmark": "freshness",
                "profile": profile,
                "target_events_per_s": rate,
                "achieved_events_per_s": round(appended / (warmup + seconds)),
                "measured_s": seconds,
                "probes_measured": len(latencies),
                "probes_not_seen_by_the_end": unread,
                "p50_s": round(percentile(latencies, 0.50), 4),
                "p90_s": round(percentile(latencies, 0.90), 4),
                "p99_s": round(percentile(latencies, 0.99), 4),
                "max_s": round(max(latencies), 4) if latencies else None,
                "goal_p99_s": 1.0,
                "flow": {"learners_beside": ran.learners, "recovery": ran.recovery,
                         "epoch_interval_s": ran.epoch_interval_s, "poll_interval_s": ran.poll_interval_s},
                "load_average_1m_end": round(os.getloadavg()[0], 2),
                "cpus": os.cpu_count(),
            })
        finally:
            stop.set()
            flow.send_signal(signal.SIGTERM)
            try:
                flow.wait(timeout=10)
            except subprocess.TimeoutExpired:
                flow.kill()
            shutil.rmtree(home, ignore_errors=True)
