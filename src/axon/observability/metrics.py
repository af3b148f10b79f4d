"""Prometheus metrics of one runtime, served at ``/metrics`` (names and PromQL: docs/metrics.md).

Two kinds of metric, each from where its truth lives:

- **Counters and histograms** (runs, durations, exits, restarts, ...) are fed by the runtime's
  events (:class:`~axon.observability.events.EventBus`). The orchestrator owns them, so they
  survive worker crashes and restarts.
- **Gauges** (in-flight runs, queue depth, agent and worker states) and the per-worker CPU and
  memory are read when Prometheus scrapes, by a collector that asks the runtime for
  ``agents()`` and the OS for the workers' resources: always current, and nothing runs between
  scrapes (no background thread).

Each runtime has its own ``CollectorRegistry`` (several runtimes can live in one process, e.g.
in tests), which also carries the orchestrator's own ``process_*`` and ``python_*`` metrics.

The event sink is on the hot path (one ``run.finished`` per request): it dispatches on the event
name through a dict and keeps the labelled children of each (agent, outcome) so that counting a
run is two dict lookups and the metric updates. Label values are bounded: agents come from the
config (events of any other agent are ignored) and the other labels from fixed vocabularies
(outcomes, exit causes, states); no conversation or run id is ever a label.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from axon.observability.events import EventBus
from axon.observability.resources import WorkerResources
from axon.status import AgentStatus
from axon.supervisor.states import AgentState, WorkerState

if TYPE_CHECKING:
    from axon.store.group_commit import GroupCommit

__all__ = [
    "COMMIT_BUCKETS",
    "RUN_BUCKETS",
    "RuntimeMetrics",
]

RUN_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
"""Run duration and time-to-first-token buckets (seconds): from a cached or trivial answer to
an LLM run with tools that takes minutes (``max_timeout`` is usually at most 10 minutes)."""

COMMIT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Store commit buckets (seconds): SQLite commits in well under a millisecond when idle,
PostgreSQL in a few, and a saturated store in hundreds."""

_AGENT_STATES = tuple(state.value for state in AgentState)
_WORKER_STATES = tuple(state.value for state in WorkerState)

_Inc = Callable[[], None]
_Observe = Callable[[float], None]


class RuntimeMetrics:
    """Counters and histograms fed by the runtime's events; gauges read at scrape time."""

    def __init__(
        self,
        events: EventBus,
        agents: Callable[[], list[AgentStatus]],
        agent_ids: Sequence[str],
        resources: WorkerResources,
        group_commit: GroupCommit | None = None,
    ) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)

        self._runs_total = Counter(
            "axon_runs_total",
            "Runs (requests that reached an agent), by agent and outcome: ok, cancelled, or the "
            "error type (agent_crashed, agent_timeout, agent_run_failed, overloaded, ...).",
            ("agent", "outcome"),
            registry=registry,
        )
        self._run_duration = Histogram(
            "axon_run_duration_seconds",
            "Run duration from the request to its reply or error, by agent and outcome.",
            ("agent", "outcome"),
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self._ttft = Histogram(
            "axon_run_time_to_first_token_seconds",
            "Streamed runs: seconds from the request to the first text delta, by agent.",
            ("agent",),
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        commit = Histogram(
            "axon_store_commit_duration_seconds",
            "Seconds to commit one run's new messages to the conversation store.",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self._commit_observe: _Observe = commit.observe
        self._worker_exits = Counter(
            "axon_worker_exits_total",
            "Worker process exits, by agent and cause (requested, crashed, exited, "
            "startup_failed, spawn_failed, hung, ignored_cancel, startup_timeout, protocol, "
            "unresponsive, connection_lost).",
            ("agent", "cause"),
            registry=registry,
        )
        restarts = Counter(
            "axon_worker_restarts_total",
            "Worker restarts the supervisor scheduled after a failure, by agent (restarts by "
            "hand are counted as exits with cause requested).",
            ("agent",),
            registry=registry,
        )
        failures = Counter(
            "axon_agent_failures_total",
            "Times an agent exceeded its restart intensity and went FAILED, by agent.",
            ("agent",),
            registry=registry,
        )
        protocol_errors = Counter(
            "axon_protocol_errors_total",
            "Malformed or unexpected frames from a worker, by agent.",
            ("agent",),
            registry=registry,
        )

        # The labelled children, created once: the hot path only looks them up.
        self._run_series: dict[str, dict[str, tuple[_Inc, _Observe]]] = {}
        self._ttft_series: dict[str, _Observe] = {}
        self._exit_series: dict[str, dict[str, _Inc]] = {}
        self._restart_series: dict[str, _Inc] = {}
        self._failure_series: dict[str, _Inc] = {}
        self._protocol_series: dict[str, _Inc] = {}
        for agent in agent_ids:
            self._run_series[agent] = {}
            self._add_run_series(agent, "ok")  # so rate() and ratios work from the start
            self._ttft_series[agent] = self._ttft.labels(agent).observe
            self._exit_series[agent] = {}
            self._restart_series[agent] = restarts.labels(agent).inc
            self._failure_series[agent] = failures.labels(agent).inc
            self._protocol_series[agent] = protocol_errors.labels(agent).inc

        self._agents = agents
        registry.register(_ScrapeCollector(agents, resources, group_commit))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)  # registers itself on CPython only

        self._handlers: dict[str, Callable[[Mapping[str, Any]], None]] = {
            "run.finished": self._on_run_finished,
            "worker.exit": self._on_worker_exit,
            "agent.restart": self._per_agent(self._restart_series),
            "agent.failed": self._per_agent(self._failure_series),
            "protocol.error": self._per_agent(self._protocol_series),
        }
        events.subscribe(self._on_event)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def scrape(self) -> tuple[bytes, str]:
        """:meth:`exposition` for ``/metrics``: the runtime's status is read here, on the event
        loop (the only thread that may), and the text is formatted in a worker thread, so a
        large scrape (tens of milliseconds with 50 agents) does not stall the loop's runs."""
        token = _SNAPSHOT.set(self._agents())
        try:
            # to_thread runs in a copy of this context: the collector sees the snapshot.
            return await asyncio.to_thread(self.exposition)
        finally:
            _SNAPSHOT.reset(token)

    # -- the event sink (hot path) ------------------------------------------------------------

    def _on_event(self, event: str, level: int, fields: Mapping[str, Any]) -> None:
        handler = self._handlers.get(event)
        if handler is not None:
            handler(fields)

    def _on_run_finished(self, fields: Mapping[str, Any]) -> None:
        agent = fields["agent"]
        by_outcome = self._run_series.get(agent)
        if by_outcome is None:
            return  # not a configured agent: never a new label value
        outcome = fields["outcome"]
        series = by_outcome.get(outcome)
        if series is None:
            series = self._add_run_series(agent, outcome)
        inc, observe = series
        inc()
        observe(fields["latency_s"])
        ttft = fields.get("ttft_s")
        if ttft is not None:
            self._ttft_series[agent](ttft)
        commit = fields.get("commit_s")
        if commit is not None:
            self._commit_observe(commit)

    def _add_run_series(self, agent: str, outcome: str) -> tuple[_Inc, _Observe]:
        series = (
            self._runs_total.labels(agent, outcome).inc,
            self._run_duration.labels(agent, outcome).observe,
        )
        self._run_series[agent][outcome] = series
        return series

    def _on_worker_exit(self, fields: Mapping[str, Any]) -> None:
        by_cause = self._exit_series.get(fields["agent"])
        if by_cause is None:
            return
        cause = fields["cause"]
        inc = by_cause.get(cause)
        if inc is None:
            inc = by_cause[cause] = self._worker_exits.labels(fields["agent"], cause).inc
        inc()

    @staticmethod
    def _per_agent(series: dict[str, _Inc]) -> Callable[[Mapping[str, Any]], None]:
        def count(fields: Mapping[str, Any]) -> None:
            inc = series.get(fields["agent"])
            if inc is not None:
                inc()

        return count


_SNAPSHOT: ContextVar[list[AgentStatus] | None] = ContextVar("axon_metrics_snapshot", default=None)
"""The agents' status taken on the event loop for a scrape formatted in another thread."""


class _ScrapeCollector:
    """The gauges and worker resources, read from the runtime at each scrape."""

    def __init__(
        self,
        agents: Callable[[], list[AgentStatus]],
        resources: WorkerResources,
        group_commit: GroupCommit | None,
    ) -> None:
        self._agents = agents
        self._resources = resources
        self._group_commit = group_commit

    def describe(self) -> Iterable[Metric]:
        # Names only (for the registry's duplicate check): no need to ask the runtime.
        return (*_families(), *_group_commit_families())

    def collect(self) -> Iterable[Metric]:
        yield from self._runtime_families()
        if (group := self._group_commit) is not None:
            batches, runs = _group_commit_families()
            batches.add_metric([], group.batches)
            runs.add_metric([], group.runs)
            yield batches
            yield runs

    def _runtime_families(self) -> Iterable[Metric]:
        in_flight, queued, agent_state, workers, cpu, rss = families = _families()
        agents = _SNAPSHOT.get()
        if agents is None:
            agents = self._agents()
        for agent in agents:
            in_flight.add_metric([agent.id], agent.in_flight)
            queued.add_metric([agent.id], agent.queued)
            for state in _AGENT_STATES:
                agent_state.add_metric([agent.id, state], 1.0 if agent.state == state else 0.0)
            counts = dict.fromkeys(_WORKER_STATES, 0)
            for worker in agent.workers:
                counts[worker.state] = counts.get(worker.state, 0) + 1
            for state, count in counts.items():
                workers.add_metric([agent.id, state], count)
        for sample in self._resources.sample(agents):
            slot = [sample.agent, str(sample.worker)]
            cpu.add_metric(slot, sample.cpu_seconds_total)
            if sample.rss_bytes is not None:
                rss.add_metric(slot, sample.rss_bytes)
        return families


def _group_commit_families() -> tuple[CounterMetricFamily, CounterMetricFamily]:
    return (
        CounterMetricFamily(
            "axon_store_commit_batches",
            "Transactions the store's group commit ran, each committing a batch of runs.",
        ),
        CounterMetricFamily(
            "axon_store_commit_batch_runs",
            "Runs committed (or refused) in those transactions; over the batches: the mean "
            "batch size.",
        ),
    )


def _families() -> tuple[
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    CounterMetricFamily,
    GaugeMetricFamily,
]:
    return (
        GaugeMetricFamily(
            "axon_runs_in_flight",
            "Runs being executed by a worker now, by agent.",
            labels=("agent",),
        ),
        GaugeMetricFamily(
            "axon_run_queue_depth",
            "Requests waiting for a free worker slot now, by agent.",
            labels=("agent",),
        ),
        GaugeMetricFamily(
            "axon_agent_state",
            "The agent supervisor's state: 1 for the current state, 0 for the others.",
            labels=("agent", "state"),
        ),
        GaugeMetricFamily(
            "axon_workers",
            "Worker slots of each agent by worker state.",
            labels=("agent", "state"),
        ),
        CounterMetricFamily(
            "axon_worker_cpu_seconds_total",
            "CPU seconds (user + system) of every process a worker slot has had (monotonic "
            "across restarts; up to one sampling interval of a dead process may be missed).",
            labels=("agent", "worker"),
        ),
        GaugeMetricFamily(
            "axon_worker_resident_memory_bytes",
            "Resident memory of each worker slot's live process.",
            labels=("agent", "worker"),
        ),
    )
