"""One warm sandbox pool per setting for the whole process, shared by the API, the report
and formula checks: a notebook that predicts a hundred times starts the workers once."""

from __future__ import annotations

import atexit
import threading

from evolve.config import ScorerConfig
from evolve.scoring.scorer import Scorer

_SCORERS: dict[ScorerConfig, Scorer] = {}
_SCORERS_LOCK = threading.Lock()


def shared_scorer(config: ScorerConfig) -> Scorer:
    """One warm sandbox per setting for the whole session: a notebook that predicts a
    hundred times starts the workers once. Closed when the interpreter exits."""
    with _SCORERS_LOCK:
        if config not in _SCORERS:
            if not _SCORERS:
                atexit.register(close_scorers)
            _SCORERS[config] = Scorer(config)
        return _SCORERS[config]


def close_scorers() -> None:
    with _SCORERS_LOCK:
        for scorer in _SCORERS.values():
            scorer.close()
        _SCORERS.clear()
