"""registry.analysis.threads: pieces of an analysis side by side, their results in order, their errors raised."""

from __future__ import annotations

import threading

import pytest

from registry.analysis.imputation import ImputationError
from registry.analysis.threads import MIN_ROWS, cores, map_in_threads


def test_large_pieces_run_in_threads_small_ones_in_turn():
    seen: set[str] = set()

    def piece(i):
        seen.add(threading.current_thread().name)
        return i * i

    assert map_in_threads(piece, range(8), rows=MIN_ROWS - 1) == [i * i for i in range(8)]
    assert seen == {threading.main_thread().name}
    seen.clear()
    assert map_in_threads(piece, range(8), rows=MIN_ROWS) == [i * i for i in range(8)]
    assert threading.main_thread().name not in seen or cores() < 2


def test_an_error_in_a_thread_is_raised_with_its_message():
    def piece(i):
        if i == 3:
            raise ImputationError("fvc: its imputation model cannot be estimated")
        return i * i

    assert map_in_threads(piece, range(3), rows=MIN_ROWS) == [0, 1, 4]
    with pytest.raises(ImputationError, match=r"^fvc: its imputation model cannot be estimated$"):
        map_in_threads(piece, range(6), rows=MIN_ROWS)
