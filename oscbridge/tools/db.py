"""`oscbridge db`: `url` prints the URL of the database in use (the password hidden unless asked); `init` sets up a
shared PostgreSQL with least privilege; `upgrade` applies pending migrations as the owner (docs/studio.md, Roles).

`db init --owner-url ADMIN_URL` runs as an administrator of the server (a superuser, who alone may create the
pgvector extension, which is not a trusted one). It makes an owner role, which owns the database and the bridge's
tables and applies the schema, and a bridge role, which may only read and write them, then prints the URL the
bridges use. New passwords are random and go into a ~/.pgpass-format file (0600), never to the terminal unless
asked (`--show-password`); the server is sent their SCRAM verifiers, so the passwords are not in its statement log
either. Running it again changes nothing that is right already and keeps the roles' passwords.

`db upgrade --owner-url OWNER_URL` applies the migrations this oscbridge brings, under the schema lock, as the
database's owner (also when OWNER_URL is an administrator's), and grants the bridge role what a bridge needs on
whatever is new; a bridge running as the bridge role says at its start when this is due.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg

from oscbridge.flags import add_settings_flags, settings_from
from oscbridge.private import write_private_file
from oscbridge.redact import redact_url, scrub, strip_password
from oscbridge.store.db import CONNECTION_ERRORS, DatabaseRefused, open_connection
from oscbridge.store.embedded import running_url, socket_url
from oscbridge.store.roles import (
    check_password,
    give_to_owner,
    grant_bridge,
    missing_rights,
    new_password,
    scram_verifier,
)
from oscbridge.store.schema import SchemaError, apply_schema, current_version
from oscbridge.store.tls import host_port

DATABASE = "oscbridge"
OWNER_ROLE = "oscbridge_owner"
BRIDGE_ROLE = "oscbridge_bridge"
FAILED = 1
ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, DatabaseRefused, SchemaError, asyncpg.PostgresError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="db_command", required=True)
    url = actions.add_parser("url", help="print the URL of the database in use")
    add_settings_flags(url)
    url.add_argument("--show-password", action="store_true", help="print the password instead of ***")

    init = actions.add_parser("init", help="set up a shared PostgreSQL: an owner role for the schema, a bridge role "
                              "that only reads and writes, the database; prints the bridges' URL")
    init.add_argument("--owner-url", required=True, help="URL of an administrator of the server (a superuser, "
                      "e.g. postgres): it makes the roles, the database and the pgvector extension")
    init.add_argument("--database", default=DATABASE, help=f"the bridges' database (default {DATABASE})")
    init.add_argument("--owner-role", default=OWNER_ROLE, help=f"owns the tables (default {OWNER_ROLE})")
    init.add_argument("--bridge-role", default=BRIDGE_ROLE, help=f"the bridges log in as it (default {BRIDGE_ROLE})")
    init.add_argument("--owner-password-file", type=Path, help="a file holding the owner role's password (default: "
                      "a new random one for a new role; an existing role keeps its own)")
    init.add_argument("--bridge-password-file", type=Path, help="the same for the bridge role")
    init.add_argument("--passfile", type=Path, help="the ~/.pgpass-format file the passwords set are written to "
                      "(default: $PGPASSFILE or ~/.pgpass)")
    init.add_argument("--show-password", action="store_true", help="print the bridges' URL with the password")

    upgrade = actions.add_parser("upgrade", help="apply pending schema migrations as the database's owner and grant "
                                 "the bridge role what is new")
    upgrade.add_argument("--owner-url", required=True, help="URL of the owner role (or an administrator), reaching "
                         "PostgreSQL itself, not a transaction pooler")
    upgrade.add_argument("--bridge-role", default=BRIDGE_ROLE, help="the role the bridges log in as, to grant "
                         f"(default {BRIDGE_ROLE}; skipped when there is no such role)")


def run(ns: argparse.Namespace) -> int:
    if ns.db_command == "init":
        return asyncio.run(init_command(ns))
    if ns.db_command == "upgrade":
        return asyncio.run(upgrade_command(ns.owner_url, ns.bridge_role))
    return url_command(ns)


def url_command(ns: argparse.Namespace) -> int:
    settings = settings_from(ns)
    if settings.database_url:
        shown = settings.database_url if ns.show_password else redact_url(settings.database_url)
        print(shown)
        if shown != settings.database_url:
            print("oscbridge: the password is hidden; add --show-password to print it", file=sys.stderr)
        return 0
    url = running_url(settings.embedded_pgdata)
    if url is None:
        print(socket_url(settings.embedded_pgdata))
        print("oscbridge: the embedded PostgreSQL is not running now (start `oscbridge serve`)", file=sys.stderr)
        return 1
    print(url)
    return 0


# ------------------------------------------------------------------------------------------------------------
# URLs and password files
# ------------------------------------------------------------------------------------------------------------


def url_as(url: str, user: str, database: str) -> str:
    """`url` for another role and database, without a password; host, port and options (sslmode, sslrootcert,
    a socket's host=) kept."""
    parts = urlsplit(strip_password(url)[0])
    hosts = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{quote(user, safe='')}@{hosts}", path="/" + quote(database, safe="")).geturl()


def url_of_database(url: str, database: str) -> str:
    """`url` (its role and password kept) for another database."""
    return urlsplit(url)._replace(path="/" + quote(database, safe="")).geturl()


def default_passfile() -> Path:
    return Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass").expanduser()


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def write_passfile(path: Path, host: str, port: int, database: str, passwords: dict[str, str]) -> None:
    """Puts `host:port:database:role:password` lines into the ~/.pgpass-format file `path` (0600), replacing the
    lines for the same host, port, database and role; other lines are kept as they were."""
    keys = {":".join(map(_pgpass_field, (host, str(port), database, role))) + ":" for role in passwords}
    try:
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if not any(line.startswith(key) for key in keys)]
    except FileNotFoundError:
        kept = []
    lines = kept + [":".join(map(_pgpass_field, (host, str(port), database, role, password)))
                    for role, password in passwords.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def read_password(path: Path | None) -> str | None:
    """The first line of the file `path`, or None without a file; ValueError when it is no usable password."""
    if path is None:
        return None
    lines = path.expanduser().read_text(encoding="utf-8").splitlines()
    password = lines[0] if lines else ""
    check_password(password)
    return password


# ------------------------------------------------------------------------------------------------------------
# db init
# ------------------------------------------------------------------------------------------------------------


@dataclass
class InitResult:
    version: int
    created: list[str] = field(default_factory=list)  # what was made: roles, the database
    passwords: dict[str, str] = field(default_factory=dict)  # roles whose password was set now
    taken_over: int = 0
    missing: list[str] = field(default_factory=list)  # rights the bridge role still lacks (none, normally)


async def _sql(conn: asyncpg.Connection, template: str, *values: str) -> None:
    """Runs a statement that takes no parameters (CREATE ROLE, GRANT ...), its names and literals quoted by the
    server's format() (%I, %L)."""
    statement = await conn.fetchval("SELECT format($1::text, VARIADIC $2::text[])", template, list(values))
    await conn.execute(statement)


async def act_as_database_owner(conn: asyncpg.Connection) -> str:
    """SET ROLE to the owner of the connection's database (`db init` makes it the owner role), so that what follows
    is the owner's whoever logged in: the objects a migration creates and the default privileges granted. Applied
    as an administrator, a migration's tables would be `postgres`'s, and the next `db upgrade` as the owner role
    would fail on them with "must be owner". Returns the owner's name."""
    owner: str = await conn.fetchval("SELECT pg_get_userbyid(datdba) FROM pg_database "
                                     "WHERE datname = current_database()")
    try:
        await _sql(conn, "SET ROLE %I", owner)
    except asyncpg.InsufficientPrivilegeError as exc:
        user = await conn.fetchval("SELECT current_user")
        raise SchemaError(f"the role {user} may not act as {owner}, the owner of the database, and only the owner "
                          "may change its schema: use the owner role's URL (or an administrator's)") from exc
    return owner


async def init_database(admin_url: str, *, database: str, owner: str, bridge: str,
                        passwords: dict[str, str | None]) -> InitResult:
    """Makes (or completes) the roles, the database, pgvector and the schema as described in the module docstring.
    `passwords` holds the roles' passwords given by the user; a new role without one gets a random one."""
    result = InitResult(version=0)
    admin = await open_connection(admin_url)
    try:
        for role in (owner, bridge):
            password = passwords.get(role)
            if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                password = password or new_password()
                await _sql(admin, "CREATE ROLE %I LOGIN PASSWORD %L", role, scram_verifier(password))
                result.created.append(f"role {role}")
            elif password:
                await _sql(admin, "ALTER ROLE %I PASSWORD %L", role, scram_verifier(password))
            if password:
                result.passwords[role] = password
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await _sql(admin, "ALTER DATABASE %I OWNER TO %I", database, owner)
        else:
            await _sql(admin, "CREATE DATABASE %I OWNER %I", database, owner)
            result.created.append(f"database {database}")
        # Only the two roles (and administrators) may connect; the bridge stages COPY batches in temporary tables.
        await _sql(admin, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)
        await _sql(admin, "GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I", database, bridge)
    finally:
        await admin.close()
    conn = await open_connection(url_of_database(admin_url, database))
    try:
        if await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"):
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # not trusted: the administrator's job
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # a database made before PostgreSQL 15
        result.taken_over = await give_to_owner(conn, owner)
        await act_as_database_owner(conn)  # the owner's now (the database was given to it above)
        result.version = await apply_schema(conn)
        await grant_bridge(conn, bridge)
        await conn.execute("RESET ROLE")
        result.missing = await missing_rights(conn, bridge)
    finally:
        await conn.close()
    return result


async def init_command(ns: argparse.Namespace) -> int:
    try:
        given = {ns.owner_role: read_password(ns.owner_password_file),
                 ns.bridge_role: read_password(ns.bridge_password_file)}
    except (OSError, ValueError) as exc:
        print(f"oscbridge: cannot use that password file: {exc}", file=sys.stderr)
        return FAILED
    if ns.owner_role == ns.bridge_role:
        print("oscbridge: the owner role and the bridge role must be two roles", file=sys.stderr)
        return FAILED
    try:
        result = await init_database(ns.owner_url, database=ns.database, owner=ns.owner_role, bridge=ns.bridge_role,
                                     passwords=given)
    except ERRORS as exc:
        print(f"oscbridge: db init did not finish: {_explain(exc, ns.owner_url)}", file=sys.stderr)
        return FAILED
    bridge_url, owner_url = (url_as(ns.owner_url, role, ns.database) for role in (ns.bridge_role, ns.owner_role))
    made = ", ".join(result.created) or "nothing new (the roles and the database were there)"
    print(f"oscbridge: made {made}; schema version {result.version} applied as {ns.owner_role}"
          + (f"; {result.taken_over} objects given to {ns.owner_role}" if result.taken_over else ""), file=sys.stderr)
    if result.passwords:
        passfile = ns.passfile or default_passfile()
        host, port = host_port(ns.owner_url)
        try:
            write_passfile(passfile, "localhost" if host.startswith("/") else host, port, ns.database,
                           result.passwords)
        except OSError as exc:
            print(f"oscbridge: the roles are set up, but their passwords could not be written to {passfile} "
                  f"({exc.strerror}): give each role a password of your own with --owner-password-file and "
                  "--bridge-password-file and run db init again", file=sys.stderr)
            return FAILED
        print(f"oscbridge: the password{'s' if len(result.passwords) > 1 else ''} of "
              f"{' and '.join(result.passwords)} {'are' if len(result.passwords) > 1 else 'is'} in {passfile} "
              "(mode 0600); copy the bridge role's line into ~/.pgpass on each bridge's machine", file=sys.stderr)
    print(f"oscbridge: schema upgrades: oscbridge db upgrade --owner-url '{owner_url}'", file=sys.stderr)
    if result.missing:
        print(f"oscbridge: the bridge role still lacks: {', '.join(result.missing)}", file=sys.stderr)
        return FAILED
    password = result.passwords.get(ns.bridge_role)
    if ns.show_password and password:
        parts = urlsplit(bridge_url)
        print(parts._replace(netloc=f"{quote(ns.bridge_role, safe='')}:{quote(password, safe='')}@"
                                    f"{parts.netloc.partition('@')[2]}").geturl())
    else:
        print(bridge_url)
    return 0


# ------------------------------------------------------------------------------------------------------------
# db upgrade
# ------------------------------------------------------------------------------------------------------------


async def upgrade_database(owner_url: str, bridge_role: str) -> tuple[int | None, int, list[str] | None]:
    """Applies pending migrations as the database's owner (`owner_url` is its role, or an administrator's) and
    grants `bridge_role` (when there is one) its rights; returns the version before and after, and the rights the
    bridge role still lacks (None: no such role)."""
    conn = await open_connection(owner_url)
    try:
        await act_as_database_owner(conn)
        before = await current_version(conn)
        after = await apply_schema(conn)
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", bridge_role):
            return before, after, None
        await grant_bridge(conn, bridge_role)
        return before, after, await missing_rights(conn, bridge_role)
    finally:
        await conn.close()


async def upgrade_command(owner_url: str, bridge_role: str) -> int:
    try:
        before, after, missing = await upgrade_database(owner_url, bridge_role)
    except ERRORS as exc:
        print(f"oscbridge: db upgrade did not finish: {_explain(exc, owner_url)}", file=sys.stderr)
        return FAILED
    print(f"schema version {after}" + (" (it was already)" if before == after else f" (was {before})"))
    if missing is None:
        print(f"oscbridge: there is no role {bridge_role}; no rights granted", file=sys.stderr)
    elif missing:
        print(f"oscbridge: the role {bridge_role} still lacks: {', '.join(missing)}. Run this as the owner of the "
              "tables (the owner role of `db init`)", file=sys.stderr)
        return FAILED
    else:
        print(f"role {bridge_role}: every right a bridge needs")
    return 0


def _explain(exc: BaseException, url: str) -> str:
    text = scrub(str(exc), url)
    if isinstance(exc, DatabaseRefused | SchemaError):
        return text
    if isinstance(exc, asyncpg.PostgresError):
        return f"{redact_url(url)} refused: {type(exc).__name__}: {text}"
    return f"cannot reach {redact_url(url)}: {type(exc).__name__}: {text}"
