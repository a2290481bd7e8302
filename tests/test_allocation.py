"""The compute-optimal search (evolve.allocation): the interior minimum of a law's loss
along C = 6·N·D over the tokens per parameter the data cover (100x each way), not the end
of the range where a fitted law can fall without bound (a new user's law gave N = 9e10,
D = 1.8e6 and a loss of −11.8 at 1e18 FLOPs)."""

from __future__ import annotations

import numpy as np
import pytest

from evolve.allocation import allocation_caveats, interior_minimum, optimal_allocation

E, A, B, ALPHA, BETA = 1.7, 400.0, 410.0, 0.34, 0.28


def chinchilla(X: np.ndarray) -> np.ndarray:
    return E + A / X[:, 0] ** ALPHA + B / X[:, 1] ** BETA


def train_rows(ratios=(1.0, 100.0)) -> tuple[np.ndarray, np.ndarray]:
    N = np.geomspace(1e7, 1e9, 9)
    X = np.array([[n, n * r] for n in N for r in np.geomspace(*ratios, 5)])
    return X, chinchilla(X)


def test_the_optimum_of_a_chinchilla_law_is_its_closed_form():
    X, y = train_rows()
    compute = 1e21
    found = optimal_allocation(chinchilla, compute, X, y, 0, 1, points=2001)
    G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    n_best = G * (compute / 6) ** (BETA / (ALPHA + BETA))
    assert 6 * found["N"] * found["D"] == pytest.approx(compute, rel=1e-9)
    assert found["N"] == pytest.approx(n_best, rel=0.02)
    assert found["loss"] == pytest.approx(float(chinchilla(np.array([[n_best, compute / 6 / n_best]]))[0]), rel=1e-6)
    assert not found["at_search_edge"] and not found["lower_at_edge"] and not found["negative_loss"]
    assert found["tokens_per_param"] == pytest.approx(found["D"] / found["N"])
    assert allocation_caveats(found) == "beyond the data's N or D"  # 1e21 FLOPs is beyond these rows


def test_a_law_that_falls_without_bound_far_from_the_data_gives_its_interior_minimum_and_says_so():
    X, y = train_rows()

    def runaway(X):  # the data's law, plus a term that only matters at ratios the data never saw
        return chinchilla(X) - 1e-3 * (X[:, 0] / X[:, 1]) ** 2

    found = optimal_allocation(runaway, 1e18, X, y, 0, 1)
    sane = optimal_allocation(chinchilla, 1e18, X, y, 0, 1)
    assert found["N"] == pytest.approx(sane["N"], rel=1e-6) and found["loss"] > 0
    assert found["lower_at_edge"] and not found["at_search_edge"]
    assert "lower still far from the data's tokens per parameter" in allocation_caveats(found)
    assert 1 / 100 <= found["tokens_per_param"] <= 100 * 100


def test_a_law_with_no_interior_minimum_gives_the_end_and_says_so():
    X, y = train_rows()
    found = optimal_allocation(lambda X: 2.0 + 1 / X[:, 0] ** 0.3, 1e20, X, y, 0, 1)  # more parameters always help
    assert found["at_search_edge"] and found["tokens_per_param"] == pytest.approx(1 / 100)
    assert "no interior minimum" in allocation_caveats(found)
    assert interior_minimum(np.array([3.0, 2.0, np.nan, 1.0, 0.5])) is None  # a gap is no minimum
    assert interior_minimum(np.array([3.0, 2.0, 2.5, 1.0, 1.5, 0.0])) == 3
    with pytest.raises(ValueError, match="no finite loss"):
        optimal_allocation(lambda X: np.full(len(X), np.nan), 1e20, X, y, 0, 1)
