"""The figures of a load run, computed from its records.

Percentiles are :func:`statistics.quantiles` with the ``inclusive`` method (linear
interpolation between the closest ranks, as numpy's default): p50 of 1..10 is 5.5, p90 9.1,
p99 9.91. A single sample is its own every percentile; no sample gives None.

- ``latency_s``: of successful requests only (a fast refusal is not a fast answer; errors are
  counted by type in ``errors``).
- ``throughput_rps``: successful requests per second of the run, from the load's start to the
  end of its last request; ``requests_rps`` counts every request.
- ``ttft_s``: streamed successful requests, start to first text chunk; ``inter_token_s``: every
  gap between consecutive chunks of those requests.
- ``start_lag_s`` (open loop): how late sessions started after they were due.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from axon.loadtest.records import LoadReport, RequestRecord

__all__ = ["Percentiles", "Summary", "percentiles", "summarize"]


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    mean: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "max": self.max,
            "mean": self.mean,
        }


def percentiles(values: Iterable[float]) -> Percentiles:
    data = sorted(values)
    if not data:
        return Percentiles(0, None, None, None, None, None)
    if len(data) == 1:
        only = data[0]
        return Percentiles(1, only, only, only, only, only)
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    return Percentiles(
        count=len(data),
        p50=cuts[49],
        p90=cuts[89],
        p99=cuts[98],
        max=data[-1],
        mean=statistics.fmean(data),
    )


@dataclass(frozen=True)
class Summary:
    """The figures of a set of records over ``duration`` seconds."""

    requests: int
    ok: int
    errors: dict[str, int]
    duration_s: float
    throughput_rps: float
    requests_rps: float
    latency_s: Percentiles
    ttft_s: Percentiles
    inter_token_s: Percentiles
    start_lag_s: Percentiles
    per_agent: dict[str, Summary] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return (self.requests - self.ok) / self.requests if self.requests else 0.0

    def to_dict(self, *, stream: bool) -> dict[str, Any]:
        """The ``--json`` figures (``ttft_s`` and ``inter_token_s`` only when ``stream``)."""
        body: dict[str, Any] = {
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(self.errors),
            "error_rate": self.error_rate,
            "duration_s": self.duration_s,
            "throughput_rps": self.throughput_rps,
            "requests_rps": self.requests_rps,
            "latency_s": self.latency_s.to_dict(),
        }
        if stream:
            body["ttft_s"] = self.ttft_s.to_dict()
            body["inter_token_s"] = self.inter_token_s.to_dict()
        if self.start_lag_s.count:
            body["start_lag_s"] = self.start_lag_s.to_dict()
        if self.per_agent:
            body["per_agent"] = {
                agent: s.to_dict(stream=stream) for agent, s in self.per_agent.items()
            }
        return body


def summarize(report: LoadReport, agents: Sequence[str] = ()) -> Summary:
    """The run's figures, with a per-agent breakdown for ``agents`` (in that order)."""
    summary = _summary(report.records, report.duration)
    per_agent = {
        agent: _summary([r for r in report.records if r.agent == agent], report.duration)
        for agent in agents
    }
    return dataclasses.replace(summary, per_agent=per_agent)


def _summary(records: Sequence[RequestRecord], duration: float) -> Summary:
    ok = [r for r in records if r.ok]
    errors = Counter(r.outcome for r in records if not r.ok)
    return Summary(
        requests=len(records),
        ok=len(ok),
        errors=dict(sorted(errors.items(), key=lambda item: (-item[1], item[0]))),
        duration_s=duration,
        throughput_rps=len(ok) / duration if duration > 0 else 0.0,
        requests_rps=len(records) / duration if duration > 0 else 0.0,
        latency_s=percentiles(r.latency for r in ok),
        ttft_s=percentiles(t for r in ok if (t := r.ttft) is not None),
        inter_token_s=percentiles(gap for r in ok for gap in r.token_gaps),
        start_lag_s=percentiles(
            r.started - r.scheduled for r in records if r.scheduled is not None
        ),
    )
