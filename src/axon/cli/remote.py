"""The remote commands, against a running ``axon serve``: ``send``, ``agents``, ``restart`` and
``history``, and the options, error handling and output every remote command shares (``top``
uses them too). Exit codes: see :mod:`axon.cli.app`."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from axon.cli.app import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    app,
    console,
    err_console,
)
from axon.client import DEFAULT_URL, AxonClient, error_type_of
from axon.errors import AxonError, RemoteError
from axon.stream import (
    FinalResult,
    TextDelta,
    ToolCall,
    ToolResult,
    event_name,
    reply_json,
    sse_data,
)

if TYPE_CHECKING:
    from pydantic_ai.messages import ModelMessage

__all__ = [
    "DEFAULT_URL",
    "STATE_STYLES",
    "JsonOutput",
    "Token",
    "Url",
    "agents",
    "exit_code_of",
    "exit_text",
    "history",
    "last_exit",
    "remote",
    "restart",
    "send",
]

_USAGE_ERRORS = frozenset(
    {"config_error", "invalid_request", "agent_not_found", "conversation_not_found"}
)
_AUTH_ERRORS = frozenset({"unauthorized"})


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"must start with http:// or https:// (got {url!r})")
    return url


Url = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="AXON_URL",
        callback=_check_url,
        help="The axon server's base URL.",
        rich_help_panel="Server",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="AXON_API_TOKEN",
        show_default=False,
        help="Bearer token, if the server requires one.",
        rich_help_panel="Server",
    ),
]
JsonOutput = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Machine-readable output: the response's JSON body on stdout (one line).",
        rich_help_panel="Server",
    ),
]


def exit_code_of(error: AxonError) -> int:
    """The exit code of a remote command that failed with ``error`` (see the module doc)."""
    kind = error_type_of(error)
    if kind in _AUTH_ERRORS:
        return EXIT_AUTH
    if kind in _USAGE_ERRORS:
        return EXIT_USAGE
    status = error.facts.get("status") if isinstance(error, RemoteError) else None
    if isinstance(status, int) and 400 <= status < 500 and status not in (409, 429):
        return EXIT_USAGE  # e.g. payload_too_large: what was sent is wrong
    return EXIT_FAILED


def _error_line(error: AxonError) -> Text:
    line = Text.assemble(("error: ", "bold red"), f"{error_type_of(error)}: {error.message}")
    retry_after = error.facts.get("retry_after")
    if isinstance(retry_after, int | float) and "retry" not in error.message:
        line.append(f" (retry after {retry_after:g}s)")
    return line


@contextlib.contextmanager
def remote(url: str, token: str | None) -> Generator[AxonClient]:
    """A client of the server at ``url``; an ``AxonError`` inside ends the command with its
    one-line message and exit code."""
    client = AxonClient(url, token=token or None)
    try:
        yield client
    except AxonError as exc:
        _stdout_newline()
        err_console.print(_error_line(exc), soft_wrap=True, highlight=False)
        raise typer.Exit(exit_code_of(exc)) from None
    except KeyboardInterrupt:
        _stdout_newline()
        err_console.print(Text.assemble(("error: ", "bold red"), "interrupted"), highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        client.close()


_stdout_mid_line = False


def _write(text: str) -> None:
    """Answer text on stdout, flushed at once (it may be one delta of a stream)."""
    global _stdout_mid_line
    if not text:
        return
    sys.stdout.write(text)
    sys.stdout.flush()
    _stdout_mid_line = not text.endswith("\n")


def _stdout_newline() -> None:
    """End a line of answer text left open by a stream (before anything else is printed)."""
    if _stdout_mid_line:
        _write("\n")


def _print_json(data: object) -> None:
    _write(json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")


def _note(text: Text | str) -> None:
    """A remark for the user (never the answer): dimmed, on stderr."""
    err_console.print(text, style="dim", soft_wrap=True, highlight=False, markup=False)


def _output_text(output: object) -> str:
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, indent=2)


def _short(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _call_text(tool_name: str, args: object) -> str:
    if isinstance(args, str):
        with contextlib.suppress(ValueError):
            args = json.loads(args)
    if isinstance(args, dict):
        items: dict[Any, Any] = args  # pyright: ignore[reportUnknownVariableType]
        inner = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in items.items())
    else:
        inner = "" if args is None else _short(args)
    return f"{tool_name}({_short(inner)})"


# -- send ----------------------------------------------------------------------------------------


@app.command()
def send(
    agent: Annotated[
        str, typer.Argument(metavar="AGENT", help="The agent's id (see `axon agents`).")
    ],
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The message to send.")],
    conversation: Annotated[
        str | None,
        typer.Option(
            "--conversation",
            "-c",
            help="Continue this conversation (its id is printed after each reply); "
            "omitted: start a new one.",
            show_default=False,
        ),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", "-s", help="Print the answer as it is generated.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Seconds the run may take (default: the agent's timeout).",
            show_default=False,
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Send PROMPT to AGENT and print the answer.

    The answer goes to stdout; the conversation id (to continue with --conversation) and, with
    --stream, the agent's tool calls go to stderr. With --stream --json: one JSON object per
    event and line, {"event": NAME, "data": {...}}.
    """
    with remote(url, token) as client:
        if stream:
            reply = _stream_reply(client, agent, prompt, conversation, timeout, json_output)
        else:
            reply = client.send(agent, prompt, conversation_id=conversation, timeout=timeout)
            if json_output:
                _print_json(reply)
            else:
                _write(_output_text(reply.get("output")) + "\n")
        if not json_output:
            cid = reply.get("conversation_id")
            _note(f"conversation {cid} (continue it with --conversation {cid})")


def _stream_reply(
    client: AxonClient,
    agent: str,
    prompt: str,
    conversation: str | None,
    timeout: float | None,
    json_output: bool,
) -> dict[str, Any]:
    streamed_text = False
    for event in client.stream(agent, prompt, conversation_id=conversation, timeout=timeout):
        if json_output:
            _print_json({"event": event_name(event), "data": json.loads(sse_data(event))})
        elif isinstance(event, TextDelta):
            _write(event.text)
            streamed_text = True
        elif isinstance(event, ToolCall):
            _stdout_newline()
            _note(f"tool call {_call_text(event.tool_name, event.args)}")
        elif isinstance(event, ToolResult):
            _stdout_newline()
            _note(f"tool result {event.tool_name}: {_short(event.content)}")
        if isinstance(event, FinalResult):
            if not json_output:
                if not streamed_text:  # e.g. a structured output: it came only with the reply
                    _write(_output_text(event.reply.output))
                _write("\n")
            return json.loads(reply_json(event.reply))
    raise AssertionError("unreachable: AxonClient.stream ends with a final event or raises")


# -- agents, restart -----------------------------------------------------------------------------


STATE_STYLES = {"running": "green", "starting": "yellow", "restarting": "yellow", "failed": "red"}


def exit_text(record: dict[str, Any] | None) -> str:
    """``signal SIGKILL``, ``exit 3 (startup)``, ``exit 0 (stop requested)``, or ``-``."""
    if not record:
        return "-"
    sig = record.get("signal")
    if sig is not None:
        try:
            how = f"signal {signal.Signals(int(sig)).name}"
        except ValueError:
            how = f"signal {sig}"
    elif record.get("exit_code") is not None:
        how = f"exit {record['exit_code']}"
    else:
        how = "lost"
    why = [
        w for w in ("startup" if record.get("during_startup") else None, record.get("reason")) if w
    ]
    return f"{how} ({', '.join(why)})" if why else how


def last_exit(agent: dict[str, Any]) -> dict[str, Any] | None:
    exits: list[dict[str, Any]] = [*agent.get("recent_exits", [])]
    exits += [w["last_exit"] for w in agent.get("workers", []) if w.get("last_exit")]
    return max(exits, key=lambda e: float(e.get("at", 0.0)), default=None)


def _pids(agent: dict[str, Any]) -> str:
    shown: list[str] = []
    for worker in agent.get("workers", []):
        pid = worker.get("pid")
        text = "-" if pid is None else str(pid)
        if worker.get("state") != "running":
            text += f" ({worker.get('state')})"
        shown.append(text)
    return ", ".join(shown) or "-"


@app.command()
def agents(url: Url = DEFAULT_URL, token: Token = None, json_output: JsonOutput = False) -> None:
    """List the agents: state, worker pids, restarts, runs in flight, and the last worker exit."""
    with remote(url, token) as client:
        found = client.agents()
    if json_output:
        _print_json({"agents": found})
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("agent", "state", "workers (pids)", "restarts", "in-flight", "last exit"):
        table.add_column(column, no_wrap=column != "workers (pids)")
    for agent in found:
        state = str(agent.get("state"))
        table.add_row(
            str(agent.get("id")),
            Text(state, style=STATE_STYLES.get(state, "")),
            _pids(agent),
            str(agent.get("restarts", 0)),
            str(agent.get("in_flight", 0)),
            exit_text(last_exit(agent)),
        )
    # A pipe gets whole rows (for grep and friends); a terminal, rows that fit its width.
    out = console if console.is_terminal else Console(width=1000)
    out.print(table)


@app.command()
def restart(
    agent: Annotated[
        str, typer.Argument(metavar="AGENT", help="The agent's id (see `axon agents`).")
    ],
    url: Url = DEFAULT_URL,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Restart AGENT's workers (also brings a FAILED agent back); waits until it runs again."""
    with remote(url, token) as client:
        before = client.agent(agent)
        after = client.restart(agent)
    if json_output:
        _print_json(after)
        return
    state = str(after.get("state"))
    line = Text.assemble(
        f"{agent} restarted: ",
        (state, STATE_STYLES.get(state, "")),
        f"; workers {_pids(after)} (were {_pids(before)})",
    )
    console.print(line, soft_wrap=True, highlight=False)
    if state != "running":
        raise typer.Exit(EXIT_FAILED)


# -- history -------------------------------------------------------------------------------------


@app.command()
def history(
    conversation_id: Annotated[str, typer.Argument(metavar="ID", help="The conversation's id.")],
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many messages.")] = 0,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Show at most this many messages.", show_default=False),
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Show a conversation: each user prompt, the agent's tool calls and results, its answers.

    Messages are pydantic-ai's (a request, then a response, per model call); --offset and
    --limit count them. --json prints the stored pydantic-ai JSON as it is.
    """
    with remote(url, token) as client:
        body = client.history(conversation_id, offset=offset, limit=limit)
    if json_output:
        _print_json(body)
        return
    from pydantic_ai import ModelMessagesTypeAdapter

    messages = ModelMessagesTypeAdapter.validate_python(body.get("messages", []))
    shown = f"{len(messages)} message(s)"
    if offset or limit is not None:
        shown += f" from #{offset}"
    _note(f"conversation {body.get('conversation_id')}: revision {body.get('revision')}, {shown}")
    for line in _turns(messages):
        console.print(line, soft_wrap=True, highlight=False)


def _turns(messages: Sequence[ModelMessage]) -> Iterator[Text]:
    """The conversation as lines: ``user:``, ``tool call``, ``tool result``, ``assistant:``."""
    from pydantic_ai.messages import (
        ModelRequest,
        RetryFeedbackPart,
        SystemPromptPart,
        TextPart,
        ThinkingPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )

    first = True
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart):
                    if not first:
                        yield Text("")
                    content = part.content
                    text = content if isinstance(content, str) else _user_content(content)
                    yield Text.assemble(("user: ", "bold cyan"), text)
                elif isinstance(part, ToolReturnPart):
                    outcome = "" if part.outcome == "success" else f" ({part.outcome})"
                    result = _short(part.model_response_str())
                    yield Text(f"  tool result {part.tool_name}{outcome}: {result}", style="dim")
                elif isinstance(part, RetryFeedbackPart):
                    yield Text(f"  retry: {_short(part.model_response())}", style="dim")
                elif isinstance(part, SystemPromptPart):  # pyright: ignore[reportUnnecessaryIsInstance]
                    yield Text(f"system: {_short(part.content)}", style="dim")
                first = False
        else:
            for part in message.parts:
                if isinstance(part, TextPart):
                    yield Text.assemble(("assistant: ", "bold green"), part.content)
                elif isinstance(part, ToolCallPart):
                    yield Text(f"  tool call {_call_text(part.tool_name, part.args)}", style="dim")
                elif isinstance(part, ThinkingPart):
                    yield Text(f"  thinking: {_short(part.content)}", style="dim italic")
                first = False


def _user_content(content: Sequence[object]) -> str:
    return " ".join(
        item if isinstance(item, str) else f"<{type(item).__name__}>" for item in content
    )
