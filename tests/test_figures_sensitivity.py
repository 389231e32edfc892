"""The sensitivity section's figures: what they say as text, their bars, and their size for a large cohort.

Inputs are built from synthetic data with the analysis functions, as the report receives them (JSON values), or
copied from the demo cohort's results (the love plot's balance).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from registry.analysis.competing import cumulative_incidence
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

SVG = "{http://www.w3.org/2000/svg}"

#: The demo cohort's balance (absolute SMDs rounded), as in its results' sensitivity part.
DEMO_BALANCE = {
    "iptw": ("IPTW (stabilised, ATE)", [("age", 0.123, -0.023), ("male", 0.106, 0.088), ("ever_smoker", 0.183, 0.091),
                                         ("anti_mda5_grade", 0.861, 0.038), ("rpild", -0.262, 0.107)]),
    "overlap": ("Overlap weights (ATO)", [("age", 0.123, 0.0), ("male", 0.106, 0.0), ("ever_smoker", 0.183, 0.0),
                                          ("anti_mda5_grade", 0.861, 0.0), ("rpild", -0.262, 0.0)]),
}  # fmt: skip


def demo_weightings() -> dict:
    def row(covariate: str, before: float, after: float) -> dict:
        return {"covariate": covariate, "binary": covariate != "age", "smd_before": before, "smd_after": after,
                "variance_ratio_before": None, "variance_ratio_after": None}  # fmt: skip

    return {name: {"label": label, "balance": [row(*r) for r in rows]} for name, (label, rows) in DEMO_BALANCE.items()}


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


def _incidence(patients: int, seed: int = 7) -> dict:
    """The competing-risks curves per group of a synthetic cohort (status 0 censored, 1 death, 2 transplantation)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["tacrolimus", "tofacitinib"], patients)
    death = np.ceil(rng.exponential(np.where(group == "tofacitinib", 2500, 1200)))
    transplant = np.ceil(rng.exponential(4000, patients))
    time = np.minimum.reduce([death, transplant, rng.integers(1, 1800, patients)])
    status = np.where(time == death, 1, np.where(time == transplant, 2, 0))
    table = pd.DataFrame({"cr_time_days": time, "cr_status": status, "group": group})
    made = cumulative_incidence(table, {"1 year": 365}, "log-log")
    return {name: entry["curve"] for name, entry in json.loads(json.dumps(_plain(made)))["groups"].items()}


def elements(svg: str) -> int:
    return sum(1 for _ in ET.fromstring(svg).iter())


def test_the_love_plot_names_every_covariate_and_weighting_and_is_deterministic():
    weightings = {"iptw": _weighting(300), "overlap": {**_weighting(300, seed=4), "label": "Overlap weights (ATO)"}}
    svg = love_figure(weightings, 0.1)
    for text in ("age", "male", "Unweighted", "IPTW (stabilised, ATE)", "Overlap weights (ATO)", "Covariate balance"):
        assert f">{text}<" in svg, text
    assert svg == love_figure(weightings, 0.1)


def test_the_love_plot_of_the_demo_cohort_has_a_row_per_covariate_and_the_threshold():
    svg = love_figure(demo_weightings(), 0.1)
    for text in ("age", "male", "ever_smoker", "anti_mda5_grade", "rpild", "Threshold (0.1)"):
        assert f">{text}<" in svg, text
    assert ">Absolute standardised mean difference<" in svg
    assert svg.index(">age<") < svg.index(">rpild<")  # the first weighting's order (ticks are written in order)


def test_the_love_plot_finds_each_weightings_covariates_by_name():
    weightings = demo_weightings()
    shuffled = {**weightings, "overlap": {**weightings["overlap"], "balance": weightings["overlap"]["balance"][::-1]}}
    assert love_figure(shuffled, 0.1) == love_figure(weightings, 0.1)
    missing = {**weightings, "overlap": {**weightings["overlap"], "balance": weightings["overlap"]["balance"][:2]}}
    assert ">rpild<" in love_figure(missing, 0.1)  # a covariate a weighting lacks is left out of its markers
    weightings["iptw"]["balance"][0]["smd_after"] = None  # NaN in the results, null in JSON
    assert ">age<" in love_figure(weightings, 0.1)


def bars(svg: str) -> dict[tuple[str, int], tuple[float, float, float, float]]:
    """Each bar of the overlap figure by (group, bin): its left and right x and its base and far y, in SVG units."""
    found = {}
    for g in ET.fromstring(svg).iter(f"{SVG}g"):
        named = re.fullmatch(r"propensity-(\w+)-(\d+)", g.get("id", ""))
        if named:
            corners = np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", g.find(f"{SVG}path").get("d"))])
            x, y = corners[0::2], corners[1::2]
            found[(named[1], int(named[2]))] = (x.min(), x.max(), y[0], y[2])  # drawn from the base corner
    return found


def test_the_overlap_figure_draws_each_groups_share_per_bin():
    distribution = {
        "edges": np.linspace(0, 1, 5).tolist(),
        "counts": {"tacrolimus": [1, 3, 0, 0], "tofacitinib": [0, 1, 1, 2]},
    }
    shares = propensity_shares(distribution)
    assert shares["tacrolimus"].tolist() == [0.25, 0.75, 0.0, 0.0]
    assert shares["tofacitinib"].tolist() == [0, 0.25, 0.25, 0.5]
    svg = propensity_figure(distribution)
    assert ">Propensity score (probability of tofacitinib)<" in svg and ">tofacitinib (above)<" in svg
    assert ">Overlap of the propensity score<" in svg and ">tacrolimus (below)<" in svg
    assert svg == propensity_figure(distribution)
    assert ">By weighting<" in propensity_figure(distribution, "By weighting")


def test_the_overlap_bars_heights_are_the_groups_proportions_of_their_patients():
    edges = np.linspace(0, 1, 41)
    rng = np.random.default_rng(11)
    counts = {"tacrolimus": rng.integers(0, 30, 40).tolist(), "tofacitinib": rng.integers(0, 9, 40).tolist()}
    counts["tofacitinib"][:5] = [0] * 5  # bins without patients draw no bar
    drawn = bars(propensity_figure({"edges": edges.tolist(), "counts": counts}))
    assert set(drawn) == {(g, i) for g, c in counts.items() for i, k in enumerate(c) if k}
    base = {round(b[2], 4) for b in drawn.values()}
    assert len(base) == 1  # every bar stands on the axis
    scale, width = [], 0.025
    left_of = {index: left for (_, index), (left, *_) in drawn.items()}
    per_unit = (max(left_of.values()) - min(left_of.values())) / (edges[max(left_of)] - edges[min(left_of)])
    for (group, index), (left, right, start, end) in drawn.items():
        share = counts[group][index] / sum(counts[group])
        assert (end < start) == (group == "tofacitinib")  # SVG y grows downwards: tofacitinib above the axis
        scale.append(abs(end - start) / share)
        assert right - left == pytest.approx(width * per_unit, abs=1e-3)  # the bin's width, at its edge
        assert left - left_of[min(left_of)] == pytest.approx((edges[index] - edges[min(left_of)]) * per_unit, abs=1e-3)
    assert max(scale) == pytest.approx(min(scale), rel=1e-5)  # one scale for both groups: proportions, not counts


def test_weighted_curves_show_the_effective_sample_size_and_stay_small_for_a_large_cohort():
    small, large = _weighting(400), _weighting(20_000, seed=5)
    ess = small["effective_sample_size"]
    svg = weighted_km_figure(small, "IPTW")
    for name in ("tacrolimus", "tofacitinib"):
        assert f">{name} (effective n = {ess[name]:.1f})<" in svg
    assert ">Survival probability (weighted)<" in svg and ">IPTW<" in svg and "Number at risk" not in svg
    assert svg == weighted_km_figure(small, "IPTW")
    big = weighted_km_figure(large, "IPTW")
    assert len(large["curves"]["tacrolimus"]["time"]) > 1000
    assert len(large["curves"]["tacrolimus"]["censored_times"]) > 3000
    assert elements(big) == elements(svg) < 300 and len(big) < 400_000


def test_the_cumulative_incidence_figure_labels_death_and_the_competing_event():
    curve = {"time": [0.0, 10.0, 20.0], "death": [0.0, 0.2, 0.3], "death_lower": [None, 0.1, 0.2],
             "death_upper": [None, 0.3, 0.4], "competing": [0.0, 0.0, 0.1], "competing_label": "lung transplantation"}  # fmt: skip
    svg = cumulative_incidence_figure({"tacrolimus": curve, "tofacitinib": curve}, "All analysed patients")
    for text in ("tacrolimus: death", "tofacitinib: lung transplantation", "Cumulative incidence"):
        assert f">{text}<" in svg, text
    assert svg == cumulative_incidence_figure({"tacrolimus": curve, "tofacitinib": curve}, "All analysed patients")
    bare = {k: v for k, v in curve.items() if k not in ("death_lower", "death_upper")}  # the band is optional
    assert ">tacrolimus: death<" in cumulative_incidence_figure({"tacrolimus": bare}, "No band")


def test_the_cumulative_incidence_of_a_large_cohort_stays_small():
    small, large = _incidence(500), _incidence(20_000, seed=8)
    assert len(large["tacrolimus"]["time"]) > 1000
    svg = cumulative_incidence_figure(large, "Large")
    # the same few paths as a small cohort's (axis ticks may differ by one or two), and a bounded file
    assert abs(elements(svg) - elements(cumulative_incidence_figure(small, "Small"))) <= 4
    assert elements(svg) < 300 and len(svg) < 400_000
