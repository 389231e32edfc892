"""How the report prints numbers: one place, so the PDF and its tests agree.

Rounding is presentation, not analysis: the results document keeps full precision.
"""

from __future__ import annotations

#: What a value that does not exist prints as (an en dash).
NONE = "\u2013"


def format_p(p: float | None) -> str:
    """Three decimals, or "< 0.001"; a test that was not possible prints an en dash."""
    if p is None:
        return NONE
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def format_ratio(value: float | None) -> str:
    """Hazard ratios and their limits: three decimals (as the reference study prints them)."""
    return NONE if value is None else f"{value:.3f}"


def format_percent(value: float | None, decimals: int = 1) -> str:
    return NONE if value is None else f"{value:.{decimals}f}%"


def format_proportion(value: float | None) -> str:
    """A probability (0-1) as a percentage with one decimal."""
    return NONE if value is None else f"{100 * value:.1f}%"


def format_days(value: float | None) -> str:
    """A time in days: whole, or with the half a median at the midpoint of an interval has (R's quantile rule)."""
    return NONE if value is None else f"{value:.1f}" if value % 1 else f"{value:.0f}"


def format_smd(value: float | None) -> str:
    """A standardised mean difference: three decimals, no minus sign on a difference that rounds to zero."""
    if value is None:
        return NONE
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def format_estimate(estimate: dict[str, float | None]) -> str:
    """A probability with its 95% interval, "57.3% (40.5%-75.3%)", or "(not estimable)" where a limit does not
    exist (R's NA)."""
    value, lower, upper = estimate["value"], estimate["lower"], estimate["upper"]
    if lower is None or upper is None:
        return f"{format_proportion(value)} (not estimable)"
    return f"{format_proportion(value)} ({format_proportion(lower)}\u2013{format_proportion(upper)})"
