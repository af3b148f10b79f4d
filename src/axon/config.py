"""Typed, validated settings: the only module that reads configuration files.

``load_config(path)`` reads an ``axon.toml``; the same objects can be built in Python
(``AgentSpec(id=..., agent=...)``). Every key has a default; an unknown key, a bad value or an
agent import path that does not resolve raises :class:`~axon.errors.ConfigError` naming the key
and the reason, before anything starts.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from axon.conversation_locks import ConversationPolicy
from axon.errors import ConfigError
from axon.protocol.codec import MAX_FRAME_SIZE
from axon.supervisor.policy import RestartType, Strategy

__all__ = [
    "AgentSpec",
    "AxonConfig",
    "RuntimeSpec",
    "SupervisorSpec",
    "load_config",
    "parse_config",
    "resolve_import_path",
]

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
PositiveSeconds = Annotated[float, Field(gt=0)]
_STORE_SCHEMES = frozenset({"memory", "sqlite", "postgresql", "postgres"})
_FRAME_HEADROOM = 65_536
"""Bytes of a run frame that are neither history nor prompt (ids, timeout, trace context)."""
_VALIDATING: ContextVar[bool] = ContextVar("axon_config_validating", default=False)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def __init__(self, **data: Any) -> None:
        # Built in Python (``AgentSpec(...)``), a bad value is a ConfigError like in a file.
        # Nested specs re-raise pydantic's error so the outermost one can name the full path.
        outer = not _VALIDATING.get()
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if outer:
                raise _config_error(exc) from None
            raise
        finally:
            _VALIDATING.reset(token)


class SupervisorSpec(_Spec):
    """OTP supervision settings, applied to each agent's pool of workers."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = Field(default=5, ge=0)
    max_seconds: PositiveSeconds = 10.0
    backoff_initial: float = Field(default=0.005, ge=0)
    backoff_max: PositiveSeconds = 30.0
    failed_cooldown: PositiveSeconds = 30.0
    """Seconds a FAILED agent waits before it is tried again."""
    startup_timeout: PositiveSeconds = 60.0
    """Seconds a worker may take from spawn to ``ready``; longer counts as a start-up failure."""
    shutdown_timeout: PositiveSeconds = 5.0
    """Seconds a worker gets to exit after ``shutdown`` (then SIGTERM, then SIGKILL)."""
    heartbeat_interval: PositiveSeconds = 1.0
    heartbeat_timeout: PositiveSeconds = 5.0
    """A worker whose event loop has not answered a ping for this long is killed as hung."""
    cancel_grace: PositiveSeconds = 2.0
    """Seconds a worker gets to honour a cancel before it is killed."""

    @model_validator(mode="after")
    def _backoff_order(self) -> SupervisorSpec:
        if self.backoff_initial > self.backoff_max:
            raise ValueError("backoff_initial must not exceed backoff_max")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("heartbeat_timeout must exceed heartbeat_interval")
        return self


class AgentSpec(_Spec):
    """One agent: what to import and how to run it."""

    id: str
    agent: str
    """Import path ``module:attr`` of a ``pydantic_ai.Agent`` or a zero-argument factory."""
    model: str | None = None
    """Optional model override: any pydantic-ai model name (``test`` for the offline TestModel)."""
    deps: str | None = None
    """Optional import path of a zero-argument factory of the agent's deps, called in the worker."""
    workers: int = Field(default=1, ge=1, le=256)
    max_concurrency: int = Field(default=32, ge=1, le=10_000)
    timeout: PositiveSeconds = 60.0
    max_timeout: PositiveSeconds = 3600.0
    """Upper bound of a per-request ``timeout``."""
    restart: RestartType = RestartType.PERMANENT
    conversation_policy: ConversationPolicy = ConversationPolicy.ENQUEUE
    """What a message to a conversation with a run in progress does: ``enqueue`` (wait its
    turn), ``reject`` (``ConversationBusy``) or ``interrupt`` (cancel the running one)."""
    queue_size: int = Field(default=1024, ge=0)
    """Requests that may wait for a free worker slot; beyond it requests get ``Overloaded``."""
    max_prompt_chars: int = Field(default=100_000, ge=1)
    max_history_bytes: int = Field(default=16 * 2**20, ge=1024)
    """Largest conversation history (pydantic-ai JSON bytes) a run of this agent is given; a
    request whose history is larger fails at once with ``HistoryTooLarge``, before any worker is
    involved."""
    max_result_bytes: int = Field(default=16 * 2**20, ge=65_536, le=MAX_FRAME_SIZE)
    """Largest frame a worker of this agent may send: a run's result (its new messages and its
    output) or one event of its stream. A run that produces more fails alone with
    ``ResultTooLarge``; a worker that sends a larger frame anyway is killed."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for this agent's workers."""
    supervisor: SupervisorSpec | None = None
    """Per-agent override of the ``[supervisor]`` table."""

    @model_validator(mode="after")
    def _fits_a_frame(self) -> AgentSpec:
        # A run frame carries the history and the prompt (UTF-8: at most 4 bytes a character).
        if self.max_history_bytes + 4 * self.max_prompt_chars + _FRAME_HEADROOM > MAX_FRAME_SIZE:
            raise ValueError(
                f"max_history_bytes ({self.max_history_bytes}) plus the largest prompt "
                f"({self.max_prompt_chars} characters) must fit in one run frame "
                f"({MAX_FRAME_SIZE} bytes)"
            )
        return self

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _AGENT_ID.fullmatch(value):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '-', '.'")
        return value

    @field_validator("agent", "deps")
    @classmethod
    def _check_import_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not an import path of the form 'package.module:attr'")
        return value


class RuntimeSpec(_Spec):
    store: str = "memory://"
    """Where conversations are kept: ``memory://``, ``sqlite:///PATH`` or ``postgresql://...``."""
    listen: str = "127.0.0.1:8000"
    """``host:port`` of the HTTP edge (``[::1]:8000`` for IPv6). Anything but a loopback address
    needs an API token."""
    api_token: str | None = Field(default=None, min_length=16)
    """Bearer token the HTTP API requires on every route but ``/healthz``; the environment
    variable ``AXON_API_TOKEN`` is used when this is unset."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest HTTP request body accepted (413 beyond it)."""
    shutdown_grace: float = Field(default=30.0, ge=0)
    """Seconds in-flight HTTP requests get to finish on SIGINT/SIGTERM before they are cancelled."""
    log_format: Literal["text", "json"] = "text"
    """How ``axon serve`` writes its log: readable ``text`` lines, or one ``json`` object per
    line (``--log-format`` overrides it)."""
    metrics: bool = True
    """Keep Prometheus metrics and serve them at ``/metrics``."""
    tracing: bool = False
    """Trace every run with OpenTelemetry, into the workers; needs
    ``pip install 'axon-runtime[otel]'`` (see docs/tracing.md)."""
    fork_server: bool = True
    """Start workers by forking a warm zygote that has pydantic-ai and the agent's modules
    imported (milliseconds, not a second); false: every worker is a new interpreter (see
    docs/fork-server.md)."""
    allowed_hosts: tuple[str, ...] = ()
    """``Host`` names the HTTP edge answers to besides the loopback names and the listen host
    (``"*"``: any); a wildcard listen (``0.0.0.0``, ``::``) with none set answers any ``Host``.
    Kept lowercase, IPv6 addresses without brackets (docs/http.md)."""
    cors_origins: tuple[str, ...] = ()
    """Origins (``scheme://host[:port]``) of other web pages allowed to call the API from a
    browser (CORS) and to send it state-changing requests; none: same-origin only. Kept as
    browsers send them: lowercase, without the scheme's default port."""
    max_connections: int = Field(default=1024, ge=1)
    """Open HTTP connections served at once; another one is answered 503
    ``too_many_connections`` and closed."""
    header_timeout: float = Field(default=10.0, ge=0.1, le=86_400, allow_inf_nan=False)
    """Seconds a connection gets to send a request's line and headers, counted from when it
    opened or its previous response ended (so also how long an idle connection is kept)."""

    _HOST_NAME: ClassVar[re.Pattern[str]] = re.compile(
        r"(?=.{1,253}$)[a-z0-9_][a-z0-9_-]{0,62}(\.[a-z0-9_][a-z0-9_-]{0,62})*"
    )
    _ORIGIN: ClassVar[re.Pattern[str]] = re.compile(
        r"(?P<scheme>https?)://(?P<host>\[[0-9a-f:.]+\]|[^/:\[\]@?#]+)(?::(?P<port>\d{1,5}))?"
    )

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        scheme, sep, _rest = value.partition("://")
        if not sep or scheme not in _STORE_SCHEMES:
            supported = ", ".join(f"{s}://" for s in sorted(_STORE_SCHEMES))
            raise ValueError(f"unsupported store URL {value!r} (supported: {supported})")
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port with a port from 0 to 65535")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(cls._canonical_host(host) for host in hosts))

    @field_validator("cors_origins")
    @classmethod
    def _check_cors_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(cls._canonical_origin(origin) for origin in origins))

    @classmethod
    def _canonical_host(cls, value: str) -> str:
        """A host name or IP address without a port, lowercase (IPv6 without brackets), or
        ``*``."""
        if value == "*":
            return value
        host = value.strip().lower().removesuffix(".")
        bracketed = host.startswith("[") and host.endswith("]")
        try:
            return str(ipaddress.ip_address(host[1:-1] if bracketed else host))
        except ValueError:
            if bracketed or not cls._HOST_NAME.fullmatch(host):
                raise ValueError(
                    f"{value!r} is not a host name or an IP address (without scheme or port), "
                    "nor '*'"
                ) from None
            return host

    @classmethod
    def _canonical_origin(cls, value: str) -> str:
        """``scheme://host[:port]`` as a browser sends it in ``Origin``: lowercase, without the
        scheme's default port, IPv6 in brackets."""
        problem = (
            f"{value!r} is not an origin: write scheme://host[:port] (http or https, no path, "
            "not '*')"
        )
        match = cls._ORIGIN.fullmatch(value.strip().lower())
        if match is None:
            raise ValueError(problem)
        scheme, host, port = match["scheme"], match["host"], match["port"]
        if host.startswith("["):
            try:
                host = f"[{ipaddress.IPv6Address(host[1:-1])}]"
            except ValueError:
                raise ValueError(problem) from None
        elif not cls._HOST_NAME.fullmatch(host):
            raise ValueError(problem)
        if port is not None and not 0 < int(port) <= 65535:
            raise ValueError(problem)
        if port is None or int(port) == {"http": 80, "https": 443}[scheme]:
            return f"{scheme}://{host}"
        return f"{scheme}://{host}:{int(port)}"


class AxonConfig(_Spec):
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    supervisor: SupervisorSpec = Field(default_factory=SupervisorSpec)
    agents: tuple[AgentSpec, ...] = ()

    @field_validator("agents")
    @classmethod
    def _unique_ids(cls, agents: tuple[AgentSpec, ...]) -> tuple[AgentSpec, ...]:
        seen: set[str] = set()
        for agent in agents:
            if agent.id in seen:
                raise ValueError(f"duplicate agent id {agent.id!r}")
            seen.add(agent.id)
        return agents

    def supervisor_for(self, agent: AgentSpec) -> SupervisorSpec:
        return agent.supervisor or self.supervisor


def parse_config(data: dict[str, Any], *, check_imports: bool = True) -> AxonConfig:
    """Validate a config mapping (the parsed TOML); ``ConfigError`` names the first bad key."""
    token = _VALIDATING.set(True)
    try:
        config = AxonConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc) from None
    finally:
        _VALIDATING.reset(token)
    if check_imports:
        check_agent_imports(config.agents)
    return config


def load_config(path: str | Path, *, check_imports: bool = True) -> AxonConfig:
    """Read and validate an ``axon.toml``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    return parse_config(data, check_imports=check_imports)


def check_agent_imports(agents: tuple[AgentSpec, ...] | list[AgentSpec]) -> None:
    """Resolve every agent and deps import path now, so a typo fails before anything starts."""
    for index, agent in enumerate(agents):
        for key in ("agent", "deps"):
            path = getattr(agent, key)
            if path is None:
                continue
            try:
                target = resolve_import_path(path)
            except ImportError as exc:
                raise ConfigError(f"agents[{index}].{key}", str(exc)) from None
            if key == "agent" and not callable(target) and not _is_agent(target):
                raise ConfigError(
                    f"agents[{index}].agent",
                    f"{path} is neither a pydantic_ai.Agent nor a factory returning one",
                )


def resolve_import_path(path: str) -> Any:
    """The object at ``module:attr`` (dotted attributes allowed); ``ImportError`` says why not."""
    module_name, _, attr_path = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the module itself is broken (raises, syntax error, ...)
        raise ImportError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    return obj


def _is_agent(obj: object) -> bool:
    from pydantic_ai import Agent

    return isinstance(obj, Agent)


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    key = _format_loc(first["loc"])
    if first["type"] == "extra_forbidden":
        return ConfigError(key or "<root>", "unknown key")
    reason = first["msg"].removeprefix("Value error, ")
    if (
        "input" in first
        and first["type"] not in ("missing",)
        and isinstance(first["input"], str | int | float | bool | None)
    ):
        reason = f"{reason} (got {first['input']!r})"
    return ConfigError(key or "<root>", reason)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
