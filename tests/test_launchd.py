"""The LaunchAgent plist, the launchctl command sequences and the parsing of `launchctl print`.

launchctl itself only exists on macOS, so these tests drive a recording stand-in and check the exact commands
that the real one would receive; the plist is checked by parsing it back with plistlib.
"""

from __future__ import annotations

import io
import os
import plistlib
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oscbridge.cli import build_parser
from oscbridge.redact import strip_password
from oscbridge.tools import launchd
from oscbridge.tools.launchd import LABEL

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "launchd" / f"{LABEL}.plist"
PYTHON = sys.executable  # absolute and executable on every test machine
UID = 501
SECRET = "s3cr3t-Pa55"


@dataclass
class Result:
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""


class RecordingLaunchctl:
    """Stands in for /bin/launchctl: records each call and answers from a script keyed by the sub-command."""

    def __init__(self, answers: dict[str, list[Result]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}

    def run(self, args: list[str]) -> Result:
        self.calls.append(list(args))
        queue = self.answers.get(args[0])
        if queue:
            return queue.pop(0) if len(queue) > 1 else queue[0]
        return Result()


NOT_FOUND = Result(113, "", f'Could not find service "{LABEL}" in domain for port\n')

RUNNING = f"""gui/501/{LABEL} = {{
	active count = 1
	path = /Users/ana/Library/LaunchAgents/{LABEL}.plist
	type = LaunchAgent
	state = running

	program = /Users/ana/oscbridge/.venv/bin/python
	arguments = {{
		/Users/ana/oscbridge/.venv/bin/python
		-m
		oscbridge
		serve
	}}

	working directory = /Users/ana/Library/Application Support/oscbridge

	stdout path = /Users/ana/Library/Logs/oscbridge/stdout.log
	stderr path = /Users/ana/Library/Logs/oscbridge/stderr.log
	inherited environment = {{
		SSH_AUTH_SOCK => /private/tmp/com.apple.launchd.Xy12/Listeners
	}}

	default environment = {{
		PATH => /usr/bin:/bin:/usr/sbin:/sbin
	}}

	environment = {{
		OSCBRIDGE_LOG_FILE => /Users/ana/Library/Logs/oscbridge/oscbridge.log
		PYTHONUNBUFFERED => 1
		XPC_SERVICE_NAME => {LABEL}
	}}

	domain = gui/501 [100008]
	asid = 100008
	minimum runtime = 10
	exit timeout = 15
	nice = 5
	runs = 1
	pid = 4242
	immediate reason = speculative
	forks = 0
	execs = 1
	initialized = 1
	trampolined = 1
	started suspended = 0
	proxy started suspended = 0
	last exit code = (never exited)

	semaphores = {{
		successful exit => 0
	}}

	event triggers = {{
	}}

	endpoints = {{
	}}

	spawn type = interactive (4)
	jetsam priority = 40
	jetsam memory limit (active) = (unlimited)
	cpumon = default
	job state = running
	probabilistic guard malloc policy = {{
		activation rate = 1/1000
		sample rate = 1/0
	}}

	properties = keepalive | runatload | inferred program
}}
"""

CRASHED = f"""gui/501/{LABEL} = {{
	active count = 0
	path = /Users/ana/Library/LaunchAgents/{LABEL}.plist
	type = LaunchAgent
	state = not running

	program = /Users/ana/oscbridge/.venv/bin/python
	environment = {{
		state => bogus
		PYTHONUNBUFFERED => 1
	}}

	domain = gui/501 [100008]
	minimum runtime = 10
	exit timeout = 15
	runs = 3
	last exit code = 78: EX_CONFIG

	spawn type = interactive (4)
	properties = keepalive | runatload
}}
"""


def plan_kwargs(home: Path, **extra: Any) -> dict[str, Any]:
    return {"home": home, "python": PYTHON, "environ": {}, **extra}


def parsed(data: bytes) -> dict[str, Any]:
    result = plistlib.loads(data)
    assert isinstance(result, dict)
    return result


# ------------------------------------------------------------------------------------------------------------
# The plist
# ------------------------------------------------------------------------------------------------------------


def test_plist_has_the_keys_launchd_needs(tmp_path: Path) -> None:
    logs = tmp_path / "Library" / "Logs" / "oscbridge"
    work = tmp_path / "Library" / "Application Support" / "oscbridge"
    data = parsed(launchd.render_plist(PYTHON, ["--osc-port", "9001"], {}, logs, work))

    assert data["Label"] == LABEL
    args = data["ProgramArguments"]
    assert os.path.isabs(args[0]) and args[0] == PYTHON
    assert args[1:] == ["-m", "oscbridge", "serve", "--osc-port", "9001"]
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["ThrottleInterval"] == 10
    assert data["ExitTimeOut"] > 10  # above the daemon's 10 s drain
    assert data["ProcessType"] == "Standard"
    assert data["Nice"] == 5
    assert data["LimitLoadToSessionType"] == "Aqua"
    assert data["WorkingDirectory"] == str(work)
    assert Path(data["StandardOutPath"]).parent == logs
    assert Path(data["StandardErrorPath"]).parent == logs
    env = data["EnvironmentVariables"]
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].split(":")[0] == str(Path(PYTHON).parent)
    assert "/usr/bin" in env["PATH"].split(":")
    assert env["OSCBRIDGE_LOG_FILE"] == str(logs / "oscbridge.log")


def test_plan_puts_logs_under_library_logs_oscbridge(tmp_path: Path) -> None:
    plan = launchd.plan_agent(**plan_kwargs(tmp_path))
    data = parsed(plan.plist)
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(data[key]).parent == tmp_path / "Library" / "Logs" / "oscbridge"
    assert plan.plist_path == tmp_path / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert data["WorkingDirectory"] == str(tmp_path / "Library" / "Application Support" / "oscbridge")


def test_relative_interpreter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absolute"):
        launchd.render_plist("python3", [], {}, tmp_path / "logs", tmp_path)
    with pytest.raises(ValueError, match="process_type"):
        launchd.render_plist(PYTHON, [], {}, tmp_path / "logs", tmp_path, process_type="Realtime")  # type: ignore[arg-type]


def test_only_oscbridge_and_harmless_pg_settings_are_copied(tmp_path: Path) -> None:
    environ = {
        "OSCBRIDGE_OSC_PORT": "9001",
        "OSCBRIDGE_OLLAMA_URL": "http://127.0.0.1:11434",
        "OSCBRIDGE_EMPTY": "",
        "PGSSLROOTCERT": "/Users/ana/ca.pem",
        "HOME": "/Users/ana",
        "GITHUB_TOKEN": "ghp_abc",
        "SSH_AUTH_SOCK": "/tmp/x",
    }
    env = parsed(launchd.plan_agent(**plan_kwargs(tmp_path, environ=environ)).plist)["EnvironmentVariables"]
    assert env["OSCBRIDGE_OSC_PORT"] == "9001"
    assert env["OSCBRIDGE_OLLAMA_URL"] == "http://127.0.0.1:11434"
    assert env["PGSSLROOTCERT"] == "/Users/ana/ca.pem"
    assert "OSCBRIDGE_EMPTY" not in env
    for name in ("HOME", "GITHUB_TOKEN", "SSH_AUTH_SOCK"):
        assert name not in env


def test_no_password_anywhere_in_the_plist(tmp_path: Path) -> None:
    url = f"postgresql://oscbridge:{SECRET}@db.example.net:5432/oscbridge?sslmode=verify-full&sslrootcert=/ca.pem"
    environ = {
        "OSCBRIDGE_DATABASE_URL": url,
        "OSCBRIDGE_DB_PASSWORD": SECRET,
        "PGPASSWORD": SECRET,
        "PGSSLPASSWORD": SECRET,
        "OSCBRIDGE_OLLAMA_URL": f"http://user:{SECRET}@127.0.0.1:11434",
    }
    serve_args = ["--database-url", url, f"--database-url={url}"]
    plan = launchd.plan_agent(**plan_kwargs(tmp_path, environ=environ, serve_args=serve_args))

    assert SECRET.encode() not in plan.plist
    data = parsed(plan.plist)
    env = data["EnvironmentVariables"]
    clean = "postgresql://oscbridge@db.example.net:5432/oscbridge?sslmode=verify-full&sslrootcert=/ca.pem"
    assert env["OSCBRIDGE_DATABASE_URL"] == clean
    assert env["OSCBRIDGE_OLLAMA_URL"] == "http://user@127.0.0.1:11434"
    for name in ("OSCBRIDGE_DB_PASSWORD", "PGPASSWORD", "PGSSLPASSWORD"):
        assert name not in env
    assert data["ProgramArguments"][4:] == ["--database-url", clean, f"--database-url={clean}"]
    # ...and the user is told, with what to do instead.
    text = "\n".join(plan.warnings)
    assert "OSCBRIDGE_DATABASE_URL contains a password" in text
    assert "PGPASSWORD" in text and ".pgpass" in text
    assert SECRET not in text


@pytest.mark.parametrize(
    ("url", "expected", "removed"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u@h:5432/db", True),
        ("postgres://u:pw@h1:5432,h2:5433/db", "postgres://u@h1:5432,h2:5433/db", True),
        ("postgresql://:pw@h/db", "postgresql://h/db", True),
        ("postgresql://u@h/db", "postgresql://u@h/db", False),
        ("postgresql://u:@h/db", "postgresql://u@h/db", False),
        ("postgresql://h/db?password=pw&sslmode=require", "postgresql://h/db?sslmode=require", True),
        ("postgresql://h/db?sslmode=require&password=pw#x", "postgresql://h/db?sslmode=require#x", True),
        ("postgresql://u:p/a?s#s@h:5432/db", "postgresql://u@h:5432/db", True),  # unencoded reserved chars
        ("postgresql://u:p%40ss@h/db", "postgresql://u@h/db", True),
        ("postgresql://h/db?sslrootcert=/a:b@c", "postgresql://h/db?sslrootcert=/a:b@c", False),
        ("/Users/ana/Library", "/Users/ana/Library", False),
        ("9001", "9001", False),
    ],
)
def test_strip_password(url: str, expected: str, removed: bool) -> None:
    assert strip_password(url) == (expected, removed)


def test_pgpass_advice(tmp_path: Path) -> None:
    environ = {"OSCBRIDGE_DATABASE_URL": f"postgresql://oscbridge:{SECRET}@127.0.0.1:5432/oscbridge"}
    plan = launchd.plan_agent(**plan_kwargs(tmp_path, environ=environ))
    assert any(".pgpass does not exist" in w for w in plan.warnings)

    pgpass = tmp_path / ".pgpass"
    pgpass.write_text("127.0.0.1:5432:oscbridge:oscbridge:x\n")
    pgpass.chmod(0o644)
    plan = launchd.plan_agent(**plan_kwargs(tmp_path, environ=environ))
    assert any("asyncpg will ignore it" in w for w in plan.warnings)

    pgpass.chmod(0o600)
    plan = launchd.plan_agent(**plan_kwargs(tmp_path, environ=environ))
    assert not any(".pgpass" in w and "ignore" in w for w in plan.warnings)
    assert not any("does not exist" in w for w in plan.warnings)


def test_data_dir_setting_becomes_the_working_directory(tmp_path: Path) -> None:
    environ = {"OSCBRIDGE_DATA_DIR": str(tmp_path / "elsewhere")}
    data = parsed(launchd.plan_agent(**plan_kwargs(tmp_path, environ=environ)).plist)
    assert data["WorkingDirectory"] == str(tmp_path / "elsewhere")
    assert data["EnvironmentVariables"]["OSCBRIDGE_DATA_DIR"] == str(tmp_path / "elsewhere")


def test_print_plist_is_what_install_writes(tmp_path: Path) -> None:
    environ = {"OSCBRIDGE_OSC_PORT": "9001"}
    text = launchd.plan_agent(**plan_kwargs(tmp_path, environ=environ)).plist.decode()
    launchd.install(RecordingLaunchctl({"print": [NOT_FOUND]}), uid=UID, **plan_kwargs(tmp_path, environ=environ))
    assert (tmp_path / "Library" / "LaunchAgents" / f"{LABEL}.plist").read_text() == text


def test_committed_template_agrees_with_the_generated_plist(tmp_path: Path) -> None:
    template = parsed(TEMPLATE.read_bytes())
    generated = parsed(launchd.plan_agent(**plan_kwargs(tmp_path)).plist)

    assert template.keys() == generated.keys()
    assert template["EnvironmentVariables"].keys() == generated["EnvironmentVariables"].keys()
    path_keys = {"ProgramArguments", "WorkingDirectory", "StandardOutPath", "StandardErrorPath"}
    for key in template.keys() - path_keys - {"EnvironmentVariables"}:
        assert template[key] == generated[key], key
    assert template["ProgramArguments"][1:] == generated["ProgramArguments"][1:]
    assert os.path.isabs(template["ProgramArguments"][0])
    assert template["StandardOutPath"].endswith("/Library/Logs/oscbridge/stdout.log")
    assert template["StandardErrorPath"].endswith("/Library/Logs/oscbridge/stderr.log")


# ------------------------------------------------------------------------------------------------------------
# launchctl sequences
# ------------------------------------------------------------------------------------------------------------


def test_install_fresh(tmp_path: Path) -> None:
    ctl = RecordingLaunchctl({"print": [NOT_FOUND]})
    result = launchd.install(ctl, uid=UID, **plan_kwargs(tmp_path))

    path = tmp_path / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert result.plist_path == path and not result.was_loaded
    assert ctl.calls == [
        ["print", f"gui/{UID}/{LABEL}"],
        ["enable", f"gui/{UID}/{LABEL}"],
        ["bootstrap", f"gui/{UID}", str(path)],
    ]
    assert parsed(path.read_bytes())["Label"] == LABEL
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # launchd refuses group/world-writable plists
    assert (tmp_path / "Library" / "Logs" / "oscbridge").is_dir()
    assert (tmp_path / "Library" / "Application Support" / "oscbridge").is_dir()
    assert not list(path.parent.glob("*.tmp"))


def test_install_over_a_loaded_agent_boots_it_out_first(tmp_path: Path) -> None:
    naps: list[float] = []
    ctl = RecordingLaunchctl(
        {
            "print": [Result(0, RUNNING)],
            "bootout": [Result(5, "", "Boot-out failed: 5: Input/output error")],  # ignored
            # launchd may still be tearing the old job down: the first bootstrap fails, the retry succeeds.
            "bootstrap": [Result(5, "", "Bootstrap failed: 5: Input/output error"), Result(0)],
        }
    )
    result = launchd.install(ctl, uid=UID, sleep=naps.append, **plan_kwargs(tmp_path))

    path = str(tmp_path / "Library" / "LaunchAgents" / f"{LABEL}.plist")
    assert result.was_loaded
    assert ctl.calls == [
        ["print", f"gui/{UID}/{LABEL}"],
        ["bootout", f"gui/{UID}/{LABEL}"],
        ["enable", f"gui/{UID}/{LABEL}"],
        ["bootstrap", f"gui/{UID}", path],
        ["bootstrap", f"gui/{UID}", path],
    ]
    assert naps == [1.0]


def test_install_reports_a_bootstrap_failure(tmp_path: Path) -> None:
    ctl = RecordingLaunchctl(
        {"print": [NOT_FOUND], "bootstrap": [Result(5, "", "Bootstrap failed: 5: Input/output error")]}
    )
    with pytest.raises(launchd.LaunchdError, match=r"Input/output error.*plutil -lint"):
        launchd.install(ctl, uid=UID, **plan_kwargs(tmp_path))
    assert [c[0] for c in ctl.calls] == ["print", "enable", "bootstrap"]  # no retry on a fresh install


def test_install_refuses_a_missing_interpreter(tmp_path: Path) -> None:
    ctl = RecordingLaunchctl()
    with pytest.raises(launchd.LaunchdError, match="does not exist"):
        launchd.install(ctl, uid=UID, **plan_kwargs(tmp_path, python=str(tmp_path / "nope" / "python")))
    assert ctl.calls == []


def test_uninstall(tmp_path: Path) -> None:
    launchd.install(RecordingLaunchctl({"print": [NOT_FOUND]}), uid=UID, **plan_kwargs(tmp_path))
    path = tmp_path / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert path.exists()

    ctl = RecordingLaunchctl()
    result = launchd.uninstall(ctl, home=tmp_path, uid=UID)
    assert ctl.calls == [["bootout", f"gui/{UID}/{LABEL}"]]
    assert result.was_loaded and result.removed_file and not result.warnings
    assert not path.exists()


def test_uninstall_when_not_loaded_and_no_file(tmp_path: Path) -> None:
    ctl = RecordingLaunchctl({"bootout": [Result(3, "", "Boot-out failed: 3: No such process")]})
    result = launchd.uninstall(ctl, home=tmp_path, uid=UID)
    assert ctl.calls == [["bootout", f"gui/{UID}/{LABEL}"]]
    assert not result.was_loaded and not result.removed_file and not result.warnings


def test_uninstall_removes_the_file_even_if_bootout_fails_oddly(tmp_path: Path) -> None:
    path = tmp_path / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    ctl = RecordingLaunchctl({"bootout": [Result(1, "", "Operation not permitted")]})
    result = launchd.uninstall(ctl, home=tmp_path, uid=UID)
    assert result.removed_file and not path.exists()
    assert "Operation not permitted" in result.warnings[0]


# ------------------------------------------------------------------------------------------------------------
# status
# ------------------------------------------------------------------------------------------------------------


def test_status_running() -> None:
    ctl = RecordingLaunchctl({"print": [Result(0, RUNNING)]})
    state = launchd.status(ctl, uid=UID)
    assert ctl.calls == [["print", f"gui/{UID}/{LABEL}"]]
    assert state.loaded and state.running
    assert state.state == "running"
    assert state.pid == 4242
    assert state.runs == 1
    assert state.last_exit_code is None and state.last_exit_text == "(never exited)"
    assert state.path == f"/Users/ana/Library/LaunchAgents/{LABEL}.plist"  # not the env's PATH
    assert state.spawn_type == "interactive (4)"
    assert "running (pid 4242)" in state.describe()


def test_status_not_running_with_last_exit_code() -> None:
    state = launchd.status(RecordingLaunchctl({"print": [Result(0, CRASHED)]}), uid=UID)
    assert state.loaded and not state.running
    assert state.state == "not running"  # the top-level line, not the nested 'state => bogus'
    assert state.pid is None
    assert state.last_exit_code == 78
    assert state.runs == 3
    assert "last exit code: 78: EX_CONFIG" in state.describe()


def test_status_not_loaded() -> None:
    state = launchd.status(RecordingLaunchctl({"print": [NOT_FOUND]}), uid=UID)
    assert not state.loaded and not state.running
    assert state.detail == ""
    assert state.describe() == f"{LABEL}: not loaded"


def test_status_parses_an_unfamiliar_layout_leniently() -> None:
    state = launchd.parse_print_output("state=running\npid =  77\nlast exit code = 0\n")
    assert state.running and state.pid == 77 and state.last_exit_code == 0


# ------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------


def cli(argv: list[str], **seams: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = ["launchd", *argv]
    code = launchd.run(build_parser(args).parse_args(args), out=out, err=err, **seams)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("action", ["install", "uninstall", "status"])
def test_cli_refuses_launchctl_actions_off_macos(action: str, tmp_path: Path) -> None:
    code, out, err = cli([action], platform="linux", home=tmp_path, environ={})
    assert code == 2 and out == ""
    assert "only on macOS" in err
    assert not (tmp_path / "Library").exists()


def test_cli_print_works_everywhere(tmp_path: Path) -> None:
    environ = {"OSCBRIDGE_DATABASE_URL": f"postgresql://oscbridge:{SECRET}@127.0.0.1/oscbridge"}
    code, out, err = cli(
        ["print", "--python", PYTHON, "--", "--osc-port", "9001"], platform="linux", home=tmp_path, environ=environ
    )
    assert code == 0
    data = parsed(out.encode())
    assert data["ProgramArguments"] == [PYTHON, "-m", "oscbridge", "serve", "--osc-port", "9001"]
    assert SECRET not in out and SECRET not in err
    assert "contains a password" in err


def test_cli_install_status_uninstall_with_a_stand_in(tmp_path: Path) -> None:
    ctl = RecordingLaunchctl({"print": [NOT_FOUND]})
    seams: dict[str, Any] = {"launchctl": ctl, "platform": "linux", "home": tmp_path, "uid": UID, "environ": {}}
    code, out, _ = cli(["install", "--python", PYTHON, "--process-type", "Background"], **seams)
    assert code == 0 and "Wrote" in out
    written = parsed((tmp_path / "Library" / "LaunchAgents" / f"{LABEL}.plist").read_bytes())
    assert written["ProcessType"] == "Background"

    assert cli(["status"], **seams)[0] == 3  # not loaded
    ctl.answers["print"] = [Result(0, CRASHED)]
    assert cli(["status"], **seams)[0] == 1  # loaded, not running
    ctl.answers["print"] = [Result(0, RUNNING)]
    code, out, _ = cli(["status"], **seams)
    assert code == 0 and "pid 4242" in out

    code, out, _ = cli(["uninstall"], **seams)
    assert code == 0 and "removed" in out
    assert ["bootout", f"gui/{UID}/{LABEL}"] in ctl.calls


def test_cli_install_failure_is_exit_1(tmp_path: Path) -> None:
    ctl = RecordingLaunchctl({"print": [NOT_FOUND], "bootstrap": [Result(5, "", "Bootstrap failed: 5")]})
    code, _, err = cli(["install", "--python", PYTHON], launchctl=ctl, home=tmp_path, uid=UID, environ={})
    assert code == 1 and "Bootstrap failed" in err


def test_add_arguments_plugs_into_a_parent_parser() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="oscbridge")
    sub = parser.add_subparsers(dest="command", required=True)
    launchd.add_arguments(sub.add_parser("launchd"))
    ns = parser.parse_args(["launchd", "install", "--", "--osc-port", "9001"])
    assert ns.command == "launchd" and ns.launchd_action == "install"
    assert ns.serve_args == ["--", "--osc-port", "9001"]
    with pytest.raises(SystemExit):
        parser.parse_args(["launchd", "bogus"])
