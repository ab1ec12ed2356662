"""Redis connections from ``KAIROS_REDIS_URL`` (Feast's ``host:port[,db=N][,password=…]`` syntax)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Immediate retries of one Redis command (a pooled connection that a restart closed). redis-py's
#: own default is 10 retries with backoff, each waiting a socket timeout: a hung Redis then held a
#: serving read for half a minute. Callers that must ride out an outage (the flow's sinks) retry
#: with their own backoff; serving degrades to last known values.
FAST_RETRIES = 1


def fail_fast_retry() -> Retry:
    return Retry(NoBackoff(), FAST_RETRIES)


def parse_redis_url(url: str) -> dict[str, Any]:
    """``"127.0.0.1:6379,db=3"`` → redis-py keyword arguments."""
    head, *params = [part.strip() for part in url.split(",") if part.strip()]
    if head.startswith("redis://"):
        raise ValueError("KAIROS_REDIS_URL uses Feast's syntax host:port[,db=N], not a redis:// URL")
    host, _, port = head.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"KAIROS_REDIS_URL must look like host:port[,db=N], not {url!r}")
    kwargs: dict[str, Any] = {"host": host, "port": int(port)}
    for param in params:
        key, _, value = param.partition("=")
        if key == "db":
            kwargs["db"] = int(value)
        elif key in ("password", "username"):
            kwargs[key] = value
        elif key == "ssl":
            kwargs["ssl"] = value.lower() == "true"
    return kwargs


def redis_client(url: str, timeout_s: float = 2.0) -> redis.Redis:
    # Short timeouts: a dead Redis must fail fast so the caller can retry or degrade.
    return redis.Redis(**parse_redis_url(url), socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                       retry=fail_fast_retry())


def hmget_many(client: Any, keys: Sequence[Any], fields: Sequence[Any]) -> list[list[Any]]:
    """``HMGET key *fields`` for each key, replies in key order: one command for one key (a
    request's hot path: a pipeline costs more CPU than the command), one pipeline for several."""
    if len(keys) == 1:
        return [client.hmget(keys[0], fields)]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, fields)
        return pipe.execute()
