"""The report's plots, drawn with matplotlib and returned as inline SVG markup.

matplotlib because it is already the scientific-Python standard, draws offline with no JavaScript runtime, and writes
SVG that a browser shows as it is (Vega-Altair would need its JavaScript renderer, or a headless one, to produce
an image). ``Figure`` objects are built directly, never through ``pyplot``: no global state, safe in any thread.
Text stays text (``svg.fonttype = none``) and the ids are salted with a fixed string, so the same figures give the
same bytes.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from recengine.report.analysis import Bucket

#: One colour per series, the same across every plot of a report (matplotlib's colour-blind-safe cycle).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Typed Any: matplotlib types rc_context as a dict of its literal key names.
_RC: Any = {
    "svg.fonttype": "none",
    "svg.hashsalt": "recengine",
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_HEADER = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def to_svg(fig: Figure, title: str) -> str:
    """The figure as an ``<svg>`` element to paste into HTML (no XML prolog), scaling to its container."""
    with mpl.rc_context(_RC):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = _METADATA.sub("", _HEADER.sub("", buf.getvalue(), count=1), count=1)
    # Ids are unique within one SVG only; several inline in one page need a prefix of their own.
    prefix = "f" + hashlib.blake2b(title.encode(), digest_size=4).hexdigest() + "-"
    svg = re.sub(r'id="([^"]+)"', rf'id="{prefix}\1"', svg)
    svg = svg.replace("url(#", f"url(#{prefix}").replace('href="#', f'href="#{prefix}')
    # Fluid width; the viewBox keeps the aspect ratio. A title element names the plot for screen readers.
    svg = re.sub(
        r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 role="img" style="width:100%;height:auto"', svg, count=1
    )
    return svg.replace(">", f"><title>{_escape(title)}</title>", 1)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _figure(width: float = 6.4, height: float = 3.4) -> Figure:
    with mpl.rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    markers: bool = False,
) -> str:
    """One line per named series of (x, y); a single-point series is drawn as a marker."""
    with mpl.rc_context(_RC):
        fig = _figure()
        ax = fig.add_subplot()
        for i, (name, (x, y)) in enumerate(series.items()):
            style = "o-" if markers or len(x) == 1 else "-"
            ax.plot(list(x), list(y), style, label=name, color=colour(i), linewidth=1.6, markersize=4)
        if logx:
            ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if series:
            ax.legend(frameon=False)
        return to_svg(fig, title)


def bucket_plot(buckets: Sequence[Bucket], labels: Sequence[str], *, title: str, ylabel: str) -> str:
    """Grouped bars: one group per history-length bucket, one bar per run, with its 95 % interval."""
    with mpl.rc_context(_RC):
        fig = _figure()
        ax = fig.add_subplot()
        x = np.arange(len(buckets))
        width = 0.8 / max(1, len(labels))
        for i, label in enumerate(labels):
            means = [b.mean[label] for b in buckets]
            errs = [b.half_width[label] for b in buckets]
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, means, width, yerr=errs, capsize=2, label=label,
                   color=colour(i))  # fmt: skip
        ax.set_xticks(x, [f"{b.label}\n({b.n_users})" for b in buckets])
        ax.set_title(title)
        ax.set_xlabel("history length (users)")
        ax.set_ylabel(ylabel)
        ax.legend(frameon=False)
        return to_svg(fig, title)


def decile_plot(shares: Mapping[str, Sequence[float]], *, title: str) -> str:
    """Grouped bars: the share of recommendation slots (or interactions) per item-popularity decile."""
    with mpl.rc_context(_RC):
        fig = _figure()
        ax = fig.add_subplot()
        x = np.arange(10)
        width = 0.8 / max(1, len(shares))
        for i, (name, share) in enumerate(shares.items()):
            ax.bar(x + (i - (len(shares) - 1) / 2) * width, list(share), width, label=name, color=colour(i))
        ax.set_xticks(x, [f"{10 * d}–{10 * d + 10}%" for d in range(10)], rotation=30)
        ax.set_title(title)
        ax.set_xlabel("items by training popularity (most popular first)")
        ax.set_ylabel("share")
        ax.legend(frameon=False)
        return to_svg(fig, title)


def histogram(values: np.ndarray, *, title: str, xlabel: str) -> str:
    """A histogram on log-spaced bins (interaction counts span orders of magnitude)."""
    with mpl.rc_context(_RC):
        fig = _figure(6.4, 3.0)
        ax = fig.add_subplot()
        v = np.asarray(values, dtype=np.float64)
        v = v[v > 0]
        top = float(v.max()) if v.size else 1.0
        bins = np.unique(np.geomspace(1, max(2.0, top + 1), 30).round())
        ax.hist(v, bins=bins.tolist(), color=colour(0))
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("users")
        return to_svg(fig, title)


def rank_frequency(counts: np.ndarray, *, title: str) -> str:
    """Interactions per item against the item's popularity rank, log-log: the long tail."""
    with mpl.rc_context(_RC):
        fig = _figure(6.4, 3.0)
        ax = fig.add_subplot()
        c = np.asarray(counts, dtype=np.float64)
        ranks = np.arange(1, c.size + 1)
        keep = c > 0
        ax.plot(ranks[keep], c[keep], "-", color=colour(0), linewidth=1.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("item rank by training interactions")
        ax.set_ylabel("interactions")
        return to_svg(fig, title)


def difference_plot(rows: Sequence[tuple[str, float, float, float]], *, title: str, xlabel: str) -> str:
    """Each comparison's mean difference as a point with its interval, and a line at zero."""
    with mpl.rc_context(_RC):
        fig = _figure(6.4, 0.6 + 0.45 * max(1, len(rows)))
        ax = fig.add_subplot()
        y = np.arange(len(rows))[::-1]
        for yi, (_, mean, low, high) in zip(y, rows, strict=True):
            ax.plot([low, high], [yi, yi], "-", color=colour(0), linewidth=2)
            ax.plot([mean], [yi], "o", color=colour(0))
        ax.axvline(0.0, color="#666666", linewidth=1, linestyle="--")
        ax.set_yticks(y, [r[0] for r in rows])
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        return to_svg(fig, title)
