"""Which kind of seed a stored record is: the user's or the task's, or a generic one a run
wrote itself because there was none (evolve.propose.seeds.default_seeds). Read from the
record alone, so the proposer and the end-of-run selection agree, across --resume too."""

from __future__ import annotations

GENERIC_NOTE = "(generic: the task ships no seed law)"  # how a generic seed's name ends
REFERENCE_GENERIC = "power_law_with_offset"  # the generic seed a run's selection protects


def is_generic_seed(record) -> bool:
    """True for a seed of `default_seeds` (the task shipped none and the user gave none), read
    from the record's explanation (`seed law NAME`), which archives keep across --resume."""
    name = str(getattr(record, "explanation", "")).removeprefix("seed law ")
    return getattr(record, "proposer", None) == "seed" and name.endswith(GENERIC_NOTE)


def is_reference_seed(record) -> bool:
    """True for a seed the end-of-run selection protects (returned unless beaten by the search
    margin, evolve.selection): every seed the user or the task supplied, and of the generic
    seeds only the additive power law with offset.

    Why one generic reference: a protected seed is a prior chosen before the data, and the
    field's prior for scaling data is `c + Σ a_i x_i^(-b_i)` (Kaplan et al. 2020, Hoffmann et
    al. 2022 and the held-out benchmark's baseline): its offset is the irreducible error a law
    levels off to beyond the data. The other generic laws (log-linear: no offset, so it keeps
    falling or rising without bound) are scored beside it as candidates; picking the best of
    several generic laws on the validation rows is itself a search, so they displace the
    reference only by the evidence any evolved law needs. Read from the
    record's explanation (`seed law NAME`), which archives keep across --resume."""
    if getattr(record, "proposer", None) != "seed":
        return False
    name = str(getattr(record, "explanation", "")).removeprefix("seed law ")
    return not is_generic_seed(record) or name.startswith(REFERENCE_GENERIC + " ")
