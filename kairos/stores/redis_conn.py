"""Redis connections from ``KAIROS_REDIS_URL`` (Feast's ``host:port[,db=N][,password=…]`` syntax)."""

from __future__ import annotations

from typing import Any

import redis


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
    return redis.Redis(**parse_redis_url(url), socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
