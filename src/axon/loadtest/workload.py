"""The load: who sends what, when, and when it stops.

Two ways to apply load, because they answer different questions:

- **Closed loop** (``concurrency=N``): N virtual users, each sending its next request as soon as
  its previous one ended. It measures the throughput the target sustains at N in flight; since a
  slow answer delays the next request, it understates the latency a stream of independent
  callers would see.
- **Open loop** (``rate=R``): a new session starts every 1/R seconds whether or not earlier ones
  finished, so a slow target piles up requests in flight and the tail latency shows. At most
  ``max_in_flight`` sessions run at once (the generator's own resources are finite); an arrival
  due while that many are in flight is not sent and is counted in :attr:`LoadReport.missed`.

Either way a user (or session) runs conversations of ``turns`` requests, one after the other in
the same conversation (``bench-<run>-<n>``, chosen here so that a failed first turn still has
one), each conversation on the next agent of ``agents`` in turn. A failed turn is recorded and
the conversation goes on. The run stops issuing requests at ``requests`` requests or after
``duration`` seconds, whichever comes first (a conversation starts with all its turns reserved
in the request budget, so only the last one may be short), then waits for the requests in
flight, each bounded by its deadline plus ``grace``: the whole run ends by itself.

Every prompt is ``prompt`` then ``tag``, both formatted with ``{user}``, ``{turn}``,
``{request}``, ``{agent}`` and ``{conversation}``; the default tag (`` [u3 t2 r17]``) makes each
prompt unique, so every exchange can be found in its conversation's history. Use ``tag=""``
for an agent that needs its prompt verbatim.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from axon.client import error_type_of
from axon.errors import AxonError
from axon.loadtest.records import OK, LoadReport, RequestRecord
from axon.loadtest.targets import Target

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_TAG",
    "DEFAULT_TIMEOUT",
    "GRACE",
    "MAX_IN_FLIGHT",
    "Plan",
    "PlanError",
    "run_load",
]

DEFAULT_PROMPT = "What is the weather in Paris?"
"""Makes the demo's weather agent call both its tools before it answers."""
DEFAULT_TAG = " [u{user} t{turn} r{request}]"
DEFAULT_TIMEOUT = 60.0
"""The deadline of a request when neither the plan nor the target gives one (Axon's default
agent timeout)."""
GRACE = 5.0
"""Seconds past its deadline a request is given before the client gives up (``client_timeout``)."""
MAX_IN_FLIGHT = 1000
"""Default cap of open-loop sessions in flight."""

_FIELDS = ("user", "turn", "request", "agent", "conversation")


class PlanError(ValueError):
    """The plan cannot be run (e.g. neither or both of ``concurrency`` and ``rate``)."""


@dataclass(frozen=True)
class Plan:
    """What load to apply. Exactly one of ``concurrency`` / ``rate``; at least one of
    ``requests`` / ``duration``."""

    agents: Sequence[str]
    concurrency: int | None = None
    rate: float | None = None
    """Open loop: sessions started per second (requests per second when ``turns`` is 1)."""
    requests: int | None = None
    duration: float | None = None
    turns: int = 1
    stream: bool = False
    timeout: float | None = None
    """The run timeout sent with each request (None: the agent's own)."""
    prompt: str = DEFAULT_PROMPT
    tag: str = DEFAULT_TAG
    max_in_flight: int = MAX_IN_FLIGHT
    grace: float = GRACE

    def __post_init__(self) -> None:
        if not self.agents:
            raise PlanError("give at least one agent")
        if (self.concurrency is None) == (self.rate is None):
            raise PlanError("give exactly one of concurrency (closed loop) and rate (open loop)")
        if self.concurrency is not None and self.concurrency < 1:
            raise PlanError("concurrency must be at least 1")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise PlanError("rate must be a positive number of sessions per second")
        if self.requests is None and self.duration is None:
            raise PlanError("give requests or duration (or both): a load must end by itself")
        if self.requests is not None and self.requests < 1:
            raise PlanError("requests must be at least 1")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise PlanError("duration must be a positive number of seconds")
        if self.turns < 1:
            raise PlanError("turns must be at least 1")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise PlanError("timeout must be a positive number of seconds")
        if self.max_in_flight < 1:
            raise PlanError("max_in_flight must be at least 1")
        dummy = dict.fromkeys(_FIELDS, 0)
        for name, template in (("prompt", self.prompt), ("tag", self.tag)):
            try:
                template.format(**dummy)
            except (KeyError, IndexError, ValueError) as exc:
                raise PlanError(
                    f"{name} {template!r} is not a valid template ({type(exc).__name__}: {exc});"
                    f" fields: {', '.join('{' + f + '}' for f in _FIELDS)}; write {{{{ and }}}}"
                    " for literal braces"
                ) from None

    @property
    def mode(self) -> str:
        return "closed" if self.concurrency is not None else "open"


async def run_load(
    target: Target,
    plan: Plan,
    on_result: Callable[[RequestRecord], None] | None = None,
) -> LoadReport:
    """Apply ``plan`` to ``target`` and return the report once every request has ended.

    ``on_result`` is called with each :class:`RequestRecord` as soon as its request ends (in
    the event loop: keep it quick). Request failures are data, never raised; cancelling this
    coroutine cancels the requests in flight.
    """
    return await _Run(target, plan, on_result).run()


class _Run:
    def __init__(
        self,
        target: Target,
        plan: Plan,
        on_result: Callable[[RequestRecord], None] | None,
    ) -> None:
        self.target = target
        self.plan = plan
        self.on_result = on_result
        self.run_id = secrets.token_hex(4)
        self.requests = itertools.count()
        self.conversations = itertools.count()
        self.issued = 0
        self.started = time.monotonic()
        self.end = math.inf if plan.duration is None else self.started + plan.duration
        self.report = LoadReport(mode=plan.mode, started=self.started, ended=self.started)

    def reserve(self, now: float) -> int:
        """How many turns the next conversation may have: all of them while the request budget
        lasts (so only the last conversation may be cut short by it), 0 once the load is over."""
        plan = self.plan
        if now >= self.end:
            return 0
        turns = plan.turns
        if plan.requests is not None:
            turns = min(turns, plan.requests - self.issued)
        self.issued += turns
        return turns

    async def run(self) -> LoadReport:
        if self.plan.concurrency is not None:
            async with asyncio.TaskGroup() as group:
                for user in range(self.plan.concurrency):
                    group.create_task(self.user(user, None))
        else:
            await self.open_loop(self.plan.rate or 1.0)
        self.report.ended = max((r.ended for r in self.report.records), default=time.monotonic())
        return self.report

    async def open_loop(self, rate: float) -> None:
        plan = self.plan
        in_flight: set[asyncio.Task[None]] = set()
        try:
            for session in itertools.count():
                due = self.started + session / rate
                if due >= self.end or (plan.requests is not None and self.issued >= plan.requests):
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(in_flight) >= plan.max_in_flight:
                    self.report.missed += 1
                    continue
                task = asyncio.create_task(self.user(session, due))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)
        finally:
            for task in in_flight:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def user(self, user: int, scheduled: float | None) -> None:
        """A closed-loop user's conversations until the load ends; an open-loop session's one."""
        plan = self.plan
        while True:
            # An open-loop session was due before the end, even if it started a little after.
            turns = self.reserve(time.monotonic() if scheduled is None else scheduled)
            if not turns:
                return
            number = next(self.conversations)
            agent = plan.agents[number % len(plan.agents)]
            conversation = f"bench-{self.run_id}-{number}"
            for turn in range(turns):
                if turn and time.monotonic() >= self.end:
                    return
                await self.one(agent, conversation, user, turn, scheduled)
                scheduled = None  # only a session's first request was due at a set time
            if plan.concurrency is None:
                return

    async def one(
        self, agent: str, conversation: str, user: int, turn: int, scheduled: float | None
    ) -> None:
        plan = self.plan
        index = next(self.requests)
        fields = {
            "user": user,
            "turn": turn,
            "request": index,
            "agent": agent,
            "conversation": conversation,
        }
        prompt = plan.prompt.format(**fields) + plan.tag.format(**fields)
        seconds = plan.timeout or self.target.agent_timeout(agent) or DEFAULT_TIMEOUT
        output: object = None
        error: str | None = None
        maybe_committed = False
        token_times: list[float] = []
        started = time.monotonic()
        try:
            async with asyncio.timeout(seconds + plan.grace):
                exchange = await self.target.send(
                    agent, prompt, conversation, plan.timeout, plan.stream
                )
            outcome, output, token_times = OK, exchange.output, exchange.token_times
        except AxonError as exc:
            outcome, error = error_type_of(exc), exc.message
            maybe_committed = exc.facts.get("maybe_committed") is True
        except TimeoutError:
            outcome = "client_timeout"
            error = f"no answer within the deadline ({seconds:g}s) plus {plan.grace:g}s"
        except Exception as exc:  # a bug or an unexpected answer: data, not the end of the load
            outcome, error = "client_error", f"{type(exc).__name__}: {exc}"
        record = RequestRecord(
            index=index,
            agent=agent,
            conversation_id=conversation,
            user=user,
            turn=turn,
            prompt=prompt,
            started=started,
            ended=time.monotonic(),
            deadline=started + seconds,
            outcome=outcome,
            output=output,
            error=error,
            maybe_committed=maybe_committed,
            scheduled=scheduled,
            token_times=tuple(token_times),
        )
        self.report.records.append(record)
        if self.on_result is not None:
            self.on_result(record)
