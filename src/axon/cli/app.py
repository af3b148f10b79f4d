"""``axon``: serve agents, check configs, and talk to a running server.

This module holds the Typer app, the consoles and the exit codes; the commands live in
:mod:`axon.cli.local` (``serve``, ``check``, ``demo-config``), :mod:`axon.cli.remote` (``send``,
``agents``, ``restart``, ``history``) and :mod:`axon.cli.top`, and :mod:`axon.cli.main` puts
them together.

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
  ``invalid_request``, ``history_too_large``, ``agent_not_found``, ``conversation_not_found``.
- 3: authentication failed (``unauthorized``: the server requires a token and got none or a wrong
  one).
- 130: interrupted (Ctrl-C); an interrupted ``send`` disconnects, which cancels its run.
  (``top`` exits 0 on Ctrl-C: quitting a viewer is normal.)
"""

from __future__ import annotations

import typer
from rich.console import Console

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "app",
    "console",
    "err_console",
    "in_process_logging",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_RUNTIME = EXIT_FAILED
EXIT_USAGE = 2
EXIT_CONFIG = EXIT_USAGE
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130

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


def in_process_logging() -> None:
    """For commands that run a runtime in this process to measure it (``bench --config``,
    ``chaos``): only Axon's errors reach stderr; the command's report says everything else."""
    import logging

    from axon.observability.logging import configure_logging

    configure_logging("text", logging.ERROR)
