"""The soak's memory verdict (``bench/soak.py`` ``rss_growth``) and its warm-up option.

Oracle: a series whose shape is known by construction (a ramp while state fills, then
a level with seeded noise), with the medians recomputed here from the raw samples.
"""

from __future__ import annotations

import random
import statistics

import pytest

from bench.soak import parse_args, rss_growth


def series(ramp_until_s: float, level: float, end_s: float = 3600.0,
           seed: int = 7) -> list[dict[str, float]]:
    rng = random.Random(seed)
    out = []
    t = 0.0
    while t <= end_s:
        base = level * min(1.0, 0.5 + 0.5 * t / ramp_until_s)
        out.append({"t_s": t, "rss_mib": base + rng.uniform(-2.0, 2.0)})
        t += 10.0
    return out


def oracle_growth(samples: list[dict[str, float]], warmup_s: float) -> float:
    after = [(x["t_s"], x["rss_mib"]) for x in samples if x["t_s"] >= warmup_s]
    first = statistics.median(r for t, r in after if t < after[0][0] + 60)
    last = statistics.median(r for t, r in after if t > after[-1][0] - 60)
    return (last - first) / first * 100


@pytest.mark.parametrize(("warmup_s", "flat"), [
    (300.0, False),   # still on the ramp: the verdict reads the filling as growth
    (600.0, True),    # the ramp ends at 600 s: a level from there on
    (1200.0, True),
])
def test_growth_after_the_warmup(warmup_s: float, flat: bool) -> None:
    samples = series(ramp_until_s=600.0, level=320.0)
    out = rss_growth(samples, warmup_s)
    assert out["growth_pct"] == pytest.approx(oracle_growth(samples, warmup_s), abs=0.01)
    assert out["flat_within_5pct"] is flat
    assert out["rss_max_mib"] == max(x["rss_mib"] for x in samples)


@pytest.mark.parametrize(("argv", "warmup_minutes"), [
    (["--minutes", "60"], None),
    (["--minutes", "60", "--warmup-minutes", "10"], 10.0),
    (["--minutes", "30", "--warmup-minutes", "0"], 0.0),
])
def test_warmup_option(argv: list[str], warmup_minutes: float | None) -> None:
    assert parse_args(argv).warmup_minutes == warmup_minutes


@pytest.mark.parametrize("argv", [
    ["--minutes", "30", "--warmup-minutes", "30"],
    ["--minutes", "30", "--warmup-minutes", "-1"],
])
def test_warmup_option_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
