"""E-values (VanderWeele & Ding, Ann Intern Med 2017): how strong unmeasured confounding would have to be.

The E-value of a risk ratio RR (taken as 1 / RR below 1) is RR + sqrt(RR (RR - 1)): the minimum strength of
association, on the risk-ratio scale, that an unmeasured confounder would need with both the exposure and the
outcome to explain the estimate away. For the confidence interval, the E-value of the limit closest to 1, and 1 when
the interval includes 1.

A hazard ratio is a risk ratio only where the outcome is rare (under 15 % by the end of follow-up). Death in
MDA5-ILD is common, so by default the hazard ratio is first converted by VanderWeele's approximation for a common
outcome (Biometrics 2020): RR = (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1 / HR)); ``outcome = "rare"`` takes RR = HR.
These are the formulas of R's EValue package (``evalues.HR(est, lo, hi, rare = ...)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: How a hazard ratio is taken to the risk-ratio scale, by the configuration's name.
OUTCOMES = {
    "common": "hazard ratio converted for a common outcome, RR = (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR))",
    "rare": "hazard ratio taken as a risk ratio (rare outcome)",
}


@dataclass(frozen=True)
class EValue:
    estimate: float  # for the point estimate
    limit: float  # for the confidence limit closest to 1 (1 when the interval includes 1)
    conversion: str  # a key of OUTCOMES


def risk_ratio(hr: float, outcome: str) -> float:
    """``hr`` on the risk-ratio scale, as ``outcome`` ("common" or "rare") says."""
    if outcome == "rare":
        return hr
    if outcome == "common":
        return (1 - 0.5 ** math.sqrt(hr)) / (1 - 0.5 ** math.sqrt(1 / hr))
    raise ValueError(f"unknown outcome frequency {outcome!r}: choose one of {', '.join(OUTCOMES)}")


def _evalue(rr: float) -> float:
    rr = 1 / rr if rr < 1 else rr
    return rr + math.sqrt(rr * (rr - 1))


def evalue(hr: float, lower: float, upper: float, outcome: str = "common") -> EValue:
    """The E-values of a hazard ratio and its 95% confidence interval."""
    if not 0 < lower <= hr <= upper:
        raise ValueError(f"the hazard ratio {hr} is not inside its interval {lower}-{upper}")
    estimate = _evalue(risk_ratio(hr, outcome))
    limit = 1.0 if lower <= 1 <= upper else _evalue(risk_ratio(upper if hr < 1 else lower, outcome))
    return EValue(estimate, limit, outcome)
