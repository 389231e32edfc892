"""Report figures as SVG text: Kaplan-Meier curves with numbers at risk, forest plots.

Figures draw what the results document holds and compute no statistic: the step data,
confidence bands, censoring times, numbers at risk and p-values all come from
:func:`registry.analysis.run.analyze`. A large cohort has more steps and censoring times
than the figure has points, so they are thinned to the figure's resolution (within a
point, 1/72 inch, of the full curves) and the censoring marks are drawn as one path:
the SVG, and the time to render it into the PDF, stay bounded however large the cohort.
The SVG is deterministic (fixed id salt, no date), so the same results give
byte-identical figure files, and its text stays text, so the numbers on a figure can
be read back from the PDF.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.ticker
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle
from matplotlib.patches import PathPatch
from matplotlib.path import Path
from matplotlib.transforms import ScaledTranslation

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
#: Size of the censoring marks, in points.
MARK_SIZE = 6.0
#: Points per inch: the unit of matplotlib's SVG, and the resolution steps and marks are thinned to.
POINTS_PER_INCH = 72


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


def _none_as_nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def _draw_curves(axes: Axes, curves: dict[str, dict[str, Any]], labels: dict[str, str]) -> None:
    """Each group's Kaplan-Meier step curve with its 95% band and censoring marks, thinned to the axes' resolution
    (limits set first)."""
    per_point = data_per_point(axes)
    for n, (name, curve) in enumerate(curves.items()):
        colour, line, mark = _style(name, n)
        time = np.asarray(curve["time"], dtype=float)
        estimate = np.asarray(curve["survival"], dtype=float)
        lower, upper = _none_as_nan(curve["lower"]), _none_as_nan(curve["upper"])
        kept = thin_steps(time, [estimate, lower, upper], per_point[0])
        _step_with_band(axes, time[kept], estimate[kept], (lower[kept], upper[kept]), (colour, line), labels[name])
        censored = np.asarray(curve["censored_times"], dtype=float)
        marks = thin_marks(censored, step_values(time, estimate, censored), per_point)
        axes.add_patch(marks_patch(marks, mark, per_point, colour))


def _step_with_band(
    axes: Axes,
    time: np.ndarray,
    estimate: np.ndarray,
    band: tuple[np.ndarray, np.ndarray],
    style: tuple[str, str],
    label: str,
) -> None:
    """A step function (steps after each time) in ``style`` (colour, line style) with its 95% band shaded."""
    colour, line = style
    axes.step(time, estimate, where="post", color=colour, linestyle=line, linewidth=1.6, label=label)
    axes.fill_between(time, *band, step="post", color=colour, alpha=0.13, linewidth=0)


#: The time axis of every curve figure.
DAYS_LABEL = "Days since the first study-drug dose"


def _horizon(times: Sequence[Sequence[float]]) -> float:
    return max((max(t) for t in times if t), default=0.0)


def _probability_over_time(axes: Axes, horizon: float) -> None:
    """The limits of a curve of probabilities over follow-up: days from 0 to just past ``horizon``, 0 to 1."""
    axes.set_xlim(0, horizon * 1.02 if horizon else 1)
    axes.set_ylim(0, 1.02)


def km_figure(survival: dict[str, Any], title: str, p_value: float | None) -> str:
    """Kaplan-Meier curves per group with 95% bands, censoring marks, log-rank p and numbers at risk."""
    groups = survival["groups"]
    horizon = _horizon([g["curve"]["time"] for g in groups.values()])
    with mpl.rc_context(RC):
        figure = Figure(figsize=(6.6, 4.4))
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4, 1.2], "hspace": 0.22})
        _probability_over_time(top, horizon)
        ticks = tick_days([int(d) for d in next(iter(groups.values()))["at_risk"]], horizon) if groups else []
        curves = {name: group["curve"] for name, group in groups.items()}
        labels = {name: f"{name} (n = {c['n']}, deaths {c['events']})" for name, c in curves.items()}
        _draw_curves(top, curves, labels)
        for n, (name, group) in enumerate(groups.items()):
            colour = _style(name, n)[0]
            for x in ticks:
                bottom.text(x, -n, str(group["at_risk"][str(x)]), ha="center", va="center", color=colour)
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
        bottom.set_xlabel(DAYS_LABEL)
        bottom.set_title("Number at risk", loc="left", fontsize=8, pad=4)
        return _svg(figure)


def weighted_km_figure(weighting: dict[str, Any], title: str) -> str:
    """One weighting's weighted Kaplan-Meier curves with 95% bands; effective sample sizes in the legend (weighted
    numbers at risk are not counts, so there is no at-risk table)."""
    curves = weighting["curves"]
    horizon = _horizon([c["time"] for c in curves.values()])
    with mpl.rc_context(RC):
        figure = Figure(figsize=(6.6, 3.6))
        axes = figure.subplots()
        _probability_over_time(axes, horizon)
        ess = weighting["effective_sample_size"]
        _draw_curves(axes, curves, {name: f"{name} (effective n = {ess[name]:.1f})" for name in curves})
        axes.set_ylabel("Survival probability (weighted)")
        axes.set_xlabel(DAYS_LABEL)
        axes.set_title(title, loc="left", fontsize=10)
        axes.legend(loc="upper right", frameon=False)
        return _svg(figure)


#: Marker and colour of each weighting in the love plot (unweighted: an open grey circle).
BALANCE_MARKERS = [("s", "#1f4e79"), ("^", "#b8460b"), ("D", "#2e7d32")]
#: Space between the bottom of an axes and a legend set below it, in points: room for the tick labels and x label.
BELOW_AXES = 34


def _absolute(value: float | None) -> float:
    return math.nan if value is None else abs(value)


def love_figure(weightings: dict[str, dict[str, Any]], threshold: float) -> str:
    """A love plot as R's cobalt draws it: the absolute standardised mean difference of each covariate (those of the
    first weighting, in its order, first at the top), unweighted and under each weighting, the threshold dashed."""
    first = next(iter(weightings.values()))["balance"]
    names = [b["covariate"] for b in first]
    rows = np.arange(len(names))[::-1]
    with mpl.rc_context(RC):
        figure = Figure(figsize=(6.6, 0.32 * len(names) + 1.3))
        axes = figure.subplots()
        before = np.array([_absolute(b["smd_before"]) for b in first])
        axes.plot(before, rows, linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="#777777",
                  markersize=7, label="Unweighted", clip_on=False)  # fmt: skip
        largest = np.nanmax([*before, threshold])
        for weighting, (marker, colour) in zip(weightings.values(), BALANCE_MARKERS, strict=False):
            smd = {b["covariate"]: _absolute(b["smd_after"]) for b in weighting["balance"]}
            after = np.array([smd.get(name, math.nan) for name in names])
            largest = np.nanmax([largest, *after])
            axes.plot(after, rows, linestyle="none", marker=marker, color=colour, markersize=5.5,
                      label=weighting["label"], clip_on=False)  # fmt: skip
        axes.axvline(threshold, color="#888888", linestyle="--", linewidth=1, label=f"Threshold ({threshold:g})")
        axes.set_xlim(0, largest * 1.1)
        axes.set_yticks(rows, names)
        axes.tick_params(axis="y", length=0)
        axes.set_ylim(-0.7, len(names) - 0.3)
        axes.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        axes.set_xlabel("Absolute standardised mean difference")
        axes.set_title("Covariate balance", loc="left", fontsize=10)
        below = axes.transAxes + ScaledTranslation(0, -BELOW_AXES / POINTS_PER_INCH, figure.dpi_scale_trans)
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, ncols=2, frameon=False,
                    fontsize=8)  # fmt: skip
        return _svg(figure)


def propensity_shares(distribution: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each group's share of patients per bin of the propensity score: the heights the overlap figure draws."""
    return {group: np.asarray(c, dtype=float) / max(sum(c), 1) for group, c in distribution["counts"].items()}


def propensity_figure(distribution: dict[str, Any], title: str = "Overlap of the propensity score") -> str:
    """Mirrored histograms of the propensity score: tofacitinib above the axis (the first group if none is), the
    others below, each as shares of its own patients so that groups of different sizes compare (as cobalt's
    ``bal.plot(type = "histogram", mirror = TRUE)``). Each bar with patients has the id ``propensity-GROUP-BIN``."""
    edges = np.asarray(distribution["edges"], dtype=float)
    shares = propensity_shares(distribution)
    above = "tofacitinib" if "tofacitinib" in shares else next(iter(shares), None)
    order = sorted(shares, key=lambda group: group != above)  # the group above first, in the legend too
    with mpl.rc_context(RC):
        figure = Figure(figsize=(6.6, 3.2))
        axes = figure.subplots()
        for group in order:
            sign = 1 if group == above else -1
            colour = _style(group, list(shares).index(group))[0]
            drawn = np.flatnonzero(shares[group] > 0)
            bars = axes.bar(edges[drawn], sign * shares[group][drawn], width=np.diff(edges)[drawn], align="edge",
                            color=colour, alpha=0.75, edgecolor="white", linewidth=0.4,
                            label=f"{group} ({'above' if sign > 0 else 'below'})")  # fmt: skip
            for index, bar in zip(drawn, bars, strict=True):
                bar.set_gid(f"propensity-{group}-{index}")
        axes.axhline(0, color="#333333", linewidth=0.8)
        top = max((s.max() for s in shares.values() if len(s)), default=0.0) * 1.1 or 0.1
        axes.set_ylim(-top, top)
        axes.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{abs(v):.0%}"))
        axes.set_xlim(0, 1)
        axes.set_xlabel("Propensity score (probability of tofacitinib)")
        axes.set_ylabel("Proportion of the group")
        axes.set_title(title, loc="left", fontsize=10)
        axes.legend(loc="upper right", frameon=False, fontsize=8)
        return _svg(figure)


#: The competing event's dotted line for each line style of death: dense or sparse dots keep groups apart in greyscale.
COMPETING_DOTS = {"-": (0, (1, 1.5)), "--": (0, (1, 4)), "-.": (0, (4, 2, 1, 2)), ":": (0, (1, 7))}


def cumulative_incidence_figure(groups: dict[str, dict[str, Any]], title: str) -> str:
    """Per group the cumulative incidence of death in the group's line style with its 95% band (where the group
    gives one) and, thinner and dotted in the same colour, of the competing event; steps thinned as km_figure's."""
    horizon = _horizon([g["time"] for g in groups.values()])
    with mpl.rc_context(RC):
        figure = Figure(figsize=(6.6, 3.6))
        axes = figure.subplots()
        _probability_over_time(axes, horizon)
        width = data_per_point(axes)[0]
        for n, (name, curve) in enumerate(groups.items()):
            colour, line, _ = _style(name, n)
            time = np.asarray(curve["time"], dtype=float)
            death, competing = np.asarray(curve["death"], dtype=float), np.asarray(curve["competing"], dtype=float)
            missing = [None] * len(time)
            lower = _none_as_nan(curve.get("death_lower") or missing)
            upper = _none_as_nan(curve.get("death_upper") or missing)
            kept = thin_steps(time, [death, lower, upper, competing], width)
            _step_with_band(axes, time[kept], death[kept], (lower[kept], upper[kept]), (colour, line),
                            f"{name}: death")  # fmt: skip
            axes.step(time[kept], competing[kept], where="post", color=colour, linestyle=COMPETING_DOTS[line],
                      linewidth=1.2, label=f"{name}: {curve.get('competing_label', 'competing event')}")  # fmt: skip
        axes.set_ylabel("Cumulative incidence")
        axes.set_xlabel(DAYS_LABEL)
        axes.set_title(title, loc="left", fontsize=10)
        axes.legend(loc="upper left", frameon=False, fontsize=8)
        return _svg(figure)


def data_per_point(axes: Axes) -> tuple[float, float]:
    """Data units per point of the figure along x and y of ``axes`` (linear scales, limits set)."""
    box = axes.get_position()
    width, height = axes.figure.get_size_inches() * POINTS_PER_INCH
    (x0, x1), (y0, y1) = axes.get_xlim(), axes.get_ylim()
    return (x1 - x0) / (box.width * width), (y1 - y0) / (box.height * height)


def step_values(time: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The step function's value at each of ``at`` (the last step at or before it; 1 before the first)."""
    before = np.searchsorted(time, at, side="right") - 1
    return np.where(before >= 0, values[np.maximum(before, 0)], 1.0)


def thin_steps(time: np.ndarray, series: list[np.ndarray], width: float) -> np.ndarray:
    """Indices of the steps to draw so that step functions over ``time`` stay within ``width`` of the full ones.

    In each column ``width`` wide the first and last step are kept, and where each series is
    lowest and highest: the drawn staircase then spans the column's values, so every point of
    the full one lies within a column of it and the other way round. Steps whose value is
    missing are all kept (a band has gaps there). ``time`` is sorted.
    """
    if len(time) == 0:
        return np.arange(0)
    column = np.floor(np.asarray(time) / width).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])
    ends = np.r_[starts[1:], len(time)] - 1
    kept = [starts, ends]
    for values in series:
        missing = np.isnan(values)
        kept.append(np.flatnonzero(missing))
        for pick, fill in ((np.argmin, np.inf), (np.argmax, -np.inf)):
            filled = np.where(missing, fill, values)
            kept.append(
                np.array([start + pick(filled[start : end + 1]) for start, end in zip(starts, ends, strict=True)])
            )
    return np.unique(np.concatenate(kept))


def thin_marks(times: np.ndarray, values: np.ndarray, per_point: tuple[float, float]) -> np.ndarray:
    """The censoring marks to draw, as (time, value) rows: one per point-sized cell of the figure
    (the first there), so every mark of the full set is within a point of a drawn one."""
    if len(times) == 0:
        return np.empty((0, 2))
    cells = np.column_stack([np.floor(times / per_point[0]), np.floor(values / per_point[1])])
    _, first = np.unique(cells, axis=0, return_index=True)
    first.sort()
    return np.column_stack([times[first], values[first]])


def marks_patch(marks: np.ndarray, marker: str, per_point: tuple[float, float], colour: str) -> PathPatch:
    """Every censoring mark as one path (not an SVG element per mark): ``marker``'s strokes,
    MARK_SIZE points wide, at each (time, value) of ``marks``."""
    style = MarkerStyle(marker)
    shape = style.get_path().transformed(style.get_transform())
    codes = shape.codes if shape.codes is not None else [Path.MOVETO] + [Path.LINETO] * (len(shape.vertices) - 1)
    offsets = shape.vertices * MARK_SIZE * np.asarray(per_point)
    vertices = (marks[:, None, :] + offsets[None, :, :]).reshape(-1, 2)
    path = Path(vertices, np.tile(codes, len(marks))) if len(marks) else Path(np.empty((0, 2)))
    width = mpl.rcParams["lines.markeredgewidth"]
    return PathPatch(path, fill=False, edgecolor=colour, linewidth=width, capstyle="butt")


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
