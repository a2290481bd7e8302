"""The bytes between the trusted side and a worker: length-prefixed messages, and the strict
result codec. A result crosses as a small JSON header plus raw little-endian float64 bytes
and is checked against what was asked (groups, row counts, targets, sizes); nothing a
candidate produced is ever unpickled. Used by both sides: the pool and the worker.
"""

from __future__ import annotations

import json
import os
import re
import select
import struct
import time
from dataclasses import dataclass

import numpy as np

from evolve.status import CHILD_STATUSES, Status
from evolve.text import safe_text
from evolve.scoring.in_sandbox import MAX_PARAMS_REPORTED, GroupJob, RunReport

MAGIC = b"EVR1"
FRAME_PREFIX = struct.Struct("<4sIQ")  # magic, header bytes, body bytes
LENGTH_PREFIX = struct.Struct("<Q")  # every message between this process and a worker
MESSAGE_MAX_CHARS = 4_000
REQUEST_CAP_BYTES = 1 << 30  # a request from the trusted side (rows of one evaluation)
HEADER_BASE_BYTES = 16_384
MEMORY_ERROR_LINE = re.compile(r"^[\w.]*MemoryError\b")


class FrameError(ValueError):
    """A result that breaks the format or does not match the request: treated as a crash."""


class SandboxError(RuntimeError):
    """The sandbox cannot start (a worker failed to come up); the message says why."""


class WorkerFailure(RuntimeError):
    """A worker that died, stopped answering, or sent a malformed message."""


# --------------------------------------------------------------------------- result codec


@dataclass(frozen=True)
class Expectation:
    """What a valid result must look like: the groups in order with their row counts."""

    groups: tuple[tuple[str, int], ...]
    n_targets: int

    @classmethod
    def from_jobs(cls, jobs: list[GroupJob], n_targets: int) -> Expectation:
        return cls(tuple((job.group, len(job.X_predict)) for job in jobs), n_targets)

    def header_cap(self) -> int:
        """Room for the message and, per group, its JSON-escaped name and three numbers."""
        names = sum(6 * len(name.encode()) + 64 for name, _ in self.groups)
        return HEADER_BASE_BYTES + 6 * MESSAGE_MAX_CHARS + names

    def body_cap(self) -> int:
        return 8 * sum(rows * self.n_targets + MAX_PARAMS_REPORTED for _, rows in self.groups)

    def frame_cap(self) -> int:
        return FRAME_PREFIX.size + self.header_cap() + self.body_cap()


def encode_report(report: RunReport) -> bytes:
    """A RunReport as one frame: prefix, JSON header, float64 predictions and params."""
    message = safe_text(str(report.message)[-MESSAGE_MAX_CHARS:], limit=MESSAGE_MAX_CHARS)
    groups, blobs = [], []
    if report.status == Status.OK:
        for group, predictions in report.predictions.items():
            array = np.ascontiguousarray(predictions, dtype="<f8")
            params = report.params.get(group)
            n_params = None if params is None else len(params)
            counted = int(report.counted.get(group, 0 if n_params is None else n_params))
            groups.append([group, int(array.shape[0]), int(array.shape[1]), n_params, counted])
            blobs.append(array.tobytes())
            if params is not None:
                blobs.append(np.asarray(params, dtype="<f8").tobytes())
    header = json.dumps({"status": report.status, "message": message, "groups": groups}).encode()
    body = b"".join(blobs)
    return FRAME_PREFIX.pack(MAGIC, len(header), len(body)) + header + body


def decode_report(data: bytes, expected: Expectation, statuses: frozenset[Status] = CHILD_STATUSES) -> RunReport:
    """Rebuild a RunReport from a frame, refusing anything that does not match `expected`."""
    if len(data) < FRAME_PREFIX.size:
        raise FrameError(f"{len(data)} bytes is shorter than a frame header")
    magic, header_len, body_len = FRAME_PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise FrameError("bad magic bytes")
    if header_len > expected.header_cap() or body_len > expected.body_cap():
        raise FrameError("declared lengths exceed the caps")
    if len(data) != FRAME_PREFIX.size + header_len + body_len:
        raise FrameError(f"frame is {len(data)} bytes, declared {FRAME_PREFIX.size + header_len + body_len}")
    header = parse_header(data[FRAME_PREFIX.size : FRAME_PREFIX.size + header_len], statuses)
    body = data[FRAME_PREFIX.size + header_len :]
    if header["status"] != Status.OK:
        if header["groups"] or body:
            raise FrameError("a failure carries no predictions")
        return RunReport(header["status"], header["message"])
    return decode_groups(header, body, expected)


def parse_header(raw: bytes, statuses: frozenset[Status]) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"header is not JSON: {type(exc).__name__}") from None
    if not isinstance(header, dict) or set(header) != {"status", "message", "groups"}:
        raise FrameError("header must have exactly status, message and groups")
    if not isinstance(header["status"], str) or header["status"] not in statuses:
        raise FrameError(f"status {str(header['status'])[:40]!r} is not allowed here")
    header["status"] = Status(header["status"])
    if not isinstance(header["message"], str) or not isinstance(header["groups"], list):
        raise FrameError("message must be a string and groups a list")
    header["message"] = safe_text(header["message"][-MESSAGE_MAX_CHARS:], limit=MESSAGE_MAX_CHARS)  # no consumer can forget
    return header


def decode_groups(header: dict, body: bytes, expected: Expectation) -> RunReport:
    if len(header["groups"]) != len(expected.groups):
        raise FrameError(f"{len(header['groups'])} groups returned, {len(expected.groups)} expected")
    report, offset = RunReport(Status.OK, header["message"]), 0
    for entry, (name, rows) in zip(header["groups"], expected.groups):
        n_params, counted = check_group_entry(entry, name, rows, expected.n_targets)
        count = rows * expected.n_targets
        if offset + 8 * (count + (n_params or 0)) > len(body):
            raise FrameError(f"body too short for group {name!r}")
        predictions = np.frombuffer(body, dtype="<f8", count=count, offset=offset).astype(float)
        offset += 8 * count
        if not np.all(np.isfinite(predictions)):
            raise FrameError(f"non-finite predictions for group {name!r} in an ok result")
        report.predictions[name] = predictions.reshape(rows, expected.n_targets)
        report.params[name] = None
        report.counted[name] = counted
        if n_params is not None:
            values = np.frombuffer(body, dtype="<f8", count=n_params, offset=offset)
            report.params[name] = [float(v) for v in values]
            offset += 8 * n_params
    if offset != len(body):
        raise FrameError(f"{len(body) - offset} trailing bytes after the last group")
    return report


def check_group_entry(entry: object, name: str, rows: int, n_targets: int) -> tuple[int | None, int]:
    """The entry's number of parameter values and its counted size, after checking its name
    and shape against the request."""
    if not isinstance(entry, list) or len(entry) != 5:
        raise FrameError("each group entry must be [name, rows, columns, n_params, counted]")
    got_name, got_rows, got_cols, n_params, counted = entry
    if got_name != name:
        raise FrameError(f"group {str(got_name)[:80]!r} returned where {name!r} was expected")
    if not is_count(got_rows) or not is_count(got_cols) or (got_rows, got_cols) != (rows, n_targets):
        raise FrameError(f"group {name!r} has shape {got_rows!r}x{got_cols!r}, expected {rows}x{n_targets}")
    if n_params is not None and not (is_count(n_params) and n_params <= MAX_PARAMS_REPORTED):
        raise FrameError(f"group {name!r} reports an invalid parameter count")
    if not is_count(counted) or (n_params is not None and counted < n_params):
        raise FrameError(f"group {name!r} reports an invalid counted size")
    return n_params, counted


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_memory_failure(report: RunReport) -> bool:
    """A MemoryError that run_jobs caught as an exception: its traceback ends with one."""
    if report.status != Status.EXCEPTION:
        return False
    lines = [line for line in report.message.strip().splitlines() if line.strip()]
    return bool(lines) and bool(MEMORY_ERROR_LINE.match(lines[-1].strip()))


# --------------------------------------------------------------------------- framing


def send_message(fd: int, payload: bytes, deadline: float | None = None) -> None:
    """Write a length-prefixed message; with a deadline the fd must be non-blocking."""
    view = memoryview(LENGTH_PREFIX.pack(len(payload)) + payload)
    while view:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise WorkerFailure("timed out sending to the worker")
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise WorkerFailure(f"cannot send to the worker: {exc}") from None
        view = view[written:]


def read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, remaining_bytes = [], size
    while remaining_bytes:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise WorkerFailure("timed out waiting for the worker")
        try:
            chunk = os.read(fd, min(remaining_bytes, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise WorkerFailure("the worker closed its pipe")
        chunks.append(chunk)
        remaining_bytes -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, cap: int, deadline: float | None = None) -> bytes:
    """Read one length-prefixed message of at most `cap` bytes before `deadline`."""
    (size,) = LENGTH_PREFIX.unpack(read_exactly(fd, LENGTH_PREFIX.size, deadline))
    if size > cap:
        raise WorkerFailure(f"message of {size} bytes exceeds the cap of {cap}")
    return read_exactly(fd, size, deadline)
