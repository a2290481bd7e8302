"""The MAP-Elites archive of one run, stored in a single SQLite file.

Every candidate is a row of `programs`, failures included, so a run can be inspected,
resumed and reported from the file alone. Elites are never stored separately: they are
derived by query (best ok program per island and cell, ties to the earlier id), so the
grid cannot disagree with the stored programs and resume needs nothing else.

Each write is one transaction committed before the call returns (WAL, synchronous=FULL):
a SIGKILL loses nothing written, and a kill mid-write leaves the previous state.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from evolve.config import ArchiveConfig
from evolve.store import elites as elites_policy
from evolve.store.errors import ArchiveError
from evolve.store.sqlite_io import configure_writer, connect, describe_sqlite_error, discard_new_database, split_statements, transaction
from evolve.store.elites import complexity_bin, param_bin
from evolve.records import ProgramRecord, code_complexity
from evolve.scoring.scorer import Evaluation

SCHEMA_VERSION = 1
FORMAT_NAME = "evolve-archive"

SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE programs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL,
    parent_id INTEGER REFERENCES programs(id),
    island INTEGER NOT NULL,
    cell_params INTEGER NOT NULL,
    cell_complexity INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    status TEXT NOT NULL,
    val_r2 REAL,
    validation TEXT NOT NULL,
    test TEXT,
    n_params INTEGER,
    complexity INTEGER NOT NULL,
    proposer TEXT NOT NULL,
    model TEXT,
    explanation TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    generation_seconds REAL NOT NULL,
    edit_mode TEXT NOT NULL,
    created_at REAL NOT NULL,
    extra TEXT NOT NULL,
    run_state TEXT
);
CREATE INDEX programs_rank ON programs (status, val_r2 DESC, id);
CREATE INDEX programs_island_cell ON programs (island, cell_params, cell_complexity, status, val_r2 DESC);
CREATE INDEX programs_parent ON programs (parent_id);
"""

COLUMNS = (
    "code", "parent_id", "island", "cell_params", "cell_complexity", "iteration", "status", "val_r2",
    "validation", "test", "n_params", "complexity", "proposer", "model", "explanation", "prompt_tokens",
    "completion_tokens", "generation_seconds", "edit_mode", "created_at", "extra", "run_state",
)  # fmt: skip
# Added after schema 1 shipped: ALTER TABLE adds it to an older archive opened for writing
# (old rows read NULL); a read-only open of an old archive never selects it by name.
ADDED_COLUMNS = {"run_state": "TEXT"}
RUN_STATE_KEYS = ("iteration", "rng_state", "usage")  # also kept in meta, written in the same transaction

RANK_ORDER = "val_r2 DESC NULLS LAST, id ASC"
UPSERT_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"

ELITES_QUERY = f"""
SELECT * FROM (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY island, cell_params, cell_complexity ORDER BY {RANK_ORDER}
    ) AS rank_in_cell
    FROM programs WHERE status = 'ok'
) WHERE rank_in_cell = 1
"""


# ---------------------------------------------------------------- row <-> record


def to_json(value: Any) -> str:
    """JSON that also accepts numpy scalars and arrays (fitted parameters often are)."""
    return json.dumps(value, default=numpy_to_plain)


def numpy_to_plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def rank_value(record: ProgramRecord) -> float | None:
    """The indexed ranking column; NaN is stored as NULL so it sorts last."""
    r2 = record.r2
    return None if r2 != r2 else float(r2)


def record_to_row(record: ProgramRecord, cell: tuple[int, int], complexity: int, created_at: float) -> tuple:
    return (
        record.code, record.parent_id, record.island, cell[0], cell[1], record.iteration,
        record.validation.status, rank_value(record), to_json(record.validation.to_dict()),
        to_json(record.test.to_dict()) if record.test is not None else None,
        record.n_params, complexity, record.proposer, record.model,
        record.explanation, record.prompt_tokens, record.completion_tokens,
        float(record.generation_seconds), record.edit_mode, created_at, to_json(record.extra), None,
    )  # fmt: skip


def row_to_record(row: sqlite3.Row) -> ProgramRecord:
    return ProgramRecord(
        code=row["code"],
        validation=Evaluation.from_dict(json.loads(row["validation"])),
        iteration=row["iteration"],
        island=row["island"],
        parent_id=row["parent_id"],
        proposer=row["proposer"],
        model=row["model"],
        explanation=row["explanation"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        generation_seconds=row["generation_seconds"],
        edit_mode=row["edit_mode"],
        test=Evaluation.from_dict(json.loads(row["test"])) if row["test"] is not None else None,
        id=row["id"],
        cell=(row["cell_params"], row["cell_complexity"]),
        created_at=row["created_at"],
        extra=json.loads(row["extra"]),
    )


# ---------------------------------------------------------------- the archive


class Archive:
    """One run's programs and settings; safe to share between a few threads."""

    def __init__(self, path: Path, connection: sqlite3.Connection, config: ArchiveConfig, param_cap: int | None, readonly: bool):
        self.path = path
        self.config = config
        self.param_cap = param_cap
        self.readonly = readonly
        self._conn = connection
        self._lock = threading.RLock()

    # ------------------------------------------------------------ opening

    @classmethod
    def create(cls, path: Path, config: ArchiveConfig, param_cap: int | None) -> "Archive":
        """A new, empty run database; refuses to overwrite anything already at `path`."""
        path = Path(path)
        if path.exists():
            raise ArchiveError(f"{path}: already exists; refusing to overwrite a run database")
        connection = None
        try:
            connection = connect(path, readonly=False, must_exist=False)
            configure_writer(connection)
            with transaction(connection):
                for statement in split_statements(SCHEMA):
                    connection.execute(statement)
                initial = {
                    "format": FORMAT_NAME,
                    "schema_version": SCHEMA_VERSION,
                    "archive_config": dataclasses.asdict(config),
                    "param_cap": param_cap,
                    "created_at": time.time(),
                }
                connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [(k, to_json(v)) for k, v in initial.items()])
        except sqlite3.Error as exc:
            discard_new_database(connection, path)
            raise ArchiveError(f"{path}: cannot create run database: {describe_sqlite_error(exc)}") from None
        except OSError as exc:
            discard_new_database(connection, path)
            raise ArchiveError(f"{path}: cannot create run database: {exc.strerror or exc}") from None
        return cls(path, connection, config, param_cap, readonly=False)

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> "Archive":
        """An existing run database; readonly never writes, so a live run can be inspected."""
        path = Path(path)
        if not path.is_file():
            raise ArchiveError(f"{path}: no run database there")
        connection = None
        try:
            connection = connect(path, readonly=readonly, must_exist=True)
            config, param_cap = read_settings(connection, path)
            if not readonly:
                configure_writer(connection)  # only once the file is known to be ours
                add_missing_columns(connection)
        except sqlite3.Error as exc:
            if connection is not None:
                connection.close()
            raise ArchiveError(f"{path}: cannot open: {describe_sqlite_error(exc)}") from None
        except ArchiveError:
            connection.close()
            raise
        return cls(path, connection, config, param_cap, readonly=readonly)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._closed = True

    @property
    def closed(self) -> bool:
        return getattr(self, "_closed", False)

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ low-level access

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise ArchiveError(f"{self.path}: {describe_sqlite_error(exc)}") from None

    @contextmanager
    def _writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """One committed transaction; on any error it is rolled back and nothing changes."""
        with self._lock:
            if self.readonly:
                raise ArchiveError(f"{self.path}: cannot {action}: opened read-only")
            try:
                with transaction(self._conn):
                    yield self._conn
            except sqlite3.Error as exc:
                raise ArchiveError(f"{self.path}: cannot {action}: {describe_sqlite_error(exc)}") from None

    def _select(self, where: str = "", params: tuple = (), order: str = RANK_ORDER, limit: int | None = None, source: str = "programs") -> list[ProgramRecord]:
        sql = f"SELECT * FROM ({source})"
        if where:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._reading() as conn:
            return [row_to_record(row) for row in conn.execute(sql, params)]

    # ------------------------------------------------------------ programs

    def cell_of(self, record: ProgramRecord) -> tuple[int, int]:
        """(parameter bin, complexity bin) of a program in this run's grid."""
        return self._cell(record.n_params, code_complexity(record.code))

    def _cell(self, n_params: int | None, complexity: int) -> tuple[int, int]:
        return (
            param_bin(n_params, self.config.param_bins, self.param_cap),
            complexity_bin(complexity, self.config.complexity_bins),
        )

    def add(self, record: ProgramRecord, run_state: dict[str, Any] | None = None) -> ProgramRecord:
        """Store a program (any status); returns it with id, cell and created_at set.

        `run_state` (the loop's iteration, RNG state and token usage just after this
        program) is stored on its row and in meta in the same transaction, so after any stop
        the totals and the RNG match the programs stored, and a resume continues from them."""
        complexity = code_complexity(record.code)
        cell = self._cell(record.n_params, complexity)
        created_at = record.created_at or time.time()
        row = self._encode(record, cell, complexity, created_at)
        if run_state is not None:
            try:
                row = row[:-1] + (to_json(run_state),)
                meta = [(key, to_json(run_state[key])) for key in RUN_STATE_KEYS if key in run_state]
            except (TypeError, ValueError) as exc:
                raise ArchiveError(f"{self.path}: cannot store a program's run state: {exc}") from None
        with self._writing("store a program") as conn:
            new_id = insert_program(conn, row)
            if run_state is not None:
                conn.executemany(UPSERT_META, meta)
        return dataclasses.replace(record, id=new_id, cell=cell, created_at=created_at)

    def run_state(self, program_id: int) -> dict[str, Any] | None:
        """The run state stored with a program (None for seeds, migrations and old archives)."""
        with self._reading() as conn:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(programs)")}
            if "run_state" not in columns:
                return None
            row = conn.execute("SELECT run_state FROM programs WHERE id = ?", (int(program_id),)).fetchone()
        return json.loads(row[0]) if row is not None and row[0] is not None else None

    def _encode(self, record: ProgramRecord, cell: tuple[int, int], complexity: int, created_at: float) -> tuple:
        try:
            return record_to_row(record, cell, complexity, created_at)
        except (TypeError, ValueError) as exc:
            raise ArchiveError(f"{self.path}: cannot store a program: {exc}") from None

    def get(self, program_id: int) -> ProgramRecord:
        found = self._select("id = ?", (int(program_id),))
        if not found:
            raise ArchiveError(f"no program {program_id} in this run")
        return found[0]

    def programs(self, island: int | None = None, failed: bool | None = None, order: str = "r2", limit: int | None = None) -> list[ProgramRecord]:
        """Programs filtered by island and by failure; order "r2" (best first) or "id"."""
        orders = {"r2": RANK_ORDER, "id": "id ASC"}
        if order not in orders:
            raise ArchiveError(f"unknown order {order!r}; use 'r2' or 'id'")
        clauses, params = [], []
        if island is not None:
            clauses.append("island = ?")
            params.append(int(island))
        if failed is not None:
            clauses.append("status != 'ok'" if failed else "status = 'ok'")
        return self._select(" AND ".join(clauses), tuple(params), orders[order], limit)

    def count(self) -> int:
        with self._reading() as conn:
            return conn.execute("SELECT COUNT(*) FROM programs").fetchone()[0]

    def max_iteration(self) -> int:
        """The largest iteration stored (0 for an empty archive)."""
        with self._reading() as conn:
            return conn.execute("SELECT COALESCE(MAX(iteration), 0) FROM programs").fetchone()[0]

    def best(self, island: int | None = None) -> ProgramRecord | None:
        """The best ok program, of one island or of the whole run."""
        found = self.programs(island=island, failed=False, limit=1)
        return found[0] if found else None

    def elites(self, island: int | None = None) -> list[ProgramRecord]:
        """The occupant of every non-empty cell, best first (of one island or all)."""
        if island is None:
            return self._select(source=ELITES_QUERY)
        return self._select("island = ?", (int(island),), source=ELITES_QUERY)

    def grid(self, island: int) -> dict[tuple[int, int], ProgramRecord]:
        return {elite.cell: elite for elite in self.elites(island)}

    def recent_failures(self, island: int | None, k: int) -> list[ProgramRecord]:
        """The k latest failed programs (newest first), so the prompt can show what went wrong."""
        clauses = "status != 'ok'" + (" AND island = ?" if island is not None else "")
        params = (int(island),) if island is not None else ()
        return self._select(clauses, params, order="id DESC", limit=max(0, k))

    def lineage(self, program_id: int) -> list[ProgramRecord]:
        """The program, its parent, and so on back to its seed (or a law written fresh)."""
        chain, seen = [], set()
        current: int | None = program_id
        while current is not None and current not in seen:
            seen.add(current)
            record = self.get(current)
            chain.append(record)
            current = record.parent_id
        return chain

    def set_test(self, program_id: int, evaluation: Evaluation) -> None:
        """Attach the test-split evaluation, for reporting only (selection never reads it)."""
        with self._writing("store a test evaluation") as conn:
            cursor = conn.execute("UPDATE programs SET test = ? WHERE id = ?", (to_json(evaluation.to_dict()), int(program_id)))
            if cursor.rowcount == 0:
                raise ArchiveError(f"no program {program_id} in this run")

    def sample_parent(self, rng: random.Random, island: int) -> ProgramRecord:
        return elites_policy.sample_parent(self, rng, island)

    def sample_inspirations(self, rng: random.Random, island: int, parent: ProgramRecord, k: int) -> list[ProgramRecord]:
        return elites_policy.sample_inspirations(self, rng, island, parent, k)

    def migrate(self, iteration: int) -> list[ProgramRecord]:
        """Ring migration (see `elites.migration_moves`), decided on the state before this
        round and written in one transaction."""
        with self._lock:  # no add from another thread between the decision and the write
            moves = elites_policy.migration_moves(self, iteration)
            if not moves:
                return []
            created_at = time.time()
            rows = [(m, self._encode(m, m.cell, code_complexity(m.code), created_at)) for m in moves]
            with self._writing("store migrated programs") as conn:
                ids = [insert_program(conn, row) for _, row in rows]
        return [dataclasses.replace(m, id=i, created_at=created_at) for (m, _), i in zip(rows, ids)]

    # ------------------------------------------------------------ meta and health

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable run setting or state under `key`."""
        try:
            encoded = to_json(value)
        except (TypeError, ValueError) as exc:
            raise ArchiveError(f"{self.path}: cannot store meta {key!r}: {exc}") from None
        with self._writing(f"store meta {key!r}") as conn:
            conn.execute(UPSERT_META, (key, encoded))

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def integrity_check(self) -> str:
        """SQLite's own consistency check: "ok" for a healthy file."""
        with self._reading() as conn:
            return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))


# ---------------------------------------------------------------- helpers


def read_settings(connection: sqlite3.Connection, path: Path) -> tuple[ArchiveConfig, int | None]:
    """The grid settings fixed at creation; refuses files that are not evolve archives."""
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"meta", "programs"} <= tables:
        raise ArchiveError(f"{path}: not an evolve run database (no meta/programs tables)")
    meta = {row[0]: row[1] for row in connection.execute("SELECT key, value FROM meta")}
    try:
        if json.loads(meta.get("format", "null")) != FORMAT_NAME:
            raise ArchiveError(f"{path}: not an evolve run database")
        version = json.loads(meta["schema_version"])
        if version != SCHEMA_VERSION:
            raise ArchiveError(f"{path}: schema version {version} is not supported (expected {SCHEMA_VERSION})")
        config = ArchiveConfig(**json.loads(meta["archive_config"]))
        param_cap = json.loads(meta["param_cap"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(f"{path}: damaged run settings in meta ({type(exc).__name__}: {exc})") from None
    return config, param_cap


def add_missing_columns(connection: sqlite3.Connection) -> None:
    """Bring an archive written before a column was added up to date (additive only: every
    older reader still reads the file)."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(programs)")}
    missing = [(name, kind) for name, kind in ADDED_COLUMNS.items() if name not in present]
    if missing:
        with transaction(connection):
            for name, kind in missing:
                connection.execute(f"ALTER TABLE programs ADD COLUMN {name} {kind}")


def insert_program(connection: sqlite3.Connection, row: tuple) -> int:
    placeholders = ", ".join("?" for _ in COLUMNS)
    cursor = connection.execute(f"INSERT INTO programs ({', '.join(COLUMNS)}) VALUES ({placeholders})", row)
    return int(cursor.lastrowid)
