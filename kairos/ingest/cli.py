"""``kairos ingest …``: commands for production ingestion from MongoDB.

``kairos ingest inspect --mongo-url URL`` samples every collection of a database and prints a
proposed collection mapping (the format of ``kairos/collections.yaml``) with the reasons.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

ingest_app = typer.Typer(help="Production ingestion from MongoDB.", no_args_is_help=True)


@ingest_app.callback()
def _group() -> None:
    """Production ingestion from MongoDB."""  # a callback keeps `ingest` a group of commands

#: Databases MongoDB keeps for itself.
SYSTEM_DATABASES = frozenset({"admin", "local", "config"})


def connect(url: str, timeout_s: float) -> Any:
    """A client for ``url`` (tests replace this function)."""
    from pymongo import MongoClient

    return MongoClient(url, tz_aware=True, serverSelectionTimeoutMS=int(timeout_s * 1000), appname="kairos-inspect")


def _database_name(client: Any, url: str, db: str | None) -> str:
    if db:
        return db
    from pymongo.uri_parser import parse_uri

    named = parse_uri(url).get("database")
    if named:
        return named
    names = sorted(n for n in client.list_database_names() if n not in SYSTEM_DATABASES)
    if len(names) == 1:
        return names[0]
    listed = ", ".join(names) if names else "none besides admin, local and config"
    raise typer.BadParameter(f"say which database with --db or in the URL (databases: {listed})",
                             param_hint="--db")


@ingest_app.command("inspect")
def inspect_command(
    mongo_url: Annotated[str, typer.Option("--mongo-url", help="MongoDB connection string, e.g. "
                                           "mongodb://host:27017/shop?replicaSet=rs0")],
    db: Annotated[str | None, typer.Option("--db", help="Database (default: the one in the URL, or the only "
                                           "one there is).")] = None,
    sample: Annotated[int, typer.Option("--sample", min=1, max=100_000,
                                        help="Documents sampled per collection.")] = 200,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the YAML to this file.")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout-s", min=0.1, help="How long to wait for the server.")] = 10.0,
) -> None:
    """Sample a database's collections and print a proposed collection mapping (YAML)."""
    from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError

    from kairos.decoding import parse_mappings
    from kairos.ingest.inspect import inspect_database, render_yaml

    try:
        client = connect(mongo_url, timeout_s)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--mongo-url") from exc
    try:
        name = _database_name(client, mongo_url, db)
        database = client[name]
        if not [n for n in database.list_collection_names() if not n.startswith("system.")]:
            raise typer.BadParameter(f"database '{name}' has no collections", param_hint="--db")
        proposal = inspect_database(database, sample=sample)
    except PyMongoError as exc:
        typer.echo(f"error: cannot read MongoDB at {mongo_url}: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        client.close()

    text = render_yaml(proposal)
    if not proposal["collections"]:
        typer.echo(text, err=True)
        typer.echo(f"error: no collection of '{name}' looks like marketplace events or profiles (see above)", err=True)
        raise typer.Exit(1)
    parse_mappings(text, "proposal")  # what we print must load; a failure here is a bug, not bad input
    sys.stdout.write(text)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out} ({len(proposal['collections'])} collections proposed, "
                   f"{len(proposal['skipped'])} skipped)", err=True)


__all__ = ["ingest_app", "inspect_command"]
