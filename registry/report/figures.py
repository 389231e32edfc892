"""Report figures as SVG text: Kaplan-Meier curves with numbers at risk, forest plots.

Figures draw what the results document holds and compute nothing: the step data,
confidence bands, censoring times, numbers at risk and p-values all come from
:func:`registry.analysis.run.analyze`. The SVG is deterministic (fixed id salt, no
date), so the same results give byte-identical figure files, and its text stays
text, so the numbers on a figure can be read back from the PDF.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.ticker
from matplotlib.figure import Figure

from registry.report.numbers import format_p

#: Per group: colour, line style and censoring mark; solid vs dashed keeps them apart in greyscale.
STYLES = {
    "tofacitinib": ("#1f4e79", "-", "|"),
    "tacrolimus": ("#b8460b", "--", "x"),
}
FALLBACK_STYLES = [("#2e7d32", "-.", "+"), ("#6a1b9a", ":", "1")]
RC = {
    "svg.hashsalt": "mda5-registry",
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
#: Hazard-ratio axis labels (log scale), as plain numbers.
LOG_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
#: Largest number of labelled times on the x axis (and columns of the at-risk table).
MAX_TICKS = 9


def _style(group: str, n: int) -> tuple[str, str, str]:
    return STYLES.get(group, FALLBACK_STYLES[n % len(FALLBACK_STYLES)])


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


def tick_days(available: Sequence[int], horizon: float) -> list[int]:
    """At-risk times for the axis: an even spacing of the computed ones, at most MAX_TICKS."""
    days = sorted(d for d in available if d <= horizon)
    step = 1
    while len(days[::step]) > MAX_TICKS:
        step += 1
    return days[::step]


def km_figure(survival: dict[str, Any], title: str, p_value: float | None) -> str:
    """Kaplan-Meier curves per group with 95% bands, censoring marks, log-rank p and numbers at risk."""
    groups = survival["groups"]
    horizon = max((max(g["curve"]["time"]) for g in groups.values() if g["curve"]["time"]), default=0.0)
    with mpl.rc_context(RC):
        figure = Figure(figsize=(6.6, 4.4))
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4, 1.2], "hspace": 0.22})
        ticks = tick_days([int(d) for d in next(iter(groups.values()))["at_risk"]], horizon) if groups else []
        for n, (name, group) in enumerate(groups.items()):
            colour, line, mark = _style(name, n)
            curve = group["curve"]
            top.step(curve["time"], curve["survival"], where="post", color=colour, linestyle=line, linewidth=1.6,
                     label=f"{name} (n = {curve['n']}, deaths {curve['events']})")  # fmt: skip
            lower = [v if v is not None else math.nan for v in curve["lower"]]
            upper = [v if v is not None else math.nan for v in curve["upper"]]
            top.fill_between(curve["time"], lower, upper, step="post", color=colour, alpha=0.13, linewidth=0)
            censored = sorted(set(curve["censored_times"]))  # one mark per time: a large cohort stacks many
            top.plot(censored, [_survival_at(curve, t) for t in censored], linestyle="none", marker=mark,
                     color=colour, markersize=6)  # fmt: skip
            for x in ticks:
                bottom.text(x, -n, str(group["at_risk"][str(x)]), ha="center", va="center", color=colour)
        top.set_ylim(0, 1.02)
        top.set_ylabel("Survival probability")
        top.set_title(title, loc="left", fontsize=10)
        top.legend(loc="upper right", frameon=False)
        if p_value is not None:
            top.set_title(f"log-rank p = {format_p(p_value)} (full follow-up)", loc="right", fontsize=9)
        bottom.set_ylim(-len(groups) + 0.5, 0.5)
        bottom.set_yticks([-n for n in range(len(groups))], list(groups))
        bottom.tick_params(axis="y", length=0, pad=14)
        bottom.spines["left"].set_visible(False)
        bottom.set_xticks(ticks)
        bottom.set_xlabel("Days since the first study-drug dose")
        bottom.set_title("Number at risk", loc="left", fontsize=8, pad=4)
        top.set_xlim(0, horizon * 1.02 if horizon else 1)
        return _svg(figure)


def _survival_at(curve: dict[str, Any], t: float) -> float:
    """The step function's value at ``t`` (the last step at or before it)."""
    value = 1.0
    for time, survival in zip(curve["time"], curve["survival"], strict=True):
        if time > t:
            break
        value = survival
    return value


def forest_figure(terms: Sequence[dict[str, Any]], title: str) -> str:
    """Hazard ratios with 95% CIs on a log axis, one row per term, the line of no effect at 1."""
    with mpl.rc_context(RC):
        figure = Figure(figsize=(6.6, 0.45 * len(terms) + 1.0))
        axes = figure.subplots()
        rows = list(range(len(terms)))[::-1]
        for row, term in zip(rows, terms, strict=True):
            axes.plot([term["lower"], term["upper"]], [row, row], color="#333333", linewidth=1.4)
            axes.plot([term["hr"]], [row], marker="s", color="#1f4e79", markersize=6)
        axes.axvline(1, color="#888888", linestyle="--", linewidth=1)
        axes.set_xscale("log")
        limits = [t[k] for t in terms for k in ("lower", "upper") if t[k]]
        ticks = [v for v in LOG_TICKS if min(limits, default=1) / 1.5 <= v <= max(limits, default=1) * 1.5]
        axes.set_xticks(ticks, [f"{v:g}" for v in ticks])
        axes.xaxis.set_minor_locator(mpl.ticker.NullLocator())
        axes.set_yticks(rows, [t["name"] for t in terms])
        axes.set_ylim(-0.7, len(terms) - 0.3)
        axes.set_xlabel("Hazard ratio (95% CI), log scale")
        axes.set_title(title, loc="left", fontsize=10)
        return _svg(figure)
