"""A lean closed-loop HTTP load generator for ``kairos bench serve``.

Why not httpx on threads (what the bench used first): on the 2-core machines the bench runs on,
the load generator shares the cores with the server, and 16 httpx client threads cost about a
millisecond of CPU per request, a quarter of what the server spends. Worse, they share one GIL: a
thread whose response has arrived waits for the GIL behind the others (up to the interpreter's
5 ms switch interval), and that wait is counted as the server's latency. wrk or hey would avoid
both, but they are not on a fresh machine (nothing here may be downloaded at run time), so this is
the same idea in the standard library: one event loop (uvloop when installed), one keep-alive
connection per client, requests written as bytes and responses read by their ``Content-Length``.
It speaks only the HTTP/1.1 the API answers with (no chunked bodies: a chunked or otherwise
unreadable response is an error, counted, and the connection is opened again).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

#: How long one request may take before it counts as an error (and its connection is replaced).
REQUEST_TIMEOUT_S = 10.0


def request_bytes(host: str, port: int, path: str, headers: Mapping[str, str]) -> bytes:
    """A keep-alive HTTP/1.1 GET for ``path`` (already URL-encoded)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """``(status, content length, server keeps the connection)`` of a response head (status line
    and headers, up to and including the blank line). Raises ``ValueError`` for what this client
    cannot read: a malformed status line, a chunked body or a missing ``Content-Length``."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length: int | None = None
    keep = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            raise ValueError("chunked responses are not supported by this load generator")
        elif name == "connection":
            keep = value.strip().lower() != "close"
    if length is None:
        raise ValueError("response without Content-Length")
    return status, length, keep


async def _one_client(host: str, port: int, path_of: Callable[[random.Random], str], headers: Mapping[str, str],
                      seed: int, stop_at: float, latencies: list[float], errors: list[int]) -> None:
    rng = random.Random(seed)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while time.monotonic() < stop_at:
            request = request_bytes(host, port, path_of(rng), headers)
            started = time.perf_counter()
            ok = False
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), REQUEST_TIMEOUT_S)
                assert reader is not None
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
                status, length, keep = parse_head(head)
                await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT_S)
                ok = status == 200
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                keep = False
            latencies.append(time.perf_counter() - started)
            if not ok:
                errors[0] += 1
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _closed_loop(host: str, port: int, clients: int, seconds: float, path_of: Callable[[random.Random], str],
                       headers: Mapping[str, str]) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = [0]
    began = time.monotonic()
    stop_at = began + seconds
    await asyncio.gather(*(_one_client(host, port, path_of, headers, seed, stop_at, latencies, errors)
                           for seed in range(clients)))
    return latencies, errors[0], time.monotonic() - began


def run_closed_loop(host: str, port: int, clients: int, seconds: float, path_of: Callable[[random.Random], str],
                    headers: Mapping[str, str]) -> tuple[list[float], int, float]:
    """``clients`` connections, each sending ``GET path_of(rng)`` back to back for ``seconds``:
    ``(latencies in seconds, errors, elapsed seconds)``. An error is any response but 200, a
    response this client cannot read, or a request that failed or took over
    :data:`REQUEST_TIMEOUT_S`; its latency is kept too."""
    if clients < 1:
        raise ValueError(f"clients must be at least 1, not {clients}")
    loop_factory: Any = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # the standard loop measures the same, at a little more client CPU
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_closed_loop(host, port, clients, seconds, path_of, headers))


__all__ = ["REQUEST_TIMEOUT_S", "parse_head", "request_bytes", "run_closed_loop"]
