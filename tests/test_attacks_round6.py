"""Attack round 6, on the trusted parent's use of a law after scoring."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

import evolve

PROGRAMS = Path(__file__).parent / "attack_programs"


def test_refits_slow_only_on_repeated_rows_stop_long_before_the_run_s_limit(tmp_path):
    """A law that succeeds on bootstrap resamples just before the run's 20 s limit made each
    refit wait it out (2 min 17 s per `predict --interval` at a 5 s limit). A refit batch's
    limit is 10× what scoring the law took (at least 5 s): each such refit fails there, and
    after three the refits stop, with an IntervalWarning."""
    run = evolve.run("parallel_scaling_law", iterations=0, seed=0, run_dir=tmp_path / "run", quiet=True, proposer="offline",
                     seed_laws=[str(PROGRAMS / "slow_on_bootstrap.py")], archive={"islands": 1}, scorer={"workers": 2, "timeout_s": 20})
    law = run.best.fit()
    assert law._refit_limit() is not None and law._refit_limit() < 20
    X = law.task.train.X[law.task.train.groups == law.groups[0]][-2:] * np.array([4.0, 1.0])
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        low, high = law.interval(X, law.groups[0], resamples=10)
    assert time.monotonic() - started < 90  # at the run's limit: 10 resamples x 20 s, twice
    assert any(issubclass(w.category, evolve.IntervalWarning) for w in caught)
    assert np.all(np.isfinite(low)) and np.all(high >= low)
