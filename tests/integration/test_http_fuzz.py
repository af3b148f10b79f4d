"""Property-based fuzzing of the HTTP API from its OpenAPI document (schemathesis), against one
real ``axon serve`` subprocess.

What is checked, for every operation in the document, on positive (schema-valid) and negative
(schema-invalid) requests, including schemathesis' coverage phase (boundary values, missing and
unexpected parameters, wrong types, unsupported methods):

- no 5xx for anything a client sends: ``no_server_error`` below replaces schemathesis'
  ``not_a_server_error`` (it looks into SSE ``error`` events too). The one 5xx a valid request
  may earn is 504 when it asked for a deadline too short to meet (``timeout`` < 5 s); the agents
  here never fail on their own, so 502/503 are failures;
- every response conforms to the document: its status is documented, its content type and
  body (JSON, or each Server-Sent Event) match the documented schema, ``Allow`` on a 405 lists
  the documented methods;
- schema-valid requests are accepted and schema-invalid ones are rejected with 4xx (never 5xx);
- ``axon serve`` logs no ``http.internal_error`` during the whole run and exits 0 on SIGTERM,
  leaving no worker process behind (checked at teardown);
- the document served at ``/openapi.json`` is the one fuzzed here.

The fuzzed document is built in-process by ``create_app`` over the server's config at import
time, because schemathesis needs the schema when pytest collects the tests and the server's
port is only known later (``schemathesis.pytest.from_fixture`` would solve
that, but does not work with pytest 9: it reads ``request.node._nodeid``);
``test_served_document_is_the_fuzzed_one`` proves the server serves the same document.

Choices:

- The agents are the weather example (fast, deterministic, two tool calls per run). The
  misbehaving agent is left out on purpose: a fuzzed prompt such as ``crash:kill`` or
  ``hang:60`` would make its 502/503/504 depend on which prompts hypothesis happens to draw
  and restart its workers mid-run; its error statuses are tested one by one elsewhere.
- Random strings almost never name an agent or a conversation that exists, so schemathesis
  dictionaries mix the real agent ids and conversations seeded before the run into the
  generated path/query/body values (positive cases only: an entry valid for the schema is
  never used where a negative case needs an invalid value). Deletion is aimed at its own
  conversations so that the ones read keep existing. ``POST .../messages`` always names a real
  agent (so every generated body reaches the runtime: 60 examples); unknown agents are
  fuzzed through the other ``{agent_id}`` operations.
- ``POST /v1/agents/{agent_id}/restart`` restarts real worker processes (~1 s each), so that
  operation gets 5 examples; every other operation gets 30. Generation is derandomized (a
  fixed seed and no example database), so a CI run is reproducible. The module takes ~20 s.
- Nothing else is excluded: every operation and every built-in check runs.

``test_document_and_server_agree_on_edge_bodies`` adds the edge values hypothesis is unlikely
to draw (a whitespace-only prompt, timeouts and prompt lengths at and past the limits).
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import psutil
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.checks import CheckContext, not_a_server_error

from axon import Axon
from axon.config import parse_config
from axon.http.app import create_app

from ..conftest import WEATHER_SERVER_TOML, pid_alive

AGENTS = ["python_agent_1", "python_agent_2"]
KEPT = [f"fuzz-keep-{n}" for n in range(3)]  # read and continued by fuzzed requests
DOOMED = [f"fuzz-drop-{n}" for n in range(5)]  # deleted by fuzzed requests

DEADLINE_TOO_SHORT = 5.0
"""Seconds: a request with a smaller ``timeout`` may end with 504; no other may."""

SEED = 20261124
MAX_EXAMPLES = 30
RESTART_EXAMPLES = 5
MESSAGE_EXAMPLES = 60

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
        "checks": {
            # Invalid input must be rejected with a 4xx: the default also accepts any 5xx.
            "negative_data_rejection": {
                "expected-statuses": ["400", "404", "405", "406", "409", "413", "415", "422"]
            },
        },
        "dictionaries": {
            "agents": {"values": AGENTS},
            "kept": {"values": KEPT},
            "doomed": {"values": DOOMED},
        },
        "parameters": {
            "path.agent_id": {"dictionary": "agents", "probability": 0.7},
            "query.agent_id": {"dictionary": "agents", "probability": 0.5},
            "path.conversation_id": {"dictionary": "kept", "probability": 0.6},
            "query.after": {"dictionary": "kept", "probability": 0.3},
            "body.conversation_id": {"dictionary": "kept", "probability": 0.3},
        },
        "operations": [
            {
                # Every request reaches a real agent (unknown agents: the other operations).
                "include-path": "/v1/agents/{agent_id}/messages",
                "parameters": {"path.agent_id": AGENTS[0]},
                "generation": {"max-examples": MESSAGE_EXAMPLES},
            },
            {
                "include-method": "DELETE",
                "include-path": "/v1/conversations/{conversation_id}",
                "parameters": {
                    "path.conversation_id": {"dictionary": "doomed", "probability": 0.6}
                },
            },
            {
                "include-path": "/v1/agents/{agent_id}/restart",
                "generation": {"max-examples": RESTART_EXAMPLES},
            },
        ],
    }
)

# Built from the server's own config, in case the document ever reflects it (agent ids, limits).
DOCUMENT: dict[str, Any] = create_app(
    Axon(config=parse_config(tomllib.loads(WEATHER_SERVER_TOML), check_imports=False))
).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


# ----------------------------------------------------------------------------------- server


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ``axon serve`` for the module; at teardown: SIGTERM -> exit 0, no worker left, and
    no internal error logged during the run."""
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    config = workdir / "axon.toml"
    config.write_text(WEATHER_SERVER_TOML)
    log = workdir / "serve.log"
    command = [sys.executable, "-m", "axon.cli", "serve", str(config)]
    command += ["--listen", "127.0.0.1:0", "--log-format", "json"]
    with log.open("wb") as err:
        process = subprocess.Popen(
            command, cwd=workdir, stdout=subprocess.PIPE, stderr=err, text=True
        )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    url = None
    try:
        while url is None:
            line = lines.get(timeout=90)
            assert line is not None, f"axon serve exited early:\n{log.read_text()}"
            if match := re.search(r"axon is serving .* on (http://\S+)", line):
                url = match.group(1)
        workers = {p.pid for p in psutil.Process(process.pid).children(recursive=True)}
        _seed_conversations(url)
        yield url
        workers |= {p.pid for p in psutil.Process(process.pid).children(recursive=True)}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        reader.join(10)
        process.stdout.close()
    logs = log.read_text(errors="replace")
    assert code == 0, f"axon serve exited with {code}:\n{logs}"
    assert not {pid for pid in workers if pid_alive(pid)}, "worker processes outlived the server"
    internal = [line for line in logs.splitlines() if "internal_error" in line]
    assert not internal, "the server hit unexpected exceptions:\n" + "\n".join(internal)


def _seed_conversations(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for n, conversation_id in enumerate(KEPT + DOOMED):
            response = client.post(
                f"/v1/agents/{AGENTS[n % 2]}/messages",
                json={"prompt": f"weather in Seed{n}", "conversation_id": conversation_id},
            )
            assert response.status_code == 200, response.text


# ------------------------------------------------------------------------------------ checks


def _sse_errors(response: schemathesis.Response) -> list[dict[str, Any]]:
    """The ``error`` payloads of an event-stream response."""
    if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return []
    found = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") == "error":
            found.append(json.loads(fields["data"])["error"])
    return found


def _requested_timeout(case: Case) -> float | None:
    body = case.body
    if isinstance(body, dict):
        timeout = body.get("timeout")  # pyright: ignore[reportUnknownMemberType]
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            return float(timeout)
    return None


def no_server_error(ctx: CheckContext, response: schemathesis.Response, case: Case) -> bool:
    """No 5xx (status, or SSE ``error`` event) except 504 for a deadline that was too short."""
    statuses = [response.status_code] + [int(e.get("status", 0)) for e in _sse_errors(response)]
    for status in statuses:
        timeout = _requested_timeout(case)
        too_short = timeout is not None and timeout < DEADLINE_TOO_SHORT
        if status >= 500 and not (status == 504 and too_short):
            raise AssertionError(
                f"{status} for {case.method} {case.formatted_path} (timeout={timeout}): "
                f"{response.text[:500]}"
            )
    return True


# ------------------------------------------------------------------------------------- tests


@schema.parametrize()
def test_api_conforms_to_its_document(case: Case, server_url: str) -> None:
    case.call_and_validate(
        base_url=server_url,
        timeout=30,
        excluded_checks=[not_a_server_error],
        additional_checks=[no_server_error],
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"prompt": " \t "}, id="whitespace-prompt"),
        pytest.param({"prompt": "weather in Oslo", "timeout": 86_400.0}, id="timeout-1-day"),
        pytest.param({"prompt": "weather in Oslo", "timeout": 3_600.0}, id="timeout-1-hour"),
        pytest.param({"prompt": "weather in Oslo", "timeout": 0}, id="timeout-0"),
        pytest.param({"prompt": "x" * 100_000}, id="prompt-100000-chars"),
        pytest.param({"prompt": "x" * 100_001}, id="prompt-100001-chars"),
    ],
)
def test_document_and_server_agree_on_edge_bodies(body: dict[str, Any], server_url: str) -> None:
    """Edge values hypothesis is unlikely to draw: a body the document calls valid is accepted
    (200), one it calls invalid is rejected with 422 (the document states the server's
    limits)."""
    request_schema = DOCUMENT["components"]["schemas"]["MessageRequest"]
    valid = jsonschema_rs.validator_for(request_schema).is_valid(body)
    response = httpx.post(f"{server_url}/v1/agents/{AGENTS[0]}/messages", json=body, timeout=30)
    assert response.status_code == (200 if valid else 422), (
        f"the document calls this body {'valid' if valid else 'invalid'}: {response.text}"
    )


def test_served_document_is_the_fuzzed_one(server_url: str) -> None:
    served = httpx.get(f"{server_url}/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == DOCUMENT
