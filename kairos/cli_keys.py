"""``kairos keys``: create, list and revoke API keys (scopes ``app``, ``business:<id>``, ``analyst``,
``admin``). Every command is written to the key store's audit log with who ran it and when."""

from __future__ import annotations

import getpass
import json
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kairos.config import Settings
from kairos.stores.api_keys import InvalidScope, create_key, list_keys, open_api_keys, revoke_key

keys_app = typer.Typer(help="API keys: create, list, revoke (stored hashed; audited).", no_args_is_help=True)
console = Console()

HomeOption = Annotated[Path | None, typer.Option("--home", help="Overrides KAIROS_HOME.")]
_RATE_RE = re.compile(r"^\s*(\d+)\s*(?:/\s*(?:min|m|minute))?\s*$")


def parse_rate(text: str) -> int:
    """``"120/min"`` or ``"120"`` → 120 requests per minute (0: unlimited)."""
    match = _RATE_RE.match(text)
    if match is None:
        raise typer.BadParameter(f"--rate-limit must look like 120/min, not {text!r}")
    return int(match.group(1))


def _actor() -> str:
    # Who ran the command, for the audit log: the OS user and the machine.
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def _settings(home: Path | None) -> Settings:
    try:
        return Settings.from_env(home=home)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _when(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else None


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="app, analyst, admin or business:<id>.")],
    name: Annotated[str, typer.Option(help="A label: who or what uses the key.")] = "",
    rate_limit: Annotated[str | None, typer.Option(help="Requests per minute, e.g. 600/min (0: unlimited). "
                                                        "Default: KAIROS_API_KEY_RATE_LIMIT_PER_MIN.")] = None,
    home: HomeOption = None,
) -> None:
    """Create a key and print it. The key is shown once: only its salted hash is stored."""
    settings = _settings(home)
    limit = parse_rate(rate_limit) if rate_limit is not None else settings.api_key_rate_limit_per_min
    store = open_api_keys(settings)
    try:
        key, token = create_key(store, scope, name, limit, actor=_actor())
    except InvalidScope as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from exc
    finally:
        store.close()
    console.print_json(json.dumps({"key": token, "key_id": key.key_id, "scope": key.scope, "name": key.name,
                                   "rate_limit_per_min": key.rate_limit_per_min,
                                   "note": "store the key now: it cannot be shown again"}))


@keys_app.command("list")
def keys_list(
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    home: HomeOption = None,
) -> None:
    """List keys (never their secrets) with usage counts."""
    store = open_api_keys(_settings(home))
    try:
        keys = list_keys(store, actor=_actor())
        usage = store.usage()
    finally:
        store.close()
    rows: list[dict[str, Any]] = []
    for key in keys:
        if not all_keys and not key.active:
            continue
        used = usage.get(key.key_id, {})
        rows.append({**key.public(), "created_at": _when(key.created_at), "revoked_at": _when(key.revoked_at),
                     "requests": int(used.get("requests", 0)), "last_used": _when(used.get("last_used"))})
    console.print_json(json.dumps({"keys": rows, "count": len(rows)}))


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (the part after kairos_, 12 hex digits).")],
    home: HomeOption = None,
) -> None:
    """Revoke a key; every API process refuses it within KAIROS_API_KEY_CACHE_S seconds."""
    settings = _settings(home)
    store = open_api_keys(settings)
    try:
        key = revoke_key(store, key_id.strip(), actor=_actor())
    finally:
        store.close()
    if key is None:
        console.print(f"no key {key_id!r}")
        raise typer.Exit(1)
    console.print_json(json.dumps({"key_id": key.key_id, "scope": key.scope, "revoked_at": _when(key.revoked_at),
                                   "revoked_by": key.revoked_by,
                                   "effective_within_s": settings.api_key_cache_s}))


@keys_app.command("audit")
def keys_audit(
    limit: Annotated[int, typer.Option(min=1, help="Most recent entries.")] = 50,
    home: HomeOption = None,
) -> None:
    """The audit log of key administration: who created, listed or revoked what, and when."""
    store = open_api_keys(_settings(home))
    try:
        entries = store.audit_log(limit)
    finally:
        store.close()
    console.print_json(json.dumps([{**e, "ts": _when(e["ts"])} for e in entries]))
