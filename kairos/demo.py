"""``kairos demo``: simulate a city, stream it through the flow, serve, and show suggestions."""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import datetime, timezone
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from kairos import geo
from kairos.config import Settings

CITY_CENTERS = {"new-york": (40.7306, -73.9866), "mumbai": (19.0760, 72.8777)}
#: Where the traveller's phone reports its first location: Midtown Manhattan.
ARRIVAL_POINT = (40.7549, -73.9840)
_DEMO_FILES = tuple(f"{name}.sqlite{suffix}" for name in ("events", "deadletters", "catalog", "moderation",
                                                          "user_embeddings")
                    for suffix in ("", "-wal", "-shm"))
_DEMO_DIRS = ("offline", "feast", "sim", "recovery", "models")


def reset_home(settings: Settings) -> None:
    """Remove what an earlier demo left under KAIROS_HOME (only Kairos' own files)."""
    for name in _DEMO_FILES:
        (settings.home / name).unlink(missing_ok=True)
    for name in _DEMO_DIRS:
        shutil.rmtree(settings.home / name, ignore_errors=True)


def _near(cell: str | None, city: str, km: float) -> bool:
    if not cell:
        return False
    return geo.haversine_km(*geo.cell_center(cell), *CITY_CENTERS[city]) < km


def pick_users(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """user_activity rows of a New York resident and of a Mumbai resident, from the features the
    flow just computed (not from the simulator's hidden truth)."""
    from kairos.stores.offline_log import OfflineLog
    from kairos.stores.online_features import OnlineFeatures

    events = OfflineLog(settings.offline_dir).read_events()
    user_ids = sorted(events.loc[events["actor_type"] == "user", "actor_id"].unique())
    rows = [r for r in OnlineFeatures(settings, apply=False).read("user_activity", [{"user_id": u} for u in user_ids])
            if r is not None]
    residents = [r for r in rows if _near(r["home_cell"], "new-york", 40) and not r["travelling"]]
    visitors = [r for r in rows if _near(r["home_cell"], "mumbai", 60)]
    if not residents or not visitors:
        raise RuntimeError("the simulated city has no New York resident or no Mumbai resident")

    def engagement(row: dict[str, Any]) -> tuple[int, str]:
        return row["click_count_7d"] + row["purchase_count_7d"], row["user_id"]

    return max(residents, key=engagement), max(visitors, key=engagement)


def describe(row: dict[str, Any]) -> str:
    city = "New York" if _near(row["home_cell"], "new-york", 40) else "Mumbai"
    affinity = json.loads(row["category_affinity"]) if row.get("category_affinity") else {}
    tastes = ", ".join(f"{c} {share:.0%}" for c, share in sorted(affinity.items(), key=lambda kv: -kv[1])[:3])
    return (f"home near {city}; tastes (7 d): {tastes or 'unknown yet'}; "
            f"{row['view_count_7d']} views, {row['purchase_count_7d']} purchases in 7 d")


def start_api(settings: Settings) -> tuple[Any, threading.Thread]:
    import uvicorn

    from serving.app import create_app

    # JSON request logs would interleave with the demo's own output: the in-process API logs only
    # warnings (``kairos serve`` logs every request).
    config = uvicorn.Config(create_app(settings.with_(log_json=False)), host=settings.api_host, port=settings.api_port,
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{settings.api_host}:{settings.api_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return server, thread
        except httpx.HTTPError:
            pass
        if not thread.is_alive():
            raise RuntimeError(f"the API did not start on {base} (is the port taken? set --port)")
        time.sleep(0.2)
    raise RuntimeError(f"the API did not answer on {base} within 60 s")


def demo_keys(settings: Settings, console: Console, business_id: str) -> dict[str, str]:
    """An app, an analyst, an admin and one business key, created and printed (shown only once)."""
    from kairos.stores.api_keys import create_key, open_api_keys

    store = open_api_keys(settings)
    try:
        tokens = {scope: create_key(store, scope, name=f"demo {scope}", actor="demo")[1]
                  for scope in ("app", "analyst", "admin", f"business:{business_id}")}
    finally:
        store.close()
    # Plain lines, not a table: a key cut to the terminal's width would be useless.
    console.print("[bold]API keys[/bold] (send as Authorization: Bearer <key>; shown only this once)")
    for scope, token in tokens.items():
        console.print(f"  {scope:<16} {token}", soft_wrap=True, highlight=False)
    return tokens


def show(console: Console, title: str, response: dict[str, Any]) -> None:
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("#", "item", "category", "price", "km", "score"):
        table.add_column(column, no_wrap=column != "item")
    table.add_column("reason", overflow="fold", min_width=40)
    for i, item in enumerate(response["items"], 1):
        price = "" if item["price"] is None else f"{item['price']:.2f}"
        if item.get("original_price") and item["price"] is not None and item["original_price"] > item["price"]:
            price += f" (was {item['original_price']:.2f})"
        table.add_row(str(i), item.get("title") or item["item_id"], item.get("category") or "", price,
                      f"{item['distance_km']:.2f}", f"{item['score']:.2f}", item["reason"])
    console.print(table)
    console.print(f"travelling: {response.get('travelling')}   request_id: {response.get('request_id')}")
    if response.get("widened_for"):
        console.print(f"nothing {response['widened_for']} was open within the default radius: "
                      f"searched {response['radius_km']:g} km")
    if response.get("intent"):
        likely = ", ".join(f"{i['category']} {i['probability']:.0%}" for i in response["intent"])
        hint = f" → {response['you_may_want']}" if response.get("you_may_want") else ""
        console.print(f"next intent here and now: {likely}{hint}")
    if response["items"]:
        top = response["items"][0]
        parts = ", ".join(f"{k} {v:.2f}" for k, v in top["score_parts"].items())
        console.print(f"score parts of #1: {parts}")


def run_demo(settings: Settings, days: int, seed: int, serve: bool, console: Console) -> None:
    from flows.runner import run_flow
    from kairos.simulate import SimConfig, simulate
    from kairos.stores.event_store import open_event_store

    reset_home(settings)
    console.rule("[bold]1. simulate a city")
    summary = simulate(open_event_store(settings), SimConfig(seed=seed, days=days), settings.sim_dir, progress=True)
    console.print(f"{sum(summary.documents.values()):,} documents {summary.documents}, "
                  f"{summary.malformed} malformed on purpose")
    console.rule("[bold]2. stream them through the feature flow")
    report = run_flow(settings)
    console.print(f"{report.records:,} records in {report.seconds:.1f} s ({report.per_second:,.0f}/s)")
    console.rule("[bold]3. serve")
    server, thread = start_api(settings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    console.print(f"API on {base} (OpenAPI docs at {base}/docs)")
    tokens = demo_keys(settings, console, business_id="b0001")
    resident_row, traveller_row = pick_users(settings)
    resident, traveller = resident_row["user_id"], traveller_row["user_id"]
    now = datetime.now(timezone.utc).isoformat()
    app_key = {"Authorization": f"Bearer {tokens['app']}"}
    with httpx.Client(base_url=base, timeout=60, headers=app_key) as client:
        # The first search embeds the catalog (MiniLM); until that index exists suggestions rank
        # without the taste part, which the demo wants to show.
        with console.status("embedding the catalog for search and taste (first search)"):
            client.get("/v1/search", params={"q": "coffee", "lat": ARRIVAL_POINT[0], "lon": ARRIVAL_POINT[1]})
        console.rule(f"[bold]4. suggestions for resident {resident}")
        console.print(f"{resident}: {describe(resident_row)}")
        res = client.get(f"/v1/users/{resident}/suggestions", params={"at": now})
        res.raise_for_status()
        show(console, f"GET /v1/users/{resident}/suggestions", res.json())
        console.rule(f"[bold]5. traveller {traveller} just landed in New York from Mumbai")
        console.print(f"{traveller}: {describe(traveller_row)}")
        lat, lon = ARRIVAL_POINT
        res = client.post(f"/v1/users/{traveller}/location", json={"lat": lat, "lon": lon, "ts": now})
        res.raise_for_status()
        show(console, f"POST /v1/users/{traveller}/location {{lat: {lat}, lon: {lon}}}", res.json())
    if not serve:
        server.should_exit = True
        thread.join(timeout=10)
        return
    console.print(f"\nServing on {base} — press Ctrl-C to stop.")
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(timeout=10)
