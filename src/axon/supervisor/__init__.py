"""Supervision of agent worker processes."""
