"""Which bridge this is: a stable id made at the first start and kept in the data dir, and a readable name.

Several bridges may share one database (a studio: docs/studio.md). Rows that are local to a machine (plugin
instances, the port pool's quarantine, sessions) carry the id of the bridge that wrote them, so that each bridge
adopts, probes and releases only its own plugins, and the history says which bridge made each change. The id
lives with the spool in the data dir: writes a bridge replays after a crash are still its own.
"""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from oscbridge.config import ConfigError
from oscbridge.private import write_private_file

IDENTITY_FILE = "bridge.json"
NAME_MAX = 100


@dataclass(frozen=True)
class BridgeIdentity:
    id: str
    name: str


def default_name() -> str:
    """The machine's host name, without a domain: how a studio tells its rigs apart."""
    return (socket.gethostname().split(".")[0] or "oscbridge")[:NAME_MAX]


class IdentityError(ConfigError):
    """The identity file exists but cannot be read; the message says which file and what to do."""


def load_identity(data_dir: Path, name: str | None = None) -> BridgeIdentity:
    """This data dir's bridge id (made and written 0600 the first time) with `name`, or the name kept in the file,
    or the host name. A name given replaces the one kept."""
    path = data_dir / IDENTITY_FILE
    kept: dict[str, str] = {}
    if path.exists():
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            uuid.UUID(kept["id"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IdentityError(f"{path} is not a bridge identity ({exc}); restore it from a backup, or remove it "
                                "to make this a new bridge (its plugins and sessions are then another bridge's)") \
                from exc
    chosen = name or kept.get("name") or default_name()
    identity = BridgeIdentity(kept.get("id") or str(uuid.uuid4()), chosen[:NAME_MAX])
    if kept != {"id": identity.id, "name": identity.name}:
        # Durable before the bridge uses the id: an id lost to a power cut would make the spool's replayed writes
        # another bridge's.
        write_private_file(path, json.dumps({"id": identity.id, "name": identity.name}).encode("utf-8"))
    return identity


def first_start(data_dir: Path) -> float | None:
    """When this data dir's bridge first started (its identity file was written then, and again only when the name
    changes), None before that: the scheduled backups count from it until there is one."""
    try:
        return (data_dir / IDENTITY_FILE).stat().st_mtime
    except OSError:
        return None
