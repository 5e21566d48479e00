"""The backup file: one tar holding a pg_dump, the spool's unapplied and refused writes, and a manifest.

    db.dump                pg_dump, custom format (compressed), taken in one snapshot
    spool/writes.jsonl     the spool's writes not yet in PostgreSQL when the backup started
    spool/rejected.jsonl   the writes PostgreSQL had refused (`oscbridge spool retry-rejected` re-applies them)
    manifest.json          versions, row counts per table in the dump's snapshot, size and SHA-256 of each file
    manifest.json.sha256   the SHA-256 of manifest.json, so that a damaged manifest is caught too

A plain tar because the dump is compressed already and `tar -tvf` shows what is inside. The manifest comes last
because it holds the checksums of what precedes it, computed while the members are written (one read of the
dump). Reading checks everything before anything is used: exactly these members, each a regular file, their sizes
and checksums, the manifest's own checksum and fields. A truncated or damaged file fails one of those checks
(tar's header checksums, a missing member, a short member, a SHA-256 mismatch), so a restore refuses it before
it touches its target. Members are only ever read into files named here, never extracted by their own names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from oscbridge.jsontext import parse_json
from oscbridge.private import private_opener, sync_dir

FORMAT = "oscbridge-backup"
FORMAT_VERSION = 1
DUMP = "db.dump"
SPOOL_WRITES = "spool/writes.jsonl"
SPOOL_REJECTED = "spool/rejected.jsonl"
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
DATA_MEMBERS = (DUMP, SPOOL_WRITES, SPOOL_REJECTED)
MEMBERS = (*DATA_MEMBERS, MANIFEST, MANIFEST_SUM)
CHUNK = 1024 * 1024
MAX_MANIFEST = 1024 * 1024  # a manifest of a few hundred tables is a few kB; anything bigger is not ours


class DamagedBackup(Exception):
    """The file is not a whole oscbridge backup (truncated, damaged, or something else); the message says why."""


class Cancelled(Exception):
    """The work was stopped from outside (the daemon is stopping)."""


@dataclass(frozen=True)
class Manifest:
    """What a backup holds. `row_counts` are per table (`schema.table`), counted in the dump's own snapshot."""

    created_at: str
    bridge_version: str
    schema_version: int | None
    server_version: str
    pgvector_version: str | None
    pg_dump_version: str
    database: str  # "embedded" or "external"
    row_counts: dict[str, int]
    spool_writes: int
    spool_rejected: int
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # member name -> {"bytes", "sha256"}
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            raw = parse_json(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise DamagedBackup(f"its manifest is not valid JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise DamagedBackup("it is not an oscbridge backup (its manifest has no 'format': 'oscbridge-backup')")
        if raw.get("format_version") != FORMAT_VERSION:
            raise DamagedBackup(f"it is in backup format {raw.get('format_version')!r}, which this oscbridge "
                                f"({FORMAT_VERSION}) cannot read: restore it with the oscbridge that made it, "
                                f"{raw.get('bridge_version', 'a newer one')}, or newer")
        try:
            manifest = cls(**raw)
        except TypeError as exc:
            raise DamagedBackup(f"its manifest does not have the expected fields ({exc})") from None
        _check_types(manifest)
        return manifest

    def describe(self) -> str:
        """The row counts as people read them: 'projects 3, sessions 7, messages 1200' (empty tables left out)."""
        shown = [f"{name.removeprefix('public.')} {count}" for name, count in sorted(self.row_counts.items())
                 if count]
        return ", ".join(shown) or "no rows"


def _check_types(m: Manifest) -> None:
    ok = (isinstance(m.row_counts, dict)
          and all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in m.row_counts.items())
          and isinstance(m.files, dict) and set(m.files) == set(DATA_MEMBERS)
          and all(isinstance(f, dict) and isinstance(f.get("bytes"), int) and isinstance(f.get("sha256"), str)
                  for f in m.files.values())
          and isinstance(m.spool_writes, int) and isinstance(m.spool_rejected, int)
          and (m.schema_version is None or isinstance(m.schema_version, int)))
    if not ok:
        raise DamagedBackup("its manifest has fields of the wrong type")


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it and stops when `stop` is set."""

    def __init__(self, source: IO[bytes], stop: threading.Event | None) -> None:
        self._source = source
        self._stop = stop
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._stop is not None and self._stop.is_set():
            raise Cancelled("stopped")
        data = self._source.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def write_archive(dest: Path, files: Mapping[str, Path], manifest: Manifest,
                  stop: threading.Event | None = None) -> Manifest:
    """Writes the backup to `dest` (0600; through `dest`.partial, renamed when complete and synced, so `dest`
    is whole or absent). `files` maps each DATA_MEMBERS name to the file holding it. Returns the manifest with
    the files' sizes and checksums. Blocking: run it in a thread."""
    partial = dest.with_name(f".{dest.name}.partial")
    now = time.time()
    recorded: dict[str, dict[str, Any]] = {}
    try:
        with open(partial, "wb", opener=private_opener) as out:
            # 1 MiB copies: hashing and writing release the GIL for the whole chunk, so the Python between them
            # (tarfile's default 16 KiB made it 64 times as often) hardly keeps the daemon's event loop waiting.
            with tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar:
                for name in DATA_MEMBERS:
                    path = files[name]
                    with open(path, "rb") as src:
                        reader = _Hashing(src, stop)
                        tar.addfile(_info(name, os.fstat(src.fileno()).st_size, now), reader)
                    recorded[name] = {"bytes": reader.size, "sha256": reader.sha256.hexdigest()}
                manifest = Manifest(**{**asdict(manifest), "files": recorded})
                body = manifest.to_json()
                tar.addfile(_info(MANIFEST, len(body), now), io.BytesIO(body))
                digest = (hashlib.sha256(body).hexdigest() + "\n").encode()
                tar.addfile(_info(MANIFEST_SUM, len(digest), now), io.BytesIO(digest))
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sync_dir(dest.parent)
    return manifest


def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(mtime)
    return info


def member_path(into: Path, name: str) -> Path:
    """Where `read_archive` puts member `name` (flat: 'spool/writes.jsonl' -> 'spool-writes.jsonl')."""
    return into / name.replace("/", "-")


def read_archive(path: Path, into: Path) -> Manifest:
    """Checks the whole backup file and copies its data members into the directory `into` (see `member_path`).
    Raises DamagedBackup, saying what is wrong, unless every check passes."""
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, EOFError) as exc:
        if str(exc) == "empty file":
            raise DamagedBackup("it is empty") from None
        raise DamagedBackup(f"it is not an oscbridge backup, or its beginning is damaged (tar: {exc})") from None
    except OSError as exc:
        raise DamagedBackup(f"it cannot be read ({exc.strerror or exc})") from None
    found: dict[str, tuple[int, str]] = {}
    manifest_body = digest = b""
    with tar:
        try:
            for member in tar:
                if member.name not in MEMBERS:
                    raise DamagedBackup(f"it holds {member.name!r}, which no oscbridge backup holds")
                if member.name in found or not member.isfile():
                    raise DamagedBackup(f"its member {member.name!r} is repeated or not a regular file")
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has data
                if member.name in DATA_MEMBERS:
                    found[member.name] = _copy_member(source, member_path(into, member.name), member.size)
                else:
                    if member.size > MAX_MANIFEST:
                        raise DamagedBackup(f"its {member.name} is {member.size} bytes, far more than a manifest")
                    body = source.read()
                    if len(body) != member.size:
                        raise DamagedBackup(f"its {member.name} is cut short")
                    found[member.name] = (len(body), "")
                    if member.name == MANIFEST:
                        manifest_body = body
                    else:
                        digest = body
        except (tarfile.TarError, EOFError) as exc:
            raise DamagedBackup(f"it is truncated or damaged ({exc})") from None
    missing = [name for name in MEMBERS if name not in found]
    if missing:
        raise DamagedBackup(f"it is incomplete or damaged (no {', '.join(missing)}): it was cut short while being "
                            "written or copied, or a tar header in it is damaged")
    if hashlib.sha256(manifest_body).hexdigest() != digest.decode("ascii", "replace").strip():
        raise DamagedBackup("its manifest does not match the manifest's checksum: the file is damaged")
    manifest = Manifest.from_json(manifest_body)
    for name in DATA_MEMBERS:
        size, sha = found[name]
        expected = manifest.files[name]
        if size != expected["bytes"] or sha != expected["sha256"]:
            raise DamagedBackup(f"its {name} does not match the checksum in its manifest: the file is damaged")
    return manifest


def _copy_member(source: IO[bytes], dest: Path, size: int) -> tuple[int, str]:
    sha = hashlib.sha256()
    copied = 0
    with open(dest, "wb", opener=private_opener) as out:
        while chunk := source.read(CHUNK):
            sha.update(chunk)
            out.write(chunk)
            copied += len(chunk)
    if copied != size:
        raise DamagedBackup(f"its {dest.name} is cut short ({copied} of {size} bytes)")
    return copied, sha.hexdigest()
