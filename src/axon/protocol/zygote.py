"""The zygote control channel: the messages between the orchestrator
(:mod:`axon.pool.fork_server`) and its zygotes (:mod:`axon.worker.zygote`).

A ``SOCK_SEQPACKET`` socket pair, one msgpack message per packet; file descriptors travel with
their message (``SCM_RIGHTS``): the new process's channel (the new agent zygote's control
channel, or the new worker's end of its connection to the orchestrator), then its stdout and
stderr pipes, with both fork requests.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "MAX_MESSAGE",
    "Exited",
    "ForkFailed",
    "ForkWorker",
    "ForkZygote",
    "Forked",
    "Message",
    "Started",
    "decode",
    "encode",
]

MAX_MESSAGE = 65536
"""Largest control message (a fork request carries the worker's settings: well below)."""


class ForkZygote(msgspec.Struct, tag="fork_zygote", frozen=True):
    """To the root: fork an agent zygote; passed with it: its channel, its stdout and stderr."""

    agent: str
    env: dict[str, str]
    modules: list[str]


class ForkWorker(msgspec.Struct, tag="fork_worker", frozen=True):
    """To an agent zygote: fork a worker; passed with it: the worker's end of its connection to
    the orchestrator, its stdout and its stderr. ``orchestrator``: the pid it must die with."""

    settings: bytes
    orchestrator: int


class Started(msgspec.Struct, tag="started", frozen=True):
    """From a zygote, once: ready to fork (``error`` None), or why it cannot."""

    pid: int
    error: str | None = None


class Forked(msgspec.Struct, tag="forked", frozen=True):
    """The answer to a fork request: the child's pid."""

    pid: int


class ForkFailed(msgspec.Struct, tag="fork_failed", frozen=True):
    """The answer to a fork request that could not be carried out."""

    error: str


class Exited(msgspec.Struct, tag="exited", frozen=True):
    """A child of this zygote ended: ``code`` as ``asyncio`` reports it (negative: a signal)."""

    pid: int
    code: int


Message = ForkZygote | ForkWorker | Started | Forked | ForkFailed | Exited

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> Message:
    return _decoder.decode(data)
