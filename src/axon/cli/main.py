"""The ``axon`` command: the Typer app of :mod:`axon.cli.app` with every command registered."""

from __future__ import annotations

import os
import sys

# Importing the command modules registers their commands on the app.
from axon.cli import local, remote, top  # noqa: F401  # pyright: ignore[reportUnusedImport]
from axon.cli.app import app
from axon.cli.remote import exit_code_of

__all__ = ["app", "exit_code_of", "main"]


def main() -> None:
    # Like ``python -m``, find the user's agent modules in the working directory (the workers
    # are started with it as their working directory too).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app()
