"""The HTTP edge's own errors (``axon.http.errors``): their status, their ``Retry-After``, and
the pickle and dict round trips every Axon error survives; and the connection gate's count."""

from __future__ import annotations

import pickle

import pytest

from axon.errors import (
    AxonError,
    ForbiddenHost,
    ForbiddenOrigin,
    RequestTimeout,
    ShuttingDown,
    TooManyConnections,
)
from axon.http.connections import ConnectionGate
from axon.http.errors import retry_after_header, status_of

EDGE: list[tuple[AxonError, int, str, dict[str, str]]] = [
    (ShuttingDown("bye", retry_after=2.5), 503, "shutting_down", {"Retry-After": "3"}),
    (ForbiddenHost("evil.example:80"), 421, "forbidden_host", {}),
    (ForbiddenOrigin("null"), 403, "forbidden_origin", {}),
    (ForbiddenOrigin("http://a.example", reason="no PUT"), 403, "forbidden_origin", {}),
    (TooManyConnections(1024), 503, "too_many_connections", {"Retry-After": "1"}),
    (RequestTimeout(10.0), 408, "request_timeout", {}),
]


@pytest.mark.parametrize(("error", "status", "error_type", "retry"), EDGE)
def test_edge_errors_status_and_retry_after(
    error: AxonError, status: int, error_type: str, retry: dict[str, str]
) -> None:
    assert status_of(error) == status
    assert error.type == error_type
    assert retry_after_header(error) == retry
    assert error.message


@pytest.mark.parametrize(("error", "status", "error_type", "retry"), EDGE)
def test_edge_errors_survive_pickle_and_dict(
    error: AxonError, status: int, error_type: str, retry: dict[str, str]
) -> None:
    for copy in (pickle.loads(pickle.dumps(error)), AxonError.from_dict(error.to_dict())):
        assert type(copy) is type(error)
        assert (copy.message, copy.facts) == (error.message, error.facts)
        assert status_of(copy) == status


def test_the_gate_admits_up_to_its_cap_and_frees_places() -> None:
    gate = ConnectionGate(max_connections=2, header_timeout=1.0)
    first, second, third = object(), object(), object()
    assert gate.admit(first)
    assert gate.admit(second)
    assert not gate.admit(third)
    assert gate.admitted == 2
    gate.release(third)  # never admitted: changes nothing
    assert gate.admitted == 2
    gate.release(first)
    gate.release(first)
    assert gate.admitted == 1
    assert gate.admit(third)
    assert not gate.admit(object())
