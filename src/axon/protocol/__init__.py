"""The wire protocol between the orchestrator and its worker processes (see docs/protocol.md)."""
