"""The ``axon bench`` scenario as a Locust file, for those who prefer Locust (2.x).

    pip install locust
    axon serve &                                   # the demo, on http://127.0.0.1:8000
    locust -f examples/locustfile.py --host http://127.0.0.1:8000 \
        --headless --users 10 --spawn-rate 10 --run-time 30s

Each Locust user is one of ``axon bench --concurrency N``'s users: it runs conversations of
``AXON_BENCH_TURNS`` turns, one after another with no think time, each conversation on the next
agent of ``AXON_BENCH_AGENTS``, every prompt tagged `` [u<user> t<turn> r<request>]`` (unique,
so each exchange can be found in its history) unless ``AXON_BENCH_TAG`` says otherwise. A
failed request is reported to Locust with its Axon error type as the message
(``agent_crashed``), so Locust's error report counts them by type. With ``AXON_BENCH_STREAM=1``
answers are streamed (SSE); Locust times a streamed request to its response headers, which Axon
sends with the run's first event, so two more rows are reported: ``ttft`` (to the first text
chunk) and ``stream total`` (to the ``final`` event), which is what ``axon bench`` calls latency.

Settings (environment variables): ``AXON_BENCH_AGENTS`` (comma-separated, default
``python_agent_1``), ``AXON_BENCH_TURNS`` (default 1), ``AXON_BENCH_PROMPT`` (default
``What is the weather in Paris?``), ``AXON_BENCH_TAG`` (default `` [u{user} t{turn}
r{request}]``; empty to send the prompt as it is), ``AXON_BENCH_STREAM``, ``AXON_BENCH_TIMEOUT``
(the run timeout sent with each request, seconds) and ``AXON_API_TOKEN``.

Locust's users are closed-loop; for an open loop (a constant arrival rate whatever the
latency), use ``axon bench --rate``: Locust's ``constant_throughput`` paces each user, which
still waits for its answer before the next request.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from typing import Any

from locust import HttpUser, constant, events, task

AGENTS = [a.strip() for a in os.environ.get("AXON_BENCH_AGENTS", "python_agent_1").split(",")]
TURNS = int(os.environ.get("AXON_BENCH_TURNS", "1"))
PROMPT = os.environ.get("AXON_BENCH_PROMPT", "What is the weather in Paris?")
TAG = os.environ.get("AXON_BENCH_TAG", " [u{user} t{turn} r{request}]")
STREAM = os.environ.get("AXON_BENCH_STREAM", "") not in ("", "0", "false")
TIMEOUT = float(os.environ["AXON_BENCH_TIMEOUT"]) if os.environ.get("AXON_BENCH_TIMEOUT") else None
TOKEN = os.environ.get("AXON_API_TOKEN")

_users = itertools.count()
_requests = itertools.count()
_conversations = itertools.count()
_run = uuid.uuid4().hex[:8]


def _error_text(body: Any, status: int) -> str:
    """The error type of an Axon error envelope (or the HTTP status): Locust groups failures by
    this text, so it holds no pid, delay or id."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("type"))
    return f"HTTP {status}"


class AxonUser(HttpUser):
    wait_time = constant(0)  # like axon bench's closed loop: the next request at once

    def on_start(self) -> None:
        self.number = next(_users)
        if TOKEN:
            self.client.headers["Authorization"] = f"Bearer {TOKEN}"

    @task
    def conversation(self) -> None:
        number = next(_conversations)
        agent = AGENTS[number % len(AGENTS)]
        conversation_id = f"locust-{_run}-{number}"
        for turn in range(TURNS):
            fields = {
                "user": self.number,
                "turn": turn,
                "request": next(_requests),
                "agent": agent,
                "conversation": conversation_id,
            }
            body: dict[str, Any] = {
                "prompt": PROMPT.format(**fields) + TAG.format(**fields),
                "conversation_id": conversation_id,
                "stream": STREAM,
            }
            if TIMEOUT is not None:
                body["timeout"] = TIMEOUT
            if STREAM:
                self._stream(agent, body)
            else:
                self._send(agent, body)

    def _send(self, agent: str, body: dict[str, Any]) -> None:
        with self.client.post(
            f"/v1/agents/{agent}/messages",
            json=body,
            name=f"/v1/agents/{agent}/messages",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                try:
                    data = response.json()
                except ValueError:
                    data = None
                response.failure(_error_text(data, response.status_code))

    def _stream(self, agent: str, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        first_token: float | None = None
        name = f"/v1/agents/{agent}/messages (stream)"
        with self.client.post(
            f"/v1/agents/{agent}/messages",
            json=body,
            name=name,
            stream=True,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                try:
                    data = json.loads(response.content)
                except ValueError:
                    data = None
                response.failure(_error_text(data, response.status_code))
                return
            event = ""
            for raw in response.iter_lines(decode_unicode=True):
                line = raw or ""
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    if event == "text_delta" and first_token is None:
                        first_token = time.perf_counter()
                    elif event == "error":
                        data = json.loads(line.removeprefix("data:").strip())
                        response.failure(_error_text(data, 200))
                        return
                    elif event == "final":
                        response.success()
                        break
            else:
                response.failure("connection_lost")
                return
        ended = time.perf_counter()
        for figure, at in (("ttft", first_token), ("stream total", ended)):
            if at is not None:
                events.request.fire(
                    request_type="SSE",
                    name=figure,
                    response_time=(at - started) * 1000,
                    response_length=0,
                    exception=None,
                    context={},
                )
