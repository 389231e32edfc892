"""Independent pieces of an analysis (the chains of a multiple imputation, the fits that are pooled) run side by
side on the machine's cores.

Threads, not processes: numpy's sorts, gathers and matrix products run outside the interpreter lock, and the web
application renders reports in threads of its own, where forking is not safe. They are used only where BLAS runs on
one thread, as the console command has it (registry.cli.run sets it before numpy loads): beside BLAS's own threads
ours only fight them for the cores (100,000 patients: the imputation took 46 s in two threads with OpenBLAS on two,
10.6 s in turn, 7.4 s in two threads with OpenBLAS on one). The thread count is read, never changed: changing it while
other work runs would make that work's last digits depend on timing. The results are those of running the pieces
one after another, in order: each piece has its own data and random stream.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Below this many rows a piece takes a few milliseconds, and starting threads costs more than it saves.
MIN_ROWS = 10_000


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or a scheduler may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_in_threads(function: Callable[[Item], Result], items: Iterable[Item], *, rows: int) -> list[Result]:
    """``[function(item) for item in items]``, in threads (one per core) when the pieces are of ``rows`` rows or more
    and BLAS runs on one thread; an exception raised by a piece is raised here."""
    items = list(items)
    workers = min(len(items), cores())
    if rows < MIN_ROWS or workers < 2 or blas_threads() > 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


def blas_threads() -> int:
    """The threads of the BLAS libraries numpy has loaded (the most of any), as threadpoolctl reads them."""
    from threadpoolctl import threadpool_info  # imported where threads may be used: small analyses never do

    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=1)
