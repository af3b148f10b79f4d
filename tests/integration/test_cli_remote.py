"""The remote ``axon`` commands (send, agents, history, restart) as a user runs them: each one a
real ``python -m axon.cli`` subprocess against a real ``axon serve``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from axon.cli.remote import _error_line, exit_code_of  # pyright: ignore[reportPrivateUsage]
from axon.client import AxonClient, error_from_body, error_type_of
from axon.errors import (
    AgentCrashed,
    AgentNotFound,
    AgentRunFailed,
    AgentTimeout,
    AgentUnavailable,
    AxonError,
    ConnectionLost,
    ConversationBusy,
    ConversationNotFound,
    InvalidRequest,
    Overloaded,
    RemoteError,
    ServerUnreachable,
    StoreUnavailable,
    Unauthorized,
)

from ..conftest import ServeAxon

AXON = [sys.executable, "-m", "axon.cli"]
TOKEN = "cli-test-token-0123456789"
CONVERSATION_NOTE = re.compile(r"conversation (\S+) \(continue it with --conversation \1\)")


@dataclass
class Run:
    code: int
    out: str
    err: str


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The CLI's environment: no server settings inherited, and stdout buffered as it is for
    a user (so only the CLI's own flushes can make a stream's deltas arrive one by one)."""
    unset = ("AXON_URL", "AXON_API_TOKEN", "PYTHONUNBUFFERED")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return {**env, "COLUMNS": "200", **(extra or {})}


async def _spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *AXON,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(env),
    )


async def axon(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> Run:
    """Run ``axon ARGS`` to completion without blocking the event loop (the server's)."""
    proc = await _spawn(*args, env=env)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"axon {' '.join(args)} did not finish in {timeout}s") from None
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def assert_error(run: Run, code: int, error_type: str) -> str:
    """The command failed with exit ``code`` and one line ``error: <type>: ...`` on stderr."""
    assert run.code == code, run
    assert "Traceback" not in run.err + run.out, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run
    assert lines[0].startswith(f"error: {error_type}: "), run
    return lines[0]


def conversation_of(run: Run) -> str:
    match = CONVERSATION_NOTE.search(run.err)
    assert match, run
    return match.group(1)


async def api_agents(url: str, token: str | None = None) -> dict[str, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        response = await http.get("/v1/agents")
    assert response.status_code == 200, response.text
    return {a["id"]: a for a in response.json()["agents"]}


def pids(agent: dict[str, Any]) -> list[int]:
    return [w["pid"] for w in agent["workers"]]


def table_rows(out: str) -> dict[str, list[str]]:
    """``axon agents``' table: agent id -> its cells (columns are 2+ spaces apart)."""
    lines = [line.rstrip() for line in out.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    assert header == ["agent", "state", "workers (pids)", "restarts", "in-flight", "last exit"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    return {row[0]: row[1:] for row in rows}


async def test_send_continue_and_history(serve_axon: ServeAxon) -> None:
    server = await serve_axon()
    url = ("--url", server.url)

    first = await axon("send", "python_agent_1", "What is the weather in Paris?", *url)
    assert first.code == 0, first
    answer = first.out.rstrip("\n")
    assert first.out == answer + "\n"
    assert "\n" not in answer  # stdout holds the answer only; the conversation id is on stderr
    assert answer.startswith("The weather in Paris is ")
    assert answer.endswith('(you asked: "What is the weather in Paris?")')
    cid = conversation_of(first)

    second = await axon(
        "send", "python_agent_1", "And in Rome?", "--conversation", cid, "--json", *url
    )
    assert second.code == 0, second
    assert second.err == ""  # --json: the reply body alone, on stdout
    reply = json.loads(second.out)
    assert reply["conversation_id"] == cid
    assert reply["agent_id"] == "python_agent_1"
    assert reply["output"].endswith('(you asked: "And in Rome?")')
    assert reply["usage"]["tool_calls"] == 2

    shown = await axon("history", cid, *url)
    assert shown.code == 0, shown
    lines = shown.out.splitlines()
    turns = [line for line in lines if line.startswith(("user: ", "assistant: "))]
    assert turns == [
        "user: What is the weather in Paris?",
        f"assistant: {answer}",
        "user: And in Rome?",
        f"assistant: {reply['output']}",
    ]
    calls = [line.strip() for line in lines if line.startswith("  tool call ")]
    assert calls[0] == 'tool call get_lat_lng(location_description="Paris")'
    assert [c.split("(")[0] for c in calls] == [
        "tool call get_lat_lng",
        "tool call get_weather",
    ] * 2
    results = [line.strip() for line in lines if line.startswith("  tool result ")]
    assert len(results) == 4
    assert results[1].startswith("tool result get_weather: {")
    assert f"conversation {cid}: revision 2, 12 message(s)" in shown.err

    async with httpx.AsyncClient(base_url=server.url) as http:
        stored = (await http.get(f"/v1/conversations/{cid}")).json()
    raw = await axon("history", cid, "--json", *url)
    assert raw.code == 0, raw
    assert json.loads(raw.out) == stored

    # A page of messages: the 5th and 6th are the first run's last tool result and answer.
    page = await axon("history", cid, "--offset", "4", "--limit", "2", *url)
    assert page.code == 0, page
    [tool_result, answered] = page.out.splitlines()
    assert tool_result.startswith("  tool result get_weather: {")
    assert answered == f"assistant: {answer}"
    assert f"conversation {cid}: revision 2, 2 message(s) from #4" in page.err
    raw_page = await axon("history", cid, "--offset", "6", "--limit", "1", "--json", *url)
    assert json.loads(raw_page.out)["messages"] == stored["messages"][6:7]

    # Deleted through the client library: then the CLI finds no such conversation.
    with AxonClient(server.url) as client:
        await asyncio.to_thread(client.delete, cid)
        with pytest.raises(ConversationNotFound):
            await asyncio.to_thread(client.delete, cid)
    missing = await axon("history", cid, *url)
    assert cid in assert_error(missing, 2, "conversation_not_found")
    assert missing.out == ""


async def test_send_stream_prints_deltas_as_they_arrive(serve_axon: ServeAxon) -> None:
    server = await serve_axon()
    url = ("--url", server.url)

    # 5 deltas 0.3 s apart: the first must be on the CLI's stdout while the run goes on.
    proc = await _spawn("send", "misbehaving", "stream:5:0.3", "--stream", *url)
    assert proc.stdout is not None
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        first = await proc.stdout.read(4096)  # whatever the CLI has written so far
    first_at = time.monotonic()
    still_running = proc.returncode is None
    async with asyncio.timeout(30):
        rest = await proc.stdout.read()  # up to EOF: the CLI is done
        ended_at = time.monotonic()
        err = (await proc.stderr.read()).decode()
        code = await proc.wait()
    assert code == 0, err
    assert first.startswith(b"chunk-0 ")
    assert b"chunk-4" not in first
    assert still_running
    assert ended_at - first_at >= 0.8  # four more deltas, 0.3 s apart, came after the first
    assert first + rest == b"chunk-0 chunk-1 chunk-2 chunk-3 chunk-4 \n"
    conversation_of(Run(code, "", err))

    # Tool calls and results go to stderr, the answer alone to stdout, committed like a send.
    weather = await axon("send", "python_agent_2", "What is the weather in Rome?", "-s", *url)
    assert weather.code == 0, weather
    assert weather.out.startswith("The weather in Rome is ")
    assert weather.out.endswith('(you asked: "What is the weather in Rome?")\n')
    assert weather.out.count("\n") == 1
    notes = weather.err.splitlines()
    assert notes[0] == 'tool call get_lat_lng(location_description="Rome")'
    assert notes[1].startswith("tool result get_lat_lng: {")
    assert notes[2].startswith("tool call get_weather(lat=")
    assert notes[3].startswith("tool result get_weather: {")
    cid = conversation_of(weather)
    shown = await axon("history", cid, *url)
    assert f"assistant: {weather.out.strip()}" in shown.out.splitlines()

    # --stream --json: one event per line, in order, the text deltas adding up to the output.
    events = await axon("send", "python_agent_2", "Rain in Oslo?", "--stream", "--json", *url)
    assert events.code == 0, events
    assert events.err == ""
    parsed = [json.loads(line) for line in events.out.splitlines()]
    names = [e["event"] for e in parsed]
    assert names[:4] == ["tool_call", "tool_result", "tool_call", "tool_result"]
    assert names[-1] == "final"
    assert set(names[4:-1]) == {"text_delta"}
    assert len(names[4:-1]) > 1
    text = "".join(e["data"]["text"] for e in parsed[4:-1])
    assert text == parsed[-1]["data"]["output"]
    assert parsed[0]["data"]["tool_name"] == "get_lat_lng"

    # Ctrl-C during a stream: exit 130, and the run is cancelled (nothing of it committed).
    proc = await _spawn("send", "misbehaving", "stream:20:0.2", "-s", "-c", "interrupted-1", *url)
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        assert (await proc.stdout.read(4096)).startswith(b"chunk-0 ")
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        _, err_bytes = await proc.communicate()
    assert proc.returncode == 130
    assert err_bytes.decode().strip() == "error: interrupted"
    # The same conversation takes a new message (after the cancelled run, policy enqueue) ...
    after = await axon("send", "misbehaving", "after", "-c", "interrupted-1", *url)
    assert after.out == "echo: after\n", after
    raw = await axon("history", "interrupted-1", "--json", *url)
    prompts = [
        part["content"]
        for message in json.loads(raw.out)["messages"]
        for part in message["parts"]
        if part["part_kind"] == "user-prompt"
    ]
    assert prompts == ["after"]  # ... and holds nothing of the interrupted run


async def test_agents_restart_and_errors(serve_axon: ServeAxon) -> None:
    server = await serve_axon()
    url = ("--url", server.url)
    api = await api_agents(server.url)

    listed = await axon("agents", "--json", *url)
    assert listed.code == 0, listed
    body = json.loads(listed.out)
    assert [a["id"] for a in body["agents"]] == ["python_agent_1", "python_agent_2", "misbehaving"]
    for agent in body["agents"]:
        assert agent["state"] == api[agent["id"]]["state"] == "running"
        assert pids(agent) == pids(api[agent["id"]])

    table = await axon("agents", *url)
    assert table.code == 0, table
    rows = table_rows(table.out)
    assert list(rows) == ["python_agent_1", "python_agent_2", "misbehaving"]
    p1, p2 = pids(api["python_agent_1"])
    assert rows["python_agent_1"] == ["running", f"{p1}, {p2}", "0", "0", "-"]
    assert rows["misbehaving"] == ["running", str(pids(api["misbehaving"])[0]), "0", "0", "-"]

    # A crash during the run: exit 1 naming agent_crashed; the table shows the exit.
    crashed = await axon("send", "misbehaving", "crash:exit:3", *url)
    line = assert_error(crashed, 1, "agent_crashed")
    assert "exited with code 3" in line
    rows = table_rows((await axon("agents", *url)).out)
    assert rows["misbehaving"][2] == "1"  # restarts
    assert rows["misbehaving"][4] == "exit 3"

    # restart: new worker processes, printed with the old ones.
    old = pids(api["python_agent_2"])
    restarted = await axon("restart", "python_agent_2", *url)
    assert restarted.code == 0, restarted
    new = pids((await api_agents(server.url))["python_agent_2"])
    assert not set(new) & set(old)
    assert restarted.out.strip() == (
        f"python_agent_2 restarted: running; workers {new[0]} (were {old[0]})"
    )

    # Bad input: exit 2 and one line, no traceback.
    unknown = await axon("send", "no_such_agent", "hi", *url)
    assert "no_such_agent" in assert_error(unknown, 2, "agent_not_found")
    assert unknown.out == ""
    unknown_restart = await axon("restart", "no_such_agent", *url)
    assert_error(unknown_restart, 2, "agent_not_found")
    bad_timeout = await axon("send", "misbehaving", "hi", "--timeout", "-1", *url)
    assert "timeout" in assert_error(bad_timeout, 2, "invalid_request")
    bad_id = await axon("send", "misbehaving", "hi", "-c", "not a valid id!", *url)
    assert "conversation_id" in assert_error(bad_id, 2, "invalid_request")
    # A failure on the agent's side, mid-stream (an SSE error event): exit 1.
    failed = await axon("send", "misbehaving", "raise:boom", "-s", *url)
    assert failed.code == 1, failed
    assert failed.err.splitlines() == [
        'tool call explode(message="boom")',
        "error: agent_run_failed: agent 'misbehaving' raised RuntimeError: boom",
    ]


async def test_token_is_required_when_the_server_has_one(serve_axon: ServeAxon) -> None:
    server = await serve_axon(env={"AXON_API_TOKEN": TOKEN})
    at = {"AXON_URL": server.url}  # the URL from the environment this time

    missing = await axon("agents", env=at)
    assert_error(missing, 3, "unauthorized")
    wrong = await axon("send", "python_agent_1", "hi", "--token", "x" * 20, env=at)
    assert_error(wrong, 3, "unauthorized")
    wrong_stream = await axon("send", "python_agent_1", "hi", "-s", "--token", "x" * 20, env=at)
    assert_error(wrong_stream, 3, "unauthorized")

    listed = await axon("agents", "--json", "--token", TOKEN, env=at)
    assert listed.code == 0, listed
    assert {a["id"] for a in json.loads(listed.out)["agents"]} == set(
        await api_agents(server.url, TOKEN)
    )
    with_env = {**at, "AXON_API_TOKEN": TOKEN}
    sent = await axon("send", "misbehaving", "hello", "--stream", env=with_env)
    assert sent.out == "echo: hello\n", sent
    shown = await axon("history", conversation_of(sent), env=with_env)
    assert "user: hello" in shown.out.splitlines()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "command", [("agents",), ("send", "python_agent_1", "hi", "--stream"), ("history", "c-1")]
)
def test_an_unreachable_server_exits_1_naming_the_url(command: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    proc = subprocess.run(
        [*AXON, *command, "--url", url], capture_output=True, text=True, timeout=60, env=_env()
    )
    line = assert_error(Run(proc.returncode, proc.stdout, proc.stderr), 1, "server_unreachable")
    assert url in line


def test_a_url_without_scheme_is_bad_usage() -> None:
    proc = subprocess.run(
        [*AXON, "agents", "--url", "127.0.0.1:8000"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert proc.returncode == 2
    assert "must start with http:// or https://" in proc.stderr
    assert "Traceback" not in proc.stderr


SERVER_OPTIONS = ("--url", "AXON_URL", "--token", "AXON_API_TOKEN", "--json")


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ("serve", ("--listen", "--log-format", "--log-level", "CONFIG")),
        ("check", ("CONFIG",)),
        ("demo-config", ("TOML",)),
        ("send", ("AGENT", "PROMPT", "--conversation", "--stream", "--timeout", *SERVER_OPTIONS)),
        ("agents", SERVER_OPTIONS),
        ("history", ("ID", "--offset", "--limit", *SERVER_OPTIONS)),
        ("restart", ("AGENT", *SERVER_OPTIONS)),
    ],
)
def test_every_command_has_help(command: str, mentions: tuple[str, ...]) -> None:
    proc = subprocess.run(
        [*AXON, command, "--help"], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert f"axon.cli {command} [OPTIONS]" in proc.stdout
    for word in mentions:
        assert word in proc.stdout, word


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (AgentNotFound("a"), 2),
        (ConversationNotFound("c-1"), 2),
        (InvalidRequest("prompt: too long", field="prompt"), 2),
        (RemoteError("body too large", error_type="payload_too_large", status=413), 2),
        (Unauthorized(), 3),
        (AgentCrashed("a", pid=7, signal=9), 1),
        (AgentRunFailed("a", remote_type="RuntimeError", remote_message="boom"), 1),
        (AgentTimeout("a", timeout=1.0), 1),
        (AgentUnavailable("a", state="restarting", retry_after=0.5), 1),
        (Overloaded("a", queue_size=3, retry_after=0.25), 1),
        (StoreUnavailable("sqlite", "database is locked"), 1),
        (ConversationBusy("c-1"), 1),
        (ServerUnreachable("http://127.0.0.1:9", "connection refused"), 1),
        (ConnectionLost("http://127.0.0.1:9", "the event stream ended without a final event"), 1),
        (RemoteError("internal error", error_type="internal_error", status=500), 1),
    ],
    ids=lambda v: error_type_of(v) if isinstance(v, AxonError) else str(v),
)
def test_exit_code_of_each_error(error: AxonError, code: int) -> None:
    """The exit code the CLI ends with for each error the client can raise, after the error
    went through the HTTP error envelope (as the client receives it)."""
    if isinstance(error, RemoteError):  # a type the server sends that the client does not know
        wire = {"type": error.error_type, "message": error.message}
        received = error_from_body({"error": wire}, error.status)
    else:
        received = error_from_body({"error": error.to_dict()}, 500)
    assert type(received) is type(error)
    assert received.to_dict() == error.to_dict()
    assert exit_code_of(received) == code


def test_error_line_says_when_to_retry() -> None:
    overloaded = error_from_body(
        {"error": Overloaded("a", queue_size=3, retry_after=0.25).to_dict()}, 429
    )
    assert isinstance(overloaded, Overloaded)
    assert overloaded.retry_after == 0.25
    assert str(_error_line(overloaded)) == (
        "error: overloaded: agent 'a' is overloaded (3 requests queued) (retry after 0.25s)"
    )
    unknown = error_from_body({"error": {"type": "payload_too_large", "message": "big"}}, 413)
    assert isinstance(unknown, RemoteError)
    assert (unknown.error_type, unknown.status) == ("payload_too_large", 413)
    assert str(_error_line(unknown)) == "error: payload_too_large: big"
    not_an_envelope = error_from_body("<html>bad gateway</html>", 502)
    assert (
        str(_error_line(not_an_envelope)) == "error: http_error: HTTP 502: <html>bad gateway</html>"
    )
    assert exit_code_of(not_an_envelope) == 1
