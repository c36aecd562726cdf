"""The project's SQLite database (WAL mode): annotators, their item assignments and their labels.

Every label is committed the moment it is given, in its own transaction; a label is keyed by
(annotator, item), so a repeated request (a retry, two tabs) never double-counts: a retry (same item,
choice and client request id) keeps its original place, a changed label replaces the earlier one (kept
so that undo can restore it), and a label once undone is not brought back by a late retry.
Tokens are stored as SHA-256 digests and compared in constant time; the plain token is shown once,
when the annotator is added.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (annotator TEXT NOT NULL, item_id TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (annotator, item_id));
CREATE TABLE IF NOT EXISTS labels (
    annotator TEXT NOT NULL, item_id TEXT NOT NULL,
    choice TEXT NOT NULL,          -- unblinded: a | b | tie (compare), up | down (thumbs), pass | fail (review)
    score INTEGER,                 -- five-point scale, unblinded: 1 = a much better ... 5 = b much better
    reason TEXT NOT NULL DEFAULT '',
    shown_left TEXT,               -- which answer was on the left (a or b): position bias
    given REAL NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (annotator, item_id));
CREATE TABLE IF NOT EXISTS replaced (  -- labels a later label of the same item replaced: undo restores them
    annotator TEXT NOT NULL, item_id TEXT NOT NULL, choice TEXT NOT NULL, score INTEGER, reason TEXT NOT NULL,
    shown_left TEXT, given REAL NOT NULL, seq INTEGER NOT NULL, request_id TEXT);
CREATE TABLE IF NOT EXISTS undone (annotator TEXT NOT NULL, request_id TEXT NOT NULL,
    PRIMARY KEY (annotator, request_id));
"""
LABEL_COLUMNS = "annotator, item_id, choice, score, reason, shown_left, given, seq, request_id"


def digest(token: str) -> str:
    """The SHA-256 hex digest of a token (what the store keeps instead of the token)."""
    return hashlib.sha256(token.encode()).hexdigest()


class LabelStore:
    """The project's SQLite database (WAL, synchronous FULL): annotators, their item order, and their labels,
    one row per (annotator, item) so a retried or repeated label replaces the earlier one."""

    def __init__(self, path: Path):
        self.path = path
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            if "request_id" not in {row[1] for row in db.execute("PRAGMA table_info(labels)")}:
                db.execute("ALTER TABLE labels ADD COLUMN request_id TEXT")  # a project from before retries had ids

    @contextmanager
    def connect(self):
        """A connection in autocommit mode with full fsync; closed on exit."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextmanager
    def transaction(self):
        """An immediate (write-locking) transaction: committed on success, rolled back on any error."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def add_annotator(self, name: str, item_order: list[str], overlap: int, admin: bool = False) -> str:
        """A new annotator's token (shown once). Non-admin annotators take every item still seen by
        fewer than ``overlap`` annotators, in ``item_order``."""
        token = secrets.token_urlsafe(18)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM annotators WHERE name = ?", (name,)).fetchone():
                raise ValueError(f"annotator '{name}' already exists")
            db.execute("INSERT INTO annotators VALUES (?, ?, ?, ?)", (name, digest(token), int(admin), time.time()))
            if not admin:
                counts = dict(db.execute("SELECT item_id, COUNT(*) FROM assignments GROUP BY item_id").fetchall())
                mine = [item for item in item_order if counts.get(item, 0) < overlap]
                db.executemany(
                    "INSERT INTO assignments VALUES (?, ?, ?)", [(name, item, i) for i, item in enumerate(mine)]
                )
        return token

    def who(self, token: str | None) -> tuple[str, bool] | None:
        """(name, admin) of the token's annotator, or None; every stored digest is compared (constant time)."""
        if not token:
            return None
        presented, found = digest(token), None
        with self.connect() as db:
            for row in db.execute("SELECT name, token_sha256, admin FROM annotators").fetchall():
                if hmac.compare_digest(presented, row["token_sha256"]):
                    found = (row["name"], bool(row["admin"]))
        return found

    def assigned(self, annotator: str) -> list[str]:
        """The item ids assigned to ``annotator``, in their order."""
        with self.connect() as db:
            return [
                r[0]
                for r in db.execute(
                    "SELECT item_id FROM assignments WHERE annotator = ? ORDER BY position", (annotator,)
                )
            ]

    def labelled(self, annotator: str) -> set[str]:
        """The ids of the items ``annotator`` has labelled."""
        with self.connect() as db:
            return {r[0] for r in db.execute("SELECT item_id FROM labels WHERE annotator = ?", (annotator,))}

    def put_label(
        self,
        annotator: str,
        item_id: str,
        choice: str,
        score: int | None,
        reason: str,
        shown_left: str | None,
        request_id: str | None = None,
    ) -> str:
        """Store ``annotator``'s label of ``item_id`` in one transaction; returns what happened:

        - "retry": the label is already there (same item and choice, and the same client ``request_id``
          when one is sent): nothing changes, the label keeps its place in the order undo follows;
        - "undone": ``request_id`` belongs to a label that was undone: a late retry never restores it;
        - "stored": a new label, or a changed one (the one it replaces is kept for undo to restore)."""
        with self.transaction() as db:
            if (
                request_id
                and db.execute(
                    "SELECT 1 FROM undone WHERE annotator = ? AND request_id = ?", (annotator, request_id)
                ).fetchone()
            ):
                return "undone"
            old = db.execute(
                f"SELECT {LABEL_COLUMNS} FROM labels WHERE annotator = ? AND item_id = ?", (annotator, item_id)
            ).fetchone()
            if old is not None and (old["choice"], old["score"]) == (choice, score):
                if request_id is None or old["request_id"] in (None, request_id):
                    return "retry"
            if old is not None:
                db.execute(f"INSERT INTO replaced ({LABEL_COLUMNS}) VALUES ({', '.join('?' * 9)})", tuple(old))
            seq = db.execute(
                "SELECT MAX(s) + 1 FROM (SELECT COALESCE(MAX(seq), 0) AS s FROM labels "
                "UNION ALL SELECT COALESCE(MAX(seq), 0) FROM replaced)"
            ).fetchone()[0]
            db.execute(
                f"INSERT OR REPLACE INTO labels ({LABEL_COLUMNS}) VALUES ({', '.join('?' * 9)})",
                (annotator, item_id, choice, score, reason, shown_left, time.time(), seq, request_id),
            )
            return "stored"

    def undo(self, annotator: str) -> str | None:
        """Take back the annotator's newest label (by the order labels were given; retries keep their
        place): a changed label goes back to what it replaced, a new one is removed. Its request id is
        remembered, so a retry of it arriving later is refused. The item it was for (None when none)."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT item_id, request_id FROM labels WHERE annotator = ? ORDER BY seq DESC LIMIT 1", (annotator,)
            ).fetchone()
            if row is None:
                return None
            item_id = row["item_id"]
            db.execute("DELETE FROM labels WHERE annotator = ? AND item_id = ?", (annotator, item_id))
            if row["request_id"]:
                db.execute("INSERT OR IGNORE INTO undone VALUES (?, ?)", (annotator, row["request_id"]))
            previous = db.execute(
                f"SELECT rowid, {LABEL_COLUMNS} FROM replaced WHERE annotator = ? AND item_id = ? ORDER BY seq DESC "
                "LIMIT 1",
                (annotator, item_id),
            ).fetchone()
            if previous is not None:
                db.execute(f"INSERT INTO labels ({LABEL_COLUMNS}) VALUES ({', '.join('?' * 9)})", tuple(previous)[1:])
                db.execute("DELETE FROM replaced WHERE rowid = ?", (previous["rowid"],))
            return item_id

    def all_labels(self) -> list[dict]:
        """Every label, oldest first."""
        with self.connect() as db:
            return [
                dict(r)
                for r in db.execute(
                    "SELECT annotator, item_id, choice, score, reason, shown_left, given FROM labels ORDER BY seq"
                )
            ]

    def annotators(self) -> list[str]:
        """The annotators' names (the admin excluded), in the order they were added."""
        with self.connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM annotators WHERE admin = 0 ORDER BY added")]
