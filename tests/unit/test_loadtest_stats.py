"""The figures of a load run against hand-computed values."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from axon.loadtest import LoadReport, Plan, RequestRecord, percentiles, summarize
from axon.loadtest.report import render, report_dict


def record(
    index: int,
    *,
    agent: str = "a",
    started: float = 0.0,
    latency: float = 0.1,
    outcome: str = "ok",
    tokens: tuple[float, ...] = (),
    scheduled: float | None = None,
) -> RequestRecord:
    return RequestRecord(
        index=index,
        agent=agent,
        conversation_id=f"c{index}",
        user=0,
        turn=0,
        prompt=f"p{index}",
        started=started,
        ended=started + latency,
        deadline=started + 60,
        outcome=outcome,
        scheduled=scheduled,
        token_times=tokens,
    )


def test_percentiles_interpolate_between_closest_ranks() -> None:
    p = percentiles(float(v) for v in [7, 1, 10, 3, 2, 5, 4, 9, 6, 8])
    assert p.count == 10
    assert p.p50 == pytest.approx(5.5)
    assert p.p90 == pytest.approx(9.1)
    assert p.p99 == pytest.approx(9.91)
    assert p.max == 10.0
    assert p.mean == pytest.approx(5.5)


def test_percentiles_of_one_and_of_no_sample() -> None:
    one = percentiles([0.25])
    assert (one.count, one.p50, one.p90, one.p99, one.max, one.mean) == (1, *[0.25] * 5)
    none = percentiles([])
    assert none.to_dict() == {
        "count": 0,
        "p50": None,
        "p90": None,
        "p99": None,
        "max": None,
        "mean": None,
    }


def crafted_report() -> LoadReport:
    report = LoadReport(mode="closed", started=100.0, ended=104.0)
    report.records = [
        record(0, started=100.0, latency=0.1),
        record(1, started=100.5, latency=0.3, tokens=(100.55, 100.6, 100.7)),
        record(2, agent="b", started=101.0, latency=0.2, tokens=(101.02, 101.12)),
        record(3, agent="b", started=101.5, latency=0.01, outcome="agent_crashed"),
        record(4, started=102.0, latency=0.02, outcome="overloaded"),
        record(5, agent="b", started=103.0, latency=1.0, outcome="agent_crashed"),
    ]
    return report


def test_throughput_errors_and_latency_of_ok_requests_only() -> None:
    s = summarize(crafted_report())
    assert (s.requests, s.ok) == (6, 3)
    assert s.errors == {"agent_crashed": 2, "overloaded": 1}
    assert list(s.errors) == ["agent_crashed", "overloaded"]  # most frequent first
    assert s.error_rate == pytest.approx(0.5)
    assert s.duration_s == pytest.approx(4.0)
    assert s.throughput_rps == pytest.approx(3 / 4)
    assert s.requests_rps == pytest.approx(6 / 4)
    # latency of the 3 successes only: 0.1, 0.2, 0.3
    assert s.latency_s.count == 3
    assert s.latency_s.p50 == pytest.approx(0.2)
    assert s.latency_s.p90 == pytest.approx(0.28)
    assert s.latency_s.max == pytest.approx(0.3)
    # first chunk 0.05 and 0.02 after the start; gaps 0.05, 0.1, 0.1
    assert s.ttft_s.count == 2
    assert s.ttft_s.p50 == pytest.approx(0.035)
    assert s.ttft_s.max == pytest.approx(0.05)
    assert s.inter_token_s.count == 3
    assert s.inter_token_s.p50 == pytest.approx(0.1)
    assert s.inter_token_s.max == pytest.approx(0.1)
    assert s.start_lag_s.count == 0


def test_per_agent_breakdown_and_start_lag() -> None:
    report = crafted_report()
    report.records.append(record(6, started=103.5, latency=0.4, scheduled=103.45))
    s = summarize(report, ["a", "b"])
    a, b = s.per_agent["a"], s.per_agent["b"]
    assert (a.requests, a.ok, a.errors) == (4, 3, {"overloaded": 1})
    assert (b.requests, b.ok, b.errors) == (3, 1, {"agent_crashed": 2})
    assert a.latency_s.p50 == pytest.approx(0.3)  # of 0.1, 0.3, 0.4
    assert b.latency_s.p50 == pytest.approx(0.2)
    assert a.throughput_rps == pytest.approx(3 / 4)
    assert s.start_lag_s.count == 1
    assert s.start_lag_s.p50 == pytest.approx(0.05)


def test_json_report_has_every_required_key_and_streaming_figures_only_when_streaming() -> None:
    report = crafted_report()
    plan = Plan(agents=["a", "b"], concurrency=4, duration=4)
    summary = summarize(report, plan.agents)
    body = report_dict(report, plan, summary, "http://127.0.0.1:1")
    json.dumps(body)  # JSON-ready
    for key in ("requests", "ok", "errors", "throughput_rps", "latency_s", "duration_s", "mode"):
        assert key in body
    assert set(body["latency_s"]) >= {"p50", "p90", "p99", "max"}
    assert (body["mode"], body["concurrency"], body["rate"]) == ("closed", 4, None)
    assert "ttft_s" not in body
    assert body["per_agent"]["b"]["errors"] == {"agent_crashed": 2}
    streamed = Plan(agents=["a", "b"], rate=2.0, requests=6, stream=True)
    body = report_dict(report, streamed, summary, "x")
    assert body["ttft_s"]["p50"] == pytest.approx(0.035)
    assert body["inter_token_s"]["count"] == 3
    assert (body["mode"], body["rate"], body["concurrency"]) == ("closed", 2.0, None)


def test_table_shows_the_figures_in_milliseconds() -> None:
    report = crafted_report()
    plan = Plan(agents=["a", "b"], concurrency=4, duration=4, stream=True)
    console = Console(record=True, width=120)
    console.print(render(report, plan, summarize(report, plan.agents), "http://x"))
    text = console.export_text()
    assert "6 requests, 3 ok, 3 errors (50.0%)" in text
    assert "agent_crashed" in text
    assert "overloaded" in text
    latency = next(line for line in text.splitlines() if line.startswith("latency"))
    assert latency.split() == ["latency", "3", "200.0", "280.0", "298.0", "300.0"]
    assert "time to first token" in text
