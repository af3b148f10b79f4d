"""A PNG of a load run a person can look at: latency over time (each request at its start,
errors marked by type) above a histogram of the successful requests' latencies.

matplotlib is an optional dependency (``pip install 'axon-runtime[plot]'``), imported only
here and only when a plot is asked for. The figure is drawn with the object API and the Agg
canvas, never pyplot: no GUI backend, no global state, safe in a server or a test.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from axon.loadtest.records import LoadReport

__all__ = ["PlotUnavailable", "write_plot"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "plotting needs matplotlib: pip install 'axon-runtime[plot]' (or matplotlib)"
        )


def write_plot(report: LoadReport, path: str | Path, title: str = "axon bench") -> Path:
    """Write the PNG to ``path`` (``PlotUnavailable`` without matplotlib, ``OSError`` if it
    cannot be written) and return the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable() from None

    fig = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(fig)
    over_time: Any
    histogram: Any
    over_time, histogram = fig.subplots(2, 1)
    ok = [r for r in report.records if r.ok]
    over_time.scatter(
        [r.started - report.started for r in ok],
        [r.latency * 1000 for r in ok],
        s=6,
        alpha=0.6,
        label=f"ok ({len(ok)})",
    )
    errors: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in report.records:
        if not r.ok:
            errors[r.outcome].append((r.started - report.started, r.latency * 1000))
    for kind, points in sorted(errors.items()):
        xs, ys = zip(*points, strict=True)
        over_time.scatter(xs, ys, s=14, marker="x", label=f"{kind} ({len(points)})")
    over_time.set_xlabel("request start (s since the load began)")
    over_time.set_ylabel("latency (ms)")
    over_time.set_title(f"{title}: latency over time")
    over_time.grid(alpha=0.3)
    if report.records:
        over_time.legend(loc="upper right", fontsize="small")
    histogram.hist([r.latency * 1000 for r in ok], bins=50)
    histogram.set_xlabel("latency of successful requests (ms)")
    histogram.set_ylabel("requests")
    histogram.grid(alpha=0.3)
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    return out
