"""The ``axon`` command: the Typer app of :mod:`axon.cli.app` with every command registered."""

from __future__ import annotations

import os
import sys

from axon.cli import bench, chaos, local, remote, top
from axon.cli.app import app
from axon.cli.remote import exit_code_of

__all__ = ["app", "exit_code_of", "main"]

COMMAND_MODULES = (local, remote, top, bench, chaos)
"""Imported for what they do on import: each registers its commands on the app."""


def main() -> None:
    # Like ``python -m``, find the user's agent modules in the working directory (the workers
    # are started with it as their working directory too).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app()
