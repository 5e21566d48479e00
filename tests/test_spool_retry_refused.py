"""`oscbridge spool retry-rejected` without a bridge, against a database that refuses the login for good (a role
that may not log in; a bad certificate or password takes the same path, DatabaseRefused): one line that says why,
a non-zero exit, no traceback, and rejected.jsonl as it was."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg

from oscbridge.tools.db import url_as
from tests.conftest import EmbeddedServer, run_cli


async def test_retry_rejected_on_a_refused_login_says_why_in_one_line(pg: EmbeddedServer, tmp_path: Path) -> None:
    role = f"nologin_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg.admin_url)
    try:
        await admin.execute(f"CREATE ROLE {role} NOLOGIN")
    finally:
        await admin.close()
    url = url_as(pg.admin_url, role, "postgres")
    spool = tmp_path / "data" / "spool"
    spool.mkdir(parents=True)
    rejected = b'{"error":"a refused write","op":{"k":"debug_log","d":{"content":"kept"}}}\n'
    (spool / "rejected.jsonl").write_bytes(rejected)

    done = run_cli("spool", "retry-rejected", "--data-dir", str(tmp_path / "data"), "--database-url", url,
                   "--wait", "2")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("oscbridge: cannot use the database ") and "nothing was moved" in lines[0]
    assert f'role "{role}" is not permitted to log in' in lines[0]
    assert (spool / "rejected.jsonl").read_bytes() == rejected
