"""The lab's one database: an SQLite file in the data directory, shared by every session and command.

    python -c "from lab.history.db import HistoryDB; print(HistoryDB('/tmp/h.sqlite3').version())"

Why SQLite from the standard library: the lab is one box and one process (plus the command line
now and then); a server database would be one more thing to run. WAL mode lets every reader go on
while one writer appends, and a busy timeout makes a second writer (another thread, or the command
line) wait its turn instead of failing. Each thread gets its own connection (sqlite3 connections
are not meant to be shared between threads), and writes open their transaction with BEGIN IMMEDIATE
so the write lock is taken up front: a transaction that first read and then wanted to write could
otherwise be refused at once, busy timeout or not.

The schema is a list of migrations; `PRAGMA user_version` records how many have run, so opening an
older file brings it up to date and opening a current one changes nothing. A new table or column is
a new entry at the end of MIGRATIONS, never an edit of an old one.

The file holds what users asked and answered, so it is readable by the lab's own Unix user only (0600).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab.core.errors import DataDirError

DB_NAME = "history.sqlite3"
"""The file's name inside the data directory (LAB_DATA_DIR)."""

BUSY_TIMEOUT_MS = 30_000
"""How long a writer waits for another writer's transaction to finish before giving up."""

MIGRATIONS: tuple[str, ...] = (
    # 1: every kind of record. A user column on each per-user table: every query filters on it.
    """
    CREATE TABLE compares (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        created REAL NOT NULL,
        question TEXT NOT NULL,
        document TEXT NOT NULL,
        document_sha256 TEXT NOT NULL,
        model TEXT NOT NULL,
        settings TEXT NOT NULL
    );
    CREATE TABLE compare_answers (
        compare_id INTEGER NOT NULL REFERENCES compares(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        method TEXT NOT NULL,
        answer TEXT NOT NULL,
        text TEXT NOT NULL,
        error TEXT,
        finish_reason TEXT,
        metrics TEXT NOT NULL,
        chunks TEXT NOT NULL,
        PRIMARY KEY (compare_id, position)
    );
    CREATE TABLE evaluations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        created REAL NOT NULL,
        document TEXT NOT NULL,
        model TEXT NOT NULL,
        methods TEXT NOT NULL,
        questions INTEGER NOT NULL,
        settings TEXT NOT NULL,
        scores TEXT NOT NULL,
        rows TEXT NOT NULL
    );
    CREATE TABLE arena_transcripts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        created REAL NOT NULL,
        title TEXT NOT NULL,
        transcript TEXT NOT NULL
    );
    CREATE TABLE battles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        created REAL NOT NULL,
        prompt TEXT NOT NULL,
        document TEXT,
        settings TEXT NOT NULL,
        a_name TEXT NOT NULL,
        b_name TEXT NOT NULL,
        a_text TEXT NOT NULL DEFAULT '',
        b_text TEXT NOT NULL DEFAULT '',
        a_error TEXT,
        b_error TEXT,
        answered INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE votes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        battle_id INTEGER UNIQUE REFERENCES battles(id) ON DELETE SET NULL,
        user TEXT NOT NULL,
        created REAL NOT NULL,
        a_name TEXT NOT NULL,
        b_name TEXT NOT NULL,
        winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'tie', 'both_bad'))
    );
    """,
    # 2: the History view lists one user's records newest first; battle pools a user (or an admin, for
    # the whole team) keeps between battles.
    """
    CREATE INDEX compares_user ON compares(user, created);
    CREATE INDEX evaluations_user ON evaluations(user, created);
    CREATE INDEX arena_user ON arena_transcripts(user, created);
    CREATE INDEX battles_user ON battles(user, created);
    CREATE TABLE pools (
        owner TEXT PRIMARY KEY,
        contestants TEXT NOT NULL,
        updated REAL NOT NULL
    );
    """,
)


class HistoryDB:
    """One database file; safe to use from any number of threads, and from several processes at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 before sqlite opens it; sqlite gives its -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
            self._migrate()
        except (OSError, sqlite3.OperationalError) as exc:
            raise DataDirError(f"The lab's database {self.path} cannot be opened or written ({exc}). Set LAB_DATA_DIR "
                               "to a folder you can write to and restart.") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: transactions are opened explicitly below (BEGIN IMMEDIATE for writes).
            # check_same_thread=False only so close() may close it from another thread; one thread uses it.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL's recommended level: durable at each checkpoint
            self._local.conn = conn
            with self._opened_lock:
                self._opened.append(conn)
        return conn

    def _migrate(self) -> None:
        with self.write() as cur:  # the write lock: two processes opening an old file migrate it once
            version = cur.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise DataDirError(f"{self.path} was written by a newer lab (schema {version}, this one knows "
                                   f"{len(MIGRATIONS)}); update the lab or point LAB_DATA_DIR elsewhere.")
            for number, script in enumerate(MIGRATIONS[version:], version + 1):
                for statement in filter(str.strip, script.split(";")):
                    cur.execute(statement)  # executescript would commit the transaction it runs in
                cur.execute(f"PRAGMA user_version = {number}")
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def version(self) -> int:
        """How many migrations this file has had."""
        return self._connect().execute("PRAGMA user_version").fetchone()[0]

    def journal_mode(self) -> str:
        return self._connect().execute("PRAGMA journal_mode").fetchone()[0]

    @contextmanager
    def write(self) -> Iterator[sqlite3.Cursor]:
        """One transaction holding the write lock from its start; committed on success, rolled back on error."""
        conn = self._connect()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cur.close()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a query; WAL means it never waits for a writer."""
        return self._connect().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close every thread's connection (a thread's next use opens a new one)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()
