"""Attack suite: what an earlier request leaves in memory (the worker-memory hole).

A candidate cannot ask for another evaluation's rows, but every byte of memory it was
forked with is readable without a syscall (`np.asarray` over a forged
`__array_interface__`). Children forked from the warm worker inherited its freed heap,
where an earlier request's rows (labels included) still lay: a fold's fit rows were read by
the next fold's fit child, whose scored rows they are, and by later candidates. Children
now fork from a template process that never holds a request, and each reads its own
request from a pipe. Judged from outside: the scanning program reports what it found.

The scan reads memory through the kernel (a write to a pipe), never through a view: the
scanner's own allocations map and unmap pages between a probe and a read, and a view over
a page unmapped meanwhile killed it with SIGSEGV in CI. Its scratch memory is a mapping of
its own, so the scan never overwrites a freed heap chunk before reading it.
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


def copy_out(address, size, r, w, buf):
    """Copy memory through a pipe: the kernel copies, so an unmapped page is an OSError.

    Reading the pages directly (a view over them) can fault: the scanner's own allocations
    map and unmap memory (heap trimming, large temporaries) between a probe and the read.
    """
    try:
        n = os.write(w, raw(address, size))
    except OSError:
        return 0
    return os.readv(r, [buf[:n]])


def ranges(anchors, span, page=4096):
    spans = sorted(((a - span) & ~(page - 1), a + span) for a in anchors)
    merged = [list(spans[0])]
    for lo, hi in spans[1:]:
        if lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return merged


def count(words, flags):
    """The 8 bytes looked for, at either 4-byte alignment (flags: scratch, so no allocation)."""
    hits = 0
    for first, second in ((words[:-1:2], words[1::2]), (words[1:-1:2], words[2::2])):
        a, b = flags[0][: len(first)], flags[1][: len(first)]
        np.equal(first, LOW, out=a)
        np.equal(second, HIGH, out=b)
        np.logical_and(a, b, out=a)
        hits += int(np.count_nonzero(a))
    return hits


def scratch(chunk):
    """Scratch memory in a mapping of its own (glibc maps any block over 32 MiB): from the
    heap it could be a freed chunk that holds what is looked for, overwritten by the scan
    before the scan reaches it."""
    block = np.empty(48 << 20, dtype=np.uint8)
    return block[:chunk], block[chunk : chunk + chunk // 8].view(np.bool_), block[2 * chunk :][: chunk // 8].view(np.bool_)


def found(span=256 << 20, page=4096, chunk=16 * 4096):
    buf, *flags = scratch(chunk)
    anchors = [np.empty(64).ctypes.data, buf.ctypes.data, id(b"x" * 1000)]
    r, w = os.pipe()
    os.set_blocking(w, False)  # a pipe smaller than a chunk takes part of it rather than block
    hits = 0
    for lo, hi in ranges(anchors, span, page):
        address = lo
        while address < hi:
            n = copy_out(address, min(chunk, hi - address), r, w, buf)
            if n <= 0:
                address = (address & ~(page - 1)) + page
                continue
            hits += count(buf[: n - n % 8].view(np.uint32), flags)
            address += n
    os.close(r)
    os.close(w)
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


VICTIM_ROWS = 2000  # enough that a later request's buffers cannot overwrite every copy


def victim_jobs(value: float) -> list[GroupJob]:
    """Rows whose labels are all the secret value: what a later program must not find."""
    x = np.linspace(1.0, 2.0, VICTIM_ROWS)[:, None]
    return [GroupJob("g", x, np.full(VICTIM_ROWS, value), x[:5])]


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
    assert float(report.params["g"][0]) >= VICTIM_ROWS
