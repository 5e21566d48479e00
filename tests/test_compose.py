"""docker-compose.yml and .env.example: loopback-only ports, pinned images, the schema mount, health checks, and
no secret in the repository.

The rendered checks need Docker Compose v2 (`docker compose` or a v2 `docker-compose`), which only renders the
file and needs no Docker engine; without it they are skipped. The checks on the raw text always run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
INITDB = "/docker-entrypoint-initdb.d/"
SCHEMA = "oscbridge/store/schema.sql"  # package data of oscbridge.store, mounted into initdb
PLACEHOLDERS = {"CHANGE_ME", "change-me", "changeme", ""}


@cache
def compose_command() -> tuple[str, ...] | None:
    """The Compose v2 command on this machine, or None. v1 (`docker-compose` 1.x) renders differently."""
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    for cmd in candidates:
        try:
            done = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and re.search(r"\bv?2\.\d+", done.stdout):
            return cmd
    return None


def clean_env() -> dict[str, str]:
    """The environment without variables that would override the env file (the shell wins over --env-file)."""
    prefixes = ("POSTGRES_", "OLLAMA_", "OSCBRIDGE_", "COMPOSE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def render(env_file: Path) -> subprocess.CompletedProcess[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("Docker Compose v2 is not installed (neither `docker compose` nor a v2 `docker-compose`)")
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        env=clean_env(),
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    done = render(ENV_EXAMPLE)
    # Some wrappers of the compose binary drop its exit code, so the output is checked as well.
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


def services(config: dict[str, Any]) -> dict[str, Any]:
    result = config["services"]
    assert isinstance(result, dict)
    return result


# ------------------------------------------------------------------------------------------------------------
# Rendered by Compose
# ------------------------------------------------------------------------------------------------------------


def test_services_present(config: dict[str, Any]) -> None:
    assert {"postgres", "ollama", "ollama-pull"} <= services(config).keys()


def test_every_published_port_is_bound_to_loopback(config: dict[str, Any]) -> None:
    published = []
    for name, service in services(config).items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published.append((name, int(port["target"]), int(port["published"])))
    assert ("postgres", 5432, 5432) in published
    assert ("ollama", 11434, 11434) in published


def test_images_are_pinned(config: dict[str, Any]) -> None:
    for name, service in services(config).items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} floats"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a release"
    pg = services(config)["postgres"]["image"]
    match = re.fullmatch(r"pgvector/pgvector:(\d+)\.(\d+)\.(\d+)-pg(\d+)(-\w+)?", pg)
    assert match, pg
    assert tuple(int(x) for x in match.group(1, 2, 3)) >= (0, 8, 4), "pgvector < 0.8.4 has HNSW vacuum bugs"


def test_schema_is_mounted_into_initdb(config: dict[str, Any]) -> None:
    volumes = services(config)["postgres"]["volumes"]
    mounts = [v for v in volumes if v["type"] == "bind" and v["target"].startswith(INITDB)]
    assert len(mounts) == 1, volumes
    mount = mounts[0]
    assert Path(mount["source"]) == REPO / SCHEMA
    assert (REPO / SCHEMA).is_file()
    assert mount["target"].endswith(".sql")
    assert mount.get("read_only") is True
    # A missing schema.sql must be an error, not an empty directory created in its place (the short `a:b`
    # syntax implies create_host_path; Compose leaves the key out when it is false).
    assert not mount.get("bind", {}).get("create_host_path", False)
    data = [v for v in volumes if v["type"] == "volume"]
    assert data and data[0]["source"] == "pgdata"


def test_postgres_healthcheck_waits_for_the_real_server(config: dict[str, Any]) -> None:
    postgres = services(config)["postgres"]
    check = postgres["healthcheck"]
    command = " ".join(check["test"])
    assert "pg_isready" in command
    assert "-U" in command and "-d" in command
    assert "-h 127.0.0.1" in command  # TCP: the init-time server listens on the socket only
    assert check.get("start_period")
    assert postgres["environment"]["POSTGRES_PASSWORD"] in PLACEHOLDERS


def test_ollama_model_is_pulled_once_ollama_is_healthy(config: dict[str, Any]) -> None:
    svc = services(config)
    assert svc["ollama"]["healthcheck"]["test"]
    pull = svc["ollama-pull"]
    assert pull["image"] == svc["ollama"]["image"]
    assert pull["command"] == ["pull", "nomic-embed-text"]
    assert pull["depends_on"]["ollama"]["condition"] == "service_healthy"
    assert pull["environment"]["OLLAMA_HOST"] == "http://ollama:11434"
    assert pull.get("restart") in (None, "no")
    assert not pull.get("ports")


def test_password_is_required(tmp_path: Path) -> None:
    env_file = tmp_path / "no-password.env"
    env_file.write_text("POSTGRES_USER=oscbridge\n")
    done = render(env_file)
    assert not done.stdout.strip()
    assert "POSTGRES_PASSWORD" in done.stderr


def test_host_ports_can_be_moved(tmp_path: Path) -> None:
    env_file = tmp_path / "ports.env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "\nPOSTGRES_HOST_PORT=55432\nOLLAMA_HOST_PORT=21434\n")
    done = render(env_file)
    assert done.stdout.strip(), done.stderr
    svc = json.loads(done.stdout)["services"]
    assert [(p["host_ip"], p["published"]) for p in svc["postgres"]["ports"]] == [("127.0.0.1", "55432")]
    assert [(p["host_ip"], p["published"]) for p in svc["ollama"]["ports"]] == [("127.0.0.1", "21434")]


# ------------------------------------------------------------------------------------------------------------
# Raw text (no Compose needed)
# ------------------------------------------------------------------------------------------------------------


def test_raw_compose_file() -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"(?m)^version\s*:", text), "the top-level `version:` key is obsolete"
    images = re.findall(r"(?m)^\s*image:\s*(\S+)", text)
    assert images
    for image in images:
        assert not image.endswith(":latest") and re.search(r":\S*\d+\.\d+\.\d+", image), image
    ports = re.findall(r"(?m)^\s*-\s*\"([^\"]+:\d+)\"\s*$", text)
    assert ports
    for port in ports:
        assert port.startswith("127.0.0.1:"), port
    assert "${POSTGRES_PASSWORD:?" in text
    assert INITDB in text and f"./{SCHEMA}" in text


def test_env_example_holds_only_placeholders() -> None:
    values = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert "POSTGRES_PASSWORD" in values
    assert values["POSTGRES_PASSWORD"] in PLACEHOLDERS
    for key, value in values.items():
        if re.search(r"PASSWORD|SECRET|TOKEN", key):
            assert value in PLACEHOLDERS, f"{key} in .env.example must be a placeholder"


def test_dotenv_is_not_committed_and_is_ignored() -> None:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git work tree")
    tracked = subprocess.run(
        [git, "ls-files", "--", ".env"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert tracked.strip() == "", ".env is committed: remove it with `git rm --cached .env` and rotate the password"
    ignored = subprocess.run([git, "check-ignore", "-q", ".env"], cwd=REPO, check=False)
    assert ignored.returncode == 0, "add `.env` to .gitignore"
