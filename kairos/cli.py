"""The ``kairos`` command line."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kairos.bench import bench_app
from kairos.cli_keys import keys_app
from kairos.cli_train import train_app
from kairos.config import Settings
from kairos.ingest.cli import ingest_app

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download weights at run time

app = typer.Typer(help="Kairos: streaming features, online learning and suggestions.", no_args_is_help=True)
flow_app = typer.Typer(help="The Bytewax flows: features, and the learners beside them.", no_args_is_help=True)
deadletters_app = typer.Typer(help="Documents the flow could not decode.", no_args_is_help=True)
app.add_typer(flow_app, name="flow")
app.add_typer(deadletters_app, name="deadletters")
app.add_typer(bench_app(), name="bench")
app.add_typer(ingest_app, name="ingest")
app.add_typer(train_app, name="train")
app.add_typer(keys_app, name="keys")
console = Console()

HomeOption = Annotated[Path | None, typer.Option("--home", help="Overrides KAIROS_HOME.")]


def _settings(home: Path | None) -> Settings:
    try:
        return Settings.from_env(home=home)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def simulate(
    days: Annotated[int, typer.Option(min=1, max=60, help="Simulated days.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed (same seed and start, same documents).")] = 7,
    users: Annotated[int, typer.Option(min=2, help="Number of users.")] = 400,
    businesses: Annotated[int, typer.Option(min=2, help="Number of businesses.")] = 120,
    start: Annotated[datetime | None, typer.Option(help="First simulated midnight (UTC).")] = None,
    home: HomeOption = None,
) -> None:
    """Simulate a city into the event store (hidden ground truth goes to <home>/sim)."""
    from kairos.simulate import SimConfig
    from kairos.simulate import simulate as run_simulation
    from kairos.stores.event_store import open_event_store

    settings = _settings(home)
    config = SimConfig(seed=seed, days=days, n_users=users, n_businesses=businesses, start=start)
    summary = run_simulation(open_event_store(settings), config, settings.sim_dir, progress=True)
    console.print_json(json.dumps({"documents": summary.documents, "start": summary.start.isoformat(),
                                   "end": summary.end.isoformat(), "malformed": summary.malformed,
                                   "ground_truth": str(summary.ground_truth_path)}))


@flow_app.command("run")
def flow_run(
    follow: Annotated[bool, typer.Option(help="Keep tailing the log after catching up.")] = False,
    progress: Annotated[str, typer.Option(help="bar, lines (plain 'progress N' lines) or none.")] = "bar",
    home: HomeOption = None,
) -> None:
    """Run the feature flow over the event log in this process and the learning flow beside it as a
    process of its own (KAIROS_LEARNERS=0: features only); both resume from their last snapshots."""
    from flows.runner import run_flow

    if progress not in ("bar", "lines", "none"):
        raise typer.BadParameter("--progress must be bar, lines or none")
    report = run_flow(_settings(home), follow=follow, progress=progress)  # type: ignore[arg-type]
    console.print(f"processed {report.records} records in {report.seconds:.1f} s ({report.per_second:,.0f}/s)"
                  + (" (resumed from the last snapshot)" if report.resumed else "")
                  + (f"; learners caught up after {report.learning_seconds:.1f} s"
                     if report.learning_seconds is not None else ""))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides KAIROS_API_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides KAIROS_API_PORT.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Overrides KAIROS_API_WORKERS.")] = None,
    home: HomeOption = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs), in KAIROS_API_WORKERS processes."""
    import uvicorn

    from serving.app import create_app

    settings = _settings(home)
    n = workers or settings.api_workers
    if n < 1:
        raise typer.BadParameter(f"KAIROS_API_WORKERS must be at least 1, not {n}")
    host, port = host or settings.api_host, port or settings.api_port
    if n == 1:
        uvicorn.run(create_app(settings), host=host, port=port)
        return
    # Worker processes import the app themselves: pass the factory, and the home through the
    # environment (every other setting is already there, each worker reads it with from_env).
    if home is not None:
        os.environ["KAIROS_HOME"] = str(home)
    # One SO_REUSEPORT socket per worker, so the kernel spreads connections (serving/supervisor.py).
    from serving.supervisor import reuse_port_supported, serve_workers

    if settings.api_reuse_port and not reuse_port_supported():
        typer.echo("warning: SO_REUSEPORT is not available here: the workers share one listening socket", err=True)
    if not settings.api_reuse_port or not reuse_port_supported():
        uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=n)
        return
    serve_workers("serving.app:create_app", factory=True, host=host, port=port, workers=n)


@deadletters_app.command("list")
def deadletters_list(
    collection: Annotated[str | None, typer.Option(help="Only this collection.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    home: HomeOption = None,
) -> None:
    """Show dead letters with their reasons."""
    from kairos.stores.deadletters import SqliteDeadLetters

    letters = SqliteDeadLetters(_settings(home).deadletter_path)
    console.print_json(json.dumps({"total": letters.count(), "open": letters.count("open"),
                                   "open_by_collection": letters.counts_by_collection("open"),
                                   "letters": letters.list(collection, limit, status="open")}))


@deadletters_app.command("replay")
def deadletters_replay(
    collection: Annotated[str | None, typer.Option(help="Only this collection.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decode again, send nothing.")] = False,
    home: HomeOption = None,
) -> None:
    """Decode open dead letters again with the current mapping; send those that now decode back
    through the flow (they are processed by a running flow, or the next `kairos flow run`)."""
    from kairos.decoding import load_mappings
    from kairos.replay import replay
    from kairos.stores.deadletters import SqliteDeadLetters
    from kairos.stores.event_store import open_event_store

    settings = _settings(home)
    try:
        mappings = load_mappings(settings.collections_file or None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    report = replay(SqliteDeadLetters(settings.deadletter_path), open_event_store(settings), mappings,
                    settings.h3_resolution, collection=collection, dry_run=dry_run)
    console.print_json(json.dumps({**report.as_dict(), "dry_run": dry_run}))


@app.command()
def demo(
    days: Annotated[int, typer.Option(min=1, max=30, help="Simulated days.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep serving after printing.")] = True,
    port: Annotated[int | None, typer.Option(help="Overrides KAIROS_API_PORT.")] = None,
    home: HomeOption = None,
) -> None:
    """Simulate a city, stream it through the flow, start the API and show suggestions."""
    from kairos.demo import run_demo

    settings = _settings(home)
    if port:
        settings = settings.with_(api_port=port)
    run_demo(settings, days=days, seed=seed, serve=serve_api, console=console)


def main() -> None:  # pragma: no cover
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
