"""Run one trusted function on untrusted input in a forked child with a clock and a memory
limit: the parent's sympy work on a formula text the sandbox handed back.

A formula text comes from a process that ran candidate code. evolve.formula_numbers bounds
what it can ask of sympy by its shape (numbers, comparisons), but sympy has many more ways
to take unbounded time on small inputs: an attack hunt found number theory on exact radicals
that Mul merges across a product (68 s for 284 characters), decimal literals re-read at full
precision under nested functions (28 s), and sign checks that differentiate a continued
fraction (98 s at depth 22, ×1.7 per level). So the display work runs here: a fork (no
candidate code runs in it, so no sandbox: only a limit), and what comes back is plain text
(JSON), never sympy objects, since rebuilding those in the parent would redo the work.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import time
import warnings
from collections.abc import Callable

SECONDS = 20.0  # a real law's display work takes well under a second
MEMORY_BYTES = 2 << 30  # more address space than the parent maps at the fork
MAX_REPLY = 4 << 20


def address_space() -> int:
    """The bytes this process maps now (VmSize), 0 when /proc does not say."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def bounded_json(function: Callable[[], object], seconds: float | None = None) -> object | None:
    """`function()`'s result (JSON-able) computed in a child; None when it fails, runs past
    `seconds` or past MEMORY_BYTES, or replies with more than MAX_REPLY bytes."""
    seconds = SECONDS if seconds is None else seconds
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+ warns on fork with threads: the child only computes
        pid = os.fork()
    if pid == 0:  # the child: compute, write, leave without running the parent's exit handlers
        code = 1
        try:
            os.close(read_end)
            limit_bytes = address_space() + MEMORY_BYTES  # beyond what the fork already maps (a parent with Ray maps gigabytes)
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
            limit = int(seconds) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (limit, limit))
            data = json.dumps(function()).encode()
            with os.fdopen(write_end, "wb") as handle:
                handle.write(data)
            code = 0
        except BaseException:  # noqa: BLE001 - any failure is "no result"
            pass
        finally:
            os._exit(code)
    os.close(write_end)
    chunks, size, deadline, finished = [], 0, time.monotonic() + seconds, False
    try:
        while size <= MAX_REPLY:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_end], [], [], remaining)[0]:
                break
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(read_end)
        if not finished:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if not finished or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return None
