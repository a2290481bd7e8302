"""evolve: discover scaling laws by evolving programs."""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("evolve-laws")
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0.0.0+checkout"
