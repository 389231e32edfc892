"""E-values against the published example and hand calculations."""

import pytest

from registry.analysis.evalue import evalue, risk_ratio


def test_the_published_example_of_vanderweele_and_ding():
    """Ann Intern Med 2017;167:268: RR 3.9 (95% CI 1.8-8.7) has E-value 7.26, and 3.0 for the lower limit."""
    found = evalue(3.9, 1.8, 8.7, outcome="rare")
    assert found.estimate == pytest.approx(7.26, abs=0.005)
    assert found.limit == pytest.approx(3.0, abs=1e-12)  # 1.8 + sqrt(1.8 * 0.8) = 1.8 + 1.2


def test_a_protective_hazard_ratio_of_a_common_outcome_by_hand():
    """HR 0.5: RR = (1 - 0.5^0.7071) / (1 - 0.5^1.4142) = 0.38745 / 0.62479 = 0.62014; 1 / RR = 1.61255;
    E = 1.61255 + sqrt(1.61255 x 0.61255) = 1.61255 + 0.99386 = 2.6064. The limit closest to 1 is the upper, 0.8."""
    assert risk_ratio(0.5, "common") == pytest.approx(0.62014, abs=1e-5)
    found = evalue(0.5, 0.3, 0.8)
    assert found.estimate == pytest.approx(2.6064, abs=1e-4)
    rr = 1 / risk_ratio(0.8, "common")
    assert found.limit == pytest.approx(rr + (rr * (rr - 1)) ** 0.5, rel=1e-12)
    assert found.conversion == "common"


def test_an_interval_that_includes_one_has_limit_e_value_one():
    assert evalue(0.5, 0.3, 1.2).limit == 1.0
    assert evalue(1.0, 0.5, 2.0).estimate == 1.0


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"^the hazard ratio 0\.5 is not inside its interval 0\.6-0\.8$"):
        evalue(0.5, 0.6, 0.8)
    with pytest.raises(ValueError, match=r"^unknown outcome frequency 'often': choose one of common, rare$"):
        evalue(0.5, 0.3, 0.8, outcome="often")
