"""The MAP-Elites policy, apart from storage: grid cells, parent and inspiration sampling,
ring migration between islands.

A program's cell is (fitted-parameter bin, complexity bin); each island keeps the best
program per cell. Everything here reads the archive through its queries (`elites`, `best`,
`grid`) and decides; only the archive writes.
"""

from __future__ import annotations

import math
import random
from typing import Iterable, Protocol

from evolve.config import ArchiveConfig
from evolve.program import code_key
from evolve.records import ProgramRecord
from evolve.store.errors import ArchiveError


class Archive(Protocol):
    """What the policy reads of the archive (evolve.store.database.Archive)."""

    config: ArchiveConfig
    path: object

    def elites(self, island: int | None = None) -> list[ProgramRecord]: ...
    def best(self, island: int | None = None) -> ProgramRecord | None: ...
    def grid(self, island: int) -> dict[tuple[int, int], ProgramRecord]: ...

COMPLEXITY_LOW = 40  # AST nodes of about the smallest useful law
COMPLEXITY_HIGH = 3000  # AST nodes of a very large program; bigger ones share the last bin


def param_bin(n_params: int | None, param_bins: int, param_cap: int | None) -> int:
    """Bin of the fitted-parameter count: bins spread over 0..cap (else 0..2*bins).

    When there are no more counts than bins each count gets its own bin, so small laws
    with 2, 3 and 4 parameters compete in different cells.
    """
    if n_params is None or param_bins <= 1:
        return 0
    span = param_cap if param_cap is not None else 2 * param_bins
    width = max(1.0, (span + 1) / param_bins)
    return max(0, min(param_bins - 1, int(n_params / width)))


def complexity_bin(complexity: int, complexity_bins: int) -> int:
    """Log-spaced bin of the AST node count: doubling the size matters, adding a node does not."""
    if complexity_bins <= 1 or complexity <= COMPLEXITY_LOW:
        return 0
    fraction = math.log(complexity / COMPLEXITY_LOW) / math.log(COMPLEXITY_HIGH / COMPLEXITY_LOW)
    return max(0, min(complexity_bins - 1, int(fraction * complexity_bins)))


def sample_parent(archive: Archive, rng: random.Random, island: int) -> ProgramRecord:
    """Exploit the island's best with probability exploit_ratio, else explore a random elite.

    Exactly one rng.random() is always drawn first, so a seeded run replays the same
    sequence whether or not the island is empty.
    """
    exploit = rng.random() < archive.config.exploit_ratio
    elites = archive.elites(island)  # best first
    if not elites:
        best = archive.best()
        if best is None:
            raise ArchiveError(f"{archive.path}: no successful program to use as a parent")
        return best
    if exploit:
        return elites[0]
    return rng.choice(sorted(elites, key=lambda e: e.cell))

def sample_inspirations(archive: Archive, rng: random.Random, island: int, parent: ProgramRecord, k: int) -> list[ProgramRecord]:
    """Up to k elites other than the parent: the best half by R², the rest drawn at random
    preferring cells (and islands) not yet shown, never two copies of the same code."""
    if k <= 0:
        return []
    parent_key = code_key(parent.code)
    pool = distinct_code(e for e in archive.elites() if e.id != parent.id and code_key(e.code) != parent_key)
    n_best = (k + 1) // 2
    chosen = pool[:n_best]
    rest = pool[n_best:]
    shown = {(parent.island, parent.cell)} | {(e.island, e.cell) for e in chosen}
    fresh = [e for e in rest if (e.island, e.cell) not in shown and e.island != island]
    fresh += [e for e in rest if (e.island, e.cell) not in shown and e.island == island]
    others = [e for e in rest if (e.island, e.cell) in shown]
    for group in (fresh, others):
        need = k - len(chosen)
        if need <= 0:
            break
        chosen += rng.sample(group, min(need, len(group)))
    return chosen


def migration_moves(archive: Archive, iteration: int) -> list[ProgramRecord]:
    """Ring migration: the best of island i goes to island i+1 when it beats the elite of
    its cell there."""
    islands = archive.config.islands
    if islands < 2:
        return []
    moves = []
    for source in range(islands):
        best = archive.best(source)
        if best is None:
            continue
        target = (source + 1) % islands
        resident = archive.grid(target).get(best.cell)
        if resident is None or best.r2 > resident.r2:
            moves.append(migrant(best, target, iteration))
    return moves


def distinct_code(records: Iterable[ProgramRecord]) -> list[ProgramRecord]:
    """The records in their order, keeping the first of each distinct program: "the same
    program" is the syntax-tree key (`code_key`) everywhere, so layout or comments never
    make two inspirations of one law."""
    seen, unique = set(), []
    for record in records:
        key = code_key(record.code)
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique


def migrant(original: ProgramRecord, island: int, iteration: int) -> ProgramRecord:
    """A copy of a program for another island: same code and evaluation, no token cost."""
    return ProgramRecord(
        code=original.code,
        validation=original.validation,
        iteration=iteration,
        island=island,
        parent_id=original.id,
        proposer="migration",
        model=None,
        explanation=f"migrated from island {original.island} (program {original.id})",
        test=original.test,
        cell=original.cell,
        extra={"migrated_from_island": original.island},
    )
