"""Settings: one explicit conversion per field type from each source (flag, environment, TOML), refusals that
name the setting and its source, precedence, the platform paths, and the ranges `validate()` refuses."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, get_type_hints

import platformdirs.macos
import platformdirs.unix
import pytest

from oscbridge.config import (
    ConfigError,
    Settings,
    converter_for,
    default_data_dir,
    default_log_dir,
    load_settings,
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment of its own: a HOME under tmp_path and no OSCBRIDGE_* variables of the machine."""
    return {"HOME": str(tmp_path / "home")}


def toml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "oscbridge.toml"
    path.write_text(text)
    return path


def refusal(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(**kwargs)
    return str(err.value)


# -- precedence ----------------------------------------------------------------------------------------------


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "oscbridge.toml"
    config.write_text('osc_port = 7001\nollama_url = "http://file:1"\nembed_dim = 512\n')
    env = {"OSCBRIDGE_OSC_PORT": "7002", "OSCBRIDGE_EMBED_DIM": "384", "HOME": str(tmp_path)}
    s = load_settings({"osc_port": 7003}, env=env, config_file=config)
    assert (s.osc_port, s.embed_dim, s.ollama_url) == (7003, 384, "http://file:1")
    s = load_settings({}, env=env, config_file=config)
    assert s.osc_port == 7002
    s = load_settings({}, env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert (s.osc_port, s.host, s.data_dir) == (8999, "127.0.0.1", tmp_path / "xdg" / "oscbridge")
    with pytest.raises(ConfigError, match="unknown setting"):
        (tmp_path / "bad.toml").write_text("nope = 1\n")
        load_settings({}, env=env, config_file=tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="osc_port"):
        load_settings({"osc_port": "many"}, env=env)
    with pytest.raises(ConfigError, match="inside the plugin port range"):
        load_settings({"osc_port": 9005}, env=env)


@pytest.mark.parametrize(("name", "file_value", "env_value", "flag_value", "expected"), [
    ("osc_port", "7001", "7002", 7003, (7001, 7002, 7003)),
    ("plugin_silence", "1.5", "2.5", "3.5", (1.5, 2.5, 3.5)),
    ("host", '"10.0.0.1"', "10.0.0.2", "10.0.0.3", ("10.0.0.1", "10.0.0.2", "10.0.0.3")),
    ("log_file", '"/f.log"', "/e.log", "/g.log", (Path("/f.log"), Path("/e.log"), Path("/g.log"))),
])
def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path, env: dict[str, str], name: str,
                                                        file_value: str, env_value: str, flag_value: object,
                                                        expected: tuple[object, object, object]) -> None:
    config = toml_file(tmp_path, f"[oscbridge]\n{name} = {file_value}\n")
    variable = {f"OSCBRIDGE_{name.upper()}": env_value}
    default = getattr(Settings(), name)
    assert getattr(load_settings({}, env=env), name) == default
    assert getattr(load_settings({}, env=env, config_file=config), name) == expected[0]
    assert getattr(load_settings({}, env={**env, **variable}, config_file=config), name) == expected[1]
    assert getattr(load_settings({name: flag_value}, env={**env, **variable}, config_file=config), name) \
        == expected[2]
    assert getattr(load_settings({name: None}, env={**env, **variable}), name) == expected[1]  # None: not given


def test_config_file_from_the_environment_and_an_empty_variable_counts_as_unset(tmp_path: Path,
                                                                                env: dict[str, str]) -> None:
    toml_file(tmp_path, "osc_port = 7001\n")
    env = {**env, "OSCBRIDGE_CONFIG": str(tmp_path / "oscbridge.toml"), "OSCBRIDGE_OSC_PORT": ""}
    assert load_settings({}, env=env).osc_port == 7001


def test_a_bad_value_in_the_file_is_refused_even_when_the_environment_overrides_it(tmp_path: Path,
                                                                                     env: dict[str, str]) -> None:
    config = toml_file(tmp_path, 'osc_port = "many"\n')
    message = refusal(flags={}, env={**env, "OSCBRIDGE_OSC_PORT": "7002"}, config_file=config)
    assert message == f"setting 'osc_port' from the config file {config}: 'many' is not a whole number"


# -- each type from each source ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "toml", "text", "expected"), [
    ("embed_dim", "384", "384", 384),
    ("embed_dim", '"384"', " 384 ", 384),              # a quoted TOML number is read like the environment's text
    ("drain_timeout", "0.25", "0.25", 0.25),
    ("drain_timeout", "2", "2", 2.0),                   # an integer for a float field
    ("drain_timeout", '"1e-1"', "1e-1", 0.1),
    ("embed_model", '"all-minilm"', "all-minilm", "all-minilm"),
    ("database_url", '"postgresql://h/db"', "postgresql://h/db", "postgresql://h/db"),
    ("record", '"/tmp/r.jsonl"', "/tmp/r.jsonl", Path("/tmp/r.jsonl")),
    ("data_dir", '"/srv/oscbridge"', "/srv/oscbridge", Path("/srv/oscbridge")),
])
def test_each_type_from_each_source(tmp_path: Path, env: dict[str, str], name: str, toml: str, text: str,
                                    expected: object) -> None:
    from_file = load_settings({}, env=env, config_file=toml_file(tmp_path, f"{name} = {toml}\n"))
    from_env = load_settings({}, env={**env, f"OSCBRIDGE_{name.upper()}": text})
    from_flag = load_settings({name: text}, env=env)
    for settings in (from_file, from_env, from_flag):
        value = getattr(settings, name)
        assert value == expected and type(value) is type(expected)


def test_paths_expand_the_home_directory(tmp_path: Path, env: dict[str, str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    from_file = load_settings({}, env=env, config_file=toml_file(tmp_path, 'data_dir = "~/oscbridge"\n'))
    from_env = load_settings({}, env={**env, "OSCBRIDGE_LOG_FILE": "~/logs/o.log"})
    from_flag = load_settings({"record": "~/r.jsonl"}, env=env)
    assert from_file.data_dir == tmp_path / "me" / "oscbridge"
    assert from_env.log_file == tmp_path / "me" / "logs" / "o.log"
    assert from_flag.record == tmp_path / "me" / "r.jsonl"


def test_an_empty_value_means_none_for_optional_settings(tmp_path: Path, env: dict[str, str]) -> None:
    config = toml_file(tmp_path, 'record = ""\ndatabase_url = "postgresql://h/db"\n')
    settings = load_settings({"database_url": ""}, env=env, config_file=config)
    assert (settings.record, settings.database_url) == (None, None)


@pytest.mark.parametrize(("name", "toml", "reason"), [
    ("osc_port", "true", "True is not a whole number"),
    ("osc_port", "8999.0", "8999.0 is not a whole number"),
    ("osc_port", '"8999.5"', "'8999.5' is not a whole number"),
    ("osc_port", '""', "'' is not a whole number"),
    ("drain_timeout", '"soon"', "'soon' is not a finite number"),
    ("drain_timeout", "nan", "nan is not a finite number"),
    ("drain_timeout", "inf", "inf is not a finite number"),
    ("drain_timeout", "false", "False is not a finite number"),
    ("host", "127", "127 is not text"),
    ("data_dir", '""', "'' is not a path"),
    ("log_file", "[1, 2]", "[1, 2] is not a path"),
])
def test_a_value_of_the_wrong_type_in_the_file_is_refused_naming_key_and_file(
        tmp_path: Path, env: dict[str, str], name: str, toml: str, reason: str) -> None:
    config = toml_file(tmp_path, f"[oscbridge]\n{name} = {toml}\n")
    assert refusal(env=env, config_file=config) == f"setting {name!r} from the config file {config}: {reason}"


def test_refusals_from_the_environment_and_flags_name_the_variable_and_the_flag(env: dict[str, str]) -> None:
    assert refusal(env={**env, "OSCBRIDGE_OSC_PORT": "many"}) == \
        "setting 'osc_port' from the environment (OSCBRIDGE_OSC_PORT): 'many' is not a whole number"
    assert refusal(env={**env, "OSCBRIDGE_HUB_TICK": "0,5"}) == \
        "setting 'hub_tick' from the environment (OSCBRIDGE_HUB_TICK): '0,5' is not a finite number"
    assert refusal(flags={"osc_port": "many"}, env=env) == \
        "setting 'osc_port' from the flag --osc-port: 'many' is not a whole number"
    assert refusal(flags={"data_dir": ""}, env=env) == "setting 'data_dir' from the flag --data-dir: '' is not a path"


def test_the_config_file_itself_is_checked(tmp_path: Path, env: dict[str, str]) -> None:
    assert refusal(env=env, config_file=toml_file(tmp_path, "osc_prot = 7001\n")) == \
        f"config file {tmp_path / 'oscbridge.toml'}: unknown setting 'osc_prot' (did you mean 'osc_port'?)"
    assert "'oscbridge' must be a table" in refusal(env=env, config_file=toml_file(tmp_path, "oscbridge = 1\n"))
    assert "Expected '=' after a key" in refusal(env=env, config_file=toml_file(tmp_path, "osc_port 7001\n"))
    assert "No such file" in refusal(env=env, config_file=tmp_path / "missing.toml")
    with pytest.raises(TypeError, match="no setting named 'osc_prot'"):
        load_settings({"osc_prot": 7001}, env=env)  # a caller's mistake, not a user's


# -- the converters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("TRUE", True), ("Yes", True), ("on", True), ("1", True), (" true\n", True), (True, True),
    ("false", False), ("False", False), ("NO", False), ("off", False), ("0", False), (False, False),
])
def test_booleans_are_read_from_a_table(text: object, expected: bool) -> None:
    assert converter_for(bool)(text) is expected


@pytest.mark.parametrize("value", ["", "maybe", "2", "-1", "t", "enabled", 1, 0, 1.0, None])
def test_anything_else_is_not_a_boolean(value: object) -> None:
    with pytest.raises(ValueError, match="is not a boolean \\(true/false, yes/no, on/off, 1/0\\)"):
        converter_for(bool)(value)


def test_optional_types_and_unknown_types() -> None:
    for optional in (bool | None, Optional[bool]):  # noqa: UP045 - both spellings resolve to a union
        assert [converter_for(optional)(v) for v in ("", None, "off")] == [None, None, False]
    assert converter_for(float)(3) == 3.0 and type(converter_for(float)(3)) is float
    for unsupported in (list[str], int | str, bytes):
        with pytest.raises(TypeError, match="no conversion for settings of type"):
            converter_for(unsupported)


def test_every_default_survives_the_trip_as_a_flag_and_as_text() -> None:
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        value = getattr(defaults, f.name)
        if value is None:
            continue
        assert getattr(load_settings({f.name: value}, env={"HOME": "/nowhere"}), f.name) == value
        as_text = {"HOME": "/nowhere", f"OSCBRIDGE_{f.name.upper()}": str(value)}
        assert getattr(load_settings({}, env=as_text), f.name) == value


# -- platform paths ------------------------------------------------------------------------------------------


def test_default_data_dir_per_platform(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    xdg = {**home, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert default_data_dir(home, "darwin") == tmp_path / "Library" / "Application Support" / "oscbridge"
    assert default_data_dir(xdg, "darwin") == tmp_path / "Library" / "Application Support" / "oscbridge"
    assert default_data_dir(home, "linux") == tmp_path / ".local" / "share" / "oscbridge"
    assert default_data_dir(xdg, "linux") == tmp_path / "xdg" / "oscbridge"
    assert default_data_dir({**home, "XDG_DATA_HOME": "relative"}, "linux") == \
        tmp_path / ".local" / "share" / "oscbridge"  # the XDG spec ignores relative paths
    assert default_log_dir(home, "darwin") == tmp_path / "Library" / "Logs" / "oscbridge"
    assert default_log_dir(home, "linux") == tmp_path / ".local" / "state" / "oscbridge" / "log"
    assert default_log_dir({**home, "XDG_STATE_HOME": str(tmp_path / "st")}, "linux") == \
        tmp_path / "st" / "oscbridge" / "log"


@pytest.mark.parametrize("variables", [{}, {"XDG_DATA_HOME": "xdg/data", "XDG_STATE_HOME": "xdg/state"},
                                       {"XDG_DATA_HOME": "relative", "XDG_STATE_HOME": "relative"}])
def test_the_paths_are_platformdirs_answers_where_the_contract_agrees(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    env = {"HOME": str(tmp_path / "home")}
    env.update({k: v if v == "relative" else str(tmp_path / v) for k, v in variables.items()})
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    linux = platformdirs.unix.Unix("oscbridge")
    assert (default_data_dir(env, "linux"), default_log_dir(env, "linux")) == \
        (Path(linux.user_data_dir), Path(linux.user_log_dir))
    mac = platformdirs.macos.MacOS("oscbridge")
    assert default_log_dir(env, "darwin") == Path(mac.user_log_dir)
    if not variables:  # platformdirs follows $XDG_DATA_HOME on macOS too; BRIDGE-API.md does not
        assert default_data_dir(env, "darwin") == Path(mac.user_data_dir)


# -- ranges --------------------------------------------------------------------------------------------------


def test_the_defaults_are_valid() -> None:
    Settings().validate()


def test_every_number_refuses_a_negative_value() -> None:
    """A new numeric setting without a range fails here: add it to `_POSITIVE` or `_NOT_NEGATIVE` in config.py,
    or give it its own check in `validate()`."""
    hints = get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        if hints[f.name] not in (int, float):
            continue
        negative: dict[str, Any] = {f.name: -1}
        with pytest.raises(ConfigError) as err:
            dataclasses.replace(Settings(), **negative).validate()
        assert f.name in err.value.keys, (f.name, str(err.value))


@pytest.mark.parametrize("name", ["drain_timeout", "watchdog_timeout", "quarantine_seconds", "gone_retention",
                                  "assign_retries", "debug_rows_per_second", "rejected_rows_per_second",
                                  "disk_reserve_bytes"])
def test_zero_means_off_where_documented(name: str) -> None:
    changes: dict[str, Any] = {name: 0}
    dataclasses.replace(Settings(), **changes).validate()


@pytest.mark.parametrize(("changes", "words"), [
    ({"hub_tick": 0.0}, "hub_tick must be positive, not 0.0"),
    ({"plugin_probe_timeout": 0.0}, "plugin_probe_timeout must be positive"),
    ({"embed_batch_size": 0}, "embed_batch_size must be positive, not 0"),
    ({"udp_rcvbuf": 0}, "udp_rcvbuf must be positive"),
    ({"tcp_max_connections": 0}, "tcp_max_connections must be positive"),
    ({"disk_reserve_bytes": -1}, "disk_reserve_bytes must not be negative, not -1"),
    ({"osc_port": 0}, "osc_port must be 1..65535, not 0"),
    ({"osc_port": 65536}, "osc_port must be 1..65535, not 65536"),
    ({"port_range_start": 9999, "port_range_end": 9000}, "plugin port range 9999-9000 is not a valid port range"),
    ({"port_range_end": 65536}, "plugin port range 9000-65536 is not a valid port range"),
    ({"osc_port": 9500}, "osc_port 9500 lies inside the plugin port range"),
    ({"ephemeral_base": 60000, "ephemeral_count": 100}, "plugin bootstrap ports 60000..69900"),
    ({"spool_max_bytes": 1024}, "spool_max_bytes must be at least 65536 (64 KiB), not 1024"),
    ({"embed_dim": 4096}, "embed_dim must be 1..2000 (pgvector's HNSW limit), not 4096"),
    ({"hnsw_ef_search": 1001}, "hnsw_ef_search must be 1..1000 (pgvector's limit), not 1001"),
    ({"tcp_high_water": 1000, "tcp_low_water": 2000}, "0 < tcp_low_water (2000) <= tcp_high_water (1000)"),
    ({"log_level": "verbose"}, "log_level must be debug, info, warning or error, not 'verbose'"),
])
def test_values_that_cannot_work_are_refused(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(Settings(), **changes).validate()
    assert words in str(err.value) and set(err.value.keys) >= set(changes)


def test_log_levels_are_those_of_logging_in_any_case() -> None:
    for level in ("debug", "INFO", "Warning", "error", "critical"):
        dataclasses.replace(Settings(), log_level=level).validate()


def test_a_range_error_says_where_the_value_came_from(tmp_path: Path, env: dict[str, str]) -> None:
    assert refusal(env={**env, "OSCBRIDGE_OSC_PORT": "0"}) == \
        "osc_port must be 1..65535, not 0; osc_port came from the environment (OSCBRIDGE_OSC_PORT)"
    config = toml_file(tmp_path, "port_range_start = 8000\n")
    assert refusal(flags={"osc_port": 8500}, env=env, config_file=config) == (
        "osc_port 8500 lies inside the plugin port range; osc_port came from the flag --osc-port; "
        f"port_range_start came from the config file {config}")
    assert refusal(env=env, config_file=toml_file(tmp_path, "hub_tick = 0\n")) == \
        f"hub_tick must be positive, not 0.0; hub_tick came from the config file {tmp_path / 'oscbridge.toml'}"
