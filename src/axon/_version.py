"""The version of the ``axon-runtime`` package."""

__version__ = "0.1.0"
