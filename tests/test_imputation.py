"""Multiple imputation and Rubin's rules: pooling against R's mice::pool on the same data sets, and the imputations'
own guarantees (seeded, observed values kept, imputed values observed ones, clear refusals)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_r_gives_the_stored_output, needs_r

from registry.analysis.imputation import (
    ImputationError,
    barnard_rubin,
    fit_cox_imputed,
    impute,
    nelson_aalen,
    pool,
    stable_argsort,
    write_imputations,
)

R = Path(__file__).resolve().parent / "r"
DATASETS = pd.read_csv(R / "imputation_datasets.csv")
POOLED = pd.read_csv(R / "imputation_pooled.csv")
COVARIATES = ["tofacitinib", "age", "male", "ever_smoker", "anti_mda5_grade", "steroid_sparing", "pft_fvc_pct_pred",
              "pft_dlco_pct_pred"]  # fmt: skip
TOLERANCE = 1e-6


@pytest.mark.parametrize("case", sorted(DATASETS["case"].unique()))
def test_pooled_cox_models_equal_mice_pool(case):
    rows = DATASETS[DATASETS["case"] == case]
    datasets = [group for _, group in rows.groupby("imputation", sort=True)]
    pooled = fit_cox_imputed(datasets, "cox_time", "cox_event", COVARIATES)
    r = POOLED[POOLED["case"] == case].set_index("term")
    assert pooled.m == r["m"].iloc[0] and pooled.dfcom == r["dfcom"].iloc[0]
    assert [t.name for t in pooled.terms] == list(r.index)
    for term in pooled.terms:
        expected = r.loc[term.name]
        ours = [term.coef, term.se, term.df, term.p, np.log(term.lower), np.log(term.upper), term.ubar, term.b, term.t,
                term.riv, term.lambda_, term.fmi]  # fmt: skip
        theirs = expected[["estimate", "std_error", "df", "p", "lower", "upper", "ubar", "b", "t", "riv", "lambda",
                           "fmi"]].to_list()  # fmt: skip
        assert ours == pytest.approx(theirs, rel=TOLERANCE), term.name


def test_rubins_rules_by_hand():
    """Three imputations of one coefficient: 0.1, 0.2, 0.3 with variances 0.04 each. Qbar = 0.2, Ubar = 0.04,
    B = 0.01, T = 0.04 + (4/3)(0.01) = 0.05333; lambda = 0.01333/0.05333 = 0.25; riv = 0.3333; with dfcom 100:
    df_old = 2 / 0.0625 = 32, df_obs = (101/103)(100)(0.75) = 73.544, df = 32 x 73.544 / 105.544 = 22.298."""
    [term] = pool(["x"], np.array([[0.1], [0.2], [0.3]]), np.array([[0.04], [0.04], [0.04]]), dfcom=100)
    assert (term.coef, term.ubar, term.b, term.t) == pytest.approx((0.2, 0.04, 0.01, 0.16 / 3))
    assert (term.lambda_, term.riv) == pytest.approx((0.25, 1 / 3))
    assert term.df == pytest.approx(22.298, abs=1e-3)
    assert barnard_rubin(3, np.array([0.0]), np.array([0.04]), 100)[0] == pytest.approx(
        (2 / 1e-8) * (101 / 103 * 100 * (1 - 1e-4)) / (2 / 1e-8 + 101 / 103 * 100 * (1 - 1e-4))
    )  # lambda floored at 1e-4, as mice


def test_nelson_aalen_by_hand():
    """Times 1, 2, 2, 3 with deaths at 1 and one at 2: H(1) = 1/4, H(2) = 1/4 + 1/3, H(3) the same."""
    assert nelson_aalen(pd.Series([1, 2, 2, 3]), pd.Series([1, 1, 0, 0])).tolist() == pytest.approx(
        [0.25, 0.25 + 1 / 3, 0.25 + 1 / 3, 0.25 + 1 / 3]
    )


@pytest.fixture
def incomplete():
    rng = np.random.default_rng(5)
    n = 200
    data = pd.DataFrame({"exposure": rng.integers(0, 2, n), "time": rng.integers(1, 365, n),
                         "event": rng.integers(0, 2, n), "grade": rng.integers(1, 4, n).astype(float),
                         "smoker": rng.integers(0, 2, n).astype(float), "fvc": rng.normal(70, 15, n)})  # fmt: skip
    for name in ("grade", "smoker", "fvc"):
        data.loc[rng.random(n) < 0.3, name] = np.nan
    return data


def _impute(data, **options):
    return impute(data, ["grade", "smoker", "fvc"], predictors=["exposure"], time="time", event="event", **options)


def test_imputations_are_seeded_complete_and_keep_what_was_observed(incomplete):
    first, again, other = (
        _impute(incomplete, m=3, seed=1),
        _impute(incomplete, m=3, seed=1),
        _impute(incomplete, m=3, seed=2),
    )
    for a, b in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert not first[0].equals(other[0])
    assert not first[0].equals(first[1])  # each imputation its own chain
    for imputed in first:
        assert imputed[["grade", "smoker", "fvc"]].notna().all().all()
        for name in ("grade", "smoker", "fvc"):
            observed = incomplete[name].notna()
            assert (imputed.loc[observed, name] == incomplete.loc[observed, name]).all()
            # predictive mean matching imputes observed values: binary stays 0/1, grades whole, fvc one of those seen
            assert set(imputed.loc[~observed, name]) <= set(incomplete.loc[observed, name])


def test_impossible_imputations_are_refused_with_the_column_named(incomplete):
    with pytest.raises(ImputationError, match=r"^m = 1: multiple imputation needs at least 2 imputations$"):
        _impute(incomplete, m=1)
    with pytest.raises(ImputationError, match=r"^fvc: every value is missing, so none can be imputed$"):
        _impute(incomplete.assign(fvc=np.nan))
    with pytest.raises(ImputationError, match=r"^ldh: no such column in the analysis table$"):
        impute(incomplete, ["ldh"], predictors=["exposure"], time="time", event="event")
    with pytest.raises(ImputationError, match=r"^exposure: a predictor of the imputation model must be complete$"):
        _impute(incomplete.assign(exposure=np.where(incomplete.index == 0, np.nan, incomplete["exposure"])))


def test_written_imputations_can_be_read_back_and_are_not_overwritten(incomplete, tmp_path):
    made = _impute(incomplete.rename_axis("study_id"), m=2)
    folder = tmp_path / "imputed"
    paths = write_imputations(made, folder, columns=["time", "event", "fvc"], description={"m": 2, "seed": 20221})
    assert [p.name for p in paths] == ["imputation_01.csv", "imputation_02.csv"]
    back = pd.read_csv(paths[1], index_col="study_id")
    pd.testing.assert_frame_equal(back, made[1][["time", "event", "fvc"]], check_dtype=False, rtol=1e-15)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["m"] == 2 and manifest["files"] == ["imputation_01.csv", "imputation_02.csv"]
    with pytest.raises(ImputationError, match=r"the directory is not empty; give a new or empty one$"):
        write_imputations(made, folder, columns=["fvc"], description={})
    assert back.equals(pd.read_csv(paths[1], index_col="study_id"))


@needs_r
def test_r_gives_the_stored_numbers_again(tmp_path):
    assert_r_gives_the_stored_output(
        tmp_path, "imputation_reference.R", ("imputation_datasets.csv",), ("imputation_pooled.csv",)
    )


def test_the_stored_data_sets_are_what_the_imputation_makes_today():
    """tests/r/imputation_datasets.csv, R's input, is our imputation of the demo cohort and the random cohort now."""
    import sys

    sys.path.insert(0, str(R))
    from imputation_datasets import datasets

    pd.testing.assert_frame_equal(datasets().reset_index(drop=True), DATASETS, check_dtype=False, rtol=1e-15)


@pytest.mark.parametrize(
    "values",
    [
        np.array([]),
        np.array([3.0]),
        np.random.default_rng(1).normal(size=1000),  # no ties
        np.random.default_rng(2).integers(0, 7, 5000).astype(float),  # runs of ties everywhere
        np.full(300, 2.5),  # one run
        np.array([0.0, -0.0, 1.0, -0.0, 0.0, -1.0, 0.0]),  # signed zeros are equal
        np.repeat(np.random.default_rng(3).normal(size=50), 40)[::-1],
    ],
    ids=["empty", "one", "distinct", "tied", "all-equal", "signed-zeros", "repeated"],
)
def test_stable_argsort_is_numpys_stable_argsort(values):
    """The donors' order (predictive mean matching) must not change with the faster sort: ties stay in position order."""
    assert np.array_equal(stable_argsort(values), np.argsort(values, kind="stable"))


def test_imputations_and_pooled_fits_in_threads_are_those_made_one_after_another(monkeypatch, one_blas_thread):
    """At 10,000 rows and more the chains and the pooled fits run in threads (registry.analysis.threads): the data
    sets and the pooled numbers must be bit for bit those of running them in turn."""
    import registry.analysis.threads as threads

    if threads.cores() < 2:
        pytest.skip("one core: nothing runs in threads")
    rng = np.random.default_rng(11)
    n = threads.MIN_ROWS
    data = pd.DataFrame({"exposure": rng.integers(0, 2, n), "time": rng.integers(1, 365, n),
                         "event": rng.integers(0, 2, n), "grade": rng.integers(1, 4, n).astype(float),
                         "fvc": rng.normal(70, 15, n)})  # fmt: skip
    for name in ("grade", "fvc"):
        data.loc[rng.random(n) < 0.3, name] = np.nan
    used = []
    real = threads.ThreadPoolExecutor
    monkeypatch.setattr(threads, "ThreadPoolExecutor", lambda **kw: used.append(kw) or real(**kw))

    def run():
        made = impute(data, ["grade", "fvc"], predictors=["exposure"], time="time", event="event", m=4, iterations=3)
        return made, fit_cox_imputed(made, "time", "event", ["exposure", "grade", "fvc"])

    side_by_side = run()
    assert len(used) == 2  # the chains, then the fits
    monkeypatch.setattr(threads, "MIN_ROWS", n + 1)
    in_turn = run()
    assert len(used) == 2
    for a, b in zip(side_by_side[0], in_turn[0], strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert side_by_side[1] == in_turn[1]


@pytest.mark.parametrize("observed", [1, 2, 4, 5, 9, 10, 11, 50, 2000])
@pytest.mark.parametrize("values", ["continuous", "few", "ties"])
def test_nearest_donors_are_those_of_sorting_the_distances(observed, values):
    """The donors found by walking out from each prediction's place are, for every missing value, those of a stable
    sort of the distances to the ten cases around it (the matcher before, kept as the oracle): at the edges, with
    ties on either side, at equal distance left and right, and with fewer than five observed cases."""
    from registry.analysis.imputation import _nearest_donors_by_sorting, nearest_donors

    rng = np.random.default_rng(observed)
    draw = {"continuous": lambda n: rng.normal(size=n), "few": lambda n: rng.integers(0, 6, n).astype(float),
            "ties": lambda n: rng.integers(0, 40, n) / 4.0}[values]  # fmt: skip
    sorted_obs = np.sort(draw(observed))
    predicted = np.concatenate([draw(3000), sorted_obs + 0.125, sorted_obs[:5] - 1e9, sorted_obs[-5:] + 1e9])
    draws = rng.random(len(predicted))
    insert = np.searchsorted(sorted_obs, predicted)
    expected = _nearest_donors_by_sorting(sorted_obs, predicted, draws, insert)
    assert np.array_equal(nearest_donors(sorted_obs, predicted, draws), expected)
