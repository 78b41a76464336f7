"""Every closed-form statistic against an independent recomputation (tables + hypothesis)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.drift import psi, quantile_edges
from evaluation.routing import apply_floor, thompson_probabilities
from evaluation.scores import ScoreCounts
from evaluation.stats import (
    auc_from_counts,
    auc_standard_error,
    log_loss_term,
    msprt_log_lambda,
    two_proportion_z_test,
    wilson_interval,
)
from tests.evaluation.oracle import Z, log_loss, pairwise_auc, thompson_by_integration, wilson

PROPS = settings(derandomize=True, max_examples=200, deadline=None)

# Scores from a small set (many ties), from 6-decimal values, and arbitrary floats.
SCORES = st.one_of(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]),
                   st.integers(0, 10**6).map(lambda k: k / 10**6),
                   st.floats(0.0, 1.0, allow_nan=False))
ROWS = st.lists(st.tuples(SCORES, st.integers(0, 1)), min_size=1, max_size=60)


@PROPS
@given(ROWS)
def test_auc_equals_pairwise_comparison_with_ties(rows: list[tuple[float, int]]) -> None:
    sc = ScoreCounts()
    for s, y in rows:
        sc.add(s, y)
    assert sc.auc() == pairwise_auc([s for s, _ in rows], [y for _, y in rows])


@PROPS
@given(ROWS, st.data())
def test_auc_after_merge_and_subtract_is_exact(rows: list[tuple[float, int]],
                                              data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(rows)))
    whole, head = ScoreCounts(), ScoreCounts()
    for i, (s, y) in enumerate(rows):
        whole.add(s, y)
        if i < cut:
            head.add(s, y)
    whole.merge(head, -1)
    tail = rows[cut:]
    assert whole.auc() == (pairwise_auc([s for s, _ in tail], [y for _, y in tail])
                           if tail else None)
    assert sum(n + p for _, n, p in whole.rows()) == len(tail)


@PROPS
@given(ROWS)
def test_counts_survive_a_pickle_and_the_older_list_layout(rows: list[tuple[float, int]]) -> None:
    """Checkpoints pickle the summaries; ones written before counts were packed hold
    ``[negatives, positives]`` lists, and load to the same counts."""
    sc = ScoreCounts()
    for s, y in rows:
        sc.add(s, y)
    want = sorted({s: (sum(1 for t, y in rows if t == s and not y),
                       sum(1 for t, y in rows if t == s and y)) for s, _ in rows}.items())
    again = pickle.loads(pickle.dumps(sc, protocol=5))
    assert [(s, (n, p)) for s, n, p in again.rows()] == want
    old = ScoreCounts.__new__(ScoreCounts)
    old.__setstate__((None, {"counts": {s: list(np_) for s, np_ in want},
                             "negatives": sc.negatives, "positives": sc.positives}))
    assert [(s, (n, p)) for s, n, p in old.rows()] == want
    assert old.auc() == pairwise_auc([s for s, _ in rows], [y for _, y in rows])


AUC_TABLE = [
    ({0.2: [1, 0], 0.8: [0, 1]}, 1.0),
    ({0.2: [0, 1], 0.8: [1, 0]}, 0.0),
    ({0.5: [3, 2]}, 0.5),
    ({0.1: [1, 0], 0.4: [1, 1], 0.8: [0, 1]}, 0.875),
    ({0.3: [4, 0]}, None),
    ({}, None),
]


@pytest.mark.parametrize(("counts", "expected"), AUC_TABLE)
def test_auc_table(counts: dict[float, list[int]], expected: float | None) -> None:
    assert auc_from_counts(counts) == expected


@PROPS
@given(ROWS)
def test_log_loss_matches_numpy(rows: list[tuple[float, int]]) -> None:
    mine = math.fsum(log_loss_term(s, y) for s, y in rows) / len(rows)
    assert mine == pytest.approx(log_loss([s for s, _ in rows], [y for _, y in rows]),
                                 rel=1e-12, abs=1e-12)


# (clicks, n): reference values from the Wilson formula (e.g. statsmodels "wilson").
WILSON_TABLE = [(10, 100, 0.0552, 0.1744), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0),
                (1, 2, 0.0945, 0.9055)]


@pytest.mark.parametrize(("clicks", "n", "low", "high"), WILSON_TABLE)
def test_wilson_table(clicks: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(clicks, n, Z)
    assert got == pytest.approx((low, high), abs=5e-5)


@PROPS
@given(st.integers(1, 10**6).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_matches_formula(cn: tuple[int, int]) -> None:
    clicks, n = cn
    low, high = wilson_interval(clicks, n, Z)
    exp_low, exp_high = wilson(clicks, n)
    assert low == pytest.approx(exp_low, rel=1e-9, abs=1e-12)
    assert high == pytest.approx(exp_high, rel=1e-9, abs=1e-12)
    assert 0.0 <= low <= clicks / n <= high <= 1.0


COUNTS = st.integers(1, 5_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@PROPS
@given(COUNTS, COUNTS)
def test_z_test_matches_erfc_recomputation(a: tuple[int, int], b: tuple[int, int]) -> None:
    (ca, na), (cb, nb) = a, b
    z, p = two_proportion_z_test(ca, na, cb, nb)
    pooled = (ca + cb) / (na + nb)
    var = pooled * (1 - pooled) * (1 / na + 1 / nb)
    if var == 0:
        assert (z, p) == (0.0, 1.0)
        return
    exp_z = (cb / nb - ca / na) / math.sqrt(var)
    assert z == pytest.approx(exp_z, rel=1e-9, abs=1e-12)
    assert p == pytest.approx(math.erfc(abs(exp_z) / math.sqrt(2)), rel=1e-9, abs=1e-300)


# z and p worked out by hand: pooled p, se = sqrt(p q (1/n_a + 1/n_b)), erfc(|z|/sqrt 2).
Z_TABLE = [((50, 1000, 80, 1000), 2.7211, 0.0065), ((100, 1000, 100, 1000), 0.0, 1.0),
           ((5, 100, 1, 100), -1.6581, 0.0973)]


@pytest.mark.parametrize(("args", "z", "p"), Z_TABLE)
def test_z_test_table(args: tuple[int, int, int, int], z: float, p: float) -> None:
    got_z, got_p = two_proportion_z_test(*args)
    assert (got_z, got_p) == pytest.approx((z, p), abs=1e-4)


@PROPS
@given(st.integers(20, 3_000).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))),
       st.integers(20, 3_000).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))),
       st.sampled_from([1e-5, 1e-4, 1e-3]))
def test_msprt_lambda_matches_numerical_mixture(a: tuple[int, int], b: tuple[int, int],
                                                tau2: float) -> None:
    """Λ = ∫ N(θ̂; θ, V) N(θ; 0, τ²) dθ / N(θ̂; 0, V), integrated on a grid."""
    (ca, na), (cb, nb) = a, b
    pa, pb = ca / na, cb / nb
    var = pa * (1 - pa) / na + pb * (1 - pb) / nb
    diff = pb - pa
    # the integrand is a Gaussian bump in theta: grid it around its mode, in logs
    mode = diff * tau2 / (var + tau2)
    spread = math.sqrt(var * tau2 / (var + tau2))
    theta = np.linspace(mode - 12 * spread, mode + 12 * spread, 40_001)
    log_integrand = (-((diff - theta) ** 2 - diff**2) / (2 * var)  # likelihood / null
                     - theta**2 / (2 * tau2) - 0.5 * math.log(2 * math.pi * tau2))
    top = float(log_integrand.max())
    expected_log = top + math.log(float(np.sum(np.exp(log_integrand - top)))
                                  * float(theta[1] - theta[0]))
    assert msprt_log_lambda(ca, na, cb, nb, tau2) == pytest.approx(expected_log, abs=1e-6)


def test_auc_standard_error_matches_hanley_mcneil() -> None:
    for a, npos, nneg in [(0.8, 50, 50), (0.6, 10, 300), (0.95, 200, 20)]:
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        expected = math.sqrt((a * (1 - a) + (npos - 1) * (q1 - a * a)
                              + (nneg - 1) * (q2 - a * a)) / (npos * nneg))
        assert auc_standard_error(a, npos, nneg) == pytest.approx(expected, rel=1e-12)


def _quantile_by_hand(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@PROPS
@given(st.lists(st.integers(0, 40).map(float), min_size=2, max_size=80),
       st.lists(st.integers(-5, 45).map(float), min_size=1, max_size=80),
       st.integers(2, 12))
def test_psi_by_hand(reference: list[float], current: list[float], bins: int) -> None:
    eps = 1e-4
    edges = quantile_edges(reference, bins)
    by_hand = sorted({_quantile_by_hand(reference, k / bins) for k in range(1, bins)})
    assert edges == pytest.approx(by_hand, rel=1e-12, abs=1e-12)

    def counts(values: list[float]) -> list[int]:
        out = [0] * (len(edges) + 1)
        for v in values:  # bin i is (edge[i-1], edge[i]]
            i = 0
            while i < len(edges) and v > edges[i]:
                i += 1
            out[i] += 1
        return out

    r, c = counts(reference), counts(current)
    expected = 0.0
    for rc, cc in zip(r, c, strict=True):
        rp, cp = max(rc / len(reference), eps), max(cc / len(current), eps)
        expected += (cp - rp) * math.log(cp / rp)
    assert psi(r, c, eps) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert psi(r, r, eps) == 0.0


POSTERIORS = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    min_size=1, max_size=4)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(POSTERIORS, st.integers(0, 2**32 - 1))
def test_thompson_matches_numerical_integration(counts: dict[str, tuple[int, int]],
                                                seed: int) -> None:
    """Monte-Carlo vs grid integration: |error| < 4.5 standard errors + grid error.

    Each estimate is a binomial proportion over ``draws`` draws: its standard error is
    sqrt(p(1-p)/draws); 4.5 of them leave a two-sided chance below 7e-6 per check of a
    false failure (and the draws are seeded, so a pass is reproducible). The grid of
    200,001 points integrates these posteriors (sd >= 0.0035 for n <= 400) to ~1e-5.
    """
    draws = 20_000
    got = thompson_probabilities(counts, draws, seed)
    exact = thompson_by_integration(counts)
    assert sum(exact.values()) == pytest.approx(1.0, abs=1e-4)
    for m, p in exact.items():
        tolerance = 4.5 * math.sqrt(max(p * (1 - p), 1e-6) / draws) + 1e-4
        assert abs(got[m] - p) <= tolerance, (m, got[m], p, tolerance)


def test_thompson_is_seeded_and_deterministic() -> None:
    counts = {"a": (30, 1000), "b": (33, 1000), "c": (25, 1000)}
    assert thompson_probabilities(counts, 20_000, 7) == thompson_probabilities(counts, 20_000, 7)
    assert thompson_probabilities(counts, 20_000, 7) != thompson_probabilities(counts, 20_000, 8)


@PROPS
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8), st.floats(0, 0.5))
def test_floor_keeps_each_weight_above_floor_and_sums_to_one(raw: list[float],
                                                            floor: float) -> None:
    total = sum(raw)
    probs = ({f"m{i}": v / total for i, v in enumerate(raw)} if total > 0
             else {f"m{i}": 1 / len(raw) for i in range(len(raw))})
    weights = apply_floor(probs, floor)
    k = len(probs)
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-12)
    if k * floor >= 1:
        assert all(w == pytest.approx(1 / k) for w in weights.values())
    else:
        for m, p in probs.items():
            assert weights[m] >= floor - 1e-15
            assert weights[m] == pytest.approx(floor + (1 - k * floor) * p, abs=1e-12)
