"""Which scorer a run gets: the local warm pool, or one pool per Ray node (`executor = "ray"`)."""

from __future__ import annotations

from evolve.config import ScorerConfig
from evolve.scoring.scorer import Scorer


def open_scorer(config: ScorerConfig) -> Scorer:
    """A Scorer for `config`; with executor "ray" it dispatches to a warm pool on each node."""
    if config.executor == "ray":
        from evolve.scoring.ray_executor import RayExecutor

        return Scorer(config, remote=RayExecutor(config))
    return Scorer(config)
