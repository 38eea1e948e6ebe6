"""Structured logs (structlog): JSON lines in production, a readable console format in development.

The whole API:

- ``configure_logging(level="INFO", fmt="console" | "json")`` — once, at process start (``serve``, ``train``,
  and in every uvicorn worker's lifespan). Standard-library loggers (uvicorn, lightning, mlflow) go through
  the same renderer, so a production log is JSON from end to end.
- ``get_logger(name)`` — a structlog logger; ``log.info("event", key=value)``.
- ``request_id_from(header)`` — the ``X-Request-ID`` to use: the caller's when it is a sane token (≤ 128
  characters of ``A-Z a-z 0-9 . _ -``), else a fresh one from ``new_request_id()``; the gateway echoes it
  back in the response.
- ``bind_request(request_id, **fields)`` — start a request's log context (clears whatever the previous
  request on this task left); every line logged while it runs carries ``request_id`` and the fields.
  ``bind_fields(**fields)`` adds fields later (``engine=…``, ``outcome=…``); ``clear_request()`` ends it.
- ``log_request(route, status, seconds, engine=None, outcome=None, **fields)`` — the one access line per
  request.
- ``log_training_summary(engine, metrics, seconds, **fields)`` — the one summary line after a training run.

The context lives in ``contextvars``, so it follows a request across ``await``s and into
``asyncio.to_thread`` / ``loop.run_in_executor`` calls made with ``contextvars.copy_context().run``, and
never leaks between requests.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Mapping
from typing import Any, Final, Literal

import structlog
from structlog.typing import Processor

LogFormat = Literal["console", "json"]
LOG_FORMATS: Final = ("console", "json")
REQUEST_ID_HEADER: Final = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,128}")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted: CLI and test runners swap it, and a handler
    holding the stream of configure time would write to a closed one."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def configure_logging(level: str = "INFO", fmt: LogFormat | str = "console") -> None:
    """Route structlog and the standard library's loggers to stderr in one format, at one level."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level {level!r}: expected DEBUG, INFO, WARNING or ERROR")

    renderer: Processor
    if fmt == "json":
        # Tracebacks become one "exception" string field, so one event stays one line.
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        final = [renderer]

    shared = _shared_processors()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    # On the handler too: libraries that set their own loggers' level (Lightning: INFO) propagate records past the
    # root logger's level check.
    handler.setLevel(numeric)
    root = logging.getLogger()
    # Replace (not add to) our handler so configuring twice — app factory in tests — never doubles every line.
    for old in [h for h in root.handlers if getattr(h, "_recengine", False)]:
        root.removeHandler(old)
    handler._recengine = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    adopt_library_loggers()


# Libraries that give their loggers console handlers of their own: uvicorn when it starts, Lightning when imported.
_OWN_HANDLERS: Final = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
)


def adopt_library_loggers() -> None:
    """Once :func:`configure_logging` has run, send the records of libraries that install their own console
    handlers through ours instead (one format, and no line printed twice). Call it again after importing such a
    library later (the trainer does, for Lightning); without our configuration it changes nothing."""
    if not any(getattr(h, "_recengine", False) for h in logging.getLogger().handlers):
        return
    for name in _OWN_HANDLERS:
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


def get_logger(name: str = "recengine") -> Any:
    """A structlog logger bound to ``name`` (typed ``Any``: structlog's bound loggers are dynamic proxies)."""
    return structlog.stdlib.get_logger(name)


# ---- request context ---------------------------------------------------------------------------------------
def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is a safe token, else a new id (never log arbitrary bytes)."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return new_request_id()


def bind_request(request_id: str, **fields: Any) -> str:
    """Start a fresh log context for one request; returns ``request_id`` for convenience."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, **fields)
    return request_id


def bind_fields(**fields: Any) -> None:
    """Add fields to the current request's log context (e.g. the engine once routing has decided)."""
    structlog.contextvars.bind_contextvars(**fields)


def clear_request() -> None:
    structlog.contextvars.clear_contextvars()


def current_request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


def log_request(
    route: str,
    status: int,
    seconds: float,
    engine: str | None = None,
    outcome: str | None = None,
    **fields: Any,
) -> None:
    """The access line for one request: route template, status, latency in ms, engine and outcome."""
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    get_logger("recengine.access").log(
        level,
        "request",
        route=route,
        status=status,
        latency_ms=round(seconds * 1000.0, 3),
        engine=engine,
        outcome=outcome or ("ok" if status < 400 else "error"),
        **fields,
    )


# ---- training ----------------------------------------------------------------------------------------------
def training_summary(engine: str, metrics: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """The flat fields of the training summary line: the scalar metrics (``ndcg@10``…) and the duration."""
    out: dict[str, Any] = {"engine": engine, "train_seconds": round(seconds, 2)}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # nested dicts (per-split metrics) and strings stay in metrics.json / MLflow
        out[key] = round(float(value), 6) if isinstance(value, float) else value
    return out


def log_training_summary(engine: str, metrics: Mapping[str, Any], seconds: float, **fields: Any) -> None:
    """One ``training finished`` line with the engine, its scalar metrics and how long training took."""
    get_logger("recengine.training").info("training finished", **training_summary(engine, metrics, seconds), **fields)
