"""Conversation-store figures: commits, history loads, and the store's share of a run.

    python benchmarks/bench_store.py [--postgres URL] [--commits N] [--json FILE]

1. Commit latency p50/p99 and commits/s for each backend with 1, 16 and 256 conversations
   committing concurrently, grouped (the stores' ``commit``) and each run alone in its own
   transaction (the baseline for group commit; the in-memory store is another baseline).
2. History load time of a conversation of 10, 1,000 and 10,000 messages.
3. The share of a whole run's time spent in the store, at 64 concurrent requests through the
   runtime (a timing wrapper around the store measures load + commit inside each request).

Postgres figures need a server (default: the test server); they are skipped when it is not
reachable. Each backend gets a fresh database (a temp file / a throwaway schema).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from axon import AgentSpec, Axon, SupervisorSpec
from axon.store.base import ConversationInfo, ConversationStore, History
from axon.store.group_commit import PendingCommit
from axon.store.urls import open_store

CONCURRENCY_LEVELS = (1, 16, 256)
HISTORY_SIZES = (10, 1_000, 10_000)


def run_json(turn: int) -> bytes:
    """One realistic run's new messages (request + response) as pydantic-ai JSON."""
    from pydantic_ai import ModelMessagesTypeAdapter
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

    return ModelMessagesTypeAdapter.dump_json(
        [
            ModelRequest(parts=[UserPromptPart(f"What is the weather in city {turn}?")]),
            ModelResponse(parts=[TextPart(f"It is sunny in city {turn}, 21 degrees.")]),
        ]
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Commit = Callable[[str, int, bytes], Awaitable[int]]


def committer(store: ConversationStore, *, grouped: bool) -> Commit:
    """``store.commit``; or, with ``grouped=False``, each run in its own transaction,
    concurrently (how the stores committed before group commit: the baseline)."""

    async def grouped_commit(cid: str, revision: int, payload: bytes) -> int:
        return await store.commit(
            cid, agent_id="bench", expected_revision=revision, messages=payload
        )

    async def alone(cid: str, revision: int, payload: bytes) -> int:
        # The batch function the store's GroupCommit calls, given one run at a time.
        commit_batch = store.group_commit._commit_batch  # type: ignore[attr-defined]
        [outcome] = await commit_batch([PendingCommit(cid, "bench", revision, payload)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return grouped_commit if grouped else alone


async def bench_commits(commit: Commit, conversations: int, total: int) -> dict[str, float]:
    payload = run_json(0)
    per_conversation = max(total // conversations, 1)
    latencies: list[float] = []

    async def writer(cid: str) -> None:
        for revision in range(per_conversation):
            t0 = time.perf_counter()
            await commit(cid, revision, payload)
            latencies.append(time.perf_counter() - t0)

    prefix = uuid.uuid4().hex[:8]
    t0 = time.perf_counter()
    await asyncio.gather(*(writer(f"{prefix}-{i}") for i in range(conversations)))
    elapsed = time.perf_counter() - t0
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "commits_per_s": len(latencies) / elapsed,
    }


async def bench_loads(store: ConversationStore, messages: int) -> float:
    cid = f"load-{messages}-{uuid.uuid4().hex[:8]}"
    runs = messages // 2
    batch = run_json(1)
    for revision in range(runs):
        await store.commit(cid, agent_id="bench", expected_revision=revision, messages=batch)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        history = await store.load(cid)
        times.append(time.perf_counter() - t0)
    assert history.revision == runs
    return statistics.median(times) * 1000


class TimedStore:
    """Wraps a store and adds up the time requests spend in it."""

    def __init__(self, inner: ConversationStore) -> None:
        self.inner = inner
        self.seconds = 0.0

    async def open(self) -> None:
        await self.inner.open()

    async def load(self, conversation_id: str) -> History:
        t0 = time.perf_counter()
        try:
            return await self.inner.load(conversation_id)
        finally:
            self.seconds += time.perf_counter() - t0

    async def commit(
        self, conversation_id: str, *, agent_id: str, expected_revision: int, messages: bytes
    ) -> int:
        t0 = time.perf_counter()
        try:
            return await self.inner.commit(
                conversation_id,
                agent_id=agent_id,
                expected_revision=expected_revision,
                messages=messages,
            )
        finally:
            self.seconds += time.perf_counter() - t0

    async def delete(self, conversation_id: str) -> bool:
        return await self.inner.delete(conversation_id)

    async def list_conversations(
        self, agent_id: str | None = None, *, limit: int = 100, after: str | None = None
    ) -> list[ConversationInfo]:
        return await self.inner.list_conversations(agent_id, limit=limit, after=after)

    async def close(self) -> None:
        await self.inner.close()


async def bench_share(url: str, requests: int) -> float:
    """Share of request time spent in the store at 64 concurrent requests (3 turns each)."""
    store = TimedStore(open_store(url))
    spec = AgentSpec(
        id="bench",
        agent="axon.examples.misbehaving:misbehaving_agent",
        workers=2,
        max_concurrency=64,
    )
    request_seconds = 0.0
    async with Axon([spec], supervisor=SupervisorSpec(), store=store) as axon:
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            nonlocal request_seconds
            async with sem:
                t0 = time.perf_counter()
                await axon.send_message("bench", f"hello {i}", conversation_id=f"share-{i % 64}")
                request_seconds += time.perf_counter() - t0

        store.seconds = 0.0
        await asyncio.gather(*(one(i) for i in range(requests)))
    return store.seconds / request_seconds


async def backend_figures(name: str, url: str, commits: int, progress: Progress) -> dict[str, Any]:
    task = progress.add_task(name, total=len(CONCURRENCY_LEVELS) + len(HISTORY_SIZES) + 1)
    store = open_store(url)
    await store.open()
    figures: dict[str, Any] = {"commits": {}, "load_ms": {}}
    grouping = hasattr(store, "group_commit")
    if grouping:
        figures["commits_ungrouped"] = {}
    try:
        for level in CONCURRENCY_LEVELS:
            total = max(commits, level)
            figures["commits"][level] = await bench_commits(
                committer(store, grouped=True), level, total
            )
            if grouping:
                figures["commits_ungrouped"][level] = await bench_commits(
                    committer(store, grouped=False), level, total
                )
            progress.advance(task)
        for size in HISTORY_SIZES:
            figures["load_ms"][size] = await bench_loads(store, size)
            progress.advance(task)
    finally:
        await store.close()
    figures["store_share_64_concurrent"] = await bench_share(url, 640)
    progress.advance(task)
    return figures


async def postgres_url(dsn: str) -> tuple[str, Any] | None:
    try:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, ImportError):
        return None
    schema = f"axon_bench_{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{dsn}?schema={schema}", (conn, schema)


async def main_async(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        backends = [("memory", "memory://"), ("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
        pg = await postgres_url(args.postgres)
        if pg is not None:
            backends.append(("postgresql", pg[0]))
        try:
            for name, url in backends:
                results[name] = await backend_figures(name, url, args.commits, progress)
        finally:
            if pg is not None:
                conn, schema = pg[1]
                await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
                await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres",
        default=os.environ.get("AXON_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--commits", type=int, default=2000, help="commits per concurrency level")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    console = Console()
    results = asyncio.run(main_async(args, console))

    table = Table(
        title="Commits (same run, same machine; baselines: memory, and each run committed alone)"
    )
    for column in (
        "backend",
        "concurrent convs",
        "commit p50",
        "commit p99",
        "commits/s",
        "alone: p50",
        "alone: commits/s",
        "grouped / alone",
    ):
        table.add_column(column)
    for name, figures in results.items():
        for level, c in figures["commits"].items():
            alone = figures.get("commits_ungrouped", {}).get(level)
            table.add_row(
                name,
                str(level),
                f"{c['p50_ms']:.2f} ms",
                f"{c['p99_ms']:.2f} ms",
                f"{c['commits_per_s']:,.0f}",
                f"{alone['p50_ms']:.2f} ms" if alone else "-",
                f"{alone['commits_per_s']:,.0f}" if alone else "-",
                f"{c['commits_per_s'] / alone['commits_per_s']:.1f}x" if alone else "-",
            )
    console.print(table)
    loads = Table(title="History load time (median of 5)")
    loads.add_column("backend")
    for size in HISTORY_SIZES:
        loads.add_column(f"{size:,} messages")
    loads.add_column("store share of a run (64 concurrent)")
    for name, figures in results.items():
        loads.add_row(
            name,
            *(f"{figures['load_ms'][size]:.2f} ms" for size in HISTORY_SIZES),
            f"{figures['store_share_64_concurrent'] * 100:.1f} %",
        )
    console.print(loads)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
