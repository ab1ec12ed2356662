"""Request ids, the access log (structured JSON) and per-request metrics, in one ASGI middleware.

Every response carries ``X-Request-ID``: the client's own (if it sent a sane one: up to 128
printable characters) or a fresh one. The id is in a context variable for the request's whole life,
so every log line written while serving it carries it (:class:`JsonFormatter`), and the
suggestion and search responses use the same id as their ``request_id`` when the server made it up
(a client's id may repeat, and the body's id keys impressions to feedback, so it must be unique).

A pure ASGI middleware rather than ``@app.middleware("http")``: the latter wraps every response in
an extra task and stream, which costs latency on every request and breaks server-sent events.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics

access_log = logging.getLogger("kairos.access")
_ID_OK = re.compile(r"^[\x21-\x7e]{1,128}$")
#: The current request's id, and whether the server generated it (then it is unique).
_request_id: contextvars.ContextVar[tuple[str, bool] | None] = contextvars.ContextVar("kairos_request_id", default=None)


def current_request_id() -> str | None:
    current = _request_id.get()
    return current[0] if current else None


def new_request_id() -> str:
    """The id for a response body's ``request_id``: the request's own when the server generated it
    (so header and body agree), else a fresh unique one."""
    current = _request_id.get()
    if current is not None and current[1]:
        return current[0]
    return uuid.uuid4().hex


#: Query parameters that carry secrets (the SSE route's ``?api_key=``, serving/auth.py).
_SECRET_QUERY = re.compile(r"(?i)([?&](?:api_key)=)[^&#\s\"]*")


def redact(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", text) if "=" in text else text


class RedactSecrets(logging.Filter):
    """Redacts secret query parameters from a record's message and arguments.

    Our access line logs the path without its query string; uvicorn's own access log (enabled when
    ``KAIROS_LOG_JSON=0`` or when logging was configured elsewhere) logs the full URL, so it gets
    this filter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install_redaction(logger_name: str = "uvicorn.access") -> None:
    """Add :class:`RedactSecrets` to a logger once (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())


class RequestLogMiddleware:
    """Assigns request ids, times requests, records metrics per route template, logs one JSON line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Built when the server starts, after uvicorn configured its loggers.
        install_redaction()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        generated = given is None or not _ID_OK.match(given)
        request_id = uuid.uuid4().hex if generated else given
        token = _request_id.set((request_id, generated))
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            # The template, never the raw path: ids in paths would make a series per user.
            # Plain routes (docs, static files) have no template: their path is fixed; a 404 is
            # any path at all, so it gets one series.
            template = getattr(route, "path", None) or (scope.get("path", "") if status != 404 else "<unmatched>")
            method = scope.get("method", "")
            self.metrics.observe(template, method, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state") or {}
                # ``path`` is the ASGI path: never the query string (an SSE client's ?api_key=).
                access_log.info("request", extra={"http": {
                    "method": method, "route": template, "path": scope.get("path"), "status": status,
                    "duration_ms": round(seconds * 1000, 3), "key_id": state.get("api_key_id"),
                }})
            _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        http = getattr(record, "http", None)
        if http is not None:
            entry.update(http)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


JsonFormatter.converter = time.gmtime  # type: ignore[assignment]


def configure_json_logging(level: int = logging.INFO) -> bool:
    """Send all logs as JSON lines to stderr, unless logging is configured already (tests, embedders).

    Returns whether it configured anything. uvicorn's own access log is silenced then: ours has the
    route template, the key and the request id.
    """
    root = logging.getLogger()
    if root.handlers:
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    # Libraries (Feast, httpx) log chatty INFO lines; ours and the access log stay at ``level``.
    root.setLevel(max(level, logging.WARNING))
    for name in ("kairos", "serving", "online", "flows"):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True
    return True


__all__ = ["JsonFormatter", "RedactSecrets", "RequestLogMiddleware", "configure_json_logging", "current_request_id",
           "install_redaction", "new_request_id", "redact"]
