"""``axon``: serve agents, check configs, and talk to a running server.

Local commands: ``serve [CONFIG]``, ``check CONFIG``, ``demo-config``.

Remote commands, against an ``axon serve`` at ``--url`` (default ``$AXON_URL``, else
``http://127.0.0.1:8000``), with ``--token`` (default ``$AXON_API_TOKEN``) when the server
requires one and ``--json`` for machine-readable output: ``send AGENT PROMPT``, ``agents``,
``history ID``, ``restart AGENT``, ``top`` (a live view). Their options go after the command
(``axon agents --url http://host:8000``). An error is one line on stderr,
``error: <type>: <message>``, never a traceback.

Exit codes:

- 0: success.
- 1: the request failed on the server side (``agent_crashed``, ``agent_run_failed``,
  ``agent_timeout``, ``agent_unavailable``, ``overloaded``, ``store_unavailable``,
  ``conversation_busy``, ...), the server could not be reached (``server_unreachable``) or the
  connection broke (``connection_lost``); ``serve``: the runtime failed (e.g. the port is taken).
- 2: bad usage or invalid input: an unknown option or a bad value, an invalid config,
  ``invalid_request``, ``agent_not_found``, ``conversation_not_found``.
- 3: authentication failed (``unauthorized``: the server requires a token and got none or a wrong
  one).
- 130: interrupted (Ctrl-C); an interrupted ``send`` disconnects, which cancels its run.
  (``top`` exits 0 on Ctrl-C: quitting a viewer is normal.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Generator, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from axon.config import AxonConfig, load_config
from axon.errors import AxonError, ConfigError

if TYPE_CHECKING:
    from pydantic_ai.messages import ModelMessage

    from axon.client import AxonClient

__all__ = ["app", "exit_code_of", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_RUNTIME = EXIT_FAILED
EXIT_USAGE = 2
EXIT_CONFIG = EXIT_USAGE
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130

_USAGE_ERRORS = frozenset(
    {"config_error", "invalid_request", "agent_not_found", "conversation_not_found"}
)
_AUTH_ERRORS = frozenset({"unauthorized"})


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


app = typer.Typer(
    name="axon",
    help="Supervised worker processes for pydantic-ai agents.\n\n"
    "Exit codes: 0 ok; 1 the request failed on the server side, or no server answers; "
    "2 bad usage or invalid input; 3 authentication failed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text as written: one paragraph per blank-line block
)
console = Console()
err_console = Console(stderr=True)


# -- local commands ----------------------------------------------------------------------------


def _load(config: Path | None) -> AxonConfig:
    from axon.demo import demo_config

    try:
        return demo_config() if config is None else load_config(config)
    except ConfigError as exc:
        err_console.print(f"[red]invalid config:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None


@app.command()
def serve(
    config: Annotated[
        Path | None,
        typer.Argument(metavar="CONFIG", help="axon.toml to serve; omitted: the built-in demo."),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="host:port to listen on (default: runtime.listen)."),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="Log lines as text or json (default: from config)."),
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Lowest level logged.")] = (
        LogLevel.INFO
    ),
) -> None:
    """Serve the agents over HTTP until Ctrl-C / SIGTERM, then shut down gracefully."""
    from axon.config import RuntimeSpec
    from axon.http.server import run as run_http
    from axon.observability.logging import configure_logging

    cfg = _load(config)
    if listen is not None:
        try:
            RuntimeSpec(listen=listen)
        except ConfigError as exc:
            err_console.print(f"[red]invalid --listen:[/red] {exc.facts.get('reason', exc)}")
            raise typer.Exit(EXIT_CONFIG) from None
    fmt = log_format.value if log_format else cfg.runtime.log_format
    configure_logging(
        "json" if fmt == "json" else "text", logging.getLevelNamesMapping()[log_level.upper()]
    )
    demo = config is None

    def on_ready(url: str) -> None:
        name = "the built-in demo" if demo else "your agents"
        console.print(f"[green]axon is serving {name} on {url}[/green]  (Ctrl-C to stop)")
        first = cfg.agents[0].id if cfg.agents else "AGENT"
        console.print(
            f"try: axon send {first} 'What is the weather in Paris?' --url {url}\n"
            f"live view: {url}/dashboard  (or axon top --url {url});  API: {url}/docs",
            soft_wrap=True,
        )

    try:
        run_http(cfg, listen=listen, on_ready=on_ready)
    except ConfigError as exc:
        err_console.print(f"[red]invalid config:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    except OSError as exc:
        err_console.print(f"[red]cannot listen on {listen or cfg.runtime.listen}:[/red] {exc}")
        raise typer.Exit(EXIT_RUNTIME) from None
    except AxonError as exc:  # e.g. the store cannot be opened: nothing was started
        err_console.print(f"[red]cannot start:[/red] {exc.type}: {exc}")
        raise typer.Exit(EXIT_RUNTIME) from None
    console.print("stopped.")


@app.command()
def check(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="axon.toml to validate.")],
) -> None:
    """Validate a config (keys, values, agent import paths) without starting anything."""
    from axon.store.base import open_store

    cfg = _load(config)
    try:
        open_store(cfg.runtime.store)  # parses the URL and its options; connects to nothing
    except ConfigError as exc:
        err_console.print(f"[red]invalid config:[/red] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    console.print(
        f"[green]ok[/green]: {len(cfg.agents)} agent(s): " + ", ".join(a.id for a in cfg.agents)
    )


@app.command("demo-config")
def demo_config_cmd() -> None:
    """Print the built-in demo's config as TOML (a starting point for your own axon.toml)."""
    from axon.demo import DEMO_TOML

    typer.echo(DEMO_TOML, nl=False)


# -- remote commands: the options they share ---------------------------------------------------


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
DEFAULT_URL = "http://127.0.0.1:8000"


def exit_code_of(error: AxonError) -> int:
    """The exit code of a remote command that failed with ``error`` (see the module doc)."""
    from axon.client import RemoteError, error_type_of

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
    from axon.client import error_type_of

    line = Text.assemble(("error: ", "bold red"), f"{error_type_of(error)}: {error.message}")
    retry_after = error.facts.get("retry_after")
    if isinstance(retry_after, int | float) and "retry" not in error.message:
        line.append(f" (retry after {retry_after:g}s)")
    return line


@contextlib.contextmanager
def _remote(url: str, token: str | None) -> Generator[AxonClient]:
    """A client of the server at ``url``; an ``AxonError`` inside ends the command with its
    one-line message and exit code."""
    from axon.client import AxonClient

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
    with _remote(url, token) as client:
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
    for event, data in client.stream(agent, prompt, conversation_id=conversation, timeout=timeout):
        if json_output:
            _print_json({"event": event, "data": data})
        elif event == "text_delta":
            _write(str(data.get("text", "")))
            streamed_text = True
        elif event == "tool_call":
            _stdout_newline()
            _note(f"tool call {_call_text(str(data.get('tool_name')), data.get('args'))}")
        elif event == "tool_result":
            _stdout_newline()
            _note(f"tool result {data.get('tool_name')}: {_short(data.get('content'))}")
        if event == "final":
            if not json_output:
                if not streamed_text:  # e.g. a structured output: it came only with the reply
                    _write(_output_text(data.get("output")))
                _write("\n")
            return data
    raise AssertionError("unreachable: AxonClient.stream ends with a final event or raises")


# -- agents, restart -----------------------------------------------------------------------------


_STATE_STYLES = {"running": "green", "starting": "yellow", "restarting": "yellow", "failed": "red"}


def _exit_text(record: dict[str, Any] | None) -> str:
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


def _last_exit(agent: dict[str, Any]) -> dict[str, Any] | None:
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
    with _remote(url, token) as client:
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
            Text(state, style=_STATE_STYLES.get(state, "")),
            _pids(agent),
            str(agent.get("restarts", 0)),
            str(agent.get("in_flight", 0)),
            _exit_text(_last_exit(agent)),
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
    with _remote(url, token) as client:
        before = client.agent(agent)
        after = client.restart(agent)
    if json_output:
        _print_json(after)
        return
    state = str(after.get("state"))
    line = Text.assemble(
        f"{agent} restarted: ",
        (state, _STATE_STYLES.get(state, "")),
        f"; workers {_pids(after)} (were {_pids(before)})",
    )
    console.print(line, soft_wrap=True, highlight=False)
    if state != "running":
        raise typer.Exit(EXIT_FAILED)


# -- top -----------------------------------------------------------------------------------------


@app.command()
def top(
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")
    ] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """A live view of the server (what /dashboard shows): runs/s, errors, p50/p99 latency and
    in-flight with sparklines of the last minute, recent crashes and restarts, and every agent
    and worker. Ctrl-C quits (exit 0).

    With --json: the GET /v1/monitor body, one JSON line per refresh (after the first, only
    the events that are new).
    """
    from axon.cli.top import run_top

    with _remote(url, token) as client:
        run_top(client, interval=interval, once=once, json_output=json_output, console=console)


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
    with _remote(url, token) as client:
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


def main() -> None:
    # Like ``python -m``, find the user's agent modules in the working directory (the workers
    # are started with it as their working directory too).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app()
