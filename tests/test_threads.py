"""registry.analysis.threads: pieces of an analysis side by side, their results in order, their errors raised."""

from __future__ import annotations

import threading

import pytest

from registry.analysis.imputation import ImputationError
from registry.analysis.threads import MIN_ROWS, cores, map_in_threads


def test_large_pieces_run_in_threads_small_ones_in_turn(one_blas_thread):
    seen: set[str] = set()

    def piece(i):
        seen.add(threading.current_thread().name)
        return i * i

    assert map_in_threads(piece, range(8), rows=MIN_ROWS - 1) == [i * i for i in range(8)]
    assert seen == {threading.main_thread().name}
    seen.clear()
    assert map_in_threads(piece, range(8), rows=MIN_ROWS) == [i * i for i in range(8)]
    assert threading.main_thread().name not in seen or cores() < 2


def test_an_error_in_a_thread_is_raised_with_its_message(one_blas_thread):
    def piece(i):
        if i == 3:
            raise ImputationError("fvc: its imputation model cannot be estimated")
        return i * i

    assert map_in_threads(piece, range(3), rows=MIN_ROWS) == [0, 1, 4]
    with pytest.raises(ImputationError, match=r"^fvc: its imputation model cannot be estimated$"):
        map_in_threads(piece, range(6), rows=MIN_ROWS)


def test_beside_blas_on_several_threads_the_pieces_run_in_turn():
    """BLAS's own threads would fight ours for the cores (the imputation at 100,000 patients: 46 s against 15 s in
    turn): with BLAS on more than one thread, large pieces run in turn, in the caller's thread."""
    from threadpoolctl import threadpool_limits

    seen: set[str] = set()

    def piece(i):
        seen.add(threading.current_thread().name)
        return -i

    with threadpool_limits(limits=2, user_api="blas"):
        assert map_in_threads(piece, range(6), rows=MIN_ROWS) == [0, -1, -2, -3, -4, -5]
    assert seen == {threading.main_thread().name}
