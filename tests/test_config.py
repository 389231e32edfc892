"""registry.toml: all keys optional, typos and wrong kinds refused with the key named."""

from datetime import date

import pytest

from registry.config import DEFAULT_STEROID_SPARING, Config, ConfigError, load_config


def test_no_file_means_the_study_defaults(tmp_path):
    config = load_config(tmp_path / "registry.toml")
    assert config == Config()
    assert (config.enrolment_start, config.enrolment_end) == (date(2017, 10, 1), date(2020, 12, 31))
    assert config.landmarks == {"6 months": 183, "1 year": 365}
    assert "cyclophosphamide" in DEFAULT_STEROID_SPARING and "tofacitinib" not in DEFAULT_STEROID_SPARING


def test_keys_override_defaults(tmp_path):
    (tmp_path / "registry.toml").write_text(
        'data_cutoff = 2021-06-30\nlandmarks = { "90 days" = 90 }\nsteroid_sparing_drugs = ["ivig"]\nbaseline_window_days = 14\n'
    )
    config = load_config(tmp_path / "registry.toml")
    assert config.data_cutoff == date(2021, 6, 30)
    assert config.landmarks == {"90 days": 90}
    assert config.steroid_sparing_drugs == ("ivig",)
    assert config.baseline_window_days == 14
    assert config.covariates == Config().covariates


def test_sensitivity_parts_can_be_switched_off_one_by_one(tmp_path):
    (tmp_path / "registry.toml").write_text('sensitivity_analyses = ["overlap"]\nweight_truncation_percentile = 99\n')
    config = load_config(tmp_path / "registry.toml")
    assert config.sensitivity_analyses == ("overlap",) and config.weight_truncation_percentile == 99


@pytest.mark.parametrize(
    "text, message",
    [
        ("landmark = 1", "unknown key(s) landmark; known: data_cutoff"),
        ('data_cutoff = "30/06/2021"', "data_cutoff: '30/06/2021' is not a date (write it unquoted, e.g. 2021-06-30)"),
        ('steroid_sparing_drugs = ["aspirin"]', "steroid_sparing_drugs: unknown drug(s) aspirin"),
        ("baseline_window_days = -3", "baseline_window_days: -3 is not a whole number of days"),
        ('landmarks = { "6 months" = 0 }', "landmarks: {'6 months': 0} must map names to days"),
        ("covariates = 3", "covariates: 3 is not a list of names"),
        ('firth_on_separation = "yes"', "firth_on_separation: 'yes' is not true or false"),
        ("data_cutoff = ", "Invalid value"),
        (
            'sensitivity_analyses = ["iptw", "matching"]',
            "sensitivity_analyses: unknown part(s) matching; known: iptw, overlap",
        ),
        (
            "weight_truncation_percentile = 100",
            "weight_truncation_percentile: 100 is not 0 (none) or a percentile from 50 to 99",
        ),
        ("imputations = 1", "imputations: 1 is not a whole number of at least 2"),
        ('evalue_outcome = "often"', "evalue_outcome: 'often' is not 'common' or 'rare'"),
    ],
)
def test_bad_configuration_is_refused_with_the_key_named(tmp_path, text, message):
    (tmp_path / "registry.toml").write_text(text + "\n")
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path / "registry.toml")
    assert message in str(refused.value)
