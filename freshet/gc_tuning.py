"""The garbage collector's thresholds for freshet's long-running processes.

The engine allocates millions of small objects per second (decoded events, encoded
records, output tuples) and holds millions more (pending predictions, key indexes).
With CPython's default young threshold (700 allocations) the collector runs every
few hundred records and its older generations rescan everything held: on
``freshet replay`` of a 200k-event log it was about a third of the run
(``bench/replay_gc.py``). The engine makes no reference cycles on its hot path, so
collections are made rarer (``FRESHET_GC_YOUNG_THRESHOLD``), not disabled, and the
objects alive at start-up (modules, settings, the catalog) are frozen out of them.
"""

from __future__ import annotations

import gc


def tune_gc(young: int) -> tuple[int, int, int]:
    """Collect the young generation every ``young`` allocations (older ones as CPython
    does: every 10 collections of the one below); freeze what exists now. The previous
    thresholds.

    >>> old = tune_gc(50_000)
    >>> gc.get_threshold()
    (50000, 10, 10)
    >>> _ = gc.set_threshold(*old)
    """
    previous = gc.get_threshold()
    gc.set_threshold(young, 10, 10)
    gc.freeze()
    return previous
