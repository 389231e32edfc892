"""Propensity weighting: what R's glm would warn about, and the weights' definitions by hand."""

import numpy as np
import pandas as pd
import pytest

from registry.analysis.weighting import (
    PropensityError,
    effective_sample_size,
    fit_propensity,
    propensity_weights,
    truncate_weights,
)


def test_weights_by_hand():
    """Two treated of four: P(T = 1) = 0.5, so the stabilised weight of a treated patient with e = 0.25 is 2."""
    score, treated = np.array([0.25, 0.5, 0.5, 0.75]), np.array([1, 1, 0, 0])
    assert propensity_weights(score, treated, "iptw").tolist() == [2.0, 1.0, 1.0, 2.0]
    assert propensity_weights(score, treated, "overlap").tolist() == [0.75, 0.5, 0.5, 0.75]
    assert effective_sample_size(np.array([2.0, 1.0, 1.0, 2.0])) == pytest.approx(36 / 10)
    with pytest.raises(ValueError, match=r"^unknown weighting 'att': choose one of iptw, overlap$"):
        propensity_weights(score, treated, "att")


def test_truncation_caps_within_each_group_at_the_type_7_percentile():
    weights = np.array([1.0, 2.0, 3.0, 10.0, 1.0, 1.0, 4.0])
    treated = np.array([1, 1, 1, 1, 0, 0, 0], dtype=bool)
    # treated: quantile(c(1, 2, 3, 10), 0.5) = 2.5; reference: quantile(c(1, 1, 4), 0.5) = 1
    assert truncate_weights(weights, treated, 50).tolist() == [1.0, 2.0, 2.5, 2.5, 1.0, 1.0, 1.0]


def test_covariates_that_separate_the_groups_are_named_not_fitted():
    table = pd.DataFrame({"t": [1, 1, 1, 0, 0, 0], "x": [5.0, 6.0, 7.0, 1.0, 2.0, 3.0], "z": [1, 0, 1, 0, 1, 0]})
    with pytest.raises(PropensityError, match=r"separate the groups"):
        fit_propensity(table, "t", ["x", "z"])
    with pytest.raises(PropensityError, match=r"^z takes a single value among the patients: drop it from the "):
        fit_propensity(table.assign(z=1), "t", ["x", "z"])
    with pytest.raises(PropensityError, match=r"^the propensity covariates are collinear"):
        fit_propensity(table.assign(x=[1.0, 2.0, 1.0, 2.0, 1.0, 2.0], y=lambda t: 2 * t["x"]), "t", ["x", "y"])


def test_patients_missing_a_covariate_are_left_out_and_counted():
    table = pd.DataFrame({"t": [1, 0, 1, 0, 1, 0, 0], "x": [1.0, 2.0, 2.0, 3.0, 2.5, np.nan, 1.0]})
    score, model = fit_propensity(table, "t", ["x"])
    assert model.n == 6 and model.dropped_missing == 1 and model.exposed == 3
    assert list(score.index) == [0, 1, 2, 3, 4, 6]
