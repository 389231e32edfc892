"""Report figures of large cohorts: bounded SVG, and thinned curves within a point of the full ones.

The cohorts here are synthetic (random follow-up times, no real person): two groups of
a few thousand to 20,000 patients, follow-up in whole days as in the registry.
"""

import dataclasses
import itertools
import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from registry.analysis.survival import at_risk, km_curve
from registry.report.figures import km_figure, step_values, thin_marks, thin_steps

#: Data units per point of a Kaplan-Meier axes about 370 points wide (1,800 days) and 250 high (0 to 1.02).
PER_POINT = (1800 / 370, 1.02 / 250)


def synthetic_survival(patients: int, seed: int = 1) -> dict:
    """The results document's survival part for a synthetic cohort of ``patients``, as the report gets it."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["tacrolimus", "tofacitinib"], patients)
    death = np.ceil(rng.exponential(np.where(group == "tofacitinib", 2500, 1200))).astype(int)
    censor = rng.integers(1, 1800, patients)
    table = pd.DataFrame({"time": np.minimum(death, censor), "event": death <= censor, "group": group})
    times = list(range(0, 1800, 30))
    groups = {}
    for name, rows in table.groupby("group"):
        curve = dataclasses.asdict(km_curve(rows["time"], rows["event"], name))
        for key in ("lower", "upper"):
            curve[key] = [None if math.isnan(v) else v for v in curve[key]]
        groups[name] = {
            "curve": curve,
            "at_risk": {str(t): n for t, n in zip(times, at_risk(rows["time"], times), strict=True)},
        }
    return {"groups": groups}


@pytest.fixture(scope="module")
def large() -> dict:
    return synthetic_survival(20_000)


def elements(svg: str) -> int:
    return sum(1 for _ in ET.fromstring(svg).iter())


def test_the_figure_of_a_large_cohort_has_as_many_svg_elements_as_a_small_ones(large):
    small = synthetic_survival(2_000, seed=2)
    curve = large["groups"]["tacrolimus"]["curve"]
    assert len(curve["time"]) > 1000 and len(curve["censored_times"]) > 5000  # more than the figure has points
    big_svg, small_svg = km_figure(large, "Large", 0.01), km_figure(small, "Small", 0.01)
    assert elements(big_svg) == elements(small_svg) < 300  # one path per curve, band and set of marks
    assert len(big_svg) < 400_000


def staircase(time: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The vertices of a step function drawn with steps after each time, in points (PER_POINT)."""
    x = np.repeat(time, 2)[1:]
    y = np.repeat(values, 2)[:-1]
    return np.column_stack([x / PER_POINT[0], y / PER_POINT[1]])


def sampled(line: np.ndarray, spacing: float = 0.25) -> np.ndarray:
    """Points along a polyline at most ``spacing`` apart."""
    parts = []
    for a, b in itertools.pairwise(line):
        n = max(1, math.ceil(np.hypot(*(b - a)) / spacing))
        parts.append(a + np.linspace(0, 1, n, endpoint=False)[:, None] * (b - a))
    return np.vstack([*parts, line[-1:]])


def farthest(points: np.ndarray, line: np.ndarray) -> float:
    """The largest distance from any of ``points`` to the polyline ``line``."""
    a, b = line[:-1], line[1:]
    length = np.maximum(((b - a) ** 2).sum(axis=1), 1e-12)
    worst = 0.0
    for chunk in np.array_split(points, max(1, len(points) // 200)):
        along = np.clip((((chunk[:, None, :] - a) * (b - a)).sum(axis=2)) / length, 0, 1)
        nearest = a + along[:, :, None] * (b - a)
        worst = max(worst, float(np.sqrt(((chunk[:, None, :] - nearest) ** 2).sum(axis=2)).min(axis=1).max()))
    return worst


@pytest.mark.parametrize("key", ["survival", "lower", "upper"])
def test_thinned_steps_stay_within_a_point_of_the_full_curve(large, key):
    curve = large["groups"]["tacrolimus"]["curve"]
    time = np.asarray(curve["time"], dtype=float)
    series = {k: np.array([math.nan if v is None else v for v in curve[k]]) for k in ("survival", "lower", "upper")}
    kept = thin_steps(time, list(series.values()), PER_POINT[0])
    assert len(kept) < len(time) / 2
    present = ~np.isnan(series[key])  # the band's missing values are kept as they are
    full = staircase(time[present], series[key][present])
    drawn = staircase(time[kept][present[kept]], series[key][kept][present[kept]])
    assert farthest(sampled(full), drawn) <= 1.0
    assert farthest(sampled(drawn), full) <= 1.0


def test_each_censoring_mark_is_drawn_or_within_a_point_of_one_that_is(large):
    curve = large["groups"]["tofacitinib"]["curve"]
    time, survival = np.asarray(curve["time"]), np.asarray(curve["survival"])
    censored = np.asarray(curve["censored_times"], dtype=float)
    heights = step_values(time, survival, censored)
    drawn = thin_marks(censored, heights, PER_POINT)
    assert len(drawn) < len(np.unique(censored)) / 2
    offset = np.abs(np.stack([censored, heights], axis=1)[:, None, :] - drawn[None, :, :]) / PER_POINT
    assert offset.max(axis=2).min(axis=1).max() < 1.0
    assert {tuple(mark) for mark in drawn} <= set(
        zip(censored, heights, strict=True)
    )  # drawn where a patient was censored


def test_step_values_are_the_last_step_at_or_before_each_time():
    time, survival = np.array([0.0, 5.0, 9.0]), np.array([1.0, 0.8, 0.5])
    assert step_values(time, survival, np.array([-1.0, 0.0, 4.9, 5.0, 12.0])).tolist() == [1.0, 1.0, 1.0, 0.8, 0.5]
