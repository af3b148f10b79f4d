"""A load run's figures for people (a Rich table) and for programs (the ``--json`` dict).

The dict has the figures of :class:`~axon.loadtest.stats.Summary` (``requests``, ``ok``,
``errors`` by type, ``throughput_rps``, ``latency_s`` percentiles, ``ttft_s`` when streaming,
...) and what was run: ``target``, ``mode``, ``agents``, ``concurrency`` or ``rate``,
``turns``, ``stream``, ``timeout_s``, ``missed``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from axon.loadtest.records import LoadReport
from axon.loadtest.stats import Percentiles, Summary
from axon.loadtest.workload import Plan

__all__ = ["render", "report_dict"]


def report_dict(report: LoadReport, plan: Plan, summary: Summary, target: str) -> dict[str, Any]:
    return {
        "target": target,
        "mode": report.mode,
        "agents": list(plan.agents),
        "concurrency": plan.concurrency,
        "rate": plan.rate,
        "turns": plan.turns,
        "stream": plan.stream,
        "timeout_s": plan.timeout,
        "missed": report.missed,
        **summary.to_dict(stream=plan.stream),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _row(name: str, p: Percentiles) -> tuple[str, ...]:
    return (name, str(p.count), _ms(p.p50), _ms(p.p90), _ms(p.p99), _ms(p.max))


def render(report: LoadReport, plan: Plan, summary: Summary, target: str) -> RenderableType:
    """The figures as a person reads them: what ran, throughput and errors, then the latency
    percentiles (milliseconds), then one line per agent when there are several."""
    load = (
        f"{plan.concurrency} concurrent users"
        if plan.concurrency is not None
        else f"{plan.rate:g} sessions/s open loop"
    )
    head = Text.assemble(
        ("axon bench ", "bold"),
        f"{target}: {load}, {plan.turns} turn(s) per conversation",
        ", streamed" if plan.stream else "",
        f"; {summary.duration_s:.2f} s",
    )
    totals = Text.assemble(
        f"{summary.requests} requests, ",
        (f"{summary.ok} ok", "green"),
        ", ",
        (
            f"{summary.requests - summary.ok} errors ({summary.error_rate:.1%})",
            "red" if summary.ok < summary.requests else "",
        ),
        f"; throughput {summary.throughput_rps:.1f} ok/s ({summary.requests_rps:.1f} req/s)",
    )
    parts: list[RenderableType] = [head, totals]
    if report.missed:
        parts.append(
            Text(
                f"{report.missed} arrivals not sent: {plan.max_in_flight} sessions already in "
                "flight when they were due (raise --max-in-flight, or the target is saturated)",
                style="yellow",
            )
        )
    if summary.errors:
        errors = Table(box=None, pad_edge=False, header_style="bold")
        errors.add_column("error type")
        errors.add_column("count", justify="right")
        errors.add_column("share", justify="right")
        for kind, count in summary.errors.items():
            errors.add_row(kind, str(count), f"{count / summary.requests:.1%}")
        parts.append(errors)
    figures = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ms", "n", "p50", "p90", "p99", "max"):
        figures.add_column(column, justify="left" if column == "ms" else "right")
    figures.add_row(*_row("latency", summary.latency_s))
    if plan.stream:
        figures.add_row(*_row("time to first token", summary.ttft_s))
        figures.add_row(*_row("inter-token gap", summary.inter_token_s))
    if summary.start_lag_s.count:
        figures.add_row(*_row("start lag (open loop)", summary.start_lag_s))
    parts.append(figures)
    if len(summary.per_agent) > 1:
        agents = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("agent", "requests", "ok", "errors", "ok/s", "p50 ms", "p99 ms"):
            agents.add_column(column, justify="left" if column == "agent" else "right")
        for agent, s in summary.per_agent.items():
            agents.add_row(
                agent,
                str(s.requests),
                str(s.ok),
                str(s.requests - s.ok),
                f"{s.throughput_rps:.1f}",
                _ms(s.latency_s.p50),
                _ms(s.latency_s.p99),
            )
        parts.append(agents)
    return Group(*parts)
