"""The MAP-Elites archive: storage round trips, derived elites, selection, migration, durability."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from evolve.store.database import Archive, ArchiveError
from evolve.store.elites import complexity_bin, param_bin
from evolve.config import ArchiveConfig
from evolve.metrics import compute_metrics, failed_metrics
from evolve.records import ProgramRecord, code_complexity
from evolve.scoring.scorer import Evaluation

TRUTH = np.array([0.0, 1.0, 2.0, 3.0])  # variance 1.25, so a constant error e gives R² = 1 - e²/1.25


def ok_eval(error: float, n_params: int | None = 2, split: str = "validation") -> Evaluation:
    metrics = compute_metrics(TRUTH + error, TRUTH)
    params = {"g1": [1.5] * n_params, "g2": [0.25] * n_params} if n_params is not None else {"g1": None}
    return Evaluation("ok", split, metrics, "", params, n_params, 0.125)


def failed_eval(status: str = "exception") -> Evaluation:
    return Evaluation(status, "validation", failed_metrics(1), f"{status}: boom", seconds=0.5)


def law_code(terms: int, tag: str = "") -> str:
    """A program whose AST grows with `terms`; `tag` makes codes of equal size distinct (in
    code, not a comment: programs that differ only in comments are the same program)."""
    body = " + ".join(f"p[{i}] * x ** {i}" for i in range(terms))
    return f"TAG = {tag!r}\ndef law(x, p):\n    return {body}\n"


def program(error: float = 0.1, terms: int = 3, n_params: int | None = 2, island: int = 0, tag: str = "", **fields) -> ProgramRecord:
    return ProgramRecord(code=law_code(terms, tag), validation=ok_eval(error, n_params), island=island, **fields)


def failure(island: int = 0, tag: str = "", **fields) -> ProgramRecord:
    return ProgramRecord(code=law_code(3, tag), validation=failed_eval(), island=island, **fields)


@pytest.fixture
def archive(tmp_path):
    with Archive.create(tmp_path / "archive.db", ArchiveConfig(islands=3, param_bins=8, complexity_bins=8), param_cap=6) as created:
        yield created


def state(archive: Archive) -> tuple:
    return (
        archive.programs(order="id"),
        archive.elites(),
        [archive.grid(i) for i in range(archive.config.islands)],
        archive.get_meta("settings"),
        archive.config,
        archive.param_cap,
    )


# ---------------------------------------------------------------- storage


def test_add_get_round_trip_of_every_field(archive):
    seed = archive.add(program(error=0.3))
    record = ProgramRecord(
        code=law_code(5, "child"),
        validation=ok_eval(0.05, n_params=4),
        iteration=7,
        island=2,
        parent_id=seed.id,
        proposer="llm",
        model="gpt-test",
        explanation="added a cubic term",
        prompt_tokens=1234,
        completion_tokens=567,
        generation_seconds=3.25,
        edit_mode="diff",
        test=ok_eval(0.2, n_params=4, split="test"),
        extra={"attempt": 2, "notes": ["a", "b"], "nested": {"x": 1.5}},
    )
    stored = archive.add(record)
    assert stored.id is not None and stored.id != seed.id
    assert stored.cell == archive.cell_of(record)
    assert stored.created_at > 0
    assert dataclasses.replace(stored, id=None, cell=None, created_at=0.0) == record
    assert archive.get(stored.id) == stored
    assert archive.get(stored.id).validation.params == {"g1": [1.5] * 4, "g2": [0.25] * 4}


def test_failures_are_stored_but_never_elites(archive):
    good = archive.add(program(error=0.5, tag="good"))
    failed = archive.add(failure(tag="bad"))
    assert archive.get(failed.id).validation.status == "exception"
    assert archive.get(failed.id).r2 == -1.0
    assert archive.programs(failed=True) == [failed]
    assert archive.programs(failed=False) == [good]
    assert archive.elites() == [good]
    assert archive.best() == good
    assert archive.count() == 2


def test_only_failures_leave_the_grid_empty(archive):
    archive.add(failure(island=1))
    assert archive.grid(1) == {}
    assert archive.best(1) is None
    assert archive.best() is None


def test_cell_keeps_the_best_and_ties_go_to_the_earlier_id(archive):
    worse = archive.add(program(error=0.4, tag="a"))
    best = archive.add(program(error=0.1, tag="b"))
    tie = archive.add(program(error=0.1, tag="c"))
    assert worse.cell == best.cell == tie.cell
    assert archive.grid(0) == {best.cell: best}


def test_elites_and_grid_agree_with_a_brute_force_scan(tmp_path):
    rng = random.Random(3)
    config = ArchiveConfig(islands=3, param_bins=4, complexity_bins=4)
    with Archive.create(tmp_path / "a.db", config, param_cap=None) as archive:
        for n in range(120):
            if rng.random() < 0.2:
                archive.add(failure(island=rng.randrange(3), tag=str(n)))
            else:
                error = rng.choice([0.05, 0.1, 0.2, 0.4, 0.8])  # repeated values exercise ties
                archive.add(program(error, rng.randrange(1, 30), rng.randrange(0, 9), rng.randrange(3), tag=str(n)))
        expected: dict[tuple[int, tuple[int, int]], ProgramRecord] = {}
        for record in archive.programs(failed=False, order="id"):
            key = (record.island, record.cell)
            if key not in expected or record.r2 > expected[key].r2:
                expected[key] = record
        for island in range(3):
            grid = archive.grid(island)
            assert grid == {cell: r for (i, cell), r in expected.items() if i == island}
            assert archive.elites(island) == sorted(grid.values(), key=lambda r: (-r.r2, r.id))
            assert archive.best(island) == archive.elites(island)[0]
        assert len(archive.elites()) == len(expected)


def test_behaviour_descriptor_bins():
    assert [param_bin(n, 8, 6) for n in range(7)] == list(range(7))  # fewer counts than bins: one each
    assert param_bin(None, 8, 6) == 0
    assert param_bin(50, 8, 6) == 7
    uncapped = [param_bin(n, 8, None) for n in range(17)]
    assert uncapped == sorted(uncapped) and uncapped[0] == 0 and uncapped[-1] == 7
    assert len(set(uncapped)) == 8
    capped = [param_bin(n, 4, 20) for n in range(21)]
    assert capped == sorted(capped) and set(capped) == {0, 1, 2, 3}
    sizes = [complexity_bin(c, 8) for c in (10, 40, 80, 160, 320, 640, 1280, 2999, 3000, 10**6)]
    assert sizes == sorted(sizes) and sizes[0] == 0 and sizes[-1] == 7
    assert complexity_bin(80, 8) - complexity_bin(40, 8) == complexity_bin(1280, 8) - complexity_bin(640, 8)  # log-spaced


def test_cell_uses_parameter_count_and_code_size(archive):
    small = program(terms=1, n_params=1)
    large = program(terms=60, n_params=5)
    assert archive.cell_of(small) == (1, complexity_bin(code_complexity(small.code), 8))
    assert archive.cell_of(large)[0] == 5
    assert archive.cell_of(large)[1] > archive.cell_of(small)[1]


def test_programs_order_filter_limit_and_counters(archive):
    a = archive.add(program(0.3, island=0, tag="a", iteration=1))
    b = archive.add(program(0.1, island=1, tag="b", iteration=4))
    c = archive.add(failure(island=1, tag="c", iteration=2))
    assert archive.programs() == [b, a, c]
    assert archive.programs(order="id") == [a, b, c]
    assert archive.programs(island=1) == [b, c]
    assert archive.programs(limit=1) == [b]
    assert archive.count() == 3 and archive.max_iteration() == 4
    with pytest.raises(ArchiveError):
        archive.programs(order="newest")


def test_recent_failures_newest_first(archive):
    first = archive.add(failure(island=0, tag="1"))
    archive.add(program())
    second = archive.add(failure(island=1, tag="2"))
    third = archive.add(failure(island=0, tag="3"))
    assert archive.recent_failures(None, 2) == [third, second]
    assert archive.recent_failures(0, 5) == [third, first]
    assert archive.recent_failures(2, 5) == []


def test_lineage_goes_back_to_the_seed(archive):
    seed = archive.add(program(0.5, tag="seed"))
    child = archive.add(program(0.3, tag="child", parent_id=seed.id, proposer="llm"))
    grandchild = archive.add(program(0.1, tag="grandchild", parent_id=child.id, proposer="llm"))
    assert archive.lineage(grandchild.id) == [grandchild, child, seed]
    assert archive.lineage(seed.id) == [seed]


def test_set_test_fills_the_test_evaluation_only(archive):
    record = archive.add(program())
    evaluation = ok_eval(0.3, split="test")
    archive.set_test(record.id, evaluation)
    stored = archive.get(record.id)
    assert stored.test == evaluation
    assert stored.validation == record.validation


def test_meta_round_trip(archive):
    value = {"seed": 7, "ratio": 0.6, "models": ["a", "b"], "nested": {"none": None, "flag": True}}
    archive.set_meta("settings", value)
    archive.set_meta("status", "running")
    archive.set_meta("status", "finished")
    assert archive.get_meta("settings") == value
    assert archive.get_meta("status") == "finished"
    assert archive.get_meta("absent", default=3) == 3


def test_reopening_gives_identical_state(tmp_path):
    path = tmp_path / "archive.db"
    config = ArchiveConfig(islands=2, param_bins=5, complexity_bins=6)
    with Archive.create(path, config, param_cap=4) as archive:
        seed = archive.add(program(0.4, tag="seed"))
        archive.add(program(0.2, terms=9, island=1, parent_id=seed.id, tag="x"))
        archive.add(failure(island=1))
        archive.set_test(seed.id, ok_eval(0.3, split="test"))
        archive.set_meta("settings", {"k": [1, 2]})
        archive.migrate(iteration=3)
        before = state(archive)
    with Archive.open(path) as reopened:
        assert state(reopened) == before
    with Archive.open(path, readonly=True) as reader:
        assert state(reader) == before


# ---------------------------------------------------------------- selection


def populated(archive: Archive, island: int = 0, cells: int = 4) -> list[ProgramRecord]:
    """One elite in each of `cells` different cells of an island (different parameter counts)."""
    return [archive.add(program(0.1 * (n + 1), n_params=n + 1, island=island, tag=f"{island}-{n}")) for n in range(cells)]


def test_sample_parent_is_deterministic_and_mixes_exploit_and_explore(archive):
    elites = populated(archive, cells=4)
    best = elites[0]
    draws = [archive.sample_parent(random.Random(11), 0) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    rng_a, rng_b = random.Random(5), random.Random(5)
    sequence_a = [archive.sample_parent(rng_a, 0).id for _ in range(400)]
    sequence_b = [archive.sample_parent(rng_b, 0).id for _ in range(400)]
    assert sequence_a == sequence_b
    assert set(sequence_a) == {e.id for e in elites}  # exploration reaches every cell
    # P(best) = exploit_ratio + (1 - exploit_ratio) / cells = 0.6 + 0.1
    share = sequence_a.count(best.id) / len(sequence_a)
    assert abs(share - 0.7) < 0.07


def test_sample_parent_falls_back_to_the_global_best_and_fails_without_any(archive):
    with pytest.raises(ArchiveError):
        archive.sample_parent(random.Random(0), 0)
    archive.add(failure(island=0))
    with pytest.raises(ArchiveError):
        archive.sample_parent(random.Random(0), 0)
    best = archive.add(program(0.1, island=2))
    assert archive.sample_parent(random.Random(0), 1) == best


def test_inspirations_exclude_the_parent_and_duplicate_code(archive):
    own = populated(archive, island=0, cells=4)
    other = populated(archive, island=1, cells=3)
    duplicate = archive.add(dataclasses.replace(other[0], island=2, id=None, cell=None, created_at=0.0))
    parent = own[0]
    inspirations = archive.sample_inspirations(random.Random(1), 0, parent, k=5)
    assert len(inspirations) == 5
    assert parent.id not in {r.id for r in inspirations}
    codes = [r.code for r in inspirations]
    assert len(codes) == len(set(codes)) and parent.code not in codes
    assert other[0] in inspirations and duplicate not in inspirations  # the best copy, once
    assert all(r.ok for r in inspirations)
    assert inspirations == archive.sample_inspirations(random.Random(1), 0, parent, k=5)
    assert len(archive.sample_inspirations(random.Random(1), 0, parent, k=50)) == 6  # 8 elites - parent - duplicate
    assert archive.sample_inspirations(random.Random(1), 0, parent, k=0) == []


# ---------------------------------------------------------------- migration


def test_migration_copies_along_the_ring_only_when_better(archive):
    strong = archive.add(program(0.05, island=0, tag="strong"))
    weak = archive.add(program(0.5, island=1, tag="weak"))
    champion = archive.add(program(0.01, island=2, tag="champion"))
    assert strong.cell == weak.cell == champion.cell
    copies = archive.migrate(iteration=10)
    # 0 -> 1: strong beats weak; 1 -> 2: weak loses to champion; 2 -> 0: champion beats strong.
    assert [(c.island, c.parent_id) for c in copies] == [(1, strong.id), (0, champion.id)]
    moved = copies[0]
    assert (moved.code, moved.validation) == (strong.code, strong.validation)
    assert (moved.proposer, moved.iteration, moved.cell) == ("migration", 10, strong.cell)
    assert archive.get(moved.id) == moved
    assert archive.grid(1) == {strong.cell: moved}
    assert archive.grid(2) == {champion.cell: champion}
    assert archive.count() == 5
    assert [c.parent_id for c in archive.migrate(iteration=20)] == [copies[1].id]  # the champion moves on to 1
    assert archive.migrate(iteration=30) == []  # equal is not better: no endless copies


def test_migration_skips_a_worse_program(archive):
    archive.add(program(0.5, island=0, tag="weak"))
    resident = archive.add(program(0.05, island=1, tag="strong"))
    copies = archive.migrate(iteration=5)
    assert [c.island for c in copies] == [2]  # only island 1's best moves on (into empty island 2)
    assert archive.grid(1) == {resident.cell: resident}


def test_migration_with_one_island_does_nothing(tmp_path):
    with Archive.create(tmp_path / "one.db", ArchiveConfig(islands=1), None) as archive:
        archive.add(program())
        assert archive.migrate(1) == []


# ---------------------------------------------------------------- durability and errors

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_archive import program
    from evolve.store.database import Archive
    archive = Archive.open(Path({path!r}))
    n = 0
    while True:
        record = archive.add(program(0.1 + (n % 7) * 0.01, terms=1 + n % 20, tag=str(n), iteration=n))
        print(record.id, flush=True)
        n += 1
    """
)


def test_sigkill_mid_loop_loses_no_returned_add(tmp_path):
    path = tmp_path / "archive.db"
    Archive.create(path, ArchiveConfig(), param_cap=None).close()
    script = CHILD.format(tests=str(Path(__file__).parent), path=str(path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    returned = []
    try:
        while len(returned) < 40:
            line = child.stdout.readline()
            assert line, "the child stopped before writing"
            returned.append(int(line))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
    returned += [int(line) for line in rest.split()]
    assert child.returncode == -signal.SIGKILL
    with Archive.open(path) as archive:
        assert archive.integrity_check() == "ok"
        stored = {r.id for r in archive.programs(order="id")}
        assert set(returned) <= stored
        assert archive.count() in (len(returned), len(returned) + 1)  # at most one add committed unprinted


def test_readonly_cannot_write_and_does_not_block_the_writer(tmp_path):
    path = tmp_path / "archive.db"
    with Archive.create(path, ArchiveConfig(islands=2), None) as writer:
        record = writer.add(program())
        with Archive.open(path, readonly=True) as reader:
            for attempt in (
                lambda: reader.add(program(tag="x")),
                lambda: reader.set_meta("status", "x"),
                lambda: reader.set_test(record.id, ok_eval(0.1, split="test")),
            ):
                with pytest.raises(ArchiveError, match="read-only"):
                    attempt()
            with pytest.raises(sqlite3.OperationalError):
                reader._conn.execute("DELETE FROM programs")  # even raw SQL is refused
            writer.add(program(tag="while reading"))
            assert reader.count() == 2
        assert writer.count() == 2 and writer.get_meta("status") is None


def test_bad_files_and_unknown_ids_give_one_line_errors(tmp_path, archive):
    text_file = tmp_path / "notes.db"
    text_file.write_text("not a database at all\n" * 100)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE things (x)")
    connection.close()
    originals = {path: path.read_bytes() for path in (text_file, foreign)}
    for path in (text_file, foreign, tmp_path / "missing.db"):
        for readonly in (False, True):
            with pytest.raises(ArchiveError) as caught:
                Archive.open(path, readonly=readonly)
            assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert {path: path.read_bytes() for path in originals} == originals  # not even switched to WAL
    with pytest.raises(ArchiveError, match="no program 42 in this run"):
        archive.get(42)
    with pytest.raises(ArchiveError, match="no program 42"):
        archive.set_test(42, ok_eval(0.1, split="test"))
    with pytest.raises(ArchiveError, match="no program 42"):
        archive.lineage(42)
    with pytest.raises(ArchiveError):
        archive.add(program(parent_id=42))  # a parent that does not exist
    with pytest.raises(ArchiveError, match="not JSON"):
        archive.add(program(extra={"when": object()}))
    assert archive.count() == 0


def test_a_truncated_archive_gives_an_error_not_a_crash(tmp_path):
    path = tmp_path / "archive.db"
    with Archive.create(path, ArchiveConfig(), None) as archive:
        for n in range(30):
            archive.add(program(tag="x" * 2000 + str(n)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError) as caught:
        with Archive.open(path, readonly=True) as damaged:
            damaged.programs()
            assert damaged.integrity_check() == "ok"
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_create_refuses_to_overwrite_and_reports_unwritable_places(tmp_path, archive):
    with pytest.raises(ArchiveError, match="already exists"):
        Archive.create(archive.path, ArchiveConfig(), None)
    assert Archive.open(archive.path, readonly=True).count() == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "archive.db"  # its "directory" is a file: nothing can be created there
    with pytest.raises(ArchiveError) as caught:
        Archive.create(target, ArchiveConfig(), None)
    assert str(target) in str(caught.value) and "\n" not in str(caught.value)


def test_disk_full_changes_nothing_stored(archive):
    kept = archive.add(program(tag="kept"))
    archive.set_meta("status", "running")
    pages = archive._conn.execute("PRAGMA page_count").fetchone()[0]
    archive._conn.execute(f"PRAGMA max_page_count = {pages}")  # the database cannot grow: SQLITE_FULL
    with pytest.raises(ArchiveError, match="disk full") as caught:
        archive.add(ProgramRecord(code=law_code(2, "x" * 200_000), validation=ok_eval(0.1)))
    assert str(archive.path) in str(caught.value) and "\n" not in str(caught.value)
    assert archive.programs() == [kept]
    assert archive.get_meta("status") == "running"
    assert archive.integrity_check() == "ok"


def test_concurrent_adds_from_threads(archive):
    ids: list[int] = []

    def add_some(worker: int) -> None:
        for n in range(15):
            ids.append(archive.add(program(tag=f"{worker}-{n}", island=worker % 3)).id)

    threads = [threading.Thread(target=add_some, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 60 and archive.count() == 60
    assert archive.integrity_check() == "ok"
