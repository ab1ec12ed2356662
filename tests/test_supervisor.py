"""``kairos serve`` with several workers (serving/supervisor.py): one SO_REUSEPORT socket per
worker, so a burst of keep-alive connections is spread over the workers instead of landing on
whichever woke first, and a worker that dies is replaced on its own socket (its queued connections
are served, not lost). A tiny ASGI app that answers with its process id stands in for the API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kairos.bench.load import parse_head, request_bytes, run_closed_loop
from kairos.net import free_port
from serving.supervisor import reuse_port_sockets

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="SO_REUSEPORT is Linux/BSD only")

PID_APP = """
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""

RUN = """
from serving.supervisor import serve_workers

if __name__ == "__main__":
    serve_workers("pid_app:app", host="127.0.0.1", port={port}, workers={workers}, log_level="warning",
                  timeout_worker_healthcheck=2)
"""


def test_sockets_share_one_port_and_a_taken_port_is_an_error() -> None:
    sockets = reuse_port_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(ports) == 1 and ports != {0}
        taken = ports.pop()
    finally:
        for sock in sockets:
            sock.close()
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: nobody may join this port
    plain.listen()
    try:
        with pytest.raises(OSError):
            reuse_port_sockets("127.0.0.1", plain.getsockname()[1], 2)
    finally:
        plain.close()
    with pytest.raises(ValueError, match="at least 1"):
        reuse_port_sockets("127.0.0.1", taken, 0)


def _pids_of_connections(port: int, count: int) -> list[int]:
    """Open ``count`` keep-alive connections at once (a burst, as the bench's clients do), then ask
    each which process serves it."""
    connections = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(count)]
    try:
        def ask(conn: socket.socket) -> int:
            conn.sendall(request_bytes("127.0.0.1", port, "/", {}))
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            head, _, body = data.partition(b"\r\n\r\n")
            status, length, _ = parse_head(head + b"\r\n\r\n")
            while len(body) < length:
                body += conn.recv(4096)
            assert status == 200
            return int(body)

        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(ask, connections))
    finally:
        for conn in connections:
            conn.close()


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    (tmp_path / "pid_app.py").write_text(PID_APP)
    port = free_port()
    (tmp_path / "run.py").write_text(RUN.format(port=port, workers=2))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    server = subprocess.Popen([sys.executable, str(tmp_path / "run.py")], cwd=tmp_path, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        # Both workers up: a worker still starting leaves its socket unanswered for a moment.
        deadline = time.monotonic() + 60
        while len(set(_pids_of_connections(port, 32))) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        yield port, server
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_a_burst_of_connections_is_spread_over_the_workers(two_workers) -> None:
    port, server = two_workers
    for _ in range(3):  # a shared socket spreads a burst only now and then
        pids = _pids_of_connections(port, 32)
        counts = sorted(pids.count(p) for p in set(pids))
        assert len(counts) == 2, counts  # every connection on one worker: 2 in 2**31
        assert server.pid not in pids  # the parent only supervises
    # The event-loop clients of the bench get every answer too.
    latencies, errors, elapsed = run_closed_loop("127.0.0.1", port, 8, 0.5, lambda rng: "/", {})
    assert errors == 0 and len(latencies) > 8 and elapsed >= 0.5


def test_a_dead_worker_is_replaced_on_its_own_socket(two_workers) -> None:
    port, _ = two_workers
    before = set(_pids_of_connections(port, 32))
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # Connections the kernel hands to the dead worker's socket wait there for its replacement:
    # every one is answered (none refused or dropped), eventually by a new process.
    deadline = time.monotonic() + 60
    after: set[int] = set()
    while time.monotonic() < deadline:
        after = set(_pids_of_connections(port, 32))
        if len(after) == 2 and victim not in after:
            break
        time.sleep(0.5)
    assert victim not in after and len(after) == 2 and len(after & before) == 1


def test_load_generator_counts_what_it_cannot_read() -> None:
    assert parse_head(b"HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\n\r\n") == (404, 12, True)
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n") == (200, 0, False)
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n") == (200, 3, False)
    with pytest.raises(ValueError, match="chunked"):
        parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(ValueError, match="Content-Length"):
        parse_head(b"HTTP/1.1 200 OK\r\n\r\n")
    with pytest.raises(ValueError, match="status line"):
        parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ValueError, match="at least 1"):
        run_closed_loop("127.0.0.1", 1, 0, 0.1, lambda rng: "/", {})
    # Nothing listens: every request is an error, counted, and the loop still ends on time.
    latencies, errors, elapsed = run_closed_loop("127.0.0.1", free_port(), 2, 0.3, lambda rng: "/", {})
    assert errors == len(latencies) > 0 and elapsed < 5
    assert request_bytes("h", 80, "/x?a=1", {"Authorization": "Bearer t"}) == (
        b"GET /x?a=1 HTTP/1.1\r\nHost: h:80\r\nAuthorization: Bearer t\r\n\r\n")


def test_serve_uses_the_supervisor_only_when_asked(monkeypatch) -> None:
    """``kairos serve --workers 2`` goes through serve_workers; KAIROS_API_REUSE_PORT=false
    through uvicorn's shared socket."""
    import uvicorn
    from typer.testing import CliRunner

    import serving.supervisor
    from kairos.cli import app

    calls: list[str] = []
    monkeypatch.setattr(serving.supervisor, "serve_workers", lambda *a, **k: calls.append("reuse_port"))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append(f"uvicorn workers={k.get('workers')}"))
    runner = CliRunner()
    assert runner.invoke(app, ["serve", "--workers", "2"]).exit_code == 0
    monkeypatch.setenv("KAIROS_API_REUSE_PORT", "false")
    assert runner.invoke(app, ["serve", "--workers", "2"]).exit_code == 0
    assert calls == ["reuse_port", "uvicorn workers=2"]
    # Asked for, but the platform has no SO_REUSEPORT: the shared socket, with a warning.
    monkeypatch.setenv("KAIROS_API_REUSE_PORT", "true")
    monkeypatch.setattr(serving.supervisor, "reuse_port_supported", lambda: False)
    unsupported = runner.invoke(app, ["serve", "--workers", "2"])
    assert unsupported.exit_code == 0 and "SO_REUSEPORT is not available" in unsupported.output
    assert calls == ["reuse_port", "uvicorn workers=2", "uvicorn workers=2"]


def test_serve_workers_on_a_taken_port_exits_with_uvicorns_startup_failure() -> None:
    from uvicorn.config import STARTUP_FAILURE

    from serving.supervisor import serve_workers

    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen()
    try:
        with pytest.raises(SystemExit) as exited:
            serve_workers("pid_app:app", host="127.0.0.1", port=plain.getsockname()[1], workers=2)
        assert exited.value.code == STARTUP_FAILURE
    finally:
        plain.close()
