"""The live picture behind ``/dashboard`` and ``axon top``: the supervision tree, request
rate, error rate, latency and in-flight over the last minutes, and a feed of recent events.

A :class:`Monitor` is one more sink on the runtime's :class:`~axon.observability.events.EventBus`
(no HTTP here: the edge only serves :meth:`Monitor.snapshot`). It keeps, in bounded memory:

- a **timeline** of the last ``window_s`` seconds (10 minutes) in ``bucket_s`` buckets (1 s): runs
  finished, errors (an outcome other than ``ok`` or ``cancelled``), p50/p99 latency of the runs
  that succeeded, and the runs in flight and queued, sampled once a second by :meth:`run`;
- a **feed** of the last ``feed_size`` (500) notable events (crashes, restarts, state changes,
  timeouts, kills, protocol errors), each numbered by a ``seq`` that only grows, so that a
  client polling ``snapshot(since=last_seq)`` receives each event once;
- the CPU % and RSS of each worker slot, from :class:`~axon.observability.resources.
  WorkerResources` samples taken by :meth:`run` (CPU % is the growth of the slot's cumulative
  CPU seconds between two samples over the wall time between them).

Latency percentiles come from a fixed log-spaced histogram per bucket (bins 10 % wide from
0.1 ms to an hour, plus the bucket's exact minimum and maximum): a percentile is the nearest-rank
value's bin, reported as the bin's geometric middle, clamped to the exact minimum and maximum.
That is within 5 % of the exact nearest-rank value, costs a few hundred integers per busy second
and none per idle one, and merges across buckets by adding counts. (A sketch library such as
DDSketch would do the same with one more dependency; the arithmetic here is twenty lines.)

Polling is cheap: a bucket is final once its second is over, so the series (which ends at the
last complete bucket) is computed once per second whatever the number of clients, and the
feed is sliced from the ``since`` cursor.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from axon.observability.events import EventBus
from axon.observability.resources import WorkerResources
from axon.status import EXIT_FIELDS, AgentStatus, WorkerStatus

__all__ = ["NOTABLE_EVENTS", "LatencyHistogram", "Monitor"]

_logger = logging.getLogger(__name__)

NOTABLE_EVENTS = frozenset(
    {
        "worker.exit",  # only exits that were not requested
        "worker.startup_failed",
        "worker.hung",
        "worker.kill",
        "agent.restart",
        "agent.failed",
        "agent.state",
        "run.timeout",
        "protocol.error",
    }
)
"""The events the feed keeps (``worker.exit`` only when its ``cause`` is not ``requested``)."""

_NOT_ERRORS = frozenset({"ok", "cancelled"})
_MAX_FIELD_CHARS = 500
"""A longer string field (a startup error's message, say) is cut to this in the feed."""


class LatencyHistogram:
    """Seconds counted in log-spaced bins (each ``GROWTH`` times as wide as the previous), with
    the exact minimum and maximum; see the module docstring for the error bound."""

    LOWEST = 1e-4
    """Upper edge of the first bin (0.1 ms): everything faster shares it."""
    GROWTH = 1.1
    BINS = 185
    """Bins up to ``LOWEST * GROWTH**(BINS-1)``, a little over an hour; slower runs share the
    last one."""
    _LOG_GROWTH = math.log(GROWTH)

    __slots__ = ("count", "counts", "maximum", "minimum")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.minimum = math.inf
        self.maximum = -math.inf

    @classmethod
    def bin_of(cls, seconds: float) -> int:
        if seconds <= cls.LOWEST:
            return 0
        return min(cls.BINS - 1, math.ceil(math.log(seconds / cls.LOWEST) / cls._LOG_GROWTH))

    @classmethod
    def middle(cls, index: int) -> float:
        """The geometric middle of bin ``index`` (bin 0: ``LOWEST``)."""
        if index == 0:
            return cls.LOWEST
        return cls.LOWEST * cls.GROWTH ** (index - 0.5)

    def add(self, seconds: float) -> None:
        index = self.bin_of(seconds)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.minimum = min(self.minimum, seconds)
        self.maximum = max(self.maximum, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.count += other.count
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q`` quantile (0 < q <= 1), or None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                if index == self.BINS - 1:  # the open-ended last bin: its only known value
                    return self.maximum
                return min(max(self.middle(index), self.minimum), self.maximum)
        return self.maximum  # unreachable: the counts add up to ``count``


@dataclass(slots=True)
class _Bucket:
    index: int
    """``floor(time / bucket_s)``: which second (or two) this bucket counts."""
    requests: int = 0
    errors: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    in_flight: int | None = None
    queued: int | None = None


@dataclass(frozen=True, slots=True)
class _Usage:
    pid: int
    cpu_percent: float | None
    rss_bytes: int | None


_NO_USAGE = _Usage(0, None, None)
_AGENT_FIELDS = tuple(f.name for f in fields(AgentStatus))
_WORKER_FIELDS = tuple(f.name for f in fields(WorkerStatus))


def _fields_of(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


class Monitor:
    """The dashboard's view of one runtime. ``run()`` (started by the runtime) samples the
    gauges; ``snapshot(since)`` is what ``GET /v1/monitor`` answers.

    ``clock`` (wall-clock seconds, ``time.time`` by default) is injectable for tests.
    """

    def __init__(
        self,
        events: EventBus,
        agents: Callable[[], list[AgentStatus]],
        resources: WorkerResources,
        *,
        clock: Callable[[], float] = time.time,
        window_s: float = 600.0,
        bucket_s: float = 1.0,
        feed_size: int = 500,
        sample_interval_s: float = 1.0,
    ) -> None:
        if bucket_s <= 0 or window_s < bucket_s or feed_size < 1 or sample_interval_s <= 0:
            raise ValueError("monitor: need 0 < bucket_s <= window_s, feed_size >= 1")
        self._agents = agents
        self._resources = resources
        self._clock = clock
        self.bucket_s = float(bucket_s)
        self.window_s = float(window_s)
        self.sample_interval_s = sample_interval_s
        self._slots: list[_Bucket | None] = [None] * max(1, round(window_s / bucket_s))
        self._feed: deque[dict[str, Any]] = deque(maxlen=feed_size)
        self._seq = 0
        self.started_at = clock()
        self._outcomes: dict[str, int] = {}
        self._requests = 0
        self._errors = 0
        self._restarts = 0
        self._crashes = 0
        self._usage: dict[tuple[str, int], _Usage] = {}
        self._cpu_seen: dict[tuple[str, int], tuple[float, float]] = {}
        self._series_cache: tuple[int, dict[str, list[Any]], dict[str, Any]] | None = None
        events.subscribe(self._on_event)

    # -- input: events and samples ---------------------------------------------------------------

    def _on_event(self, event: str, level: int, fields: Mapping[str, Any]) -> None:
        if event == "run.finished":
            self._on_run(fields)
        elif event in NOTABLE_EVENTS:
            if event == "worker.exit":
                if fields.get("cause") == "requested":
                    return
                self._crashes += 1
            elif event == "agent.restart":
                self._restarts += 1
            self._seq += 1
            self._feed.append(
                {
                    "seq": self._seq,
                    "time": self._clock(),
                    "level": logging.getLevelName(level).lower(),
                    "event": event,
                    "fields": {str(k): _plain(v) for k, v in fields.items()},
                }
            )

    def _on_run(self, fields: Mapping[str, Any]) -> None:
        outcome = str(fields.get("outcome"))
        bucket = self._bucket(self._clock())
        bucket.requests += 1
        self._requests += 1
        self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
        if outcome not in _NOT_ERRORS:
            bucket.errors += 1
            self._errors += 1
        latency = fields.get("latency_s")
        if outcome == "ok" and isinstance(latency, int | float):
            bucket.latency.add(float(latency))

    def _bucket(self, now: float) -> _Bucket:
        index = math.floor(now / self.bucket_s)
        slot = index % len(self._slots)
        bucket = self._slots[slot]
        if bucket is None or bucket.index != index:
            bucket = self._slots[slot] = _Bucket(index)
        return bucket

    async def run(self) -> None:
        """Sample the gauges once a second until cancelled (the runtime runs this)."""
        while True:
            try:
                self.sample()
            except Exception:  # a failed sample (psutil, say) must not end the live view
                _logger.exception("monitor: sampling failed")
            await asyncio.sleep(self.sample_interval_s)

    def sample(self) -> None:
        """Record the runs in flight and queued now, and each worker's CPU % and RSS (what
        :meth:`run` does once a second)."""
        now = self._clock()
        agents = self._agents()
        bucket = self._bucket(now)
        bucket.in_flight = sum(a.in_flight for a in agents)
        bucket.queued = sum(a.queued for a in agents)
        usage: dict[tuple[str, int], _Usage] = {}
        seen: dict[tuple[str, int], tuple[float, float]] = {}
        for sample in self._resources.sample(agents):
            key = (sample.agent, sample.worker)
            seen[key] = (now, sample.cpu_seconds_total)
            if sample.pid is None:
                continue
            cpu_percent = None
            previous = self._cpu_seen.get(key)
            if previous is not None and now > previous[0]:
                grown = max(0.0, sample.cpu_seconds_total - previous[1])
                cpu_percent = round(100.0 * grown / (now - previous[0]), 1)
            usage[key] = _Usage(sample.pid, cpu_percent, sample.rss_bytes)
        self._cpu_seen = seen
        self._usage = usage

    # -- output ----------------------------------------------------------------------------------

    def snapshot(self, since: int | None = None) -> dict[str, Any]:
        """The picture now, as JSON-able data:

        - ``time``, ``started_at`` (wall clock), ``bucket_s``, ``window_s``;
        - ``agents``: each :meth:`AgentStatus.to_dict`, each worker with ``cpu_percent`` and
          ``rss_bytes`` (None until sampled; CPU % needs two samples);
        - ``series``: columns over the window, oldest first, ending at the last complete bucket:
          ``t`` (bucket start), ``requests`` and ``errors`` per second, ``p50_s`` and ``p99_s``
          (None without a successful run), ``in_flight`` and ``queued`` (None if not sampled);
        - ``now``: rates, error ratio and percentiles over the last 10 complete seconds
          (``window_s``), and the runs ``in_flight`` and ``queued`` at this moment;
        - ``totals``: since the monitor started: ``requests``, ``errors``, ``outcomes`` (count
          per outcome), ``restarts``, ``crashes`` (worker exits not requested);
        - ``events``: feed entries with ``seq > since`` (all kept ones if ``since`` is None or
          beyond the last seq, as after a server restart), oldest first; ``last_seq``.
        """
        now = self._clock()
        series, recent = self._series(math.floor(now / self.bucket_s))
        statuses = self._agents()
        return {
            "time": now,
            "started_at": self.started_at,
            "bucket_s": self.bucket_s,
            "window_s": self.window_s,
            "agents": self._agent_dicts(statuses),
            "series": series,
            "now": {
                **recent,
                "in_flight": sum(a.in_flight for a in statuses),
                "queued": sum(a.queued for a in statuses),
            },
            "totals": {
                "requests": self._requests,
                "errors": self._errors,
                "outcomes": dict(self._outcomes),
                "restarts": self._restarts,
                "crashes": self._crashes,
            },
            "events": self.events_since(since),
            "last_seq": self._seq,
        }

    def events_since(self, since: int | None) -> list[dict[str, Any]]:
        """Feed entries with ``seq > since``, oldest first (every kept one if ``since`` is None
        or beyond the last seq)."""
        if since is None or since > self._seq:
            return list(self._feed)
        # The kept entries are numbered consecutively, ending with the last seq.
        start = max(0, len(self._feed) - (self._seq - since))
        return [self._feed[i] for i in range(start, len(self._feed))]

    def _agent_dicts(self, statuses: list[AgentStatus]) -> list[dict[str, Any]]:
        """``AgentStatus.to_dict()`` of each agent, each worker with its CPU % and RSS. (Built
        field by field: ``dataclasses.asdict`` deep-copies, which made it the costliest part of
        a poll with 50 agents.)"""
        agents: list[dict[str, Any]] = []
        for status in statuses:
            agent = _fields_of(status, _AGENT_FIELDS)
            agent["recent_exits"] = [_fields_of(e, EXIT_FIELDS) for e in status.recent_exits]
            agent["in_flight"] = status.in_flight
            workers: list[dict[str, Any]] = []
            for w in status.workers:
                worker = _fields_of(w, _WORKER_FIELDS)
                exit_ = w.last_exit
                worker["last_exit"] = None if exit_ is None else _fields_of(exit_, EXIT_FIELDS)
                usage = self._usage.get((status.id, w.index))
                if usage is None or usage.pid != w.pid:  # not sampled since it started
                    usage = _NO_USAGE
                worker["cpu_percent"] = usage.cpu_percent
                worker["rss_bytes"] = usage.rss_bytes
                workers.append(worker)
            agent["workers"] = workers
            agents.append(agent)
        return agents

    def _series(self, current: int) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """The columns up to bucket ``current`` (excluded: it is still filling), computed once
        per bucket whatever the number of pollers."""
        cached = self._series_cache
        if cached is not None and cached[0] == current:
            return cached[1], cached[2]
        n = len(self._slots)
        columns: dict[str, list[Any]] = {
            k: [] for k in ("t", "requests", "errors", "p50_s", "p99_s", "in_flight", "queued")
        }
        recent_span = max(1, round(10.0 / self.bucket_s))
        recent = _Bucket(current)
        for index in range(current - n, current):
            bucket = self._slots[index % n]
            if bucket is None or bucket.index != index:
                bucket = None
            start = index * self.bucket_s
            columns["t"].append(int(start) if start.is_integer() else round(start, 3))
            if bucket is None:
                for name in ("requests", "errors"):
                    columns[name].append(0)
                for name in ("p50_s", "p99_s", "in_flight", "queued"):
                    columns[name].append(None)
                continue
            columns["requests"].append(_rate(bucket.requests, self.bucket_s))
            columns["errors"].append(_rate(bucket.errors, self.bucket_s))
            columns["p50_s"].append(_round(bucket.latency.quantile(0.5)))
            columns["p99_s"].append(_round(bucket.latency.quantile(0.99)))
            columns["in_flight"].append(bucket.in_flight)
            columns["queued"].append(bucket.queued)
            if index >= current - recent_span:
                recent.requests += bucket.requests
                recent.errors += bucket.errors
                recent.latency.merge(bucket.latency)
        span = recent_span * self.bucket_s
        summary = {
            "window_s": span,
            "requests_per_s": _rate(recent.requests, span),
            "errors_per_s": _rate(recent.errors, span),
            "error_ratio": round(recent.errors / recent.requests, 4) if recent.requests else None,
            "p50_s": _round(recent.latency.quantile(0.5)),
            "p99_s": _round(recent.latency.quantile(0.99)),
        }
        self._series_cache = (current, columns, summary)
        return columns, summary


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 3)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def _plain(value: object) -> object:
    """A JSON-able field value: numbers, booleans and None as they are, anything else as a
    string (long ones cut)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= _MAX_FIELD_CHARS else text[: _MAX_FIELD_CHARS - 3] + "..."
