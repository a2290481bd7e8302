"""evolve: discover scaling laws by evolving programs.

The Python API (see evolve.api): `evolve.run(task, ...)`, `evolve.open_run(path)`; a run's
`programs()` DataFrame, `best` and `law(id)`, each a `Law` you can fit, predict with,
bound with intervals, read as sympy or LaTeX, export and ask for a compute-optimal size.
"""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("evolve-laws")
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0.0.0+checkout"

__all__ = ["run", "open_run", "Run", "Law", "LawError", "IntervalWarning", "__version__"]


def __getattr__(name: str):
    """The API loads on first use, so `import evolve` (and the sandbox's imports) stay light."""
    if name in ("run", "open_run", "Run", "Law", "LawError", "IntervalWarning"):
        from evolve import api

        return getattr(api, name)
    raise AttributeError(f"module 'evolve' has no attribute {name!r}")
