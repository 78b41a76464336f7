"""Giving freed native memory back to the system (glibc's ``malloc_trim``), periodically.

Measured in a soak (one worker at 1,000 events/s, 25 minutes in): of its 460 MiB RSS,
211 MiB was memory already freed but still resident in glibc's malloc arenas; one
``malloc_trim(0)`` (called from outside with gdb) took the RSS to 249 MiB. librdkafka
allocates fetched and produced messages in its own threads, Python's larger objects
come from the threads that make them, and glibc gives a thread arena's memory back
only from its top: without a trim the RSS climbs to the high-water mark of every
arena and stays there, which a soak reads as growth.

``FRESHET_MALLOC_TRIM_INTERVAL_MS`` (0: never) trims that often, from a daemon thread
of its own (a trim locks one arena at a time; in a soak 60 trims gave back ~65 MiB each
on average and the slowest took 132 ms). Where the C library has no ``malloc_trim``
(musl, macOS) nothing is done.

``FRESHET_MALLOC_ARENA_MAX`` (2; 0: glibc's default of 8 per core) caps the number of
arenas, set first thing in a process (:func:`limit_arenas`): with one arena per
thread that ever allocated (librdkafka's, the commit thread, the web server's) each
climbs to its own high-water mark, and freed memory in one is no use to another. In
the 30-minute soak the worker grew 11.2 % and 10.7 % after its warm-up with glibc's
default and 4.6 %, 7.0 % and 6.2 % with two arenas, ending ~35 MiB lower (``bench/soak.py``,
see the README).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """This process's resident set size, or None where ``/proc`` is not there.

    >>> (rss_bytes() or 1) > 0
    True
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


#: mallopt's parameter for the arena cap (glibc's malloc.h)
_M_ARENA_MAX = -8


def limit_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (0: leave glibc's default); whether it was
    applied (False where the C library has no ``mallopt``). Call it before threads start:
    arenas made already stay.

    >>> limit_arenas(0)
    False
    """
    if arenas < 0:
        raise ValueError(f"arenas must be >= 0, got {arenas}")
    if arenas == 0:
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, or None where it cannot be loaded."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def _libc_trim() -> Callable[[], int] | None:
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


class MallocTrimmer:
    """Calls ``malloc_trim(0)`` every ``interval_ms`` in a daemon thread; counts what it gave back.

    >>> t = MallocTrimmer(0, trim=lambda: 1)
    >>> t.trim_once()["malloc_trims"], t.running
    (1, False)
    """

    def __init__(self, interval_ms: int, trim: Callable[[], int] | None = None) -> None:
        if interval_ms < 0:
            raise ValueError(f"interval_ms must be >= 0, got {interval_ms}")
        self.interval_ms = interval_ms
        self._trim = trim if trim is not None else _libc_trim()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.trims = 0
        self.released_bytes = 0
        self.last_released_bytes = 0
        self.max_ms = 0.0

    @property
    def available(self) -> bool:
        """True where the C library can trim."""
        return self._trim is not None

    @property
    def running(self) -> bool:
        """True while the trimming thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def trim_once(self) -> dict[str, Any]:
        """Trim now; :meth:`stats` after it."""
        if self._trim is None:
            return self.stats()
        before = rss_bytes()
        started = time.perf_counter()
        self._trim()
        took_ms = (time.perf_counter() - started) * 1000
        after = rss_bytes()
        released = max(0, before - after) if before is not None and after is not None else 0
        with self._lock:
            self.trims += 1
            self.released_bytes += released
            self.last_released_bytes = released
            self.max_ms = max(self.max_ms, took_ms)
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """Trims so far, bytes they gave back (by RSS), the slowest, the RSS now."""
        with self._lock:
            return {"rss_bytes": rss_bytes(), "malloc_trims": self.trims,
                    "malloc_trim_released_bytes": self.released_bytes,
                    "malloc_trim_last_released_bytes": self.last_released_bytes,
                    "malloc_trim_ms_max": round(self.max_ms, 3),
                    "malloc_trim_interval_ms": self.interval_ms if self.available else 0}

    def start(self) -> MallocTrimmer:
        """Start trimming every ``interval_ms`` (nothing if 0 or not available)."""
        if self.interval_ms == 0 or self._trim is None or self.running:
            if self.interval_ms and self._trim is None:
                log.info("this C library has no malloc_trim: freed memory is not trimmed")
            return self
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.interval_ms / 1000):
                self.trim_once()

        self._thread = threading.Thread(target=loop, name="freshet-malloc-trim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (it ends within one interval's wait)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


_process_trimmer: MallocTrimmer | None = None


def start_trimming(interval_ms: int) -> MallocTrimmer:
    """Start the process's one trimmer (a second call returns the running one)."""
    global _process_trimmer
    if _process_trimmer is None:
        _process_trimmer = MallocTrimmer(interval_ms).start()
    return _process_trimmer


def process_trimmer() -> MallocTrimmer | None:
    """The trimmer :func:`start_trimming` started in this process, if any."""
    return _process_trimmer
