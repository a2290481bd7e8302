"""Attack suite: what an earlier request leaves in memory (the worker-memory hole).

A candidate cannot ask for another evaluation's rows, but every byte of memory it was
forked with is readable without a syscall (`np.asarray` over a forged
`__array_interface__`). Children forked from the warm worker inherited its freed heap,
where an earlier request's rows (labels included) still lay: a fold's fit rows were read by
the next fold's fit child, whose scored rows they are, and by later candidates. Children
now fork from a template process that never holds a request, and each reads its own
request from a pipe. Judged from outside: the scanning program reports what it found.
"""

from __future__ import annotations

import random
import struct
import sys

import numpy as np
import pytest

from evolve.config import ScorerConfig
from evolve.scoring.in_sandbox import GroupJob
from evolve.scoring.scorer import Scorer
from evolve.tasks import load_task

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux only")

SCANNER = '''
import os
import numpy as np

LOW, HIGH = {low}, {high}  # the two halves of the 8 bytes looked for, as ints (never the bytes)


class _Raw:
    pass


def raw(address, size):
    view = _Raw()
    view.__array_interface__ = {{"data": (address, True), "shape": (size,), "typestr": "|u1", "version": 3}}
    return np.asarray(view)


def readable(center, span, page=4096):
    """Readable page runs around an address (a write from the page to a pipe fails on an unmapped one)."""
    r, w = os.pipe()
    runs, start = [], None
    for address in range((center - span) & ~(page - 1), center + span, page):
        try:
            os.write(w, raw(address, 1))
            os.read(r, 1)
            ok = True
        except OSError:
            ok = False
        if ok and start is None:
            start = address
        elif not ok and start is not None:
            runs.append((start, address))
            start = None
    os.close(r)
    os.close(w)
    return runs


def found():
    anchors = [np.empty(64).ctypes.data, np.empty(1 << 18).ctypes.data, id(b"x" * 1000)]
    hits = 0
    seen = set()
    for anchor in anchors:
        for start, end in readable(anchor, 256 << 20):
            if (start, end) in seen:
                continue
            seen.add((start, end))
            words = raw(start, end - start).view(np.uint32)
            hits += int(np.count_nonzero((words[:-1:2] == LOW) & (words[1::2] == HIGH)))
            words = raw(start + 4, end - start - 8).view(np.uint32)  # the other alignment
            hits += int(np.count_nonzero((words[:-1:2] == LOW) & (words[1::2] == HIGH)))
    return hits


def scaling_law_func(data_points, params):
    return np.full(len(np.atleast_2d(data_points)), float(params[0]))


def fit_scaling_law(data_points, loss_values):
    return [float(found())]
'''


def sentinel() -> tuple[float, int, int]:
    value = 1.0 + random.random()
    low, high = struct.unpack("<II", struct.pack("<d", value))
    return value, low, high


@pytest.fixture(scope="module")
def task():
    return load_task("sft_scaling_law")


def victim_jobs(value: float) -> list[GroupJob]:
    """Rows whose labels are all the secret value: what a later program must not find."""
    x = np.linspace(1.0, 2.0, 40)[:, None]
    return [GroupJob("g", x, np.full(40, value), x[:5])]


def scanner_jobs() -> list[GroupJob]:
    x = np.linspace(3.0, 4.0, 10)[:, None]
    return [GroupJob("g", x, np.linspace(0.5, 0.6, 10), x[:3])]


def found_by_scanner(scorer: Scorer, task, low: int, high: int) -> float:
    report = scorer.run(SCANNER.format(low=low, high=high), scanner_jobs(), task)
    assert report.status == "ok", report.message
    return float(report.params["g"][0])


def test_a_program_cannot_find_the_labels_of_an_earlier_request_in_its_memory(task):
    value, low, high = sentinel()
    with Scorer(ScorerConfig(workers=1, timeout_s=30.0)) as scorer:
        assert found_by_scanner(scorer, task, low, high) == 0  # nothing before the victim
        for _ in range(3):
            report = scorer.run(SCANNER.format(low=0, high=0).replace("return [float(found())]", "return [0.0]"),
                                victim_jobs(value), task)
            assert report.status == "ok", report.message
        assert found_by_scanner(scorer, task, low, high) == 0


def test_the_scanner_finds_the_labels_it_was_given(task):
    """The control: the same scan finds the secret where it is really in memory (its own rows)."""
    value, low, high = sentinel()
    jobs = victim_jobs(value)
    with Scorer(ScorerConfig(workers=1, timeout_s=30.0)) as scorer:
        report = scorer.run(SCANNER.format(low=low, high=high), jobs, task)
    assert report.status == "ok", report.message
    assert float(report.params["g"][0]) >= 40
