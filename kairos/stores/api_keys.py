"""API keys: scoped, random bearer tokens stored hashed, with usage counters and an audit log.

A key is ``kairos_<key_id>_<secret>``: ``key_id`` (12 hex digits) names the key in lists, logs,
metrics and revocations; ``secret`` (32 random bytes, URL-safe base64) is shown once at creation
and never stored. The store keeps ``sha256(salt || secret)`` with a random per-key salt.

Why a plain salted SHA-256 and not bcrypt/argon2: those are slow on purpose to protect *guessable*
passwords. A 256-bit random secret cannot be guessed however fast the hash is, and serving must
verify a key in microseconds (the suggestion route's budget is ~25 ms p99), so a deliberately slow
hash would only cost latency. The salt keeps equal secrets (there are none in practice) from
having equal hashes and stops precomputed tables; comparisons are constant time.

Scopes: ``app`` (the consumer app), ``business:<id>`` (one business, only its own data),
``analyst`` (analytics and feature views), ``admin`` (everything, including moderation and keys).

Two implementations with the same methods, chosen by :func:`open_api_keys` like the other stores:
SQLite under ``KAIROS_HOME`` (``local`` profile) and Redis (``redis`` profile), which every API
replica shares, so a key created or revoked anywhere holds everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from kairos.stores.sqlite_conn import thread_connection

TOKEN_PREFIX = "kairos"
_TOKEN_RE = re.compile(r"^kairos_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
_SCOPE_RE = re.compile(r"^(app|analyst|admin|business:[A-Za-z0-9_.:-]{1,64})$")
#: Actions recorded in the audit log.
AUDIT_ACTIONS = ("create", "list", "revoke")


class InvalidScope(ValueError):
    """A scope that is not ``app``, ``analyst``, ``admin`` or ``business:<id>``."""


def check_scope(scope: str) -> str:
    scope = scope.strip()
    if not _SCOPE_RE.match(scope):
        raise InvalidScope(f"scope must be app, analyst, admin or business:<id>, not {scope!r}")
    return scope


def parse_token(token: str) -> tuple[str, str] | None:
    """``kairos_<key_id>_<secret>`` → ``(key_id, secret)``; ``None`` if it does not look like a key."""
    match = _TOKEN_RE.match(token.strip())
    return (match.group(1), match.group(2)) if match else None


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: everything but the secret (only its salted hash)."""

    key_id: str
    scope: str
    name: str
    #: Requests per minute; 0 means unlimited.
    rate_limit_per_min: int
    created_at: float
    created_by: str
    salt: str
    secret_hash: str
    revoked_at: float | None = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def business_id(self) -> str | None:
        return self.scope.split(":", 1)[1] if self.scope.startswith("business:") else None

    def verify(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(self.salt, secret))

    def public(self) -> dict[str, Any]:
        """What lists and the CLI show (no salt, no hash)."""
        return {"key_id": self.key_id, "scope": self.scope, "name": self.name,
                "rate_limit_per_min": self.rate_limit_per_min, "created_at": self.created_at,
                "created_by": self.created_by, "revoked_at": self.revoked_at, "revoked_by": self.revoked_by}


def new_key(scope: str, name: str, rate_limit_per_min: int, created_by: str) -> tuple[ApiKey, str]:
    """A fresh key and its token (the only time the secret exists in clear)."""
    if rate_limit_per_min < 0:
        raise ValueError("rate limit must be >= 0 (0: unlimited)")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    key = ApiKey(key_id=key_id, scope=check_scope(scope), name=name, rate_limit_per_min=rate_limit_per_min,
                 created_at=time.time(), created_by=created_by, salt=salt, secret_hash=hash_secret(salt, secret))
    return key, f"{TOKEN_PREFIX}_{key_id}_{secret}"


class ApiKeyStore(Protocol):
    def put(self, key: ApiKey) -> None: ...
    def get(self, key_id: str) -> ApiKey | None: ...
    def list(self) -> list[ApiKey]: ...
    def revoke(self, key_id: str, by: str) -> ApiKey | None: ...
    def add_usage(self, usage: Mapping[str, tuple[int, float]]) -> None: ...
    def usage(self) -> dict[str, dict[str, float]]: ...
    def audit(self, actor: str, action: str, key_id: str | None, details: Mapping[str, Any]) -> None: ...
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


def create_key(store: ApiKeyStore, scope: str, name: str = "", rate_limit_per_min: int = 0,
               actor: str = "cli") -> tuple[ApiKey, str]:
    """Create, store and audit a key; returns it with its token."""
    key, token = new_key(scope, name, rate_limit_per_min, actor)
    store.put(key)
    store.audit(actor, "create", key.key_id, {"scope": key.scope, "name": name,
                                              "rate_limit_per_min": rate_limit_per_min})
    return key, token


def list_keys(store: ApiKeyStore, actor: str = "cli") -> list[ApiKey]:
    keys = store.list()
    store.audit(actor, "list", None, {"count": len(keys)})
    return keys


def revoke_key(store: ApiKeyStore, key_id: str, actor: str = "cli") -> ApiKey | None:
    key = store.revoke(key_id, actor)
    store.audit(actor, "revoke", key_id, {"found": key is not None})
    return key


class SqliteApiKeys:
    """Keys, usage and audit log in ``$KAIROS_HOME/api_keys.sqlite``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(
            """
            CREATE TABLE IF NOT EXISTS api_keys (
                key_id TEXT PRIMARY KEY, scope TEXT NOT NULL, name TEXT NOT NULL,
                rate_limit_per_min INTEGER NOT NULL, created_at REAL NOT NULL, created_by TEXT NOT NULL,
                salt TEXT NOT NULL, secret_hash TEXT NOT NULL, revoked_at REAL, revoked_by TEXT
            );
            CREATE TABLE IF NOT EXISTS api_key_usage (
                key_id TEXT PRIMARY KEY, requests INTEGER NOT NULL, last_used REAL NOT NULL
            );
            CREATE TABLE IF NOT EXISTS api_key_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL,
                action TEXT NOT NULL, key_id TEXT, details TEXT NOT NULL
            );
            """
        )

    def _conn(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path)

    def put(self, key: ApiKey) -> None:
        values = asdict(key)
        self._conn().execute(
            f"INSERT OR REPLACE INTO api_keys ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            list(values.values()))

    def get(self, key_id: str) -> ApiKey | None:
        cur = self._conn().execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,))
        row = cur.fetchone()
        return ApiKey(*row) if row else None

    def list(self) -> list[ApiKey]:
        cur = self._conn().execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
        return [ApiKey(*row) for row in cur]

    def revoke(self, key_id: str, by: str) -> ApiKey | None:
        self._conn().execute("UPDATE api_keys SET revoked_at = ?, revoked_by = ? WHERE key_id = ? "
                             "AND revoked_at IS NULL", (time.time(), by, key_id))
        return self.get(key_id)

    def add_usage(self, usage: Mapping[str, tuple[int, float]]) -> None:
        if not usage:
            return
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # one transaction per flush, never one per request
        try:
            conn.executemany(
                "INSERT INTO api_key_usage (key_id, requests, last_used) VALUES (?, ?, ?) "
                "ON CONFLICT (key_id) DO UPDATE SET requests = requests + excluded.requests, "
                "last_used = MAX(last_used, excluded.last_used)",
                [(k, n, last) for k, (n, last) in usage.items()])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def usage(self) -> dict[str, dict[str, float]]:
        cur = self._conn().execute("SELECT key_id, requests, last_used FROM api_key_usage")
        return {k: {"requests": n, "last_used": last} for k, n, last in cur}

    def audit(self, actor: str, action: str, key_id: str | None, details: Mapping[str, Any]) -> None:
        self._conn().execute("INSERT INTO api_key_audit (ts, actor, action, key_id, details) VALUES (?, ?, ?, ?, ?)",
                             (time.time(), actor, action, key_id, json.dumps(dict(details), sort_keys=True)))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        cur = self._conn().execute("SELECT ts, actor, action, key_id, details FROM api_key_audit "
                                   "ORDER BY id DESC LIMIT ?", (limit,))
        return [{"ts": ts, "actor": actor, "action": action, "key_id": key_id, "details": json.loads(details)}
                for ts, actor, action, key_id, details in cur]

    def ping(self) -> None:
        self._conn().execute("SELECT 1 FROM api_keys LIMIT 1").fetchall()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


_COLUMNS = ", ".join(ApiKey.__dataclass_fields__)


class RedisApiKeys:
    """The same on Redis: a hash of keys (JSON each), a hash of usage counters, a capped audit list."""

    def __init__(self, client: Any, prefix: str = "kairos:apikeys", audit_cap: int = 100_000) -> None:
        self.client = client
        self.prefix = prefix
        self.audit_cap = audit_cap

    def _k(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    def put(self, key: ApiKey) -> None:
        self.client.hset(self._k("keys"), key.key_id, json.dumps(asdict(key)))

    def get(self, key_id: str) -> ApiKey | None:
        raw = self.client.hget(self._k("keys"), key_id)
        return ApiKey(**json.loads(raw)) if raw else None

    def list(self) -> list[ApiKey]:
        keys = [ApiKey(**json.loads(raw)) for raw in self.client.hvals(self._k("keys"))]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke(self, key_id: str, by: str) -> ApiKey | None:
        key = self.get(key_id)
        if key is None:
            return None
        if key.active:
            key = ApiKey(**{**asdict(key), "revoked_at": time.time(), "revoked_by": by})
            self.put(key)
        return key

    def add_usage(self, usage: Mapping[str, tuple[int, float]]) -> None:
        if not usage:
            return
        pipe = self.client.pipeline(transaction=False)
        for key_id, (count, last) in usage.items():
            pipe.hincrby(self._k("usage"), f"{key_id}:requests", count)
            # Replicas flush at different times; the newest last-used time wins.
            pipe.eval("local v = redis.call('HGET', KEYS[1], ARGV[1]) "
                      "if (not v) or tonumber(v) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end",
                      1, self._k("usage"), f"{key_id}:last_used", repr(last))
        pipe.execute()

    def usage(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for field, value in self.client.hgetall(self._k("usage")).items():
            key_id, _, what = (field.decode() if isinstance(field, bytes) else field).partition(":")
            out.setdefault(key_id, {})[what] = float(value)
        return out

    def audit(self, actor: str, action: str, key_id: str | None, details: Mapping[str, Any]) -> None:
        entry = json.dumps({"ts": time.time(), "actor": actor, "action": action, "key_id": key_id,
                            "details": dict(details)}, sort_keys=True)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(self._k("audit"), entry)
        pipe.ltrim(self._k("audit"), 0, self.audit_cap - 1)
        pipe.execute()

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.client.lrange(self._k("audit"), 0, limit - 1)]

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def open_api_keys(settings: Any) -> SqliteApiKeys | RedisApiKeys:
    """The configured key store: SQLite under KAIROS_HOME, or Redis (shared by replicas) with ``redis``."""
    if settings.profile == "redis":
        from kairos.stores.redis_conn import redis_client

        return RedisApiKeys(redis_client(settings.redis_url), prefix=f"kairos:{settings.feast_project}:apikeys")
    return SqliteApiKeys(Path(settings.home) / "api_keys.sqlite")


__all__ = ["ApiKey", "ApiKeyStore", "InvalidScope", "RedisApiKeys", "SqliteApiKeys", "check_scope", "create_key",
           "list_keys", "new_key", "open_api_keys", "parse_token", "revoke_key"]
