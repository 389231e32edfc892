"""The benchmark scripts keep working (their figures are measured, never asserted)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_benchmark_runs_on_a_small_workbook(tmp_path):
    out = tmp_path / "benchmarks.md"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "import_workbook.py"), "--patients", "20", "--output", str(out)],
        check=True,
        capture_output=True,
    )
    assert "Synthetic CSV workbook: 20 patients, 295 rows over 8 sheets." in out.read_text()
