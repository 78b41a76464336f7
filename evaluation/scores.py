"""Exact, mergeable score summaries: label counts per distinct score, and per time tile.

Why counts per distinct score: ROC AUC needs the ranks of all scores. Keeping
``{score: negatives + positives * 2**40}`` is exact for any float (scores are dict keys,
compared exactly, never rounded), merges and subtracts in integers (so a sliding window
can drop a tile without any rounding drift) and is bounded by the number of distinct
scores (at most 10**6 + 1 for scores with 6 decimals, whatever the traffic).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from evaluation.stats import auc_from_rows

#: a positive's weight in a packed count: ``negatives + positives * _POS`` (one int per
#: score: a count of a few negatives is one of CPython's shared small ints, where a
#: ``[negatives, positives]`` list took ~60 B per score and summary)
_POS = 1 << 40
_NEG_MASK = _POS - 1


class ScoreCounts:
    """Label counts per distinct score; exact AUC; add/merge/subtract in integers.

    >>> sc = ScoreCounts()
    >>> for s, y in [(0.1, 0), (0.4, 0), (0.4, 1), (0.8, 1)]:
    ...     sc.add(s, y)
    >>> sc.auc(), sc.positives, sc.negatives
    (0.875, 2, 2)
    """

    __slots__ = ("counts", "negatives", "positives")

    def __init__(self) -> None:
        #: score -> negatives + positives * 2**40 (see :meth:`rows` for the pairs)
        self.counts: dict[float, int] = {}
        self.negatives = 0
        self.positives = 0

    def add(self, score: float, label: int) -> None:
        """Count one labelled score.

        >>> sc = ScoreCounts(); sc.add(0.5, 1); sc.add(0.5, 0); list(sc.rows())
        [(0.5, 1, 1)]
        """
        counts = self.counts
        if label:
            counts[score] = counts.get(score, 0) + _POS
            self.positives += 1
        else:
            counts[score] = counts.get(score, 0) + 1
            self.negatives += 1

    def remove(self, score: float, label: int) -> None:
        """Uncount one labelled score that was counted before.

        >>> sc = ScoreCounts(); sc.add(0.5, 1); sc.remove(0.5, 1); sc.counts, sc.positives
        ({}, 0)
        """
        left = self.counts[score] - (_POS if label else 1)
        if label:
            self.positives -= 1
        else:
            self.negatives -= 1
        if left:
            self.counts[score] = left
        else:
            del self.counts[score]

    def merge(self, other: ScoreCounts, sign: int = 1) -> None:
        """Add (``sign=1``) or subtract (``sign=-1``) another summary's counts.

        >>> a, b = ScoreCounts(), ScoreCounts()
        >>> a.add(0.2, 0); a.add(0.7, 1); b.add(0.2, 0)
        >>> a.merge(b, -1); list(a.rows())
        [(0.7, 0, 1)]
        """
        counts = self.counts
        for score, packed in other.counts.items():
            left = counts.get(score, 0) + sign * packed
            if left:
                counts[score] = left
            else:
                counts.pop(score, None)  # keeps the summary bounded by live scores
        self.negatives += sign * other.negatives
        self.positives += sign * other.positives

    def rows(self) -> Iterator[tuple[float, int, int]]:
        """(score, negatives, positives) in ascending score order.

        >>> sc = ScoreCounts(); sc.add(0.9, 0); sc.add(0.1, 1); list(sc.rows())
        [(0.1, 0, 1), (0.9, 1, 0)]
        """
        counts = self.counts
        for score in sorted(counts):
            packed = counts[score]
            yield score, packed & _NEG_MASK, packed >> 40

    def auc(self) -> float | None:
        """Exact ROC AUC (ties half); None with a single class.

        >>> ScoreCounts().auc() is None
        True
        """
        return auc_from_rows((neg, pos) for _, neg, pos in self.rows())

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        # checkpoints written before the counts were packed hold [neg, pos] lists
        for name, value in state[1].items():
            setattr(self, name, value)
        self.counts = {score: (c[0] + c[1] * _POS if isinstance(c, list) else c)
                       for score, c in self.counts.items()}


class Tile:
    """What one model's matured labels of one time tile add up to.

    >>> t = Tile(); t.add(0.5, 1, 0.69); (t.impressions, t.clicks, t.sum_score)
    (1, 1, 0.5)
    """

    __slots__ = ("clicks", "impressions", "scores", "sum_loss", "sum_score")

    def __init__(self) -> None:
        self.impressions = 0
        self.clicks = 0
        self.sum_score = 0.0
        self.sum_loss = 0.0
        self.scores = ScoreCounts()

    def add(self, score: float, label: int, loss: float) -> None:
        """Count one matured label with its log-loss term.

        >>> t = Tile(); t.add(0.2, 0, 0.22); t.scores.negatives
        1
        """
        self.impressions += 1
        self.clicks += label
        self.sum_score += score
        self.sum_loss += loss
        self.scores.add(score, label)


def fsum_attr(tiles: list[Tile], name: str) -> float:
    """Correctly rounded sum of one float attribute over tiles (order does not matter).

    >>> a, b = Tile(), Tile(); a.add(0.1, 0, 1.0); b.add(0.2, 1, 2.0)
    >>> fsum_attr([a, b], "sum_loss")
    3.0
    """
    return math.fsum(getattr(t, name) for t in tiles)
