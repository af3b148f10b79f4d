"""The HTTP edge: the API routes (:mod:`axon.http.app`) and ``axon serve``'s server
(:mod:`axon.http.server`)."""

from axon.http.app import create_app

__all__ = ["create_app"]
