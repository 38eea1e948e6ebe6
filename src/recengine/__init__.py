"""recengine: learns from user–item interactions and serves top-K recommendations over HTTP."""

__version__ = "0.1.0"
