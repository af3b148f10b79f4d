"""Observability: structured log events (and, later, metrics and the dashboard)."""
