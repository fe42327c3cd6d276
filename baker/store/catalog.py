"""The image catalog: SQLite (WAL) beside the blobs. Versions are immutable once recorded; only their
lifecycle (state, revocation, channels, attached signatures) changes, and every channel move is kept.

Writers take a shared file lock while they add blobs and insert, `gc` takes it exclusively, so gc never
removes a blob that a build finishing at the same moment is about to reference.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baker.errors import BakerError
from baker.fsutil import atomic_path
from baker.store.blobs import BlobStore

STATES = ("active", "deprecated", "obsolete")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL, version TEXT NOT NULL,
  created_at TEXT NOT NULL, created_by TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'active', state_changed_at TEXT, replacement TEXT,
  exclude_from_latest INTEGER NOT NULL DEFAULT 0,
  revoked_at TEXT, revoked_reason TEXT,
  policy_passed INTEGER, scan_passed INTEGER,
  parent_name TEXT, parent_version TEXT, stale_reason TEXT,
  manifest TEXT NOT NULL,
  UNIQUE (name, version));
CREATE TABLE IF NOT EXISTS files (
  seq INTEGER NOT NULL REFERENCES versions(seq) ON DELETE CASCADE,
  path TEXT NOT NULL, role TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (seq, path));
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE TABLE IF NOT EXISTS channels (
  name TEXT NOT NULL, channel TEXT NOT NULL, version TEXT NOT NULL, PRIMARY KEY (name, channel));
CREATE TABLE IF NOT EXISTS channel_history (
  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, channel TEXT NOT NULL,
  version TEXT, previous TEXT, action TEXT NOT NULL, at TEXT NOT NULL, user TEXT NOT NULL, note TEXT);
"""
ROLES = ("artifact", "metadata", "signature")


class StoreError(BakerError):
    """A store operation refused or impossible (unknown version, duplicate, corrupt catalog)."""


class NotPromotable(StoreError):
    """promote refused: unsigned, signature invalid, policy or scan failed, revoked."""

    exit_code = 3


def default_store_path() -> Path:
    env = os.environ.get("BAKER_STORE")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "baker" / "store"


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def current_user() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class StoredFile:
    path: str
    role: str
    sha256: str
    size: int


@dataclass
class Version:
    seq: int
    name: str
    version: str
    created_at: str
    created_by: str
    state: str
    state_changed_at: str | None
    replacement: str | None
    exclude_from_latest: bool
    revoked_at: str | None
    revoked_reason: str | None
    policy_passed: bool | None
    scan_passed: bool | None
    parent_name: str | None
    parent_version: str | None
    stale_reason: str | None
    manifest: dict[str, Any]
    files: list[StoredFile] = field(default_factory=list)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def signed(self) -> bool:
        return any(f.role == "signature" for f in self.files)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def file(self, path: str) -> StoredFile | None:
        return next((f for f in self.files if f.path == path), None)


@dataclass(frozen=True)
class ChannelMove:
    name: str
    channel: str
    version: str | None
    previous: str | None
    action: str
    at: str
    user: str
    note: str | None


@dataclass
class GcResult:
    removed_versions: list[str] = field(default_factory=list)
    removed_blobs: int = 0
    freed_bytes: int = 0
    kept: dict[str, str] = field(default_factory=dict)  # ref -> why it was kept


class Store:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_store_path()
        self.blobs = BlobStore(self.root / "blobs")
        self.db_path = self.root / "catalog.sqlite"
        self._db: sqlite3.Connection | None = None

    # ---- plumbing --------------------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.root.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 60000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA foreign_keys = ON")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: writers queue on SQLite's lock instead of failing mid-way."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _version(self, row: sqlite3.Row) -> Version:
        v = Version(
            seq=row["seq"], name=row["name"], version=row["version"], created_at=row["created_at"],
            created_by=row["created_by"], state=row["state"], state_changed_at=row["state_changed_at"],
            replacement=row["replacement"], exclude_from_latest=bool(row["exclude_from_latest"]),
            revoked_at=row["revoked_at"], revoked_reason=row["revoked_reason"],
            policy_passed=None if row["policy_passed"] is None else bool(row["policy_passed"]),
            scan_passed=None if row["scan_passed"] is None else bool(row["scan_passed"]),
            parent_name=row["parent_name"], parent_version=row["parent_version"],
            stale_reason=row["stale_reason"], manifest=json.loads(row["manifest"]))
        v.files = [StoredFile(r["path"], r["role"], r["sha256"], r["size"]) for r in
                   self.db.execute("SELECT * FROM files WHERE seq = ? ORDER BY path", (v.seq,))]
        return v

    # ---- recording -------------------------------------------------------------------------------
    def record(self, name: str, version: str, files: list[tuple[Path, str, str]], manifest: dict[str, Any],
               *, policy_passed: bool | None = None, scan_passed: bool | None = None,
               parent: tuple[str, str] | None = None, exclude_from_latest: bool = False) -> Version:
        """Record a new version from (source path, stored path, role) triples; fails if it exists."""
        if not name or not version:
            raise StoreError("a stored image needs a name and a version",
                             hint="set version: in the template (e.g. version: \"1.0.{{ timestamp() }}\")")
        for _src, rel, role in files:
            if role not in ROLES or not rel or rel.startswith("/") or ".." in Path(rel).parts:
                raise StoreError(f"bad stored file entry {rel!r} ({role})")
        with self._lock(exclusive=False):
            if self.find(name, version) is not None:
                raise StoreError(f"{name}@{version} is already in the store {self.root}",
                                 hint="versions are immutable and unique per name: bump version:")
            stored = [(rel, role, *self.blobs.add(src)) for src, rel, role in files]
            try:
                with self._write() as db:
                    cur = db.execute(
                        "INSERT INTO versions (name, version, created_at, created_by, policy_passed, "
                        "scan_passed, parent_name, parent_version, exclude_from_latest, manifest) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (name, version, now_text(), current_user(), _tri(policy_passed), _tri(scan_passed),
                         parent[0] if parent else None, parent[1] if parent else None,
                         int(exclude_from_latest), json.dumps(manifest, sort_keys=True)))
                    db.executemany("INSERT INTO files (seq, path, role, sha256, size) VALUES (?,?,?,?,?)",
                                   [(cur.lastrowid, rel, role, sha, size) for rel, role, sha, size in stored])
                    # an updated parent: images built on its older versions should be rebuilt
                    db.execute("UPDATE versions SET stale_reason = ? WHERE parent_name = ? "
                               "AND stale_reason IS NULL AND revoked_at IS NULL AND seq != ?",
                               (f"parent {name} has a newer version {version}", name, cur.lastrowid))
            except sqlite3.IntegrityError as e:
                raise StoreError(f"{name}@{version} is already in the store {self.root}",
                                 hint="versions are immutable and unique per name: bump version:") from e
        return self.get(name, version)

    def attach(self, name: str, version: str, files: list[tuple[Path, str]]) -> Version:
        """Add signature files to a version; they may replace earlier signatures, nothing else."""
        v = self.get(name, version)
        for _src, rel in files:
            old = v.file(rel)
            if old is not None and old.role != "signature":
                raise StoreError(f"{v.ref}: {rel} is part of the immutable version")
        with self._lock(exclusive=False):
            stored = [(rel, *self.blobs.add(src)) for src, rel in files]
            with self._write() as db:
                db.executemany("INSERT OR REPLACE INTO files (seq, path, role, sha256, size) "
                               "VALUES (?,?,'signature',?,?)",
                               [(v.seq, rel, sha, size) for rel, sha, size in stored])
        return self.get(name, version)

    # ---- reading ---------------------------------------------------------------------------------
    def find(self, name: str, version: str) -> Version | None:
        row = self.db.execute("SELECT * FROM versions WHERE name = ? AND version = ?",
                              (name, version)).fetchone()
        return self._version(row) if row else None

    def get(self, name: str, version: str) -> Version:
        v = self.find(name, version)
        if v is None:
            known = [x.version for x in self.versions(name)][-5:]
            raise StoreError(f"no version {version!r} of {name!r} in the store {self.root}",
                             hint=f"known versions: {', '.join(known)}" if known
                             else "`baker images list` shows what is stored")
        return v

    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def versions(self, name: str | None = None) -> list[Version]:
        """Oldest first."""
        if name is None:
            rows = self.db.execute("SELECT * FROM versions ORDER BY name, seq")
        else:
            rows = self.db.execute("SELECT * FROM versions WHERE name = ? ORDER BY seq", (name,))
        return [self._version(r) for r in rows.fetchall()]

    def latest(self, name: str) -> Version | None:
        """Newest active, non-revoked version not marked exclude_from_latest."""
        for v in reversed(self.versions(name)):
            if v.state == "active" and not v.revoked and not v.exclude_from_latest:
                return v
        return None

    def resolve(self, name: str, version: str | None = None, channel: str | None = None) -> Version:
        if channel is not None:
            target = self.channels(name).get(channel)
            if target is None:
                raise StoreError(f"channel {channel!r} of {name!r} points nowhere",
                                 hint=f"baker promote {name} VERSION --channel {channel}")
            return self.get(name, target)
        if version in (None, "latest"):
            v = self.latest(name)
            if v is None:
                raise StoreError(f"{name!r} has no active, non-revoked version for 'latest'")
            return v
        return self.get(name, version)

    def blob_path(self, f: StoredFile) -> Path:
        return self.blobs.path(f.sha256)

    def export_version(self, v: Version, dest: Path) -> None:
        """Copy a version's files into a new folder `dest`, all or nothing (`images export`, and a
        build that finds its inputs unchanged in the store but its output folder gone)."""
        if v.revoked:
            raise StoreError(f"{v.ref} is revoked ({v.revoked_reason}); not exporting it")
        if dest.exists() and any(dest.iterdir()):
            raise BakerError(f"{dest} exists and is not empty", hint="export into a new folder")
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            for f in v.files:
                shutil.copyfile(self.blob_path(f), tmp / f.path)

    def children(self, name: str, version: str) -> list[Version]:
        rows = self.db.execute("SELECT * FROM versions WHERE parent_name = ? AND parent_version = ? "
                               "ORDER BY seq", (name, version)).fetchall()
        return [self._version(r) for r in rows]

    def find_by_artifact(self, sha256: str) -> Version | None:
        """The newest version that has an artifact with this digest (ancestry: built from it)."""
        row = self.db.execute("SELECT v.* FROM versions v JOIN files f ON f.seq = v.seq WHERE f.sha256 = ? "
                              "AND f.role = 'artifact' ORDER BY v.seq DESC LIMIT 1", (sha256,)).fetchone()
        return self._version(row) if row else None

    # ---- lifecycle -------------------------------------------------------------------------------
    def channels(self, name: str) -> dict[str, str]:
        return {r["channel"]: r["version"] for r in
                self.db.execute("SELECT channel, version FROM channels WHERE name = ? ORDER BY channel",
                                (name,))}

    def history(self, name: str, channel: str | None = None) -> list[ChannelMove]:
        q = "SELECT * FROM channel_history WHERE name = ?" + (" AND channel = ?" if channel else "")
        rows = self.db.execute(q + " ORDER BY id", (name, channel) if channel else (name,))
        return [ChannelMove(r["name"], r["channel"], r["version"], r["previous"], r["action"], r["at"],
                            r["user"], r["note"]) for r in rows]

    def set_channel(self, name: str, channel: str, version: str, *, action: str = "promote",
                    note: str | None = None) -> str | None:
        """Point a channel at a version (checks are the caller's); returns the previous target."""
        self.get(name, version)
        with self._write() as db:
            row = db.execute("SELECT version FROM channels WHERE name = ? AND channel = ?",
                             (name, channel)).fetchone()
            previous = row["version"] if row else None
            db.execute("INSERT OR REPLACE INTO channels (name, channel, version) VALUES (?,?,?)",
                       (name, channel, version))
            db.execute("INSERT INTO channel_history (name, channel, version, previous, action, at, user, "
                       "note) VALUES (?,?,?,?,?,?,?,?)",
                       (name, channel, version, previous, action, now_text(), current_user(), note))
        return previous

    def rollback_target(self, name: str, channel: str) -> str:
        """The version the channel pointed to before its current target (skipping revoked ones)."""
        current = self.channels(name).get(channel)
        if current is None:
            raise StoreError(f"channel {channel!r} of {name!r} points nowhere; nothing to roll back")
        # the channel's targets as a stack: a promote pushes, a rollback pops back to its target,
        # so repeated rollbacks keep going back instead of toggling between two versions
        stack: list[str] = []
        for move in self.history(name, channel):
            if move.action == "rollback" and move.version in stack:
                del stack[len(stack) - stack[::-1].index(move.version):]
            elif move.version is not None:
                stack.append(move.version)
        for version in reversed(stack[:-1]):
            prev = self.find(name, version)
            if version != current and prev is not None and not prev.revoked:
                return version
        raise StoreError(f"channel {channel!r} of {name!r} has no earlier, non-revoked version to go back to",
                         hint=f"baker images show {name} {current}")

    def revoke(self, name: str, version: str, reason: str, *, cascade: bool = False) -> list[Version]:
        """Revoke a version (and, with cascade, its descendants); children not revoked become stale."""
        if not reason.strip():
            raise StoreError("revoking needs a --reason")
        root = self.get(name, version)
        done: list[Version] = []
        todo = [root]
        with self._write() as db:
            while todo:
                v = todo.pop(0)
                if v.revoked_at is None:
                    why = reason if v is root else f"parent {root.ref} revoked: {reason}"
                    db.execute("UPDATE versions SET revoked_at = ?, revoked_reason = ? WHERE seq = ?",
                               (now_text(), why, v.seq))
                done.append(v)
                kids = [self._version(r) for r in db.execute(
                    "SELECT * FROM versions WHERE parent_name = ? AND parent_version = ?",
                    (v.name, v.version))]
                if cascade:
                    todo += kids
                else:
                    db.executemany("UPDATE versions SET stale_reason = ? WHERE seq = ?",
                                   [(f"parent {v.ref} revoked", k.seq) for k in kids])
        return [self.get(v.name, v.version) for v in done]

    def set_state(self, name: str, version: str, state: str, *, replacement: str | None = None) -> Version:
        if state not in STATES:
            raise StoreError(f"unknown state {state!r}", hint=f"states: {', '.join(STATES)}")
        v = self.get(name, version)
        if replacement is not None:
            self.get(name, replacement)
        with self._write() as db:
            db.execute("UPDATE versions SET state = ?, state_changed_at = ?, replacement = ? WHERE seq = ?",
                       (state, now_text(), replacement, v.seq))
        return self.get(name, version)

    def set_exclude_from_latest(self, name: str, version: str, exclude: bool) -> Version:
        v = self.get(name, version)
        with self._write() as db:
            db.execute("UPDATE versions SET exclude_from_latest = ? WHERE seq = ?", (int(exclude), v.seq))
        return self.get(name, version)

    def mark_children_stale(self, name: str, version: str, reason: str) -> list[Version]:
        kids = self.children(name, version)
        with self._write() as db:
            db.executemany("UPDATE versions SET stale_reason = ? WHERE seq = ?",
                           [(reason, k.seq) for k in kids])
        return kids

    # ---- retention -------------------------------------------------------------------------------
    def gc(self, keep: int, *, dry_run: bool = False) -> GcResult:
        """Keep the newest `keep` versions per name, channel targets and the last good version."""
        if keep < 0:
            raise StoreError("--keep must be 0 or more")
        result = GcResult()
        with self._lock(exclusive=True):
            doomed: list[Version] = []
            for name in self.names():
                versions = self.versions(name)
                pinned = {v: f"channel {c}" for c, v in self.channels(name).items()}
                good = next((v for v in reversed(versions) if not v.revoked and v.policy_passed is not False
                             and v.state != "obsolete"), None)
                if good is not None:
                    pinned.setdefault(good.version, "last good version")
                for v in versions[max(0, len(versions) - keep):] if keep else []:
                    pinned.setdefault(v.version, f"among the newest {keep}")
                for v in versions:
                    if v.version in pinned:
                        result.kept[v.ref] = pinned[v.version]
                    else:
                        doomed.append(v)
            result.removed_versions = [v.ref for v in doomed]
            if dry_run:
                return result
            with self._write() as db:
                db.executemany("DELETE FROM versions WHERE seq = ?", [(v.seq,) for v in doomed])
            referenced = {r[0] for r in self.db.execute("SELECT DISTINCT sha256 FROM files")}
            for sha in self.blobs.all():
                if sha not in referenced:
                    result.freed_bytes += self.blobs.remove(sha)
                    result.removed_blobs += 1
        return result

    def integrity_errors(self) -> list[str]:
        bad = [r[0] for r in self.db.execute("PRAGMA integrity_check")]
        return [] if bad == ["ok"] else bad


def _tri(value: bool | None) -> int | None:
    return None if value is None else int(value)
