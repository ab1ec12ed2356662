"""The analysts' page /ui end to end in headless Chromium: a home filled by the simulator and the
flow, the API under uvicorn, and a click through catalog → lookup → history → distributions → map.

The screenshot is kept as a test artefact in ``test-artifacts/ui.png``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kairos.config import Settings
from kairos.net import free_port

#: Debian's Chromium (`make test` installs it first via `make browser`).
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
API_KEY = "kz-test-key-123"

def simulated_home(home: Path) -> Settings:
    """A small simulated city streamed through the flow. Small source batches give every entity
    several rows in the offline log (one row per entity per batch), so history has points."""
    from flows.runner import run_flow
    from kairos.simulate import SimConfig, simulate
    from kairos.stores.event_store import open_event_store

    settings = Settings(home=home, feast_project=f"ui{uuid.uuid4().hex[:8]}", auth_required=False,
                        learners=False, recovery=False, source_batch_size=50, ranker="transparent")
    simulate(open_event_store(settings), SimConfig(seed=3, days=2, n_users=60, n_businesses=30), settings.sim_dir)
    run_flow(settings, progress=False)
    return settings


@dataclass
class Server:
    base: str
    settings: Settings


def start_server(settings: Settings) -> tuple[str, Callable[[], None]]:
    """The API under uvicorn in a thread on a free port; returns its base URL and a stop function."""
    import uvicorn

    from serving.app import create_app

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.2)

    def stop() -> None:
        uv.should_exit = True
        thread.join(timeout=10)

    return base, stop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = simulated_home(tmp_path_factory.mktemp("ui_home"))
    base, stop = start_server(settings)
    yield Server(base, settings)
    stop()


def test_ui_assets_are_served_and_refuse_other_names(server: Server) -> None:
    page = httpx.get(f"{server.base}/ui")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/ui/app.js" in page.text and "http" not in page.text.replace("http://www.w3.org", "")
    assert httpx.get(f"{server.base}/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{server.base}/ui/nothing.js").status_code == 404
    assert httpx.get(f"{server.base}/ui/..%2Fapp.py").status_code in (404, 422)


def test_click_through_catalog_lookup_history_stats_map(server: Server) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    sent_auth: list[str | None] = []
    failed: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: sent_auth.append(r.headers.get("authorization"))
                    if "/v1/features" in r.url else None)
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(f"{server.base}/ui")

            # Catalog: the four views with their windows and freshness objectives.
            expect(page.locator("#catalog-list article.card")).to_have_count(4)
            demand = page.locator("article[data-view='cell_demand']")
            expect(demand).to_contain_text("cell:category")
            expect(demand).to_contain_text("15m, 1h, 24h")
            expect(demand).to_contain_text("freshness objective: 120 s")

            # Save an API key once: every later call carries it (auth is off here; still sent).
            page.fill("#api-key", API_KEY)
            page.click("#key-form button")
            expect(page.locator("#key-state")).to_have_text("key saved")
            assert page.evaluate("localStorage.getItem('kairos_api_key')") == API_KEY

            # Lookup: pick user_activity from the catalog, a key the datalist offers, look it up.
            page.click("article[data-view='user_activity'] a.view-link")
            expect(page.locator("#lookup-keys option").first).to_be_attached()
            key = page.locator("#lookup-keys option").first.get_attribute("value")
            assert key
            page.fill("#lookup-key", key)
            page.click("#lookup-go")
            expect(page.locator("#lookup-summary")).to_contain_text(f"user_activity {key}")
            values = page.locator("#lookup-result table.values")
            expect(values).to_contain_text("location_count_24h")
            expect(values).to_contain_text("top_category")
            expect(page.locator("#lookup-summary")).to_contain_text("objective 60 s")

            # History of that user: a chart with one point per row, and an as-of answer.
            page.select_option("#history-field", "location_count_7d")
            page.fill("#history-at", "2030-01-01T00:00:00")
            page.click("#history-go")
            expect(page.locator("#history-summary")).to_contain_text("rows of user_activity")
            expect(page.locator("#history-chart path.line")).to_be_attached()
            assert page.locator("#history-chart circle.dot").count() >= 2
            expect(page.locator("#history-asof")).to_contain_text("location_count_7d =")

            # Distributions of item_stats: a bar chart per field, null rates and drift in words.
            page.select_option("#stats-view", "item_stats")
            page.click("#stats-go")
            expect(page.locator("#stats-summary")).to_contain_text("entities in the 7 days up to")
            price = page.locator("article.stat[data-field='price']")
            expect(price).to_contain_text("null rate")
            assert price.locator("rect.bar").count() >= 2
            expect(page.locator("article.stat[data-field='category']")).to_contain_text("distinct")
            expect(price).to_contain_text("not enough data to compare")  # two simulated days: no previous week

            # Map of cell demand: H3 polygons of the busiest area.
            page.click("#map-go")
            expect(page.locator("#map-summary")).to_contain_text("cells, view_count_24h")
            assert page.locator("#map-chart polygon.cell").count() >= 10
            assert page.locator("#map-area option").count() == 2  # New York and Mumbai

            expect(page.locator("#error")).to_be_hidden()
            page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
        finally:
            browser.close()
    assert not failed, failed
    assert sent_auth[0] is None  # before a key was saved, no header
    assert sent_auth[-1] == f"Bearer {API_KEY}"
    assert (ARTIFACTS / "ui.png").stat().st_size > 10_000


def test_ui_shows_api_errors_in_words(server: Server) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{server.base}/ui")
            expect(page.locator("#catalog-list article.card")).to_have_count(4)
            page.select_option("#lookup-view", "cell_demand")
            page.fill("#lookup-key", "not-a-cell")
            page.click("#lookup-go")
            expect(page.locator("#error")).to_contain_text("a cell_demand key is cell:category")
            page.select_option("#lookup-view", "user_activity")
            page.fill("#lookup-key", "nobody-at-all")
            page.click("#lookup-go")
            expect(page.locator("#error")).to_contain_text("no user_activity row for user_id=nobody-at-all")
        finally:
            browser.close()


def test_with_auth_on_the_page_asks_for_a_key_and_uses_it(server: Server) -> None:
    """Auth on (same home): the page loads without a key, the data needs an analyst key."""
    from playwright.sync_api import expect, sync_playwright

    from kairos.stores.api_keys import create_key, open_api_keys

    settings = server.settings.with_(auth_required=True)
    store = open_api_keys(settings)
    analyst = create_key(store, "analyst", name="ui-test", actor="test")[1]
    app_key = create_key(store, "app", name="ui-test-app", actor="test")[1]
    base, stop = start_server(settings)
    try:
        assert httpx.get(f"{base}/v1/features").status_code == 401
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page()
                page.goto(f"{base}/ui")
                expect(page.locator("#error")).to_contain_text("enter an API key with the analyst scope")
                page.fill("#api-key", app_key)
                page.click("#key-form button")
                expect(page.locator("#error")).to_contain_text("analyst")
                page.fill("#api-key", analyst)
                page.click("#key-form button")
                expect(page.locator("#catalog-list article.card")).to_have_count(4)
                expect(page.locator("#error")).to_be_hidden()
                page.reload()  # the key was kept: asked once
                expect(page.locator("#catalog-list article.card")).to_have_count(4)
                page.select_option("#stats-view", "cell_supply")
                page.click("#stats-go")
                expect(page.locator("#stats-summary")).to_contain_text("entities in the 7 days")
            finally:
                browser.close()
    finally:
        stop()
        store.close()
