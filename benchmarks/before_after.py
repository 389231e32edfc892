"""The everyday commands before and after a change: another commit's code beside this checkout's, on one machine.

Run:

    .venv/bin/python -m benchmarks.before_after --before 044d5ca --patients 100000 --repeats 3

A temporary git worktree holds the code of BEFORE. Each command runs as ``python -m registry ...`` in this
virtualenv, with that worktree first on PYTHONPATH (before) or without it (this checkout, after), the two
alternating within each round so that both see the same machine; the dependencies are this virtualenv's for both.
The registry is ``registry synth --patients N --seed 1`` imported once into SQLite by this checkout (untimed). The
commands: ``--version``, ``check``, ``analyze --json``, ``report --out`` on it, and ``demo --dir`` (the 61-patient
demo from scratch). Each figure is the median of the rounds (the range in brackets), wall time from start to exit
and the peak resident set size (benchmarks.scale.run). Figures go to docs/benchmarks.md (section
``before_after``), measured and never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import DOCS, REPO, machine, write_section
from benchmarks.scale import Run, code_version, cpu_model, ram_gb, register_sites, run, synthesise

#: The commands, by label: their arguments (DIR is the round's scratch folder) and whether they read the registry.
COMMANDS = {
    "registry --version": (["--version"], False),
    "registry check": (["check"], True),
    "registry analyze": (["analyze", "--json", "DIR/results.json"], True),
    "registry report": (["report", "--out", "DIR/report.pdf"], True),
    "registry demo (61 patients, from scratch)": (["demo", "--dir", "DIR/demo"], False),
}

#: A change of the median smaller than this (relative) is called the same: rounds of one command vary as much.
SAME = 0.03


@contextmanager
def worktree(revision: str) -> Iterator[tuple[Path, str]]:
    """A temporary worktree of ``revision``, and the commit it is."""
    with tempfile.TemporaryDirectory(prefix="registry-before-") as tmp:
        folder = Path(tmp) / "code"
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=REPO, check=True,
                       capture_output=True)  # fmt: skip
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, check=True,
                                    capture_output=True, text=True).stdout.strip()  # fmt: skip
            yield folder, commit
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO, capture_output=True)


def measure(code: Path | None, args: list[str], url: str, work: Path) -> Run:
    """One command of the code in ``code`` (None: this checkout), in a process of its own."""
    environment = {"REGISTRY_DATABASE_URL": url, "PYTHONPATH": str(code) if code else ""}  # empty: ignored
    arguments = [argument.replace("DIR", str(work)) for argument in args]
    return run([sys.executable, "-m", "registry", *arguments], work, environment)


def _cell(runs: list[Run]) -> str:
    if any(r.code != 0 for r in runs):
        failed = next(r for r in runs if r.code != 0)
        return f"failed (exit {failed.code}: {failed.error()})"
    seconds = [r.seconds for r in runs]
    peaks = [r.peak_mb for r in runs if r.peak_mb is not None]
    spread = f" ({min(seconds):.2f}-{max(seconds):.2f})" if len(seconds) > 1 else ""
    memory = f", {statistics.median(peaks):,.0f} MB" if peaks else ""
    return f"{statistics.median(seconds):.2f} s{spread}{memory}"


def _change(before: list[Run], after: list[Run]) -> str:
    if any(r.code != 0 for r in [*before, *after]):
        return "n/a"
    ratio = statistics.median(r.seconds for r in after) / statistics.median(r.seconds for r in before)
    if abs(ratio - 1) <= SAME:
        return f"{ratio:.2f} (the same, within {SAME:.0%})"
    return f"{ratio:.2f} ({1 / ratio:.1f}x faster)" if ratio < 1 else f"{ratio:.2f} ({ratio:.1f}x slower)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit (or any revision) to compare with")
    parser.add_argument("--patients", type=int, default=100_000, help="size of the synthetic registry")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (the median is reported)")
    parser.add_argument("--output", type=Path, default=DOCS)
    args = parser.parse_args()
    after_code = code_version()
    results: dict[str, dict[str, list[Run]]] = {name: {"before": [], "after": []} for name in COMMANDS}
    with worktree(args.before) as (before_code, before_commit), tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        print(f"{args.patients:,} patients: registry synth and import ...", file=sys.stderr, flush=True)
        made = synthesise(args.patients, 1, scratch)
        if made.error:
            raise SystemExit(made.error)
        url = f"sqlite:///{scratch / 'registry.db'}"
        register_sites(url, made.sites)
        imported = measure(None, ["import", str(made.folder)], url, scratch / "import")
        if imported.code != 0:
            raise SystemExit(f"registry import failed: {imported.error()}")
        for round_ in range(args.repeats):
            print(f"round {round_ + 1} of {args.repeats} ...", file=sys.stderr, flush=True)
            for name, (arguments, _) in COMMANDS.items():
                for side, code in (("before", before_code), ("after", None)):
                    work = scratch / f"{side}-{round_}-{len(results[name][side])}"
                    results[name][side].append(measure(code, arguments, url, work))
    lines = [
        "## Before and after a change, side by side (`benchmarks/before_after.py`)",
        "",
        f"Machine: {machine()}; {cpu_model()}, {ram_gb()}; SQLite file database. Before: commit {before_commit} "
        f"({args.before}); after: {after_code}. Registry: `registry synth --patients {args.patients} --seed 1`, "
        f"imported. Median of {args.repeats} round(s) (range in brackets) and peak memory.",
        "",
        f"| command | before ({before_commit}) | after | after / before |",
        "|---|---|---|---|",
    ]
    for name, (_, reads) in COMMANDS.items():
        label = f"`{name}`" + (f", {args.patients:,} patients" if reads else "")
        before, after = results[name]["before"], results[name]["after"]
        lines.append(f"| {label} | {_cell(before)} | {_cell(after)} | {_change(before, after)} |")
    lines += [
        "",
        *textwrap.wrap(
            "How: a temporary git worktree of the earlier commit is run with `python -m registry` from this "
            "virtualenv, that worktree first on PYTHONPATH, alternating with this checkout command by command "
            "within each round; each run is a process of its own, wall time from start to exit, peak resident "
            "set size from `/usr/bin/time -v`. Figures are measured, never asserted.",
            width=110,
        ),
        "",
    ]
    write_section("before_after", lines, args.output)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
