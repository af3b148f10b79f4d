"""Worker and agent state machines: the transition tables and StateCell."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from enum import StrEnum
from itertools import product
from typing import TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from axon.supervisor.states import (
    AGENT_TRANSITIONS,
    WORKER_TRANSITIONS,
    AgentState,
    IllegalTransition,
    StateCell,
    StateChange,
    WorkerState,
)


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# The expected tables, written out independently of the implementation so that any change to
# WORKER_TRANSITIONS / AGENT_TRANSITIONS is caught here.
EXPECTED_WORKER_EDGES: frozenset[tuple[str, str]] = frozenset(
    {
        ("starting", "running"),
        ("starting", "exited"),
        ("starting", "stopping"),
        ("running", "exited"),
        ("running", "stopping"),
        ("stopping", "exited"),
        ("exited", "backoff"),
        ("exited", "stopped"),
        ("backoff", "starting"),
        ("backoff", "stopped"),
        ("stopped", "starting"),
    }
)

EXPECTED_AGENT_EDGES: frozenset[tuple[str, str]] = frozenset(
    {
        ("starting", "running"),
        ("starting", "restarting"),
        ("starting", "failed"),
        ("starting", "stopping"),
        ("running", "restarting"),
        ("running", "stopping"),
        ("running", "stopped"),
        ("restarting", "running"),
        ("restarting", "failed"),
        ("restarting", "stopping"),
        ("restarting", "stopped"),
        ("failed", "starting"),
        ("failed", "stopping"),
        ("stopping", "stopped"),
        ("stopped", "starting"),
    }
)


E = TypeVar("E", bound=StrEnum)


def _pairs(enum: type[E]) -> list[tuple[E, E]]:
    return list(product(enum, enum))


def _edge_id(pair: tuple[StrEnum, StrEnum]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_state_values() -> None:
    assert [s.value for s in WorkerState] == [
        "starting",
        "running",
        "stopping",
        "exited",
        "backoff",
        "stopped",
    ]
    assert [s.value for s in AgentState] == [
        "starting",
        "running",
        "restarting",
        "failed",
        "stopping",
        "stopped",
    ]


@pytest.mark.parametrize(
    ("table", "enum"),
    [(WORKER_TRANSITIONS, WorkerState), (AGENT_TRANSITIONS, AgentState)],
    ids=["worker", "agent"],
)
def test_table_covers_every_state(
    table: Mapping[StrEnum, frozenset[StrEnum]], enum: type[StrEnum]
) -> None:
    assert set(table) == set(enum)
    assert all(targets <= set(enum) for targets in table.values())
    with pytest.raises(TypeError):
        table[next(iter(enum))] = frozenset()  # type: ignore[index]


@pytest.mark.parametrize("pair", _pairs(WorkerState), ids=_edge_id)
def test_worker_transition_legal(pair: tuple[WorkerState, WorkerState]) -> None:
    current, target = pair
    expected = (current.value, target.value) in EXPECTED_WORKER_EDGES
    assert (target in WORKER_TRANSITIONS[current]) is expected
    cell = StateCell(current, WORKER_TRANSITIONS, FakeClock())
    assert cell.can_change(target) is expected
    if expected:
        assert cell.change(target).current is target
    else:
        with pytest.raises(IllegalTransition):
            cell.change(target)
    assert cell.state is (target if expected else current)


@pytest.mark.parametrize("pair", _pairs(AgentState), ids=_edge_id)
def test_agent_transition_legal(pair: tuple[AgentState, AgentState]) -> None:
    current, target = pair
    expected = (current.value, target.value) in EXPECTED_AGENT_EDGES
    assert (target in AGENT_TRANSITIONS[current]) is expected
    cell = StateCell(current, AGENT_TRANSITIONS, FakeClock())
    assert cell.can_change(target) is expected
    if expected:
        assert cell.change(target).current is target
    else:
        with pytest.raises(IllegalTransition):
            cell.change(target)
    assert cell.state is (target if expected else current)


def test_worker_restart_always_goes_through_backoff() -> None:
    assert WorkerState.STARTING not in WORKER_TRANSITIONS[WorkerState.EXITED]
    assert WorkerState.BACKOFF in WORKER_TRANSITIONS[WorkerState.EXITED]


def test_no_self_edges() -> None:
    for state, targets in WORKER_TRANSITIONS.items():
        assert state not in targets
    for agent_state, agent_targets in AGENT_TRANSITIONS.items():
        assert agent_state not in agent_targets


def test_initial_since_is_creation_time() -> None:
    clock = FakeClock(7.5)
    cell = StateCell(WorkerState.STARTING, WORKER_TRANSITIONS, clock)
    assert cell.state is WorkerState.STARTING
    assert cell.since == 7.5


def test_change_stamps_time_and_notifies() -> None:
    clock = FakeClock(10.0)
    cell = StateCell(WorkerState.STARTING, WORKER_TRANSITIONS, clock)
    first: list[StateChange[WorkerState]] = []
    second: list[StateChange[WorkerState]] = []
    cell.subscribe(first.append)
    cell.subscribe(second.append)

    clock.now = 12.25
    change = cell.change(WorkerState.RUNNING, pid=4242)

    assert change == StateChange(
        previous=WorkerState.STARTING,
        current=WorkerState.RUNNING,
        at=12.25,
        info={"pid": 4242},
    )
    assert cell.state is WorkerState.RUNNING
    assert cell.since == 12.25
    assert first == [change]
    assert second == [change]

    clock.now = 13.0
    change2 = cell.change(WorkerState.EXITED)
    assert change2.previous is WorkerState.RUNNING
    assert change2.at == 13.0
    assert dict(change2.info) == {}
    assert first == [change, change2]


def test_info_is_read_only_copy() -> None:
    cell = StateCell(WorkerState.STARTING, WORKER_TRANSITIONS, FakeClock())
    change = cell.change(WorkerState.RUNNING, pid=1)
    with pytest.raises(TypeError):
        change.info["pid"] = 2  # type: ignore[index]
    assert change.info["pid"] == 1


def test_unsubscribe_stops_notifications() -> None:
    cell = StateCell(WorkerState.STARTING, WORKER_TRANSITIONS, FakeClock())
    seen: list[StateChange[WorkerState]] = []
    kept: list[StateChange[WorkerState]] = []
    unsubscribe = cell.subscribe(seen.append)
    cell.subscribe(kept.append)

    cell.change(WorkerState.RUNNING)
    unsubscribe()
    unsubscribe()  # idempotent
    cell.change(WorkerState.STOPPING)

    assert [c.current for c in seen] == [WorkerState.RUNNING]
    assert [c.current for c in kept] == [WorkerState.RUNNING, WorkerState.STOPPING]


def test_listener_unsubscribed_during_delivery_is_not_called() -> None:
    cell = StateCell(WorkerState.STARTING, WORKER_TRANSITIONS, FakeClock())
    late: list[StateChange[WorkerState]] = []

    def first(_change: StateChange[WorkerState]) -> None:
        unsubscribe_late()

    cell.subscribe(first)
    unsubscribe_late = cell.subscribe(late.append)
    cell.change(WorkerState.RUNNING)
    assert late == []


def test_same_listener_subscribed_twice_is_called_twice() -> None:
    cell = StateCell(WorkerState.STARTING, WORKER_TRANSITIONS, FakeClock())
    seen: list[StateChange[WorkerState]] = []
    unsubscribe_first = cell.subscribe(seen.append)
    cell.subscribe(seen.append)
    cell.change(WorkerState.RUNNING)
    assert len(seen) == 2
    unsubscribe_first()
    cell.change(WorkerState.EXITED)
    assert len(seen) == 3


def test_illegal_transition_carries_states_and_leaves_state_untouched() -> None:
    clock = FakeClock(1.0)
    cell = StateCell(WorkerState.RUNNING, WORKER_TRANSITIONS, clock)
    seen: list[StateChange[WorkerState]] = []
    cell.subscribe(seen.append)
    clock.now = 5.0

    with pytest.raises(IllegalTransition) as info:
        cell.change(WorkerState.BACKOFF)

    assert info.value.current is WorkerState.RUNNING
    assert info.value.target is WorkerState.BACKOFF
    assert "running -> backoff" in str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert cell.state is WorkerState.RUNNING
    assert cell.since == 1.0
    assert seen == []


def test_change_to_same_state_is_illegal() -> None:
    cell = StateCell(AgentState.RUNNING, AGENT_TRANSITIONS, FakeClock())
    assert not cell.can_change(AgentState.RUNNING)
    with pytest.raises(IllegalTransition):
        cell.change(AgentState.RUNNING)


def test_illegal_transition_pickles() -> None:
    err = IllegalTransition(AgentState.FAILED, AgentState.RUNNING)
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, IllegalTransition)
    assert copy.current is AgentState.FAILED
    assert copy.target is AgentState.RUNNING
    assert str(copy) == str(err)


def test_listener_error_does_not_starve_other_listeners() -> None:
    cell = StateCell(WorkerState.STARTING, WORKER_TRANSITIONS, FakeClock())
    seen: list[StateChange[WorkerState]] = []

    def broken(_change: StateChange[WorkerState]) -> None:
        raise KeyError("boom")

    cell.subscribe(broken)
    cell.subscribe(seen.append)
    with pytest.raises(KeyError, match="boom"):
        cell.change(WorkerState.RUNNING)
    assert cell.state is WorkerState.RUNNING
    assert [c.current for c in seen] == [WorkerState.RUNNING]
    # The cell is still usable afterwards.
    with pytest.raises(KeyError):
        cell.change(WorkerState.EXITED)
    assert [c.current for c in seen] == [WorkerState.RUNNING, WorkerState.EXITED]


def test_change_from_listener_is_delivered_in_order() -> None:
    clock = FakeClock()
    cell = StateCell(WorkerState.RUNNING, WORKER_TRANSITIONS, clock)
    order_a: list[tuple[WorkerState, WorkerState]] = []
    order_b: list[tuple[WorkerState, WorkerState]] = []

    def schedule_restart(change: StateChange[WorkerState]) -> None:
        order_a.append((change.previous, change.current))
        if change.current is WorkerState.EXITED:
            nested = cell.change(WorkerState.BACKOFF, delay=0.0)
            # Takes effect at once even though delivery is deferred.
            assert cell.state is WorkerState.BACKOFF
            assert nested.previous is WorkerState.EXITED

    cell.subscribe(schedule_restart)
    cell.subscribe(lambda change: order_b.append((change.previous, change.current)))

    cell.change(WorkerState.EXITED)

    expected = [
        (WorkerState.RUNNING, WorkerState.EXITED),
        (WorkerState.EXITED, WorkerState.BACKOFF),
    ]
    assert order_a == expected
    assert order_b == expected
    assert cell.state is WorkerState.BACKOFF


class WorkerCellMachine(RuleBasedStateMachine):
    """Drives a StateCell[WorkerState] with random targets and a moving fake clock."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.cell = StateCell(WorkerState.STOPPED, WORKER_TRANSITIONS, self.clock)
        self.model_state = WorkerState.STOPPED
        self.model_since = 0.0
        self.seen: list[StateChange[WorkerState]] = []
        self.accepted: list[StateChange[WorkerState]] = []
        self.cell.subscribe(self.seen.append)

    @rule(
        goal=st.sampled_from(list(WorkerState)),
        dt=st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
    )
    def change(self, goal: WorkerState, dt: float) -> None:
        self.clock.now += dt
        legal = (self.model_state.value, goal.value) in EXPECTED_WORKER_EDGES
        assert self.cell.can_change(goal) is legal
        if legal:
            change = self.cell.change(goal, step=len(self.accepted))
            assert change.previous is self.model_state
            assert change.current is goal
            assert change.at == self.clock.now
            self.accepted.append(change)
            self.model_state = goal
            self.model_since = self.clock.now
        else:
            with pytest.raises(IllegalTransition) as info:
                self.cell.change(goal)
            assert info.value.current is self.model_state
            assert info.value.target is goal

    @invariant()
    def matches_model(self) -> None:
        assert self.cell.state is self.model_state
        assert self.cell.since == self.model_since
        assert self.seen == self.accepted


WorkerCellMachine.TestCase.settings = settings(max_examples=200, database=None)
TestWorkerCell = WorkerCellMachine.TestCase
