"""The gateway's ASGI middleware: request id, body size limit, metrics and the access log."""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recengine.api import problems
from recengine.observability.logging import bind_request, log_request, request_id_from

_access = logging.getLogger("recengine.access")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (serving.max_body_bytes)")


class GatewayMiddleware:
    """Request id, body size limit, metrics and access log — plain ASGI, no per-request task or copy."""

    def __init__(self, app: ASGIApp, max_body: int, metrics: bool) -> None:
        self.app = app
        # Request ids: a random per-process prefix and a counter — unique across workers and replicas, and
        # without the system call a uuid4 per request costs.
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count(1)
        self.max_body = max_body
        self.metrics: Any = None
        if metrics:
            from recengine.observability import metrics as m

            self.metrics = m

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        header_rid = length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                header_rid = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        rid = request_id_from(header_rid) if header_rid is not None else self._next_id()
        bind_request(rid)  # every log line of this request carries its id
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = -1
        try:
            if declared is not None and (declared < 0 or declared > self.max_body):
                code = 400 if declared < 0 else 413
                detail = "invalid Content-Length" if code == 400 else BodyTooLarge(self.max_body).detail
                response = problems.problem(code, detail, rid)
                await response(scope, receive, send_wrapper)
            else:
                await self.app(scope, limited_receive, send_wrapper)
        except BodyTooLarge as exc:
            if response_started:
                raise
            await problems.problem(413, exc.detail, rid)(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            engine = state.get("engine")
            if self.metrics is not None:
                self.metrics.observe_request(template, engine, status, seconds)
            if _access.isEnabledFor(logging.INFO if status < 400 else logging.WARNING):
                log_request(template, status, seconds, engine=engine, request_id=rid)
