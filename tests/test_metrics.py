"""The metrics against hand-computed cases and an independent transcription of the official formula."""

import numpy as np
import pytest

from evolve.metrics import compute_metrics, failed_metrics, mean_over_folds


def official_formula(pred, true):
    """SLDBench's evaluator, transcribed: per-dimension NMSE/NMAE normalised by test statistics."""
    pred = np.asarray(pred, float).reshape(len(pred), -1)
    true = np.asarray(true, float).reshape(len(true), -1)
    mse = np.mean((true - pred) ** 2, axis=0)
    mae = np.mean(np.abs(true - pred), axis=0)
    var = np.var(true, axis=0)
    mad = np.mean(np.abs(true - np.mean(true, axis=0)), axis=0)
    nmse = np.divide(mse, var, out=mse.copy(), where=var > 1e-9)
    nmae = np.divide(mae, mad, out=mae.copy(), where=mad > 1e-9)
    return {"nmse": float(np.mean(nmse)), "nmae": float(np.mean(nmae)), "r2": 1.0 - float(np.mean(nmse)), "combined_score": 1.0 / (1.0 + float(np.mean(nmse)))}


def test_hand_computed_single_target():
    true = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.0, 2.0, 3.0, 5.0])
    m = compute_metrics(pred, true)
    # MSE = 1/4, var = 1.25 -> NMSE = 0.2; MAE = 1/4, mean abs deviation = 1 -> NMAE = 0.25
    assert m.nmse == pytest.approx(0.2, abs=1e-15)
    assert m.nmae == pytest.approx(0.25, abs=1e-15)
    assert m.r2 == pytest.approx(0.8, abs=1e-15)
    assert m.combined_score == pytest.approx(1 / 1.2, abs=1e-15)


def test_hand_computed_two_targets_average_nmse():
    true = np.array([[1.0, 10.0], [3.0, 10.0]])  # second target constant: variance 0, NMSE stays raw MSE
    pred = np.array([[1.0, 11.0], [3.0, 9.0]])
    m = compute_metrics(pred, true)
    assert m.nmse_per_target == pytest.approx((0.0, 1.0))
    assert m.r2 == pytest.approx(1 - 0.5)
    assert m.r2_per_target == pytest.approx((1.0, 0.0))


@pytest.mark.parametrize("targets", [1, 5])
def test_equals_official_formula_to_1e9(targets):
    rng = np.random.default_rng(targets)
    for _ in range(50):
        true = rng.normal(3, 1, size=(int(rng.integers(2, 200)), targets))
        pred = true + rng.normal(0, rng.uniform(0.01, 2), size=true.shape)
        ours = compute_metrics(pred[:, 0] if targets == 1 else pred, true[:, 0] if targets == 1 else true)
        ref = official_formula(pred, true)
        for key, value in ref.items():
            assert abs(getattr(ours, key) - value) <= 1e-9


@pytest.mark.parametrize(
    "pred, message",
    [
        (np.array([1.0, np.nan, 3.0]), "NaN"),
        (np.array([1.0, np.inf, 3.0]), "NaN or infinity"),
        (np.array([1.0, 2.0]), "shape"),
        (np.ones((3, 2)), "shape"),
    ],
)
def test_bad_predictions_raise(pred, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(pred, np.array([1.0, 2.0, 3.0]))


def test_failure_record_is_official():
    m = failed_metrics(2)
    assert m.r2 == -1.0 and m.nmse == 100000.0 and m.combined_score == 0.0
    assert m.r2_per_target == (-1.0, -1.0)


def test_folds_average_their_normalised_errors_per_target():
    rng = np.random.default_rng(3)
    truths = [rng.normal(size=(8, 2)), rng.normal(size=(5, 2))]
    folds = [compute_metrics(t + rng.normal(scale=0.3, size=t.shape), t) for t in truths]
    combined = mean_over_folds(folds)
    expected_nmse = (np.array(folds[0].nmse_per_target) + np.array(folds[1].nmse_per_target)) / 2
    np.testing.assert_allclose(combined.nmse_per_target, expected_nmse, rtol=1e-12)
    assert combined.r2 == pytest.approx(1 - expected_nmse.mean(), abs=1e-12)
    assert combined.combined_score == pytest.approx(1 / (1 + expected_nmse.mean()), abs=1e-12)
    assert mean_over_folds(folds[:1]) == folds[0]  # one fold: the official figures, untouched
