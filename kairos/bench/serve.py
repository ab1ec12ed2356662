"""``kairos bench serve``: latency of GET suggestions under concurrent clients (Redis profile),
beside a bare Feast ``get_online_features`` for the same users, measured in the same run.

The API runs as its own processes (``kairos serve --workers N``) configured like production: auth
on (the bench creates an ``app`` key in its temporary home's key store and the clients send it as
``Authorization: Bearer``) and the default ranker (``bandit``, or ``--ranker transparent``). The
bandit ranks only once it has learned from ``KAIROS_BANDIT_MIN_EXAMPLES`` labelled impressions;
the simulated day has none, so the JSON says which ranker actually ranked. The clients are
threads of this process. Besides latency and throughput it reports the CPU the server processes spent per request
(and the client's), from the processes' CPU times around the measured window: on a small machine
that, not the latency, says what a request costs.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from kairos.net import free_port


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the uvicorn workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return float("nan")


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] * 1000

    return {"requests": len(ordered), "p50_ms": round(q(0.5), 2), "p90_ms": round(q(0.9), 2),
            "p99_ms": round(q(0.99), 2), "per_s": 0.0}


def closed_loop(clients: int, seconds: float, call: Any) -> dict[str, float]:
    """``clients`` threads calling ``call(rng)`` back to back for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        mine, failed = [], 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            ok = call(rng)
            mine.append(time.perf_counter() - started)
            failed += 0 if ok else 1
        with lock:
            latencies.extend(mine)
            errors += failed

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = _percentiles(latencies)
    result["per_s"] = round(len(latencies) / (time.monotonic() - began), 1)
    result["errors"] = errors
    return result


def _ranking(settings: Any) -> dict[str, Any]:
    """Which ranker the API will rank with: the configured one, and for ``bandit`` whether the
    published bandit has learned enough to replace the transparent ranker (``LiveRanker``)."""
    if settings.ranker != "bandit":
        return {"ranker": settings.ranker, "ranked_by": settings.ranker}
    from online.model_state import open_model_state

    try:
        loaded = open_model_state(settings).load("bandit")
    except Exception as exc:  # reported, not fatal: the API falls back the same way
        loaded, note = None, f"reading the bandit failed: {exc}"
    else:
        note = None
    examples = int(getattr(loaded[1], "n_seen", 0)) if loaded is not None else 0
    learned = examples >= settings.bandit_min_examples
    out: dict[str, Any] = {
        "ranker": "bandit", "bandit_published": loaded is not None, "bandit_examples": examples,
        "bandit_min_examples": settings.bandit_min_examples, "bandit_learned": learned,
        "ranked_by": "bandit" if learned else "transparent",
    }
    if not learned:
        out["note"] = (note or f"the bandit has learned from {examples} labelled impressions, fewer than "
                       f"KAIROS_BANDIT_MIN_EXAMPLES={settings.bandit_min_examples}: the transparent ranker ranked "
                       "(through the live ranker's model lookup)")
    return out


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def bench_serve(
        clients: Annotated[int, typer.Option(help="Concurrent clients.")] = 16,
        seconds: Annotated[float, typer.Option(help="Measured seconds per target.")] = 20.0,
        workers: Annotated[int, typer.Option(help="API worker processes (KAIROS_API_WORKERS).")] = 2,
        warmup: Annotated[float, typer.Option(help="Seconds of requests before measuring (caches, "
                                                   "the item index behind the taste part).")] = 15.0,
        learners: Annotated[bool, typer.Option("--learners/--no-learners",
                                               help="Stream taste embeddings too (the taste part).")] = True,
        users: Annotated[int, typer.Option(help="Simulated users.")] = 200,
        redis_url: Annotated[str, typer.Option(help="Redis (a DB it may flush).")] = "127.0.0.1:6379,db=9",
        ranker: Annotated[str, typer.Option(help="KAIROS_RANKER of the API: bandit (the default) or "
                                                 "transparent.")] = "",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON (the default output).")] = True,
    ) -> None:
        """p50/p99 of GET /v1/users/{id}/suggestions beside a bare Feast read, same users, same run."""
        from datetime import UTC, datetime

        import httpx

        from flows.runner import run_flow
        from kairos.bench import emit
        from kairos.config import Settings
        from kairos.simulate import SimConfig, simulate
        from kairos.stores.api_keys import create_key, open_api_keys
        from kairos.stores.event_store import open_event_store
        from kairos.stores.online_features import OnlineFeatures
        from kairos.stores.redis_conn import redis_client

        ranker = ranker or Settings().ranker  # the production default unless asked otherwise
        if ranker not in ("bandit", "transparent"):
            raise typer.BadParameter(f"--ranker must be 'bandit' or 'transparent', not {ranker!r}")
        home = Path(tempfile.mkdtemp(prefix="kairos-bench-serve-"))
        project = f"serve_{int(time.time())}"
        settings = Settings(home=home, profile="redis", redis_url=redis_url, feast_project=project,
                            recovery=False, learners=learners, ranker=ranker)
        redis_client(redis_url).flushdb()
        port = free_port()
        api = None
        try:
            print("simulating and streaming a day …", file=sys.stderr)
            simulate(open_event_store(settings), SimConfig(seed=7, days=1, n_users=users), settings.sim_dir)
            run_flow(settings, progress=False)
            features = OnlineFeatures(settings, apply=False)
            user_ids = [f"u{i:04d}" for i in range(1, users + 1)]
            known = [u for u, row in zip(user_ids, features.read("user_activity", [{"user_id": u} for u in user_ids]),
                                         strict=True) if row is not None and row.get("last_lat") is not None]
            ranking = _ranking(settings)
            # Auth on, like production: one unlimited ``app`` key in the bench's own key store.
            key_store = open_api_keys(settings)
            try:
                _, token = create_key(key_store, "app", name="bench serve", rate_limit_per_min=0, actor="bench")
            finally:
                key_store.close()
            env = {**os.environ, "KAIROS_HOME": str(home), "KAIROS_PROFILE": "redis", "KAIROS_REDIS_URL": redis_url,
                   "KAIROS_FEAST_PROJECT": project, "KAIROS_RANKER": ranker, "KAIROS_AUTH_REQUIRED": "1",
                   "KAIROS_API_WORKERS": str(workers), "KAIROS_API_PORT": str(port), "HF_HUB_OFFLINE": "1"}
            # The server's output would mix into the bench's JSON on stdout (uvicorn's access lines).
            api = subprocess.Popen([sys.executable, "-m", "kairos.cli", "serve"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            at = datetime.now(UTC).isoformat()
            client = httpx.Client(base_url=base, timeout=10, limits=httpx.Limits(max_connections=clients * 2),
                                  headers={"Authorization": f"Bearer {token}"})
            if client.get(f"/v1/users/{known[0]}/suggestions", params={"at": at}).status_code != 200:
                raise RuntimeError("the API refused the bench's app key: is auth configured the same way?")

            def suggest(rng: random.Random) -> bool:
                try:
                    response = client.get(f"/v1/users/{rng.choice(known)}/suggestions", params={"at": at})
                except httpx.HTTPError:  # counted as an error, not a dead client thread
                    return False
                return response.status_code == 200

            print(f"warming up {warmup:g} s …", file=sys.stderr)
            closed_loop(clients, warmup, suggest)  # every worker: Feast, cell caches, the item index
            fields = [f"user_activity:{f}" for f in ("view_count_24h", "category_affinity", "last_lat", "last_lon",
                                                     "home_cell", "travelling", "as_of")]

            def bare_feast(rng: random.Random) -> bool:
                features.store.get_online_features(features=fields, entity_rows=[{"user_id": rng.choice(known)}])
                return True

            print("measuring the API …", file=sys.stderr)
            server_cpu, client_cpu = _cpu_seconds(api.pid), time.process_time()
            api_result = closed_loop(clients, seconds, suggest)
            server_cpu, client_cpu = _cpu_seconds(api.pid) - server_cpu, time.process_time() - client_cpu
            served = max(1, api_result["requests"])
            api_result["server_cpu_ms_per_request"] = round(server_cpu / served * 1000, 2)
            api_result["client_cpu_ms_per_request"] = round(client_cpu / served * 1000, 2)
            print("measuring bare Feast reads …", file=sys.stderr)
            feast_result = closed_loop(clients, seconds, bare_feast)
            emit({
                "benchmark": "serve",
                "profile": "redis",
                "clients": clients,
                "api_workers": workers,
                "server": f"kairos serve, {workers} uvicorn worker process(es); clients: {clients} threads "
                          "of the bench process, on the same machine",
                "learners": learners,
                "auth": "on: an app key, sent as Authorization: Bearer",
                **ranking,
                "users": len(known),
                "suggestions": api_result,
                "bare_feast_get_online_features": feast_result,
                "p50_ratio_api_to_feast": round(api_result["p50_ms"] / feast_result["p50_ms"], 2),
                "p99_ratio_api_to_feast": round(api_result["p99_ms"] / feast_result["p99_ms"], 2),
                "goal_p99_ms": 25,
                "cpus": os.cpu_count(),
            })
        finally:
            if api is not None:
                api.terminate()
                api.wait(timeout=20)
            shutil.rmtree(home, ignore_errors=True)
            try:  # the bench's DB: leave nothing behind (features, key store, model state)
                redis_client(redis_url).flushdb()
            except Exception as exc:
                print(f"could not clean Redis {redis_url}: {exc}", file=sys.stderr)
