"""Configuration: unknown keys and bad values are a ``ConfigError`` naming the key, before
anything starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from axon import AgentSpec, Axon, ConfigError, RestartType, Strategy, SupervisorSpec, load_config
from axon.config import parse_config

MISBEHAVING = "axon.examples.misbehaving:misbehaving_agent"


def agent(**overrides: Any) -> dict[str, Any]:
    return {"id": "a", "agent": MISBEHAVING, **overrides}


def config_error(data: dict[str, Any], **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kw)
    return info.value


# -- valid configs ------------------------------------------------------------------------------


def test_empty_config_is_all_defaults() -> None:
    config = parse_config({})
    assert config.agents == ()
    assert config.runtime.listen.startswith("127.0.0.1:")
    assert config.supervisor.strategy is Strategy.ONE_FOR_ONE


def test_the_documented_example_parses(tmp_path: Path) -> None:
    path = tmp_path / "axon.toml"
    path.write_text(
        """
[runtime]
store = "memory://"  # PRODUCT.md shows sqlite://, which the durable-store release adds
listen = "127.0.0.1:8000"

[[agents]]
id = "python_agent_1"
agent = "axon.examples.misbehaving:misbehaving_agent"
model = "test"
workers = 2
max_concurrency = 32
timeout = 60
restart = "transient"

[supervisor]
strategy = "rest_for_one"
max_restarts = 5
max_seconds = 10
backoff_initial = 0.05
backoff_max = 30
""",
        encoding="utf-8",
    )
    config = load_config(path)
    (spec,) = config.agents
    assert (spec.id, spec.workers, spec.timeout, spec.restart) == (
        "python_agent_1",
        2,
        60.0,
        RestartType.TRANSIENT,
    )
    assert config.supervisor.strategy is Strategy.REST_FOR_ONE
    assert config.supervisor_for(spec) is config.supervisor


# -- unknown keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"runtime": {"lisen": "127.0.0.1:1"}}, "runtime.lisen"),
        ({"supervisor": {"max_restart": 3}}, "supervisor.max_restart"),
        ({"agents": [agent(wrokers=2)]}, "agents[0].wrokers"),
        ({"agents": [agent(), agent(id="b", tiemout=3)]}, "agents[1].tiemout"),
        (
            {"agents": [agent(supervisor={"stratgy": "one_for_all"})]},
            "agents[0].supervisor.stratgy",
        ),
    ],
)
def test_unknown_key_is_named(data: dict[str, Any], key: str) -> None:
    error = config_error(data)
    assert error.key == key
    assert error.reason == "unknown key"
    assert key in str(error)


# -- bad values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "hint"),
    [
        ({"agents": [agent(workers=0)]}, "agents[0].workers", "1"),
        ({"agents": [agent(workers="two")]}, "agents[0].workers", "two"),
        ({"agents": [agent(max_concurrency=0)]}, "agents[0].max_concurrency", "1"),
        ({"agents": [agent(timeout=0)]}, "agents[0].timeout", "0"),
        ({"agents": [agent(timeout=-5)]}, "agents[0].timeout", "-5"),
        ({"agents": [agent(restart="sometimes")]}, "agents[0].restart", "sometimes"),
        ({"agents": [agent(id="a b")]}, "agents[0].id", "a b"),
        ({"agents": [agent(id="")]}, "agents[0].id", ""),
        ({"agents": [agent(id="a\n")]}, "agents[0].id", ""),
        ({"agents": [agent(agent=MISBEHAVING + "\n")]}, "agents[0].agent", "import path"),
        ({"agents": [{"agent": MISBEHAVING}]}, "agents[0].id", "required"),
        ({"agents": [{"id": "a"}]}, "agents[0].agent", "required"),
        ({"supervisor": {"strategy": "one_for_none"}}, "supervisor.strategy", "one_for_none"),
        ({"supervisor": {"max_restarts": -1}}, "supervisor.max_restarts", "-1"),
        ({"supervisor": {"max_seconds": 0}}, "supervisor.max_seconds", "0"),
        ({"runtime": {"log_format": "xml"}}, "runtime.log_format", "xml"),
        ({"runtime": 5}, "runtime", "5"),
        ({"agents": {"id": "a"}}, "agents", ""),
    ],
)
def test_bad_value_is_named(data: dict[str, Any], key: str, hint: str) -> None:
    error = config_error(data)
    assert error.key == key
    assert error.reason != "unknown key"
    assert hint.lower() in error.reason.lower()


def test_backoff_initial_above_backoff_max_is_rejected() -> None:
    error = config_error({"supervisor": {"backoff_initial": 5, "backoff_max": 1}})
    assert error.key.startswith("supervisor")
    assert "backoff_initial" in error.reason
    assert "backoff_max" in error.reason


def test_heartbeat_timeout_must_exceed_its_interval() -> None:
    error = config_error({"supervisor": {"heartbeat_interval": 2, "heartbeat_timeout": 1}})
    assert error.key.startswith("supervisor")
    assert "heartbeat_timeout" in error.reason


def test_per_agent_supervisor_is_checked_too() -> None:
    error = config_error({"agents": [agent(supervisor={"backoff_initial": 5, "backoff_max": 1})]})
    assert error.key.startswith("agents[0].supervisor")
    assert "backoff_initial" in error.reason


def test_duplicate_agent_ids_are_rejected_naming_agents() -> None:
    error = config_error({"agents": [agent(), agent(id="b"), agent()]})
    assert error.key == "agents"
    assert "duplicate" in error.reason
    assert "'a'" in error.reason


# -- agent import paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("axon_no_such_module_xyz:agent", "cannot import"),
        ("axon.examples.no_such_module:agent", "cannot import"),
        ("axon.examples.misbehaving:no_such_agent", "no attribute"),
        ("axon.examples.misbehaving:misbehaving_agent.no_such", "no attribute"),
        ("axon.examples.misbehaving:STARTUP_FAILURES_ENV_VAR", "neither"),
        ("not an import path", "import path"),
        ("axon.examples.misbehaving", "import path"),
        ("axon.examples.misbehaving:", "import path"),
        (":misbehaving_agent", "import path"),
    ],
)
def test_agent_import_path_that_does_not_resolve_is_named(path: str, why: str) -> None:
    error = config_error({"agents": [agent(agent=path)]})
    assert error.key == "agents[0].agent"
    assert why in error.reason


def test_agent_module_that_fails_to_import_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "axon_test_broken_agent_module.py").write_text(
        "raise RuntimeError('this module is broken')\n", encoding="utf-8"
    )
    (tmp_path / "axon_test_syntax_error_module.py").write_text("def (:\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("axon_test_broken_agent_module", "axon_test_syntax_error_module"):
        error = config_error({"agents": [agent(agent=f"{module}:agent")]})
        assert error.key == "agents[0].agent"
        assert module in error.reason


def test_deps_import_path_is_checked_too() -> None:
    error = config_error({"agents": [agent(deps="axon_no_such_module_xyz:make_deps")]})
    assert error.key == "agents[0].deps"
    error = config_error({"agents": [agent(), agent(id="b", deps="nope")]})
    assert error.key == "agents[1].deps"


def test_second_agent_is_named_by_its_index() -> None:
    error = config_error({"agents": [agent(), agent(id="b", agent="axon_no_such_module_xyz:x")]})
    assert error.key == "agents[1].agent"


def test_factories_are_accepted_and_imports_can_be_skipped() -> None:
    parse_config({"agents": [agent(agent="axon.examples.misbehaving:make_misbehaving_agent")]})
    config = parse_config(
        {"agents": [agent(agent="axon_no_such_module_xyz:x")]}, check_imports=False
    )
    assert config.agents[0].agent == "axon_no_such_module_xyz:x"


# -- files ----------------------------------------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == str(path)
    assert "not found" in info.value.reason


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "axon.toml"
    path.write_text("[runtime\nstore = 'memory://'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == str(path)
    assert "invalid TOML" in info.value.reason


def test_unreadable_config_paths_are_config_errors(tmp_path: Path) -> None:
    not_utf8 = tmp_path / "latin1.toml"
    not_utf8.write_bytes("[runtime]\nstore = 'caf\xe9'\n".encode("latin-1"))
    for path in (not_utf8, tmp_path):  # a directory is not a config file either
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.key == str(path)


def test_bad_key_in_a_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "axon.toml"
    path.write_text(
        f'[[agents]]\nid = "a"\nagent = "{MISBEHAVING}"\nwrokers = 2\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "agents[0].wrokers"
    assert info.value.reason == "unknown key"


# -- the Python API -------------------------------------------------------------------------------


def _children() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process(os.getpid()).children(recursive=True)}


def test_axon_with_an_unresolvable_agent_raises_before_anything_starts() -> None:
    before = _children()
    with pytest.raises(ConfigError) as info:
        Axon([AgentSpec(id="ok", agent=MISBEHAVING), AgentSpec(id="bad", agent="axon_nope_xyz:a")])
    assert info.value.key == "agents[1].agent"
    assert _children() <= before  # no worker was spawned


def test_axon_with_duplicate_agent_ids_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        Axon([AgentSpec(id="a", agent=MISBEHAVING), AgentSpec(id="a", agent=MISBEHAVING)])
    assert info.value.key == "agents"


def test_axon_from_config_reports_a_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Axon.from_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: AgentSpec(id="a", agent="m:a", workers=0), "workers"),
        (lambda: AgentSpec(id="a", agent="m:a", wrokers=2), "wrokers"),
        (lambda: SupervisorSpec(strategy="one_for_none"), "strategy"),
        (lambda: AgentSpec(id="a b", agent="m:a"), "id"),
    ],
)
def test_specs_built_in_python_raise_config_error_naming_the_key(build, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("runtime", "key"),
    [
        ({"store": "sqlite-but-not-yet:///axon.db"}, "runtime.store"),
        ({"store": "axon.db"}, "runtime.store"),
        ({"listen": "localhost"}, "runtime.listen"),
        ({"listen": "127.0.0.1:99999"}, "runtime.listen"),
        ({"listen": ":8000"}, "runtime.listen"),
    ],
)
def test_runtime_store_and_listen_are_checked(runtime: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"runtime": runtime})
    assert caught.value.key == key


@pytest.mark.parametrize("listen", ["127.0.0.1:8000", "[::1]:0", "localhost:65535"])
def test_valid_listen_addresses_are_accepted(listen: str) -> None:
    assert parse_config({"runtime": {"listen": listen}}).runtime.listen == listen


# -- the HTTP edge's hosts, origins and connection limits ------------------------------------------


def test_edge_defaults() -> None:
    runtime = parse_config({}).runtime
    assert runtime.allowed_hosts == ()
    assert runtime.cors_origins == ()
    assert runtime.max_connections == 1024
    assert runtime.header_timeout == 10.0


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        (["axon.internal"], ("axon.internal",)),
        (["AXON.Internal."], ("axon.internal",)),  # lowercase, without the root's dot
        (["10.0.0.5", "fd00::1", "[FD00::0:1]"], ("10.0.0.5", "fd00::1")),  # IPv6 bare, once
        (["*"], ("*",)),
        (["my_service", "a-b.c"], ("my_service", "a-b.c")),
        ([], ()),
    ],
)
def test_allowed_hosts_are_kept_canonical(written: list[str], kept: tuple[str, ...]) -> None:
    assert parse_config({"runtime": {"allowed_hosts": written}}).runtime.allowed_hosts == kept


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        (["http://app.example:5173"], ("http://app.example:5173",)),
        (["HTTPS://App.Example:443"], ("https://app.example",)),  # as a browser sends it
        (["http://localhost:80", "http://localhost"], ("http://localhost",)),
        (["http://[::1]:3000"], ("http://[::1]:3000",)),
        (["http://127.0.0.1:8080"], ("http://127.0.0.1:8080",)),
    ],
)
def test_cors_origins_are_kept_as_browsers_send_them(
    written: list[str], kept: tuple[str, ...]
) -> None:
    assert parse_config({"runtime": {"cors_origins": written}}).runtime.cors_origins == kept


@pytest.mark.parametrize(
    ("runtime", "key", "hint"),
    [
        ({"allowed_hosts": ["axon.internal:8000"]}, "runtime.allowed_hosts", "without"),
        ({"allowed_hosts": ["http://axon.internal"]}, "runtime.allowed_hosts", "host name"),
        ({"allowed_hosts": ["a b"]}, "runtime.allowed_hosts", "'a b'"),
        ({"allowed_hosts": [""]}, "runtime.allowed_hosts", "host name"),
        ({"allowed_hosts": ["[axon]"]}, "runtime.allowed_hosts", "host name"),
        ({"allowed_hosts": "axon.internal"}, "runtime.allowed_hosts", "tuple"),
        ({"allowed_hosts": [5]}, "runtime.allowed_hosts", "string"),
        ({"cors_origins": ["http://app.example/"]}, "runtime.cors_origins", "no path"),
        ({"cors_origins": ["http://app.example/page"]}, "runtime.cors_origins", "no path"),
        ({"cors_origins": ["app.example"]}, "runtime.cors_origins", "scheme://host"),
        ({"cors_origins": ["*"]}, "runtime.cors_origins", "not '*'"),
        ({"cors_origins": ["null"]}, "runtime.cors_origins", "origin"),
        ({"cors_origins": ["ftp://app.example"]}, "runtime.cors_origins", "http or https"),
        ({"cors_origins": ["http://app.example:0"]}, "runtime.cors_origins", "origin"),
        ({"cors_origins": ["http://app.example:65536"]}, "runtime.cors_origins", "origin"),
        ({"cors_origins": ["http://user@app.example"]}, "runtime.cors_origins", "origin"),
        ({"cors_origins": ["http://app.example?x=1"]}, "runtime.cors_origins", "origin"),
        ({"cors_origins": ["http://[nope]"]}, "runtime.cors_origins", "origin"),
        ({"max_connections": 0}, "runtime.max_connections", "1"),
        ({"max_connections": "many"}, "runtime.max_connections", "many"),
        ({"header_timeout": 0}, "runtime.header_timeout", "0.1"),
        ({"header_timeout": 0.05}, "runtime.header_timeout", "0.1"),
        ({"header_timeout": 1e9}, "runtime.header_timeout", "86400"),
        ({"header_timeout": float("inf")}, "runtime.header_timeout", "finite"),
        ({"header_timeout": float("nan")}, "runtime.header_timeout", "finite"),
    ],
)
def test_edge_keys_are_checked(runtime: dict[str, Any], key: str, hint: str) -> None:
    error = config_error({"runtime": runtime})
    assert error.key in (key, f"{key}[0]")
    assert hint.lower() in error.reason.lower()


def test_edge_keys_at_their_bounds_are_accepted() -> None:
    runtime = parse_config({"runtime": {"max_connections": 1, "header_timeout": 0.1}}).runtime
    assert (runtime.max_connections, runtime.header_timeout) == (1, 0.1)
    assert parse_config({"runtime": {"header_timeout": 86_400}}).runtime.header_timeout == 86_400
