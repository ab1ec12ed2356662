"""``kairos bench serve``: latency of GET suggestions under concurrent clients (Redis profile),
beside a bare Feast ``get_online_features`` for the same users, measured in the same run.

The API runs as its own processes (``kairos serve --workers N``) configured like production: auth
on (the bench creates an ``app`` key in its temporary home's key store and the clients send it as
``Authorization: Bearer``) and the default ranker (``bandit``, or ``--ranker transparent``). The
bandit ranks only once it has learned from ``KAIROS_BANDIT_MIN_EXAMPLES`` labelled impressions and
the simulated day has none, so with the bandit a warm-up teaches it first, like production: the
learning flow follows the log (a child process) while a few clients request suggestions (which log
impressions) and ``POST /v1/feedback`` clicks and purchases by :func:`engage_probability` (an item
property, so there is something to learn), until a bandit that has learned enough is published and
the API ranks with it (checked in its responses), or ``--learn-timeout`` passes (then the JSON says
so and the transparent ranker is measured). The learning flow stops before anything is measured, so
the measured window holds the same work as with ``--ranker transparent``. The measured clients
are event-loop connections of this process (:mod:`kairos.bench.load`: a fifth of httpx's CPU per
request, and no GIL queue between client threads counted as server latency); ``--client threads``
measures with httpx threads as the bench did first, ``--client both`` measures both, one after
the other. Besides latency and throughput it reports the CPU the server processes spent per
request (and the client's), from the processes' CPU times around the measured window: on a small
machine that, not the latency, says what a request costs.
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
from collections.abc import Mapping
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
    return _summary(latencies, errors, time.monotonic() - began)


def _summary(latencies: list[float], errors: int, elapsed_s: float) -> dict[str, float]:
    """A closed-loop window's percentiles, requests a second and errors."""
    result = _percentiles(latencies)
    result["per_s"] = round(len(latencies) / elapsed_s, 1)
    result["errors"] = errors
    return result


def async_closed_loop(port: int, clients: int, seconds: float, path_of: Any, headers: Mapping[str, str]
                      ) -> dict[str, float]:
    """As :func:`closed_loop`, with :mod:`kairos.bench.load`'s event-loop clients (one keep-alive
    connection each) on ``127.0.0.1:port`` instead of httpx threads."""
    from kairos.bench.load import run_closed_loop

    return _summary(*run_closed_loop("127.0.0.1", port, clients, seconds, path_of, headers))


#: ``--client``: how the measured clients are run.
CLIENT_KINDS = ("async", "threads", "both")
CLIENT_DESCRIPTIONS = {
    "async": "one event loop in the bench process, one keep-alive connection per client (kairos/bench/load.py)",
    "threads": "httpx.Client shared by one thread per client in the bench process",
}


def _ranking(settings: Any, served: bool | None = None) -> dict[str, Any]:
    """Which ranker the API ranks with: the configured one, and for ``bandit`` whether the
    published bandit has learned enough to replace the transparent ranker (``LiveRanker``) and,
    when ``served`` is given, whether the API's responses showed it did."""
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
    by_bandit = learned and served is not False
    out: dict[str, Any] = {
        "ranker": "bandit", "bandit_published": loaded is not None, "bandit_examples": examples,
        "bandit_min_examples": settings.bandit_min_examples, "bandit_learned": learned,
        "ranked_by": "bandit" if by_bandit else "transparent",
    }
    if learned and not by_bandit:
        out["note"] = "the bandit had learned enough, but the API's responses were not ranked by it"
    elif not learned:
        out["note"] = (note or f"the bandit has learned from {examples} labelled impressions, fewer than "
                       f"KAIROS_BANDIT_MIN_EXAMPLES={settings.bandit_min_examples}: the transparent ranker ranked "
                       "(through the live ranker's model lookup)")
    return out


#: The bench's learning flow closes an impression's attribution window this soon (event time), so
#: the warm-up's examples are labelled in seconds, not after production's 30 + 5 minutes. Only the
#: learning flow reads these: the API and what it does per request are as configured.
WARMUP_WINDOW_S = 2.0
WARMUP_LATENESS_S = 1.0
#: Each warm-up client pauses this long after a request and its feedback: a hundred examples need
#: only a few requests, and the CPU is better left to the learning flow catching up with the day.
WARMUP_PAUSE_S = 0.25
#: Consecutive suggestions responses ranked by the bandit that show every API worker has it.
BANDIT_SERVED_STREAK = 8


def engage_probability(item: Mapping[str, Any]) -> float:
    """Chance that a warm-up user engages with a suggested item: higher for a bigger discount and
    for an item within a kilometre, so the bandit has a pattern to learn (the warm-up only has to
    teach it something, not the simulated city's hidden tastes)."""
    discount = min(max(float(item.get("discount") or 0.0), 0.0), 1.0)
    distance = item.get("distance_km")
    near = distance is not None and float(distance) <= 1.0
    return min(0.05 + 0.5 * discount + (0.15 if near else 0.0), 0.9)


def feedback_kind(item: Mapping[str, Any], rng: random.Random) -> str | None:
    """What a warm-up user does with a shown item: nothing, ``click``, or (a quarter of the
    engagements) ``purchase``."""
    if rng.random() >= engage_probability(item):
        return None
    return "purchase" if rng.random() < 0.25 else "click"


def served_by_bandit(body: Mapping[str, Any]) -> bool | None:
    """Whether a suggestions response was ranked by the bandit: only its items carry an
    ``exploration`` contribution (the Thompson draw). ``None`` for no items (it cannot tell)."""
    items = body.get("items") or []
    if not items:
        return None
    return all("exploration" in (item.get("score_contributions") or {}) for item in items)


def published_bandit(store: Any) -> tuple[int | None, int]:
    """The published bandit's version and the labelled impressions it learned from."""
    loaded = store.load("bandit")
    if loaded is None:
        return None, 0
    return loaded[0], int(getattr(loaded[1], "n_seen", 0))


def teach_bandit(settings: Any, client: Any, users: list[str], at: str, clients: int,
                 timeout_s: float) -> dict[str, Any]:
    """The warm-up: the learning flow follows the log while ``clients`` threads request
    suggestions and post feedback, until a bandit with ``settings.bandit_min_examples`` examples is
    published and the API's responses show it ranks with it, or ``timeout_s`` passes. Returns what
    happened (``note`` when the bandit did not serve); the learning flow is stopped either way."""
    from collections import Counter

    import httpx

    from flows.runner import start_learning_flow, stop
    from online.model_state import open_model_state

    counts: Counter[str] = Counter()
    lock = threading.Lock()
    done = threading.Event()

    def warm_client(seed: int) -> None:
        rng = random.Random(1000 + seed)
        mine: Counter[str] = Counter()
        while not done.is_set():
            user = rng.choice(users)
            try:
                response = client.get(f"/v1/users/{user}/suggestions", params={"at": at})
                if response.status_code != 200:
                    mine["errors"] += 1
                    continue
                body = response.json()
                mine["requests"] += 1
                for position, item in enumerate(body.get("items") or []):
                    kind = feedback_kind(item, rng)
                    if kind is None:
                        continue
                    posted = client.post("/v1/feedback", json={
                        "request_id": body["request_id"], "user_id": user, "item_id": item["item_id"],
                        "kind": kind, "position": position})
                    mine[kind if posted.status_code == 202 else "errors"] += 1
                done.wait(WARMUP_PAUSE_S)
            except httpx.HTTPError:  # counted; a short pause so a dead API is not hammered
                mine["errors"] += 1
                done.wait(0.2)
        with lock:
            counts.update(mine)

    # Without recovery (as the bench's first run) it re-reads the day first: the user learners
    # and the market model learn it again, as a fresh ``kairos flow run --follow`` would.
    learn_settings = settings.with_(attribution_window_s=WARMUP_WINDOW_S, attribution_lateness_s=WARMUP_LATENESS_S)
    store = open_model_state(settings)
    started = time.monotonic()
    learning = start_learning_flow(learn_settings, follow=True)
    threads = [threading.Thread(target=warm_client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    version, examples, note = None, 0, None
    learned_s = served_s = None
    served = False
    try:
        reported = started
        while True:
            try:
                version, examples = published_bandit(store)
            except Exception as exc:  # a store hiccup: keep polling until the deadline
                print(f"reading the bandit failed: {exc}", file=sys.stderr)
            if examples >= settings.bandit_min_examples:
                learned_s = time.monotonic() - started
                break
            if learning.poll() is not None:
                note = f"the learning flow exited (code {learning.returncode}) before the bandit learned"
                break
            if time.monotonic() - started > timeout_s:
                note = (f"the bandit did not learn from {settings.bandit_min_examples} impressions within "
                        f"--learn-timeout {timeout_s:g} s ({examples} so far)")
                break
            if time.monotonic() - reported >= 10:
                reported = time.monotonic()
                print(f"  … {reported - started:.0f} s: bandit v{version} has {examples} examples", file=sys.stderr)
            time.sleep(0.5)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=15)
        stop(learning)
        store.close()
    if note is None:
        # Every worker's ModelWatcher picks the version up within its poll interval; wait until a
        # run of responses shows the bandit ranked them, so the measured window does not catch it.
        rng, streak = random.Random(99), 0
        deadline = time.monotonic() + max(5.0, 10 * settings.model_poll_interval_s)
        while time.monotonic() < deadline and streak < BANDIT_SERVED_STREAK:
            response = client.get(f"/v1/users/{rng.choice(users)}/suggestions", params={"at": at})
            by_bandit = served_by_bandit(response.json()) if response.status_code == 200 else False
            streak = 0 if by_bandit is False else streak + (1 if by_bandit else 0)
            if by_bandit is False:
                time.sleep(0.1)
        served = streak >= BANDIT_SERVED_STREAK
        served_s = time.monotonic() - started
        if not served:
            note = "the bandit was published but the API's responses were not ranked by it"
    result: dict[str, Any] = {
        "seconds": round(time.monotonic() - started, 1),
        "learned_after_s": None if learned_s is None else round(learned_s, 1),
        "api_served_after_s": None if not served or served_s is None else round(served_s, 1),
        "served_by_bandit": served,
        "bandit_version": version,
        "clients": clients,
        "requests": counts["requests"],
        "feedback": {kind: counts[kind] for kind in ("click", "purchase")},
        "errors": counts["errors"],
        "attribution_window_s": WARMUP_WINDOW_S,
        "attribution_lateness_s": WARMUP_LATENESS_S,
        "learning_flow": "followed the log during the warm-up only (stopped before measuring)",
    }
    if note:
        result["note"] = note
    return result


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
        learn_timeout: Annotated[float, typer.Option(help="Bandit only: at most this many seconds of warm-up "
                                                         "(learning flow + feedback) for it to learn; then the "
                                                         "transparent ranker is measured, with a note.")] = 120.0,
        learn_clients: Annotated[int, typer.Option(help="Bandit only: clients requesting suggestions and posting "
                                                        "feedback during the warm-up.")] = 4,
        client_kind: Annotated[str, typer.Option("--client", help="The measured clients: async (event-loop "
                                                   "connections, kairos/bench/load.py: the default), threads "
                                                   "(httpx on threads, as the bench measured before), or both, "
                                                   "one after the other in the same run.")] = "async",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON (the default output).")] = True,
    ) -> None:
        """p50/p99 of GET /v1/users/{id}/suggestions beside a bare Feast read, same users, same run."""
        from datetime import UTC, datetime
        from urllib.parse import quote

        import httpx

        from flows.runner import run_flow
        from kairos.bench import emit
        from kairos.config import Settings
        from kairos.simulate import SimConfig, simulate
        from kairos.stores.api_keys import create_key, open_api_keys
        from kairos.stores.event_store import open_event_store
        from kairos.stores.online_features import OnlineFeatures
        from kairos.stores.redis_conn import redis_client

        if client_kind not in CLIENT_KINDS:
            raise typer.BadParameter(f"--client must be one of {', '.join(CLIENT_KINDS)}, not {client_kind!r}")
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

            teaching: dict[str, Any] | None = None
            if ranker == "bandit":
                print(f"teaching the bandit (learning flow + feedback, at most {learn_timeout:g} s) …", file=sys.stderr)
                teaching = teach_bandit(settings, client, known, at, max(1, learn_clients), learn_timeout)
                if "note" in teaching:
                    print(f"warning: {teaching['note']}; measuring the transparent ranker", file=sys.stderr)
            ranking = _ranking(settings, None if teaching is None else teaching["served_by_bandit"])

            def suggest(rng: random.Random) -> bool:
                try:
                    response = client.get(f"/v1/users/{rng.choice(known)}/suggestions", params={"at": at})
                except httpx.HTTPError:  # counted as an error, not a dead client thread
                    return False
                return response.status_code == 200

            headers = {"Authorization": f"Bearer {token}"}
            at_query = quote(at, safe="")

            def path_of(rng: random.Random) -> str:
                return f"/v1/users/{rng.choice(known)}/suggestions?at={at_query}"

            def measure(kind: str, window_s: float) -> dict[str, Any]:
                """One closed-loop window of ``kind`` clients, with the CPU both sides spent."""
                server_cpu, client_cpu = _cpu_seconds(api.pid), time.process_time()
                if kind == "async":
                    result = async_closed_loop(port, clients, window_s, path_of, headers)
                else:
                    result = closed_loop(clients, window_s, suggest)
                server_cpu, client_cpu = _cpu_seconds(api.pid) - server_cpu, time.process_time() - client_cpu
                served = max(1, result["requests"])
                result["server_cpu_ms_per_request"] = round(server_cpu / served * 1000, 2)
                result["client_cpu_ms_per_request"] = round(client_cpu / served * 1000, 2)
                return result

            kinds = ["async", "threads"] if client_kind == "both" else [client_kind]
            print(f"warming up {warmup:g} s …", file=sys.stderr)
            measure(kinds[0], warmup)  # every worker: Feast, cell caches, the item index
            fields = [f"user_activity:{f}" for f in ("view_count_24h", "category_affinity", "last_lat", "last_lon",
                                                     "home_cell", "travelling", "as_of")]

            def bare_feast(rng: random.Random) -> bool:
                features.store.get_online_features(features=fields, entity_rows=[{"user_id": rng.choice(known)}])
                return True

            print("measuring the API …", file=sys.stderr)
            measured = {kind: measure(kind, seconds) for kind in kinds}
            api_result = measured[kinds[0]]
            print("measuring bare Feast reads …", file=sys.stderr)
            feast_result = closed_loop(clients, seconds, bare_feast)
            emit({
                "benchmark": "serve",
                "profile": "redis",
                "clients": clients,
                "api_workers": workers,
                "server": f"kairos serve, {workers} uvicorn worker process(es), on the same machine as the clients",
                "client": CLIENT_DESCRIPTIONS[kinds[0]],
                "learners": learners,
                "auth": "on: an app key, sent as Authorization: Bearer",
                **ranking,
                **({} if teaching is None else {"bandit_warmup_s": teaching["seconds"], "bandit_warmup": teaching}),
                "users": len(known),
                "suggestions": api_result,
                **({"suggestions_httpx_threads": measured["threads"], "client_threads": CLIENT_DESCRIPTIONS["threads"]}
                   if client_kind == "both" else {}),
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
