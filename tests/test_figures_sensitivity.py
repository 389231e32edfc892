"""The sensitivity section's figures: what they say as text, their bars, and their size for a large cohort.

Inputs are built from synthetic data with the analysis functions, as the report receives them (JSON values).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd

from registry.analysis.run import _plain
from registry.analysis.survival import km_curve
from registry.analysis.weighting import balance, effective_sample_size
from registry.report.figures import (
    cumulative_incidence_figure,
    love_figure,
    propensity_figure,
    propensity_shares,
    weighted_km_figure,
)


def _weighting(patients: int, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    group = rng.choice(["tacrolimus", "tofacitinib"], patients)
    weights = rng.uniform(0.4, 3.0, patients)
    time = np.minimum(np.ceil(rng.exponential(900, patients)), rng.integers(1, 1800, patients))
    event = rng.random(patients) < 0.6
    covariates = pd.DataFrame({"age": rng.normal(50, 10, patients), "male": rng.integers(0, 2, patients)})
    treated = group == "tofacitinib"
    curves = {
        name: km_curve(pd.Series(time[group == name]), pd.Series(event[group == name].astype(int)), name, "log-log",
                       weights[group == name])
        for name in ("tacrolimus", "tofacitinib")
    }  # fmt: skip
    made = {
        "label": "IPTW (stabilised, ATE)",
        "curves": curves,
        "effective_sample_size": {name: effective_sample_size(weights[group == name]) for name in curves},
        "balance": balance(covariates, treated, weights),
    }
    return json.loads(json.dumps(_plain(made)))


def test_the_love_plot_names_every_covariate_and_weighting_and_is_deterministic():
    weightings = {"iptw": _weighting(300), "overlap": {**_weighting(300, seed=4), "label": "Overlap weights (ATO)"}}
    svg = love_figure(weightings, 0.1)
    for text in ("age", "male", "Unweighted", "IPTW (stabilised, ATE)", "Overlap weights (ATO)", "Covariate balance"):
        assert f">{text}<" in svg, text
    assert svg == love_figure(weightings, 0.1)


def test_the_overlap_figure_draws_each_groups_share_per_bin():
    distribution = {
        "edges": np.linspace(0, 1, 5).tolist(),
        "counts": {"tacrolimus": [1, 3, 0, 0], "tofacitinib": [0, 1, 1, 2]},
    }
    shares = propensity_shares(distribution)
    assert shares["tacrolimus"].tolist() == [0.25, 0.75, 0.0, 0.0] and shares["tofacitinib"].tolist() == [
        0,
        0.25,
        0.25,
        0.5,
    ]
    svg = propensity_figure(distribution)
    assert ">Propensity score (probability of tofacitinib)<" in svg and ">tofacitinib (above)<" in svg
    assert svg == propensity_figure(distribution)


def test_weighted_curves_show_the_effective_sample_size_and_stay_small_for_a_large_cohort():
    small, large = _weighting(400), _weighting(20_000, seed=5)
    ess = small["effective_sample_size"]["tacrolimus"]
    assert f"tacrolimus (effective n = {ess:.1f})" in weighted_km_figure(small, "IPTW")
    svg = weighted_km_figure(large, "IPTW")
    assert len(large["curves"]["tacrolimus"]["time"]) > 1000
    assert sum(1 for _ in ET.fromstring(svg).iter()) < 300 and len(svg) < 400_000


def test_the_cumulative_incidence_figure_labels_death_and_the_competing_event():
    curve = {"time": [0.0, 10.0, 20.0], "death": [0.0, 0.2, 0.3], "death_lower": [None, 0.1, 0.2],
             "death_upper": [None, 0.3, 0.4], "competing": [0.0, 0.0, 0.1], "competing_label": "lung transplantation"}  # fmt: skip
    svg = cumulative_incidence_figure({"tacrolimus": curve, "tofacitinib": curve}, "All analysed patients")
    for text in ("tacrolimus: death", "tofacitinib: lung transplantation", "Cumulative incidence"):
        assert f">{text}<" in svg, text
