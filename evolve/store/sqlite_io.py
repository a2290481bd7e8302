"""SQLite plumbing of the run database: connections, transactions, error wording.

Kept apart from evolve.store.database, which holds the archive's schema and queries."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def describe_sqlite_error(exc: sqlite3.Error) -> str:
    """A short, one-line reason that says what the user can do about it."""
    text = " ".join(str(exc).split())
    if "disk is full" in text or "disk I/O error" in text:
        return f"disk full or unwritable ({text})"
    if "readonly" in text:
        return f"opened read-only ({text})"
    if "unable to open" in text:
        return f"missing or unwritable directory ({text})"
    if "not a database" in text or "malformed" in text:
        return f"not an evolve run database or corrupted ({text})"
    return text


def connect(path: Path, readonly: bool, must_exist: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit); changes nothing in the file."""
    if readonly:
        uri = f"{path.resolve().as_uri()}?mode=ro"
    else:
        uri = f"{path.resolve().as_uri()}?mode={'rw' if must_exist else 'rwc'}"
    connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0)
    connection.row_factory = sqlite3.Row
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        if readonly:
            connection.execute("PRAGMA query_only = ON")
    except sqlite3.Error:
        connection.close()
        raise
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def configure_writer(connection: sqlite3.Connection) -> None:
    """WAL so readers never block the loop; FULL so every commit survives a crash."""
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")


def split_statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def discard_new_database(connection: sqlite3.Connection | None, path: Path) -> None:
    """Remove a database this process just failed to create, with its WAL files."""
    if connection is not None:
        connection.close()
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(f"{path}{suffix}")
        except OSError:
            pass
