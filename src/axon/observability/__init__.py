"""Observability: structured log events (:mod:`.events`, :mod:`.logging`), Prometheus metrics
(:mod:`.metrics`, :mod:`.resources`), the live monitor behind the dashboard and ``axon top``
(:mod:`.monitor`), and OpenTelemetry traces (:mod:`.tracing`)."""
