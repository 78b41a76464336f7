"""malloc_trim gives freed native memory back; the trimmer runs on its own and counts it."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

import pytest

from freshet.memory_trim import MallocTrimmer, rss_bytes
from freshet.settings import Settings

# Fragment a thread's malloc arena the way a busy worker does (many mid-size blocks
# freed while a few stay), then trim: glibc keeps the freed middle resident until then.
_FRAGMENTED = """
import json, sys, threading
sys.path.insert(0, {root!r})
from freshet.memory_trim import MallocTrimmer, rss_bytes
kept = []
def churn():
    blocks = [b"x" * (64 * 1024) for _ in range(3_000)]  # ~190 MiB, below mmap's threshold
    kept.extend(blocks[::50])  # every 50th stays alive: the arena's top cannot shrink
t = threading.Thread(target=churn); t.start(); t.join()
untrimmed = rss_bytes()
idle = MallocTrimmer(0, trim=lambda: 0).trim_once()  # the control: a trim doing nothing
before = rss_bytes()
trimmer = MallocTrimmer(0)
stats = trimmer.trim_once()
print(json.dumps({{"available": trimmer.available, "untrimmed": untrimmed,
                  "before": before, "after": rss_bytes(),
                  "released": stats["malloc_trim_released_bytes"], "kept": len(kept)}}))
"""


def test_a_trim_gives_a_fragmented_arena_back_to_the_system() -> None:
    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", _FRAGMENTED.format(root=root)],
                         capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout)
    if not got["available"]:
        pytest.fail("this machine's C library (glibc expected) has no malloc_trim")
    mib = 2**20
    # ~186 MiB were freed (the 60 kept blocks hold ~4 MiB): resident until the trim
    assert got["untrimmed"] - got["before"] < 10 * mib, got
    assert got["before"] - got["after"] > 100 * mib, got
    assert got["released"] == pytest.approx(got["before"] - got["after"], rel=0.05)


def test_the_trimmer_thread_trims_every_interval_and_stops() -> None:
    calls: list[float] = []
    trimmer = MallocTrimmer(20, trim=lambda: calls.append(time.monotonic()) or 1)
    trimmer.start()
    assert trimmer.running
    deadline = time.monotonic() + 10
    while len(calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    trimmer.stop()
    assert not trimmer.running
    n = len(calls)
    assert n >= 5 and trimmer.stats()["malloc_trims"] == n
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 0.015  # one per interval, not a busy loop
    time.sleep(0.1)
    assert len(calls) == n  # stopped means stopped


@pytest.mark.parametrize(("interval", "thread"), [(0, False), (30_000, True)])
def test_an_interval_of_zero_never_trims(interval: int, thread: bool) -> None:
    trimmer = MallocTrimmer(interval, trim=lambda: 1).start()
    try:
        assert trimmer.running is thread
        assert trimmer.stats()["malloc_trims"] == 0
    finally:
        trimmer.stop()


def test_without_malloc_trim_nothing_is_done() -> None:
    trimmer = MallocTrimmer(1_000, trim=None)
    trimmer._trim = None  # as on a C library without malloc_trim (musl, macOS)
    assert not trimmer.start().running
    assert trimmer.trim_once()["malloc_trims"] == 0
    assert trimmer.stats()["malloc_trim_interval_ms"] == 0


def test_rss_is_read_and_settings_default_to_thirty_seconds() -> None:
    rss = rss_bytes()
    assert rss is not None and rss > 10 * 2**20  # a Python process with its imports
    assert Settings().malloc_trim_interval_ms == 30_000
    assert Settings.from_env({"FRESHET_MALLOC_TRIM_INTERVAL_MS": "0"}).malloc_trim_interval_ms == 0


# Eight threads allocating at once, each holding its blocks until all have allocated
# (so none can take over another's free arena); glibc's malloc_stats() then prints one
# "Arena N:" section per arena to stderr.
_ARENAS = """
import ctypes, ctypes.util, sys, threading
sys.path.insert(0, {root!r})
from freshet.memory_trim import limit_arenas
applied = limit_arenas({cap})
barrier = threading.Barrier(8)
def work():
    blocks = [bytearray(4096) for _ in range(200)]
    barrier.wait()
    del blocks
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print("applied" if applied else "not applied", flush=True)
ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()
"""


@pytest.mark.parametrize(("cap", "most"), [(0, None), (1, 1), (2, 2)])
def test_the_arena_cap_bounds_the_arenas_threads_make(cap: int, most: int | None) -> None:
    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", _ARENAS.format(root=root, cap=cap)],
                         capture_output=True, text=True, timeout=60, check=True)
    arenas = sum(line.startswith("Arena ") for line in out.stderr.splitlines())
    assert out.stdout.strip() == ("applied" if cap else "not applied")
    if most is None:  # glibc's default: the concurrent threads got arenas of their own
        assert arenas >= 4, out.stderr
    else:
        assert 1 <= arenas <= most, out.stderr


def test_a_negative_arena_cap_is_refused() -> None:
    from freshet.memory_trim import limit_arenas

    with pytest.raises(ValueError, match="arenas must be >= 0"):
        limit_arenas(-1)
