"""``axon top``: the dashboard's picture in a terminal, refreshed live (Rich).

One frame: the figures now (runs/s, errors/s and their share, p50/p99 latency of successful
runs, in flight, queued) each with a sparkline of the last minute, the totals since the server
started, the most recent notable events (crashes, restarts, state changes, timeouts), newest
first, and the supervision tree (each agent, then each of its workers with pid, CPU % and RSS).
The tree comes last: with many agents it is what a short terminal cuts.

Every frame is one ``GET /v1/monitor`` (the events after the previous frame's ``last_seq``), so
the view costs the server what one dashboard tab does. Once the first frame is shown, a server
that stops answering is shown as such and retried at the next refresh (it may be restarting);
a refused token ends the view (exit 3) as it does for every remote command.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from axon.cli.app import app, console
from axon.cli.remote import (
    DEFAULT_URL,
    STATE_STYLES,
    JsonOutput,
    Token,
    Url,
    exit_text,
    last_exit,
    remote,
)
from axon.client import AxonClient
from axon.errors import AxonError, ConnectionLost, ServerUnreachable

__all__ = ["render_frame", "run_top", "sparkline", "top"]

EVENTS_SHOWN = 8
SPARK_SECONDS = 60.0
_BARS = "▁▂▃▄▅▆▇█"
_LEVEL_STYLES = {"warning": "yellow", "error": "red", "critical": "bold red", "info": "cyan"}


def run_top(
    client: AxonClient,
    *,
    interval: float,
    once: bool,
    json_output: bool,
    console: Console,
) -> None:
    """Show frames every ``interval`` seconds until Ctrl-C (returns normally then, whenever it
    comes), or one frame with ``once``. With ``json_output``: each ``/v1/monitor`` body as one
    line of JSON instead (after the first, only the events that are new). ``AxonError`` from the
    first request, and any but a lost server later, propagates."""
    try:
        _run(client, interval=interval, once=once, json_output=json_output, console=console)
    except KeyboardInterrupt:
        return  # quitting a viewer is no failure


def _run(
    client: AxonClient, *, interval: float, once: bool, json_output: bool, console: Console
) -> None:
    snapshot = client.monitor()
    events: deque[dict[str, Any]] = deque(maxlen=EVENTS_SHOWN)
    events.extend(snapshot["events"])
    # A pipe gets whole rows (for grep and friends) and, live, one frame after another (like
    # ``top -b``); a terminal gets rows that fit its width, redrawn in place.
    terminal = console.is_terminal
    out = console if terminal else Console(width=1000)
    if json_output:
        _json_line(snapshot)
    elif once or not terminal:
        out.print(render_frame(snapshot, events, client.url))
    if once:
        return
    if json_output:
        _json_loop(client, snapshot["last_seq"], interval)
    elif terminal:
        _live_loop(client, snapshot, events, interval, console)
    else:
        _batch_loop(client, snapshot, events, interval, out)


def _json_loop(client: AxonClient, since: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        try:
            snapshot = client.monitor(since)
        except (ServerUnreachable, ConnectionLost) as exc:  # noted on stderr; retried
            Console(stderr=True).print(f"{exc.type}: {exc.message}", style="dim", markup=False)
            continue
        since = snapshot["last_seq"]
        _json_line(snapshot)


def _frames(
    client: AxonClient,
    snapshot: dict[str, Any],
    events: deque[dict[str, Any]],
    interval: float,
) -> Iterator[RenderableType]:
    """A frame every ``interval`` seconds, forever; a lost server shows in the frame (with
    the last answer) until it answers again."""
    while True:
        time.sleep(interval)
        problem: AxonError | None = None
        try:
            fresh = client.monitor(snapshot["last_seq"])
        except (ServerUnreachable, ConnectionLost) as exc:
            problem = exc
        else:
            if fresh["last_seq"] < snapshot["last_seq"]:  # the server restarted
                events.clear()
            events.extend(fresh["events"])
            snapshot = fresh
        yield render_frame(snapshot, events, client.url, interval=interval, problem=problem)


def _live_loop(
    client: AxonClient,
    snapshot: dict[str, Any],
    events: deque[dict[str, Any]],
    interval: float,
    console: Console,
) -> None:
    with Live(
        render_frame(snapshot, events, client.url, interval=interval),
        console=console,
        auto_refresh=False,
        vertical_overflow="crop",
    ) as live:
        for frame in _frames(client, snapshot, events, interval):
            live.update(frame, refresh=True)


def _batch_loop(
    client: AxonClient,
    snapshot: dict[str, Any],
    events: deque[dict[str, Any]],
    interval: float,
    out: Console,
) -> None:
    for frame in _frames(client, snapshot, events, interval):
        out.print()
        out.print(frame)
        out.file.flush()


def _json_line(snapshot: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(snapshot, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# -- one frame -----------------------------------------------------------------------------------


def render_frame(
    snapshot: dict[str, Any],
    events: Iterable[dict[str, Any]],
    url: str,
    *,
    interval: float | None = None,
    problem: AxonError | None = None,
) -> RenderableType:
    """The whole picture of one ``/v1/monitor`` snapshot (``events``: the feed entries to
    show, oldest first)."""
    title = Text.assemble(
        ("axon top", "bold"), f"  {url}  ", (_clock(float(snapshot["time"])), "dim")
    )
    if interval is not None:
        title.append(f"  (every {interval:g}s; Ctrl-C to quit)", style="dim")
    parts: list[RenderableType] = [title]
    if problem is not None:
        parts.append(
            Text(f"{problem.type}: {problem.message} (showing the last answer; retrying)", "red")
        )
    parts += [_figures(snapshot), _totals(snapshot["totals"]), Text("")]
    parts += [_events(list(events)), Text(""), _agents(snapshot["agents"])]
    return Group(*parts)


def _figures(snapshot: dict[str, Any]) -> Table:
    now = snapshot["now"]
    series = snapshot["series"]
    last = max(1, round(SPARK_SECONDS / float(snapshot["bucket_s"])))
    ratio = now["error_ratio"]
    rows: list[tuple[str, str, Sequence[float | None]]] = [
        ("runs/s", _number(now["requests_per_s"]), series["requests"]),
        (
            "errors/s",
            _number(now["errors_per_s"]) + ("" if ratio is None else f" ({100 * ratio:.1f}%)"),
            series["errors"],
        ),
        ("p50", _ms(now["p50_s"]), series["p50_s"]),
        ("p99", _ms(now["p99_s"]), series["p99_s"]),
        ("in flight", str(now["in_flight"]), series["in_flight"]),
        ("queued", str(now["queued"]), series["queued"]),
    ]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(justify="right", style="bold")
    table.add_column(style="cyan")
    for label, value, values in rows:
        table.add_row(label, value, sparkline(values[-last:]))
    span = f"last {now['window_s']:g}s; sparklines: last {SPARK_SECONDS:g}s"
    table.add_row("", "", Text(span, style="dim"))
    return table


def _totals(totals: dict[str, Any]) -> Text:
    return Text(
        f"since start: {totals['requests']} runs, {totals['errors']} failed, "
        f"{totals['restarts']} restarts, {totals['crashes']} crashes",
        style="dim",
    )


def _events(events: list[dict[str, Any]]) -> RenderableType:
    if not events:
        return Text("no crashes, restarts or timeouts yet", style="dim")
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left")
    for column in ("time", "level", "event", "details"):
        table.add_column(column, no_wrap=column != "details")
    for entry in reversed(events):  # newest first
        level = str(entry["level"])
        fields: dict[str, Any] = entry["fields"]
        details = " ".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v)}"
            for k, v in fields.items()
            if v is not None
        )
        table.add_row(
            _clock(float(entry["time"])),
            Text(level, style=_LEVEL_STYLES.get(level, "")),
            str(entry["event"]),
            details,
        )
    return table


def _agents(agents: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ("agent", "state", "restarts", "in-flight", "queued", "pid", "cpu", "rss")
    for column in (*columns, "last exit"):
        table.add_column(column, no_wrap=True, justify="left" if column in columns[:2] else "right")
    for agent in agents:
        state = str(agent["state"])
        table.add_row(
            Text(str(agent["id"]), style="bold"),
            Text(state, style=STATE_STYLES.get(state, "")),
            str(agent["restarts"]),
            str(agent["in_flight"]),
            str(agent["queued"]),
            "",
            "",
            "",
            exit_text(last_exit(agent)),
        )
        for worker in agent["workers"]:
            wstate = str(worker["state"])
            cpu = worker.get("cpu_percent")
            table.add_row(
                f"  worker {worker['index']}",
                Text(wstate, style=STATE_STYLES.get(wstate, "")),
                str(worker["restarts"]),
                str(worker["in_flight"]),
                "",
                "-" if worker["pid"] is None else str(worker["pid"]),
                "-" if cpu is None else f"{cpu:.1f}%",
                _mib(worker.get("rss_bytes")),
                exit_text(worker.get("last_exit")),
                style="dim" if wstate == "running" else "",
            )
    return table


# -- formatting ----------------------------------------------------------------------------------


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, its height relative to the largest; blank where None."""
    top = max((v for v in values if v is not None), default=0.0)
    chars: list[str] = []
    for value in values:
        if value is None:
            chars.append(" ")
        elif top <= 0:
            chars.append(_BARS[0])
        else:
            chars.append(_BARS[min(len(_BARS) - 1, round(value / top * (len(_BARS) - 1)))])
    return "".join(chars)


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1048576:.1f} MiB"


def _clock(unix: float) -> str:
    return datetime.fromtimestamp(unix).strftime("%H:%M:%S")


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
    with remote(url, token) as client:
        run_top(client, interval=interval, once=once, json_output=json_output, console=console)
