"""Least privilege on a shared PostgreSQL (docs/studio.md, "Roles"): an owner role owns the bridge's tables and
changes the schema; a bridge role only reads and writes them. `oscbridge db init` makes both; `oscbridge db upgrade`
applies migrations as the owner and grants the bridge role what is new; every bridge start checks that its role has
every right it needs (`missing_rights`) and says which one it lacks.

The bridge role gets SELECT, INSERT, UPDATE and DELETE on the tables (SELECT only on schema_version and the
views), EXECUTE on the functions, CONNECT and TEMPORARY on the database (the writer stages COPY batches in temporary
tables) and USAGE on the schema; default privileges give it the same on whatever the owner creates later. It owns
nothing, so it can neither ALTER nor DROP a table, nor create one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import asyncpg

TABLE_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE")
READ_ONLY_TABLES = ("schema_version",)  # the bridge reads the schema's version; only the owner records one
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)

# Whose rights `_MISSING` checks: the given role, else the connection's.
_WHO = "coalesce($3::name, current_user)"
# Not the pgvector extension's objects (owned by the administrator who created it, usable by everyone).
_NOT_EXTENSION = """
NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')
"""
# The bridge's own objects in the public schema: those of the role that owns schema_version. Others may keep
# objects there too (an administrator's reporting table); the bridge neither needs rights on them, nor may its
# owner grant any, so neither the start's check nor `db upgrade` may stumble over them. Ownership, unlike a list
# of names kept beside the schema, stays right as migrations add tables: schema.sql and every migration are
# applied by that one role (`db init` and `db upgrade` act as the database's owner, which `db init` makes own
# schema_version; a bridge that applies them itself owns them all), so whatever a migration creates is its.
_OURS = _NOT_EXTENSION + """
AND {owner} = (SELECT s.relowner FROM pg_class s WHERE s.oid = to_regclass('public.schema_version'))
"""
_MISSING = f"""
SELECT format('%s on table %s', r.priv, c.relname) AS missing
FROM pg_class c
CROSS JOIN unnest($1::text[]) AS r(priv)
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  AND {_OURS.format(oid="c.oid", owner="c.relowner")} AND NOT (c.relname = ANY($2::text[]) AND r.priv <> 'SELECT')
  AND NOT has_table_privilege({_WHO}, c.oid, r.priv)
UNION ALL
SELECT format('SELECT on view %s', c.relname)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('v', 'm')
  AND {_OURS.format(oid="c.oid", owner="c.relowner")} AND NOT has_table_privilege({_WHO}, c.oid, 'SELECT')
UNION ALL
SELECT format('USAGE on sequence %s', c.relname)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S' AND {_OURS.format(oid="c.oid", owner="c.relowner")}
  AND CASE WHEN c.relkind = 'S' THEN NOT has_sequence_privilege({_WHO}, c.oid, 'USAGE') END  -- sequences only
UNION ALL
SELECT format('EXECUTE on function %s', p.oid::regprocedure)
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND {_OURS.format(oid="p.oid", owner="p.proowner")}
  AND NOT has_function_privilege({_WHO}, p.oid, 'EXECUTE')
UNION ALL
SELECT 'USAGE on schema public' WHERE NOT has_schema_privilege({_WHO}, 'public', 'USAGE')
UNION ALL
SELECT format('TEMPORARY on database %s', current_database())
WHERE NOT has_database_privilege({_WHO}, current_database(), 'TEMPORARY')
UNION ALL
SELECT format('CONNECT on database %s', current_database())
WHERE NOT has_database_privilege({_WHO}, current_database(), 'CONNECT')
ORDER BY 1
"""

# The statements that grant the bridge role its rights on what exists now, made from the catalog (identifiers
# quoted by format()); run by the owner.
_GRANTS = f"""
SELECT 1, format('GRANT %s ON TABLE %s TO %I',
                 CASE WHEN c.relkind IN ('r', 'p') AND NOT c.relname = ANY($2::text[])
                      THEN 'SELECT, INSERT, UPDATE, DELETE' ELSE 'SELECT' END, c.oid::regclass, $1::text)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
  AND {_OURS.format(oid="c.oid", owner="c.relowner")}
UNION ALL
SELECT 2, format('REVOKE INSERT, UPDATE, DELETE ON TABLE %s FROM %I', c.oid::regclass, $1::text)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($2::text[])
UNION ALL
SELECT 3, format('GRANT USAGE, SELECT ON SEQUENCE %s TO %I', c.oid::regclass, $1::text)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S' AND {_OURS.format(oid="c.oid", owner="c.relowner")}
UNION ALL
SELECT 4, format('GRANT EXECUTE ON ROUTINE %s TO %I', p.oid::regprocedure, $1::text)
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND {_OURS.format(oid="p.oid", owner="p.proowner")}
UNION ALL
SELECT 5, format('GRANT USAGE ON SCHEMA public TO %I', $1::text)
UNION ALL
SELECT 6, format('ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT %s TO %I', what, $1::text)
FROM unnest(ARRAY['SELECT, INSERT, UPDATE, DELETE ON TABLES', 'USAGE, SELECT ON SEQUENCES',
                  'EXECUTE ON ROUTINES']) AS what
ORDER BY 1
"""


async def missing_rights(conn: asyncpg.Connection, role: str | None = None) -> list[str]:
    """The rights `role` (default: the connection's role) lacks on the bridge's objects (`_OURS`: not on a table
    someone else keeps in the same schema), as "INSERT on table messages"."""
    rows = await conn.fetch(_MISSING, list(TABLE_RIGHTS), list(READ_ONLY_TABLES), role)
    return [row["missing"] for row in rows]


# Making existing objects of the bridge the owner's: a database set up before the roles (by `postgres`, or by the
# one user of docker-compose) is taken over. Indexes, and sequences owned by a column, follow their table. This
# takes every non-extension object in public, not only `_OURS`: an administrator runs it on purpose (`db init`
# says how many objects changed hands), and it must also gather objects a wrong role made, such as those of a
# migration an older `db upgrade` applied as `postgres`.
_TAKE_OVER = f"""
SELECT format('ALTER %s %s OWNER TO %I', CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
              WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass, $1::text)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
  AND {_NOT_EXTENSION.format(oid="c.oid")} AND c.relowner <> $1::text::regrole
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass
                  AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i'))
UNION ALL
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $1::text)
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND {_NOT_EXTENSION.format(oid="p.oid")}
  AND p.proowner <> $1::text::regrole
"""


async def give_to_owner(conn: asyncpg.Connection, owner: str) -> int:
    """Makes `owner` the owner of the bridge's objects that another role owns (run by an administrator); returns
    how many changed hands."""
    statements = [row[0] for row in await conn.fetch(_TAKE_OVER, owner)]
    for statement in statements:
        await conn.execute(statement)
    return len(statements)


async def grant_bridge(conn: asyncpg.Connection, role: str) -> int:
    """Grants `role` what a bridge needs on the objects that exist, and on those the connection's role creates
    later (default privileges); run as the owner. Returns how many statements ran."""
    statements = [row[1] for row in await conn.fetch(_GRANTS, role, list(READ_ONLY_TABLES))]
    for statement in statements:
        await conn.execute(statement)
    return len(statements)


def new_password() -> str:
    """32 random URL-safe characters: nothing to escape in a URL or a ~/.pgpass line."""
    return secrets.token_urlsafe(24)


def check_password(password: str) -> None:
    """ValueError unless `password` is one `scram_verifier` takes: printable ASCII without spaces."""
    if not password or not all(33 <= ord(ch) < 127 for ch in password):
        raise ValueError("a role's password must be printable ASCII without spaces")


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as psql's \\password makes it).

    Sending the verifier, not the password, in CREATE/ALTER ROLE keeps the password out of the server's statement
    log. Only printable ASCII is taken: PostgreSQL normalises other text (SASLprep) before hashing, and a verifier
    made from other bytes would not match.
    """
    check_password(password)
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
