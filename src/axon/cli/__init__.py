"""The ``axon`` command."""

from axon.cli.main import app, main

__all__ = ["app", "main"]
