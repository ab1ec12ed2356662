"""Several API worker processes, each with its own listening socket on the same port.

Why not uvicorn's ``--workers`` as it is: it binds one socket in the parent and every worker
accepts from it. Whichever worker wakes first takes every connection waiting (uvloop accepts until
the queue is empty), so a burst of keep-alive connections lands on one worker and stays there:
``kairos bench serve`` found 15 of its 16 client connections on one of two workers, which queued
them while the other worker had one. Here each worker listens on a socket of its own, all bound
with ``SO_REUSEPORT``, so the kernel spreads new connections over the workers (by a hash of the
client's address and port), whether or not a worker is busy at that moment.

The supervision is uvicorn's own (:class:`uvicorn.supervisors.Multiprocess`: health pings,
replacing a worker that died, SIGHUP restarts, SIGINT/SIGTERM), given one socket per worker
instead of one for all. A replaced worker takes over its predecessor's socket, so the
connections the kernel queued on it meanwhile are served, not lost. Where ``SO_REUSEPORT`` does not
exist (not Linux or BSD), ``kairos serve`` uses uvicorn's shared socket, with a warning.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

log = logging.getLogger("uvicorn.error")


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def reuse_port_sockets(host: str, port: int, count: int, backlog: int = 2048) -> list[socket.socket]:
    """``count`` listening sockets on ``(host, port)``, each with ``SO_REUSEPORT`` (port 0: the
    first socket picks a free port and the others join it). Raises ``OSError`` (closing what it
    opened) when the address is taken or cannot be bound."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class ReusePortMultiprocess(Multiprocess):
    """uvicorn's worker supervisor, with worker ``i`` always serving ``worker_sockets[i]``."""

    def __init__(self, config: Config, worker_sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets=[])
        self.worker_sockets = worker_sockets
        self.processes_num = len(worker_sockets)

    def _process(self, idx: int) -> Process:
        return Process(self.config, [self.worker_sockets[idx]])

    def init_processes(self) -> None:
        for idx in range(self.processes_num):
            process = self._process(idx)
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        # As uvicorn's: bring each replacement into service before retiring the old worker.
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self._process(idx)
            new_process.start()
            if not new_process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    log.error("New child process [%s] was not ready in time; keeping worker [%s] and aborting the "
                              "restart.", new_process.pid, old_process.pid)
                return
            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # Failed before serving: the app or its stores are broken, and every restart would fail too.
                log.error("Child process [%s] failed to start, stopping the parent process.", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("Child process [%s] died; starting a replacement on its socket", process.pid)
            replacement = self._process(idx)
            replacement.start()
            self.processes[idx] = replacement

    def handle_ttin(self) -> None:
        log.warning("SIGTTIN ignored: the number of workers is fixed (KAIROS_API_WORKERS); restart to change it")

    def handle_ttou(self) -> None:
        log.warning("SIGTTOU ignored: the number of workers is fixed (KAIROS_API_WORKERS); restart to change it")


def serve_workers(app: str, host: str, port: int, workers: int, **options: Any) -> None:
    """Serve the ASGI app import string ``app`` (a factory when ``factory=True`` is passed) in
    ``workers`` processes, one ``SO_REUSEPORT`` socket each (see :func:`reuse_port_supported`)."""
    import sys

    config = Config(app, host=host, port=port, workers=workers, **options)
    try:
        sockets = reuse_port_sockets(host, port, workers)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    log.info("Listening on http://%s:%d with %d workers, one SO_REUSEPORT socket each", host,
             sockets[0].getsockname()[1], workers)
    try:
        ReusePortMultiprocess(config, sockets).run()
    except KeyboardInterrupt:  # as uvicorn.run: Ctrl-C is a normal stop
        pass
    finally:
        for sock in sockets:
            sock.close()


__all__ = ["ReusePortMultiprocess", "reuse_port_sockets", "reuse_port_supported", "serve_workers"]
