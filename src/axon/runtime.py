"""``Axon``: the orchestrator. Wires supervisors, routers and the conversation store.

The life of one request (``send_message`` / ``stream_message``)::

    validate input -> agent known? serving? -> wait the conversation's turn (arrival order)
    -> load history (revision r) -> route to the least-loaded worker (bounded queue)
    -> relay events until the result -> COMMIT the run's new messages at revision r -> reply

The commit is the only write, and it happens only after the worker's result arrived: a run
that crashes, times out, fails or is abandoned by its caller commits nothing, so the
conversation's history stays exactly as it was. Every await before the result is bounded by the
request's deadline, which ends the request with ``AgentTimeout`` and cancels the run in the
worker (the worker is killed if it ignores the cancel).

Cancellation contract: cancelling a ``send_message`` call (or closing a ``stream_message``
iterator early) cancels the run in its worker and commits nothing.

Tracing (``runtime.tracing``): each request that gets past validation is one OpenTelemetry span,
whose context travels to the worker in the ``run`` frame; the worker's spans come back and are
re-created under it (:mod:`axon.observability.tracing`, docs/tracing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from axon._tasks import TaskSet
from axon.agent import Agent
from axon.config import (
    AgentSpec,
    AxonConfig,
    RuntimeSpec,
    SupervisorSpec,
    check_agent_imports,
    load_config,
)
from axon.conversation_locks import ConversationLocks, ConversationPolicy
from axon.errors import (
    AgentNotFound,
    AgentTimeout,
    AxonError,
    ConversationBusy,
    HistoryTooLarge,
    InvalidRequest,
    RunInterrupted,
    StoreConflict,
    StoreUnavailable,
)
from axon.observability.events import EventBus
from axon.observability.metrics import RuntimeMetrics
from axon.observability.monitor import Monitor
from axon.observability.resources import WorkerResources
from axon.observability.run_telemetry import RunTelemetry
from axon.pool.spawner import ProcessSpawner
from axon.protocol import frames
from axon.run_call import RunRequest
from axon.status import AgentStatus, Readiness
from axon.store.base import ConversationInfo, ConversationStore, History, slice_json_array
from axon.store.group_commit import group_commit_of
from axon.store.urls import open_store
from axon.stream import FinalResult, Reply, StreamEvent, TextDelta
from axon.supervisor.spawner import Spawner
from axon.supervisor.states import AgentState
from axon.validation import (
    check_conversation_id,
    check_page,
    check_policy,
    check_prompt,
    check_timeout,
    new_conversation_id,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from axon.observability.tracing import RunTracer

__all__ = ["Axon"]


class Axon:
    """The Axon runtime: ``async with Axon.from_config("axon.toml") as axon: ...``.

    ``start()`` (or entering the context) spawns every agent's workers and returns once each
    agent is serving or has FAILED; ``stop()`` (or leaving it) stops them in reverse order and
    leaves no process behind.
    """

    def __init__(
        self,
        agents: Sequence[AgentSpec] = (),
        *,
        supervisor: SupervisorSpec | None = None,
        runtime: RuntimeSpec | None = None,
        store: ConversationStore | None = None,
        config: AxonConfig | None = None,
        check_imports: bool = True,
        tracer_provider: TracerProvider | None = None,
        spawner: Spawner | None = None,
    ) -> None:
        """``tracer_provider``: where request spans go when ``runtime.tracing`` is on (default:
        the global one). ``ConfigError`` if tracing is on and the OpenTelemetry SDK is missing.
        ``spawner``: what makes the worker processes (default: a
        :class:`~axon.pool.spawner.ProcessSpawner` per ``runtime.fork_server``; ``axon chaos``
        gives one that interposes on their links)."""
        if config is None:
            config = AxonConfig(
                runtime=runtime or RuntimeSpec(),
                supervisor=supervisor or SupervisorSpec(),
                agents=tuple(agents),
            )
            if check_imports:
                check_agent_imports(config.agents)
        self.config = config
        self._store = store if store is not None else open_store(config.runtime.store)
        self._agents: dict[str, Agent] = {}
        self._locks = ConversationLocks()
        self.events = EventBus()
        """This runtime's structured events: subscribe a sink to see every one."""
        self._tasks = TaskSet("axon", self.events)
        resources = WorkerResources()
        self.metrics: RuntimeMetrics | None = (
            RuntimeMetrics(
                self.events,
                self.agents,
                [a.id for a in config.agents],
                resources,
                group_commit=group_commit_of(self._store),
            )
            if config.runtime.metrics
            else None
        )
        """Prometheus metrics (``/metrics``), or None when ``runtime.metrics`` is off."""
        self.monitor = Monitor(self.events, self.agents, resources)
        """The live picture behind ``/dashboard`` and ``axon top``."""
        self._tracer: RunTracer | None = None
        if config.runtime.tracing:
            from axon.observability.tracing import RunTracer

            self._tracer = RunTracer(tracer_provider)
        self._spawner: Spawner = spawner or ProcessSpawner(fork_server=config.runtime.fork_server)
        self._started = False

    @classmethod
    def from_config(
        cls, config: str | Path | AxonConfig, *, tracer_provider: TracerProvider | None = None
    ) -> Axon:
        """An ``Axon`` for an ``axon.toml`` path (or an already loaded config); see ``__init__``
        for ``tracer_provider``."""
        if not isinstance(config, AxonConfig):
            config = load_config(config)
        return cls(config=config, tracer_provider=tracer_provider)

    # -- life cycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Axon:
        try:
            await self.start()
        except BaseException:
            # A failed or cancelled start must not leave workers behind.
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every agent; return once each is settled: RUNNING, or FAILED (or STOPPED, for
        workers that are never restarted). If this raises or is cancelled, call ``stop()``."""
        if self._started:
            raise RuntimeError("this Axon is already started")
        self._started = True
        await self._store.open()
        self._spawner.start(self.events)
        for spec in self.config.agents:
            agent = Agent(
                spec,
                self.config.supervisor_for(spec),
                spawner=self._spawner,
                tasks=self._tasks,
                events=self.events,
            )
            self._agents[spec.id] = agent
            agent.start()
        self._tasks.create_task(self.monitor.run())
        await asyncio.gather(*(agent.wait_serving() for agent in self._agents.values()))

    async def stop(self) -> None:
        """Stop every agent (reverse start order) and release everything; idempotent."""
        if not self._started:
            return
        for agent in reversed(list(self._agents.values())):
            await agent.stop()
        await self._spawner.aclose()
        await self._tasks.aclose()
        await self._store.close()
        self._started = False

    # -- requests -----------------------------------------------------------------------------

    async def send_message(
        self,
        agent_id: str,
        prompt: str,
        *,
        conversation_id: str | None = None,
        timeout: float | None = None,
        policy: ConversationPolicy | str | None = None,
    ) -> Reply:
        """Run ``prompt`` on ``agent_id`` in conversation ``conversation_id`` (new if None).

        ``policy`` overrides the agent's ``conversation_policy`` for this message when the
        conversation already has a run in progress: ``enqueue``, ``reject`` or ``interrupt``.

        Returns the committed :class:`Reply`. Raises ``AgentNotFound``, ``InvalidRequest``,
        ``HistoryTooLarge``, ``AgentUnavailable``, ``Overloaded``, ``AgentCrashed``,
        ``AgentTimeout``, ``AgentRunFailed``, ``ResultTooLarge``, ``ProtocolError`` (the worker
        sent something that breaks the protocol, e.g. a result that is not a message list),
        ``ConversationBusy``, ``RunInterrupted`` or ``StoreUnavailable``; on any of them the
        conversation's history is unchanged.
        """
        # Closed before returning, so the request is over (its span ended, ``run.finished``
        # emitted) when the caller gets the reply, not whenever the generator is collected.
        async with contextlib.aclosing(
            self._execute(agent_id, prompt, conversation_id, timeout, policy, stream=False)
        ) as events:
            async for event in events:
                if isinstance(event, FinalResult):
                    return event.reply
        raise AssertionError("a run ended without a result")  # pragma: no cover

    def stream_message(
        self,
        agent_id: str,
        prompt: str,
        *,
        conversation_id: str | None = None,
        timeout: float | None = None,
        policy: ConversationPolicy | str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Like :meth:`send_message`, as typed events as they happen: ``TextDelta``,
        ``ToolCall``, ``ToolResult``, and last ``FinalResult``. Errors are raised from the
        iterator. Closing the iterator early cancels the run and commits nothing."""
        return self._execute(agent_id, prompt, conversation_id, timeout, policy, stream=True)

    async def _execute(
        self,
        agent_id: str,
        prompt: str,
        conversation_id: str | None,
        timeout: float | None,
        policy: ConversationPolicy | str | None,
        *,
        stream: bool,
    ) -> AsyncGenerator[StreamEvent]:
        agent = self.hosted(agent_id)
        spec = agent.spec
        prompt = check_prompt(prompt, spec)
        cid = (
            new_conversation_id()
            if conversation_id is None
            else check_conversation_id(conversation_id)
        )
        seconds = check_timeout(timeout, spec)
        policy = spec.conversation_policy if policy is None else check_policy(policy)
        telemetry = RunTelemetry(self.events, self._tracer, agent_id, cid, stream)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            # 1. Fail fast (counted, logged and traced like any outcome), before waiting for the
            # conversation's turn.
            agent.check_available()
            async with contextlib.AsyncExitStack() as turn:
                async with self._deadline(deadline, agent_id, seconds, cid):
                    # 2. The conversation's turn (its policy decides what a busy one does).
                    my_turn = await turn.enter_async_context(self._locks.hold(cid, policy))
                    # 3. Its history, at revision r.
                    history = await self._store.load(cid)
                    if my_turn.interrupted:
                        raise RunInterrupted(cid)
                    if len(history.messages) > spec.max_history_bytes:
                        raise HistoryTooLarge(
                            cid, size=len(history.messages), limit=spec.max_history_bytes
                        )
                    # 4. A worker (waiting in the agent's bounded queue if every slot is busy).
                    worker, call = await agent.start_run(
                        RunRequest(
                            prompt, history.messages, cid, deadline, stream, telemetry.carrier()
                        )
                    )
                my_turn.on_interrupt(lambda: worker.cancel_run(call))
                telemetry.routed(worker, call)
                # 5. Its events, until its result.
                result: frames.Result | None = None
                try:
                    while result is None:
                        async with self._deadline(deadline, agent_id, seconds, cid):
                            try:
                                item = await call.next()
                            except AgentTimeout:
                                # The worker's own run timeout (the seconds left): report the
                                # deadline the caller asked for.
                                raise self._timed_out(agent_id, cid, seconds) from None
                            except AxonError:
                                if my_turn.interrupted:
                                    raise RunInterrupted(cid) from None
                                raise
                        if isinstance(item, frames.Result):
                            result = item
                        else:
                            if isinstance(item, TextDelta):
                                telemetry.text()
                            yield item
                finally:
                    if result is None:
                        worker.cancel_run(call)
                # 6. The commit point: only a run whose result arrived is ever written.
                assert result is not None
                with telemetry.committing():
                    try:
                        await self._store.commit(
                            cid,
                            agent_id=agent_id,
                            expected_revision=history.revision,
                            messages=result.messages,
                        )
                    except StoreConflict:
                        # Another orchestrator sharing the store committed to this
                        # conversation while this run was in progress: nothing of it is written.
                        raise ConversationBusy(cid, reason="conflict") from None
            # 7. The reply.
            telemetry.succeeded()
            yield FinalResult(
                Reply(
                    conversation_id=cid,
                    run_id=result.run_id,
                    agent_id=agent_id,
                    output_json=result.output,
                    usage_json=result.usage,
                )
            )
        except BaseException as exc:
            telemetry.failed(exc)
            raise
        finally:
            telemetry.end()

    @contextlib.asynccontextmanager
    async def _deadline(
        self, deadline: float, agent_id: str, seconds: float, cid: str
    ) -> AsyncGenerator[None]:
        try:
            async with asyncio.timeout_at(deadline):
                yield
        except TimeoutError:
            raise self._timed_out(agent_id, cid, seconds) from None

    def _timed_out(self, agent_id: str, cid: str, seconds: float) -> AgentTimeout:
        self.events.emit(
            "run.timeout", logging.WARNING, agent=agent_id, conversation=cid, timeout_s=seconds
        )
        return AgentTimeout(agent_id, timeout=seconds)

    # -- conversations and agents ----------------------------------------------------------------

    async def history(
        self, conversation_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[Any]:
        """The conversation's committed history as pydantic-ai ``ModelMessage`` objects (empty
        for an unknown conversation); ``offset``/``limit`` page through it by message."""
        from pydantic_ai import ModelMessagesTypeAdapter

        page = await self.load_conversation(conversation_id, offset=offset, limit=limit)
        return list(ModelMessagesTypeAdapter.validate_json(page.messages))

    async def export_conversation(self, conversation_id: str) -> bytes:
        """The conversation's committed history as pydantic-ai JSON (``ModelMessagesTypeAdapter``
        format, loadable with ``ModelMessagesTypeAdapter.validate_json``)."""
        return (await self.load_conversation(conversation_id)).messages

    async def load_conversation(
        self, conversation_id: str, *, offset: int = 0, limit: int | None = None
    ) -> History:
        """The conversation's committed history as pydantic-ai JSON bytes, with its revision
        (the number of runs committed; 0 for a conversation that does not exist);
        ``offset``/``limit`` page through it by message."""
        start, stop = check_page(offset, limit)
        stored = await self._store.load(check_conversation_id(conversation_id))
        if start == 0 and stop is None:
            return stored
        return History(slice_json_array(stored.messages, start, stop), stored.revision)

    async def check_ready(self, *, store_timeout: float = 2.0) -> Readiness:
        """Whether this runtime can serve: the store answers within ``store_timeout`` and every
        agent that is not FAILED has a RUNNING worker (``/readyz``)."""
        store_error: str | None = None
        try:
            async with asyncio.timeout(store_timeout):
                await self._store.ping()
        except StoreUnavailable as exc:
            store_error = exc.message
        except TimeoutError:
            store_error = f"the store did not answer within {store_timeout:g}s"
        agents = self.agents()
        waiting = [a.id for a in agents if a.state != AgentState.FAILED and not a.serving]
        return Readiness(
            ready=self._started and store_error is None and not waiting,
            store_error=store_error,
            agents={a.id: a.state for a in agents},
            not_serving=waiting,
        )

    async def list_conversations(
        self, agent_id: str | None = None, *, limit: int = 100, after: str | None = None
    ) -> list[ConversationInfo]:
        """Conversations (of ``agent_id``, or all), ordered by id, ``limit`` at a time; pass the
        last id seen as ``after`` for the next page."""
        if agent_id is not None:
            self.hosted(agent_id)
        _, stop = check_page(0, limit)
        if stop is None or stop > 1000:
            raise InvalidRequest("limit must be an integer from 1 to 1000", field="limit")
        if after is not None:
            check_conversation_id(after)
        return await self._store.list_conversations(agent_id, limit=stop, after=after)

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Forget a conversation's history; whether it existed."""
        cid = check_conversation_id(conversation_id)
        async with self._locks.hold(cid):
            return await self._store.delete(cid)

    def agents(self) -> list[AgentStatus]:
        """The status of every agent and its workers, in config order."""
        return [agent.status() for agent in self._agents.values()]

    def agent(self, agent_id: str) -> AgentStatus:
        """One agent's status (``AgentNotFound`` for an unknown id)."""
        return self.hosted(agent_id).status()

    async def restart_agent(self, agent_id: str) -> AgentStatus:
        """Restart an agent by hand (also brings a FAILED agent back); returns once it is
        RUNNING again or FAILED."""
        return await self.hosted(agent_id).restart()

    async def wait_serving(self, agent_id: str) -> AgentState:
        """Wait until the agent is settled (RUNNING, FAILED or STOPPED); its state."""
        return await self.hosted(agent_id).wait_serving()

    def hosted(self, agent_id: str) -> Agent:
        """The live :class:`~axon.agent.Agent` of ``agent_id``: its workers, its status as it
        changes (``wait_for``), restart. ``AgentNotFound`` for an unknown id."""
        agent = self._agents.get(agent_id) if isinstance(agent_id, str) else None  # pyright: ignore[reportUnnecessaryIsInstance]
        if agent is None:
            if not self._started:
                raise RuntimeError("Axon is not started: use 'async with' or await start()")
            raise AgentNotFound(agent_id)
        return agent
