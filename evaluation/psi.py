"""PSI: reference bins, a sliding current window, and the window slid a batch at a time.

``PsiSubject.add_current`` slides one value; :func:`slide` slides many with numpy and
gives the PSI after each, equal bit for bit to calling ``add_current`` for each (the
same per-bin terms, from the same Python arithmetic, summed in the same order): the
evaluator matures a backfill's worth of examples at once, one value per numeric
feature of each (4.4M values for 174k examples of the bench log).
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np
import numpy.typing as npt


def quantile_edges(values: list[float], bins: int) -> list[float]:
    """Distinct ``k / bins`` quantiles (k = 1..bins-1) of a non-empty reference.

    >>> quantile_edges([float(v) for v in range(11)], 5)
    [2.0, 4.0, 6.0, 8.0]
    >>> quantile_edges([0.0, 0.0, 0.0, 1.0], 4)
    [0.0, 0.25]
    """
    qs = [k / bins for k in range(1, bins)]
    return sorted({float(q) for q in np.quantile(np.asarray(values, dtype=float), qs)})


def psi_term(r_count: int, n_ref: int, c_count: int, n_cur: int, epsilon: float) -> float:
    """One bin's PSI term, shares floored at ``epsilon``.

    >>> round(psi_term(50, 100, 80, 100, 1e-4), 6)
    0.141001
    """
    r = max(r_count / n_ref, epsilon)
    c = max(c_count / n_cur, epsilon)
    return (c - r) * math.log(c / r)


def psi(reference: list[int], current: list[int], epsilon: float) -> float:
    """PSI of two bin-count vectors, shares floored at ``epsilon``.

    >>> round(psi([50, 50], [80, 20], 1e-4), 6)
    0.415888
    >>> psi([10, 0], [10, 0], 1e-4)
    0.0
    """
    n_ref, n_cur = sum(reference), sum(current)
    total = 0.0
    for r_count, c_count in zip(reference, current, strict=True):
        r = max(r_count / n_ref, epsilon)
        c = max(c_count / n_cur, epsilon)
        total += (c - r) * math.log(c / r)
    return total


class PsiSubject:
    """One PSI subject: reference values, then frozen bins and a sliding current window.

    >>> s = PsiSubject("logged.x", 4)
    >>> for v in [1.0, 2.0, 3.0, 4.0]:
    ...     s.add_reference(v)
    >>> s.freeze(2)
    >>> for v in [9.0] * 4:
    ...     _ = s.add_current(v, 1e-4)
    >>> s.edges, s.current_counts, round(s.value, 3)
    ([2.5], [0, 4], 4.604)
    """

    __slots__ = ("current", "current_counts", "current_size", "edges", "n_ref", "name",
                 "reference", "reference_counts", "terms", "value")

    def __init__(self, name: str, current_size: int) -> None:
        self.name = name
        self.current_size = current_size
        self.reference: list[float] | None = []
        self.edges: list[float] | None = None
        self.reference_counts: list[int] = []
        self.current: deque[int] = deque()
        self.current_counts: list[int] = []
        #: each bin's PSI term once the window is full (only changed bins are recomputed)
        self.terms: list[float] = []
        self.n_ref = 0
        self.value: float | None = None

    @property
    def frozen(self) -> bool:
        """True once the bins are fixed.

        >>> PsiSubject("x", 3).frozen
        False
        """
        return self.edges is not None

    def add_reference(self, value: float) -> None:
        """Add one reference value (before :meth:`freeze`).

        >>> s = PsiSubject("x", 3); s.add_reference(1.0); s.reference
        [1.0]
        """
        if self.reference is not None:
            self.reference.append(value)

    def freeze(self, bins: int) -> None:
        """Fix the bins from the reference values and count them (then drop the values).

        >>> s = PsiSubject("x", 3); s.add_reference(1.0); s.freeze(10); s.reference_counts
        [1, 0]
        """
        if self.reference is None or not self.reference:
            return
        self.edges = quantile_edges(self.reference, bins)
        self.reference_counts = [0] * (len(self.edges) + 1)
        for v in self.reference:
            self.reference_counts[bisect.bisect_left(self.edges, v)] += 1
        self.current_counts = [0] * len(self.reference_counts)
        self.n_ref = sum(self.reference_counts)
        self.reference = None

    def add_current(self, value: float, epsilon: float) -> float | None:
        """Slide one value into the current window; the PSI (None until it is full).

        >>> s = PsiSubject("x", 1); s.add_reference(1.0); s.freeze(2)
        >>> s.add_current(1.0, 1e-4)
        0.0
        """
        if self.edges is None:
            return None
        b = bisect.bisect_left(self.edges, value)
        current = self.current
        current.append(b)
        if len(current) > self.current_size:
            out: int | None = current.popleft()
            if out == b and self.terms:  # the same bin in and out: nothing changed
                return self.value
        else:
            out = None
        counts = self.current_counts
        counts[b] += 1
        if out is not None:
            counts[out] -= 1
        if len(current) < self.current_size:
            return self.value
        # the same arithmetic as psi(), bin by bin: only the bins that changed are redone
        # (psi_term inlined: this runs once per numeric feature of every example)
        ref, n_ref, n_cur = self.reference_counts, self.n_ref, self.current_size
        terms = self.terms
        if not terms:
            terms = self.terms = [psi_term(r, n_ref, c, n_cur, epsilon)
                                  for r, c in zip(ref, counts, strict=True)]
        else:
            log = math.log
            r = max(ref[b] / n_ref, epsilon)
            c = max(counts[b] / n_cur, epsilon)
            terms[b] = (c - r) * log(c / r)
            if out is not None and out != b:
                r = max(ref[out] / n_ref, epsilon)
                c = max(counts[out] / n_cur, epsilon)
                terms[out] = (c - r) * log(c / r)
        total = 0.0
        for term in terms:
            total += term
        self.value = total
        return self.value


def slide(subject: PsiSubject, values: npt.NDArray[np.float64],
          epsilon: float) -> npt.NDArray[np.float64]:
    """Slide ``values`` into a frozen subject's window, in order; the PSI after each.

    NaN where the window is not full yet (``add_current`` gives None there); the
    subject is left as ``add_current`` would leave it.

    >>> a, b = PsiSubject("x", 3), PsiSubject("x", 3)
    >>> for s in (a, b):
    ...     for v in [1.0, 2.0, 3.0, 4.0]:
    ...         s.add_reference(v)
    ...     s.freeze(2)
    >>> values = [9.0, 1.0, 9.0, 9.0, 2.0]
    >>> one_by_one = [a.add_current(v, 1e-4) for v in values]
    >>> slid = slide(b, np.array(values), 1e-4).tolist()
    >>> slid[:2], slid[2:] == one_by_one[2:], (b.current, b.value) == (a.current, a.value)
    ([nan, nan], True, True)
    """
    edges = subject.edges
    if edges is None:
        raise ValueError(f"PSI subject {subject.name!r} has no bins yet")
    n = len(values)
    width = subject.current_size
    old = np.fromiter(subject.current, dtype=np.int64, count=len(subject.current))
    held = len(old)
    entered = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    seq = np.concatenate([old, entered])
    # step k puts entered[k] at seq[held + k]; the window is then seq[held + k + 1 - width:]
    leave_at = np.arange(n) + held - width  # the index leaving at step k (if >= 0)
    leaves = leave_at >= 0
    left = np.where(leaves, seq[np.maximum(leave_at, 0)], -1)
    full = np.arange(n) + held + 1 >= width
    ref, n_ref = subject.reference_counts, subject.n_ref
    totals = np.zeros(n, dtype=np.float64)
    last_counts: list[int] = []
    last_terms: list[float] = []
    for b, r_count in enumerate(ref):
        counts = (subject.current_counts[b] + np.cumsum(entered == b)
                  - np.cumsum(left == b))
        # the term of each count that occurs, by psi_term's own Python arithmetic
        present = np.unique(counts[full]) if n else counts[:0]
        table = np.array([psi_term(r_count, n_ref, int(c), width, epsilon) for c in present],
                         dtype=np.float64)
        terms = table[np.searchsorted(present, counts[full])] if len(present) else present
        totals[full] += terms  # bin by bin from 0.0: add_current's summation order
        last = int(counts[-1]) if n else subject.current_counts[b]
        last_counts.append(last)
        last_terms.append(psi_term(r_count, n_ref, last, width, epsilon))
    totals[~full] = np.nan
    if n:
        subject.current = deque(seq[-width:].tolist())
        subject.current_counts = last_counts
        if full[-1]:
            subject.terms = last_terms
            subject.value = float(totals[-1])
    return totals
