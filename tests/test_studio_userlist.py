"""The command docs/studio.md (step 5) and studio/userlist.sql give for writing studio/userlist.txt, which holds the
bridge role's SCRAM verifier, run for real by bash under the usual umask 022 with a stand-in for `docker` (it records
the file's mode while the command writes it, then passes the SQL through): the file is 0600 from the moment it
exists, also when an older copy was 0644, and not only after a later chmod."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "studio.md"
SCRIPT = REPO / "studio" / "userlist.sql"
TARGET = "studio/userlist.txt"
# A `docker` that notes the mode of the file the redirect made before running it, then echoes its input.
STAND_IN = 'docker() { stat -c %a studio/userlist.txt > mode-while-written; cat; }\n'


def joined(lines: list[str]) -> list[str]:
    """Shell lines with backslash continuations joined into commands, their blanks collapsed (so the guide's and
    the script's indentation do not matter; no command here quotes blanks)."""
    commands, current = [], ""
    for line in lines:
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            commands.append(" ".join(current.split()))
        current = ""
    return commands


def doc_command() -> str:
    step = DOC.read_text(encoding="utf-8").split("**5. PgBouncer.**", 1)[1].split("**6.", 1)[0]
    block = re.search(r"```sh\n(.*?)```", step, re.S)
    assert block is not None, "step 5 of docs/studio.md has no sh block"
    [command] = [c for c in joined(block.group(1).splitlines()) if f"> {TARGET}" in c]
    return command


def script_command() -> str:
    header = [line[2:] for line in SCRIPT.read_text(encoding="utf-8").splitlines() if line.startswith("--   ")]
    [command] = [c for c in joined(header) if f"> {TARGET}" in c]
    return command


@pytest.mark.parametrize("source", ["docs/studio.md", "studio/userlist.sql"])
@pytest.mark.parametrize("older_copy", [False, True])
def test_the_userlist_is_private_from_its_first_byte(tmp_path: Path, source: str, older_copy: bool) -> None:
    command = doc_command() if source == "docs/studio.md" else script_command()
    assert command == doc_command()  # the script's header says the same as the guide
    (tmp_path / "studio").mkdir()
    shutil.copyfile(SCRIPT, tmp_path / "studio" / "userlist.sql")
    target = tmp_path / TARGET
    if older_copy:  # as the command documented before left it
        target.write_text('"oscbridge_bridge" "an older verifier"\n')
        target.chmod(0o644)
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run([bash, "-c", f"umask 022\n{STAND_IN}{command}\n"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "LC_ALL": "C"}, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mode-while-written").read_text().strip() == "600"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == SCRIPT.read_text()  # the stand-in passed the SQL through: the redirect wrote it
