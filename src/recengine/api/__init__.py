"""The HTTP API (FastAPI): thin routes over ``recengine.serving``; errors as ``application/problem+json``."""

from recengine.api.app import create_app

__all__ = ["create_app"]
