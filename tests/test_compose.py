"""docker-compose.yml and .env.example: loopback-only ports, pinned images, the schema mount, health checks, and
no secret in the repository; and the studio shape (profile `studio`, docs/studio.md): PostgreSQL with TLS and
SCRAM only, PgBouncer in transaction mode, both published on one setting's address, certificates mounted read-only,
and the files under studio/ (the certificate script, pg_hba.conf, pgbouncer.ini, userlist.sql), which the last
test runs for real with Debian's PgBouncer and PostgreSQL 15.

The rendered checks need Docker Compose v2 (`docker compose` or a v2 `docker-compose`), which only renders the
file and needs no Docker engine; without it they are skipped. The checks on the raw text always run.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from oscbridge.store.roles import new_password, scram_verifier
from oscbridge.tools.db import BRIDGE_ROLE, DATABASE
from oscbridge.tools.ports import free_port
from tests.pg_support import DEBIAN_POSTGRES, DebianPostgres

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
INITDB = "/docker-entrypoint-initdb.d/"
SCHEMA = "oscbridge/store/schema.sql"  # package data of oscbridge.store, mounted into initdb
PLACEHOLDERS = {"CHANGE_ME", "change-me", "changeme", ""}

STUDIO = REPO / "studio"
STUDIO_SERVICES = ("studio-postgres", "pgbouncer")
CERT_DIR = STUDIO / "certs"  # STUDIO_CERT_DIR's default
MAKE_CERTS = STUDIO / "make-certs.sh"
PGBOUNCER = "/usr/sbin/pgbouncer"  # Debian's (.ci/run installs it)
# A SCRAM-SHA-256 verifier as pg_authid keeps it: iterations:salt$StoredKey:ServerKey.
VERIFIER = re.compile(r"SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+")


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
    prefixes = ("POSTGRES_", "OLLAMA_", "OSCBRIDGE_", "COMPOSE_", "STUDIO_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def render(env_file: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("Docker Compose v2 is not installed (neither `docker compose` nor a v2 `docker-compose`)")
    chosen = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE), "--env-file", str(env_file), *chosen, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        env=clean_env(),
    )


def rendered(env_file: Path, *profiles: str) -> dict[str, Any]:
    done = render(env_file, *profiles)
    # Some wrappers of the compose binary drop its exit code, so the output is checked as well.
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return rendered(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def studio() -> dict[str, Any]:
    return rendered(ENV_EXAMPLE, "studio")


def env_with(tmp_path: Path, **settings: str) -> Path:
    """.env.example with `settings` added (later lines win)."""
    env_file = tmp_path / "studio.env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "".join(f"\n{key}={value}" for key, value in settings.items()))
    return env_file


def services(config: dict[str, Any]) -> dict[str, Any]:
    result = config["services"]
    assert isinstance(result, dict)
    return result


# ------------------------------------------------------------------------------------------------------------
# Rendered by Compose
# ------------------------------------------------------------------------------------------------------------


def test_services_present(config: dict[str, Any]) -> None:
    assert {"postgres", "ollama", "ollama-pull"} <= services(config).keys()


def published(config: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """(service, host address, container port, host port) of every published port."""
    return [(name, port.get("host_ip", ""), int(port["target"]), int(port["published"]))
            for name, service in services(config).items() for port in service.get("ports", [])]


def test_every_published_port_is_bound_to_loopback(config: dict[str, Any]) -> None:
    ports = published(config)
    for name, address, _, _ in ports:
        assert address == "127.0.0.1", f"{name} publishes beyond loopback: {ports}"
    assert ("postgres", "127.0.0.1", 5432, 5432) in ports
    assert ("ollama", "127.0.0.1", 11434, 11434) in ports


def test_images_are_pinned(config: dict[str, Any]) -> None:
    assert_pinned(config)
    pg = services(config)["postgres"]["image"]
    match = re.fullmatch(r"pgvector/pgvector:(\d+)\.(\d+)\.(\d+)-pg(\d+)(-\w+)?", pg)
    assert match, pg
    assert tuple(int(x) for x in match.group(1, 2, 3)) >= (0, 8, 4), "pgvector < 0.8.4 has HNSW vacuum bugs"


def assert_pinned(config: dict[str, Any]) -> None:
    for name, service in services(config).items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} floats"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a release"


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
        # loopback, or the studio's one setting whose default is loopback
        assert port.startswith(("127.0.0.1:", "${STUDIO_BIND_ADDRESS:-127.0.0.1}:")), port
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


# ------------------------------------------------------------------------------------------------------------
# The studio (profile `studio`), rendered by Compose
# ------------------------------------------------------------------------------------------------------------


def bind_mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The service's bind mounts by their path in the container."""
    return {v["target"]: v for v in service.get("volumes", []) if v["type"] == "bind"}


def postgres_settings(service: dict[str, Any]) -> dict[str, str]:
    """The `-c name=value` settings of a `postgres ...` command."""
    command = service["command"]
    assert command[0] == "postgres" and len(command) % 2 == 1, command
    pairs = [command[i:i + 2] for i in range(1, len(command), 2)]
    assert all(flag == "-c" for flag, _ in pairs), command
    return dict(setting.split("=", 1) for _, setting in pairs)


def pgbouncer_ini() -> configparser.ConfigParser:
    # PgBouncer takes ";" and "#" as comments only at the start of a line, as configparser does by default.
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string((STUDIO / "pgbouncer.ini").read_text())
    return parser


def test_the_studio_needs_its_profile(config: dict[str, Any], studio: dict[str, Any]) -> None:
    assert not set(STUDIO_SERVICES) & services(config).keys()  # a plain `docker compose up` starts none of it
    assert set(STUDIO_SERVICES) <= services(studio).keys()
    assert {"postgres", "ollama", "ollama-pull"} <= services(studio).keys()
    for name in STUDIO_SERVICES:
        assert services(studio)[name]["profiles"] == ["studio"]


def test_the_studio_is_published_on_loopback_by_default(studio: dict[str, Any]) -> None:
    ports = published(studio)
    for name, address, _, _ in ports:
        assert address == "127.0.0.1", f"{name} publishes beyond loopback: {ports}"
    assert ("studio-postgres", "127.0.0.1", 5432, 5432) in ports
    assert ("pgbouncer", "127.0.0.1", 6432, 6432) in ports


def test_one_setting_exposes_the_studio_and_nothing_else(tmp_path: Path) -> None:
    ports = published(rendered(env_with(tmp_path, STUDIO_BIND_ADDRESS="10.0.0.5", STUDIO_POSTGRES_PORT="15432",
                                        STUDIO_PGBOUNCER_PORT="16432"), "studio"))
    assert ("studio-postgres", "10.0.0.5", 5432, 15432) in ports
    assert ("pgbouncer", "10.0.0.5", 6432, 16432) in ports
    for name, address, _, _ in ports:
        assert (address == "10.0.0.5") == (name in STUDIO_SERVICES), ports  # the single-user services stay on loopback


def test_the_studio_images_are_pinned(studio: dict[str, Any]) -> None:
    assert_pinned(studio)
    svc = services(studio)
    assert svc["studio-postgres"]["image"] == svc["postgres"]["image"]  # the checked pgvector release
    assert re.fullmatch(r"edoburu/pgbouncer:v\d+\.\d+\.\d+-p\d+", svc["pgbouncer"]["image"])


def test_certificates_are_mounted_read_only_and_the_ca_key_never(studio: dict[str, Any], tmp_path: Path) -> None:
    svc = services(studio)
    wanted = {"studio-postgres": {"server.crt", "server.key"}, "pgbouncer": {"server.crt", "server.key", "ca.crt"}}
    for name, files in wanted.items():
        mounts = bind_mounts(svc[name])
        assert mounts
        for target, mount in mounts.items():
            assert mount.get("read_only") is True, f"{name}: {target} is writable"
            # A missing file must stop the start, not become an empty directory.
            assert not mount.get("bind", {}).get("create_host_path", False), f"{name}: {target}"
        certificates = {Path(m["source"]).name for m in mounts.values() if Path(m["source"]).parent == CERT_DIR}
        assert certificates == files, name
    sources = [v.get("source", "") for service in svc.values() for v in service.get("volumes", [])]
    assert not [source for source in sources if source.endswith(".key") and "ca" in Path(source).name]
    # The folder is a setting.
    moved = services(rendered(env_with(tmp_path, STUDIO_CERT_DIR="/srv/studio-tls"), "studio"))
    assert {str(Path(m["source"]).parent) for m in bind_mounts(moved["pgbouncer"]).values()
            if m["source"].endswith((".crt", ".key"))} == {"/srv/studio-tls"}


def test_studio_postgres_takes_tls_and_scram_only_and_no_init_schema(studio: dict[str, Any]) -> None:
    pg = services(studio)["studio-postgres"]
    settings = postgres_settings(pg)
    assert settings["ssl"] == "on"
    assert settings["password_encryption"] == "scram-sha-256"
    own = Path(settings["ssl_key_file"]).parent
    assert {Path(settings[key]).parent for key in ("ssl_cert_file", "ssl_key_file", "hba_file")} == {own}
    # The entrypoint copies what the server reads (mounted under /studio) into its own folder, the key 0600 and
    # owned by the server's user, then runs the image's entrypoint with the command. Compose's rendered model
    # writes a literal `$` as `$$`; the container gets `"$@"`.
    shell, flag, script, name = pg["entrypoint"]
    assert (shell, flag, name) == ("/bin/sh", "-c", "docker-entrypoint.sh")
    words = shlex.split(script)
    mounts = bind_mounts(pg)
    copied = [word for word in words if word.startswith("/studio/")]
    assert set(copied) == set(mounts) == {"/studio/server.crt", "/studio/server.key", "/studio/pg_hba.conf"}
    assert Path(mounts["/studio/pg_hba.conf"]["source"]) == STUDIO / "pg_hba.conf"
    assert f"-o postgres -g postgres -m 0600 {' '.join(copied)} {own}/" in " ".join(words)
    assert script.endswith('exec docker-entrypoint.sh "$$@"')
    assert {Path(settings[key]).name for key in ("ssl_cert_file", "ssl_key_file", "hba_file")} == \
        {Path(path).name for path in copied}
    # db init makes the database and applies the schema as the owner role: no init script here.
    assert not [v for v in pg["volumes"] if v["target"].startswith(INITDB)]
    data = [v["source"] for v in pg["volumes"] if v["type"] == "volume"]
    assert data == ["studio-pgdata"]  # not the single-user database
    env = pg["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_DB"]) == ("postgres", "postgres")
    assert env["POSTGRES_PASSWORD"] in PLACEHOLDERS
    check = " ".join(pg["healthcheck"]["test"])
    assert "pg_isready" in check and "-h 127.0.0.1" in check


def test_pgbouncer_runs_the_studio_config_in_transaction_mode(studio: dict[str, Any]) -> None:
    svc = services(studio)
    bouncer = svc["pgbouncer"]
    ini = pgbouncer_ini()
    main = ini["pgbouncer"]
    assert main["pool_mode"] == "transaction"
    assert main["auth_type"] == "scram-sha-256"
    assert main["client_tls_sslmode"] == "require"
    assert main["server_tls_sslmode"] in ("verify-ca", "verify-full")
    # Every file the config names is mounted there, from the studio's files.
    mounts = bind_mounts(bouncer)
    entrypoint = bouncer["entrypoint"]
    assert entrypoint[:3] == ["pgbouncer", "-u", "nobody"] and bouncer["user"] == "root"
    expected = {entrypoint[-1]: STUDIO / "pgbouncer.ini", main["auth_file"]: STUDIO / "userlist.txt",
                main["client_tls_cert_file"]: CERT_DIR / "server.crt",
                main["client_tls_key_file"]: CERT_DIR / "server.key", main["server_tls_ca_file"]: CERT_DIR / "ca.crt"}
    assert {target: Path(mount["source"]) for target, mount in mounts.items()} == expected
    # It listens on the port Compose publishes and forwards to the studio's PostgreSQL, to db init's database.
    assert [int(port["target"]) for port in bouncer["ports"]] == [int(main["listen_port"])]
    target = dict(item.split("=", 1) for item in ini["databases"][DATABASE].split())
    assert target["host"] in svc and target["host"] == "studio-postgres"
    assert int(target["port"]) == int(svc["studio-postgres"]["ports"][0]["target"])
    assert target.get("dbname", DATABASE) == DATABASE
    assert bouncer["depends_on"]["studio-postgres"]["condition"] == "service_healthy"


def test_pg_hba_takes_tcp_logins_with_tls_and_scram_only() -> None:
    rules = [line.split() for line in (STUDIO / "pg_hba.conf").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert rules
    for rule in rules:
        if rule[0] == "local":
            assert rule == ["local", "all", "postgres", "peer"], rule
        else:
            assert rule[0] == "hostssl" and rule[-1] == "scram-sha-256", rule
    assert {rule[3] for rule in rules if rule[0] == "hostssl"} == {"0.0.0.0/0", "::/0"}


def test_no_key_or_verifier_of_the_studio_is_committed() -> None:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git work tree")
    for made in ("studio/certs/ca.key", "studio/certs/server.key", "studio/certs/server.crt", "studio/userlist.txt"):
        ignored = subprocess.run([git, "check-ignore", "-q", made], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{made} is not git-ignored (studio/.gitignore)"
    listed = subprocess.run([git, "ls-files", "--cached", "--others", "--exclude-standard", "--", "studio"],
                            capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    assert "studio/make-certs.sh" in listed
    for name in listed:
        text = (REPO / name).read_text(errors="replace")
        assert "PRIVATE KEY" not in text and not VERIFIER.search(text), f"{name} holds a secret"


def test_env_example_names_the_studio_settings_with_loopback() -> None:
    values = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#"))
    assert values["STUDIO_BIND_ADDRESS"] == "127.0.0.1"
    text = COMPOSE.read_text()
    for key in ("STUDIO_BIND_ADDRESS", "STUDIO_POSTGRES_PORT", "STUDIO_PGBOUNCER_PORT", "STUDIO_CERT_DIR"):
        assert key in values and "${" + key + ":-" + values[key] + "}" in text, key


# ------------------------------------------------------------------------------------------------------------
# studio/make-certs.sh
# ------------------------------------------------------------------------------------------------------------


def make_certs(folder: Path, *names: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return subprocess.run([str(MAKE_CERTS), "-d", str(folder), *names], capture_output=True, text=True, timeout=60,
                          check=False)


def openssl_verify(folder: Path, *check: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "verify", "-CAfile", str(folder / "ca.crt"), *check, str(folder / "server.crt")],
                          capture_output=True, text=True, timeout=30, check=False)


def test_make_certs_makes_a_ca_and_a_server_certificate_for_the_names_given(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    done = make_certs(folder, "db.studio.lan", "10.0.0.5")
    assert done.returncode == 0, done.stderr
    assert "SHA256 Fingerprint=" in done.stdout.replace("sha256", "SHA256")
    modes = {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir()}
    assert modes == {"ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600}
    assert folder.stat().st_mode & 0o777 == 0o700
    assert openssl_verify(folder).returncode == 0
    for host in ("db.studio.lan", "localhost"):  # localhost and 127.0.0.1: the server's own administrator
        assert openssl_verify(folder, "-verify_hostname", host).returncode == 0, host
    for address in ("10.0.0.5", "127.0.0.1"):
        assert openssl_verify(folder, "-verify_ip", address).returncode == 0, address
    wrong = openssl_verify(folder, "-verify_hostname", "other.studio.lan")
    assert wrong.returncode != 0 and "hostname mismatch" in wrong.stdout + wrong.stderr
    assert openssl_verify(folder, "-verify_ip", "10.0.0.6").returncode != 0


async def test_make_certs_passes_a_verified_handshake_as_the_bridge_makes_it(tmp_path: Path) -> None:
    """What sslmode=verify-full asks of the certificate, with X.509 strict checks (the default of newer Pythons)."""
    folder = tmp_path / "certs"
    assert make_certs(folder, "db.studio.lan").returncode == 0
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(folder / "server.crt", folder / "server.key")
    client_side = ssl.create_default_context(cafile=str(folder / "ca.crt"))
    client_side.verify_flags |= ssl.VERIFY_X509_STRICT
    assert client_side.check_hostname and client_side.verify_mode == ssl.CERT_REQUIRED

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_side)
    port = server.sockets[0].getsockname()[1]
    try:
        for name in ("db.studio.lan", "127.0.0.1"):
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_side, server_hostname=name)
            writer.close()
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await asyncio.open_connection("127.0.0.1", port, ssl=client_side, server_hostname="other.studio.lan")
    finally:
        server.close()
        await server.wait_closed()


def test_make_certs_again_keeps_the_ca_and_renews_the_server(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    assert make_certs(folder, "db.studio.lan").returncode == 0
    ca, server = (folder / "ca.crt").read_bytes(), (folder / "server.crt").read_bytes()
    again = make_certs(folder, "db.studio.lan", "db2.studio.lan")
    assert again.returncode == 0 and "keeping the CA" in again.stdout
    assert (folder / "ca.crt").read_bytes() == ca  # the Macs' sslrootcert stays valid
    assert (folder / "server.crt").read_bytes() != server
    assert openssl_verify(folder, "-verify_hostname", "db2.studio.lan").returncode == 0
    (folder / "ca.key").unlink()
    half = make_certs(folder, "db.studio.lan")
    assert half.returncode == 1 and "only one of ca.crt and ca.key" in half.stderr


@pytest.mark.parametrize("name", ["a b", "x,DNS:evil.studio.lan", "999.1.1.1", "db..studio.lan", "db.lan/x"])
def test_make_certs_refuses_what_is_no_name(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "certs"
    done = make_certs(folder, "db.studio.lan", name)
    assert done.returncode == 2 and "neither a host name nor an IP address" in done.stderr
    assert not folder.exists()  # refused before anything was made


def test_make_certs_without_a_name_says_how(tmp_path: Path) -> None:
    done = make_certs(tmp_path / "certs")
    assert done.returncode == 2 and "usage:" in done.stderr


# ------------------------------------------------------------------------------------------------------------
# The studio's files with a real PgBouncer and PostgreSQL
# ------------------------------------------------------------------------------------------------------------


def _as_here(ini: str, settings: dict[str, str], database: str) -> str:
    """studio/pgbouncer.ini with the container's paths, address and server replaced; every other line kept."""
    for key, value in settings.items():
        ini, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", ini)
        assert count == 1, key
    ini, count = re.subn(rf"(?m)^{DATABASE} = host=studio-postgres port=5432", f"{DATABASE} = {database}", ini)
    assert count == 1
    return ini


@asynccontextmanager
async def studio_pgbouncer(server: DebianPostgres, certs: Path, userlist: str) -> AsyncIterator[int]:
    """Debian's PgBouncer with studio/pgbouncer.ini in front of `server`; yields its port.

    As in the container: started as root (when the tests run as root) with `-u nobody`, reading a key and a userlist
    only root may read, and a CA certificate that everyone may, in a folder everyone may enter (PgBouncer reads that
    one as `nobody`, at its first server connection)."""
    folder = Path(tempfile.mkdtemp(prefix="oscbridge-studio-pgbouncer-"))
    try:
        folder.chmod(0o755)
        for name, mode in (("server.crt", 0o644), ("server.key", 0o600), ("ca.crt", 0o644)):
            shutil.copyfile(certs / name, folder / name)
            (folder / name).chmod(mode)
        (folder / "userlist.txt").write_text(userlist)
        (folder / "userlist.txt").chmod(0o600)
        port = free_port()
        ini = _as_here((STUDIO / "pgbouncer.ini").read_text(), {
            "listen_addr": "127.0.0.1", "listen_port": str(port), "auth_file": str(folder / "userlist.txt"),
            "client_tls_cert_file": str(folder / "server.crt"), "client_tls_key_file": str(folder / "server.key"),
            "server_tls_ca_file": str(folder / "ca.crt"),
        }, f"host=127.0.0.1 port={server.port}")
        (folder / "pgbouncer.ini").write_text(ini)
        (folder / "pgbouncer.ini").chmod(0o600)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        with open(folder / "stderr.log", "wb") as log:
            proc = await asyncio.create_subprocess_exec(PGBOUNCER, *user, str(folder / "pgbouncer.ini"),
                                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            for _ in range(200):
                if proc.returncode is not None:
                    pytest.fail(f"pgbouncer exited: {(folder / 'stderr.log').read_text()[-2000:]}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
            yield port
        finally:
            proc.terminate()
            await proc.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def userlist_of(server: DebianPostgres, role: str) -> subprocess.CompletedProcess[str]:
    """studio/userlist.sql, run as docs/studio.md runs it (psql -qXAt -v ON_ERROR_STOP=1 -v role=...)."""
    with open(STUDIO / "userlist.sql", encoding="utf-8") as script:
        return subprocess.run([str(DEBIAN_POSTGRES / "psql"), "-qXAt", "-v", "ON_ERROR_STOP=1", "-v", f"role={role}",
                               "-h", str(server.root), "-p", str(server.port), "-U", "postgres", "-d", "postgres"],
                              stdin=script, capture_output=True, text=True, timeout=30, check=False)


async def test_the_studio_files_work_with_a_real_pgbouncer_and_postgresql(tmp_path: Path) -> None:
    """make-certs.sh's certificate, pg_hba.conf, userlist.sql and pgbouncer.ini together: the bridge role logs in
    through PgBouncer with verify-full and SCRAM, and PgBouncer reaches PostgreSQL over TLS with that login; without
    TLS, neither PgBouncer nor PostgreSQL lets anyone in; a wrong password is refused."""
    if not (os.access(PGBOUNCER, os.X_OK) and (DEBIAN_POSTGRES / "postgres").exists()):
        pytest.skip("needs Debian's pgbouncer and postgresql-15 (.ci/run installs them)")
    certs = tmp_path / "certs"
    assert make_certs(certs, "db.studio.lan").returncode == 0
    server = DebianPostgres((certs / "server.crt", certs / "server.key"))
    try:
        # The studio's rules; the socket line trusts the test's administrator, who is not the OS user `postgres`.
        rules = re.sub(r"(?m)^local\s.*$", "local all all trust", (STUDIO / "pg_hba.conf").read_text())
        (server.pgdata / "pg_hba.conf").write_text(rules)
        server.start()
        password = new_password()
        admin = await asyncpg.connect(server.admin_url)
        try:
            create = "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)"
            await admin.execute(await admin.fetchval(create, BRIDGE_ROLE, scram_verifier(password)))
            await admin.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await admin.close()
        made = userlist_of(server, BRIDGE_ROLE)
        assert made.returncode == 0, made.stderr
        assert re.fullmatch(f'"{BRIDGE_ROLE}" "{VERIFIER.pattern}"\n', made.stdout)
        missing = userlist_of(server, "nobody_here")
        assert missing.returncode != 0 and "run `oscbridge db init` first" in missing.stderr and not missing.stdout

        ca = certs / "ca.crt"
        async with studio_pgbouncer(server, certs, made.stdout) as port:
            pooled = f"postgresql://{BRIDGE_ROLE}@127.0.0.1:{port}/{DATABASE}"
            conn = await asyncpg.connect(f"{pooled}?sslmode=verify-full&sslrootcert={ca}", password=password,
                                         statement_cache_size=0)
            try:
                row = await conn.fetchrow("SELECT current_user AS who, "
                                          "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls")
            finally:
                await conn.close()
            assert row is not None and (row["who"], row["tls"]) == (BRIDGE_ROLE, True)  # PgBouncer to PostgreSQL: TLS
            with pytest.raises(asyncpg.PostgresError, match="SSL required"):
                await asyncpg.connect(f"{pooled}?sslmode=disable", password=password, statement_cache_size=0)
            with pytest.raises(asyncpg.PostgresError, match="SASL authentication failed"):
                await asyncpg.connect(f"{pooled}?sslmode=verify-full&sslrootcert={ca}", password="not-" + password,
                                      statement_cache_size=0)
        direct = f"postgresql://{BRIDGE_ROLE}@127.0.0.1:{server.port}/{DATABASE}"
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
            await asyncpg.connect(f"{direct}?sslmode=disable", password=password)
        conn = await asyncpg.connect(f"{direct}?sslmode=verify-full&sslrootcert={ca}", password=password)
        await conn.close()
    finally:
        server.close()
